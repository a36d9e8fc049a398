//! `citadel-itest-fixtures`: the testkit's protocol fixtures as a foreground process, for the
//! local stack (`scripts/services.sh`) and for manual poking.
//!
//! ```text
//! citadel-itest-fixtures models --port 58101 --backend-id model-a [--models a,b] [--ttft 50ms]
//!                               [--itl 10ms] [--database-url env:NAME] [--api-key env:NAME]
//!                               [--faults stall:250ms,cut:3]
//! citadel-itest-fixtures qdrant --http-port 56333 --grpc-port 56334 [--api-key env:NAME]
//! ```
//!
//! Secrets are never taken from the command line in clear when avoidable: `--api-key` and
//! `--database-url` accept `env:NAME` (read the variable) and `file:PATH` (read the file) as well
//! as a literal value. Logs go to stderr (`RUST_LOG`-style filter in `CITADEL_FIXTURES_LOG`,
//! default `info`). SIGTERM and Ctrl-C stop the server cleanly (exit 0).

use std::process::ExitCode;
use std::time::Duration;

use citadel_itest_testkit::model::{Faults, ModelServer};
use citadel_itest_testkit::qdrant::QdrantServer;
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "citadel-itest-fixtures",
    version,
    about = "citadel-itest protocol fixtures"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// An OpenAI-compatible model server.
    Models(Box<ModelArgs>),
    /// A Qdrant-compatible vector server (REST and gRPC).
    Qdrant(QdrantArgs),
}

#[derive(Args)]
struct ModelArgs {
    /// Port on 127.0.0.1 (0 = any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Identity sent in `x-backend-id`.
    #[arg(long, default_value = "model-backend")]
    backend_id: String,
    /// Served model names, comma separated.
    #[arg(long, value_delimiter = ',')]
    models: Vec<String>,
    /// Time to first token, e.g. 50ms.
    #[arg(long, value_parser = humantime::parse_duration)]
    ttft: Option<Duration>,
    /// Inter-token delay, e.g. 10ms.
    #[arg(long, value_parser = humantime::parse_duration)]
    itl: Option<Duration>,
    /// Seeded jitter added to every delay, at most this much.
    #[arg(long, value_parser = humantime::parse_duration)]
    jitter: Option<Duration>,
    /// Seed for generated text, jitter and error draws.
    #[arg(long)]
    seed: Option<u64>,
    /// Embedding dimension.
    #[arg(long)]
    embedding_dimension: Option<usize>,
    /// Required bearer key: a value, `env:NAME` or `file:PATH`.
    #[arg(long)]
    api_key: Option<String>,
    /// PostgreSQL URL for the request log: a value, `env:NAME` or `file:PATH`.
    #[arg(long)]
    database_url: Option<String>,
    /// Faults for every request, e.g. `error:0.1`, `stall:250ms,cut:3` (see docs/testkit.md).
    #[arg(long, value_parser = |s: &str| s.parse::<Faults>().map_err(|e| e.to_string()))]
    faults: Option<Faults>,
}

#[derive(Args)]
struct QdrantArgs {
    /// REST port on 127.0.0.1 (0 = any free port).
    #[arg(long, default_value_t = 0)]
    http_port: u16,
    /// gRPC port on 127.0.0.1 (0 = any free port).
    #[arg(long, default_value_t = 0)]
    grpc_port: u16,
    /// Required API key: a value, `env:NAME` or `file:PATH`.
    #[arg(long)]
    api_key: Option<String>,
}

/// Resolves `env:NAME`, `file:PATH` or a literal.
fn secret(what: &str, raw: &str) -> Result<String, String> {
    let value = if let Some(name) = raw.strip_prefix("env:") {
        std::env::var(name)
            .map_err(|_| format!("{what}: environment variable {name} is not set"))?
    } else if let Some(path) = raw.strip_prefix("file:") {
        std::fs::read_to_string(path)
            .map_err(|e| format!("{what}: read {path}: {e}"))?
            .trim_end_matches(['\n', '\r'])
            .to_string()
    } else {
        raw.to_string()
    };
    if value.is_empty() {
        return Err(format!("{what} is empty"));
    }
    Ok(value)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn run_models(a: ModelArgs) -> Result<(), String> {
    let mut b = ModelServer::builder()
        .port(a.port)
        .backend_id(&a.backend_id);
    if !a.models.is_empty() {
        b = b.models(a.models.clone());
    }
    if let Some(d) = a.ttft {
        b = b.ttft(d);
    }
    if let Some(d) = a.itl {
        b = b.itl(d);
    }
    if let Some(d) = a.jitter {
        b = b.jitter(d);
    }
    if let Some(s) = a.seed {
        b = b.seed(s);
    }
    if let Some(d) = a.embedding_dimension {
        b = b.embedding_dimension(d);
    }
    if let Some(k) = &a.api_key {
        b = b.api_key(secret("--api-key", k)?);
    }
    if let Some(u) = &a.database_url {
        b = b.database_url(secret("--database-url", u)?);
    }
    if let Some(f) = a.faults {
        b = b.faults(f);
    }
    let server = b.start().await.map_err(|e| chain(&e))?;
    tracing::info!(url = %server.url(), backend_id = %server.backend_id(), "model server listening");
    server
        .run_until(shutdown_signal())
        .await
        .map_err(|e| chain(&e))
}

async fn run_qdrant(a: QdrantArgs) -> Result<(), String> {
    let mut b = QdrantServer::builder()
        .http_port(a.http_port)
        .grpc_port(a.grpc_port);
    if let Some(k) = &a.api_key {
        b = b.api_key(secret("--api-key", k)?);
    }
    let server = b.start().await.map_err(|e| chain(&e))?;
    tracing::info!(rest = %server.http_url(), grpc = %server.grpc_url(), "qdrant fixture listening");
    shutdown_signal().await;
    server.stop().await.map_err(|e| chain(&e))
}

/// `error: cause: cause` without depending on the core crate.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !out.ends_with(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        cur = s.source();
    }
    out
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CITADEL_FIXTURES_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Models(a) => run_models(*a).await,
            Command::Qdrant(a) => run_qdrant(a).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
