//! `citadel-itest proxy`: run a fault proxy (and optionally its REST control API) until Ctrl-C
//! or SIGTERM.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use citadel_itest::faults::proxy::{self, Mode, Proxy, ProxyConfig};
use clap::{Args, ValueEnum};

#[derive(Clone, Copy, ValueEnum)]
enum CliMode {
    /// Copy bytes; TCP faults only.
    Tcp,
    /// Speak HTTP/1.1 both ways; HTTP and SSE faults too.
    Http,
}

#[derive(Args)]
pub(crate) struct ProxyArgs {
    /// Listen address (loopback only), e.g. 127.0.0.1:18080; port 0 picks a free one.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Upstream host:port to forward to, e.g. 127.0.0.1:8080.
    #[arg(long, value_name = "HOST:PORT")]
    upstream: String,
    /// tcp or http.
    #[arg(long, value_enum, default_value = "tcp")]
    mode: CliMode,
    /// Serve the REST control API here (loopback only), e.g. 127.0.0.1:18081.
    #[arg(long, value_name = "ADDR")]
    control: Option<SocketAddr>,
    /// Bound on each upstream connect, e.g. 5s.
    #[arg(long, value_name = "DURATION", default_value = "5s")]
    connect_timeout: String,
}

pub(crate) fn proxy_command(args: ProxyArgs) -> ExitCode {
    let connect_timeout = match humantime_duration(&args.connect_timeout) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: --connect-timeout {:?}: {e}", args.connect_timeout);
            return ExitCode::from(2);
        }
    };
    let mode = match args.mode {
        CliMode::Tcp => Mode::Tcp,
        CliMode::Http => Mode::Http,
    };
    let config = ProxyConfig::new(args.upstream)
        .listen(args.listen)
        .mode(mode)
        .connect_timeout(connect_timeout);
    if let Err(e) = config.validate() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: start runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async move {
        let handle = match Proxy::start(config).await {
            Ok(h) => h,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
        };
        println!(
            "proxy {} -> {} ({} mode)",
            handle.addr(),
            handle.upstream(),
            handle.mode()
        );
        let control = match args.control {
            Some(addr) => match proxy::control::serve(handle.clone(), addr).await {
                Ok(c) => {
                    println!("control API {}", c.url());
                    Some(c)
                }
                Err(e) => {
                    eprintln!("error: control API: {e}");
                    return ExitCode::from(1);
                }
            },
            None => None,
        };
        wait_for_signal().await;
        eprintln!("stopping");
        if let Some(c) = control {
            c.stop().await;
        }
        handle.stop().await;
        ExitCode::SUCCESS
    })
}

fn humantime_duration(s: &str) -> Result<Duration, String> {
    proxy::parse_duration(s)
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
