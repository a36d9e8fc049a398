//! The citadel-notes service.
//!
//! `DATABASE_URL=postgres://... cargo run -p citadel-notes [-- 127.0.0.1:8080]`

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    let Ok(url) = std::env::var("DATABASE_URL") else {
        eprintln!("error: set DATABASE_URL (postgres://user:password@127.0.0.1:5432/db)");
        return ExitCode::from(2);
    };
    let started = async {
        let pool = sqlx::PgPool::connect(&url)
            .await
            .map_err(|e| e.to_string())?;
        citadel_notes::migrate(&pool)
            .await
            .map_err(|e| e.to_string())?;
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .map_err(|e| format!("listen on {addr}: {e}"))?;
        eprintln!("citadel-notes listening on {addr}");
        citadel_notes::serve(listener, pool)
            .await
            .map_err(|e| e.to_string())
    };
    match started.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
