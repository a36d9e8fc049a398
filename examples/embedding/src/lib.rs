//! citadel-notes: a miniature Citadel service, the example to copy from.
//!
//! Two endpoints on PostgreSQL: `GET /health` (`{"status":"ok"}` when the database answers)
//! and `/notes` (`GET` lists the notes, `POST {"body": "..."}` adds one). Its tests show both
//! ways of using citadel-itest from a service: single checks in `#[tokio::test]`s
//! (`tests/checks.rs`) and a whole configured suite as cargo tests (`tests/suite.rs`).

#![forbid(unsafe_code)]

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

/// The service's schema, applied at startup (idempotent).
pub const SCHEMA: &str = "
CREATE SCHEMA IF NOT EXISTS notes;
CREATE TABLE IF NOT EXISTS notes.notes (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    body text NOT NULL CHECK (body <> ''),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS notes_created_at ON notes.notes (created_at);
";

/// A stored note.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Note {
    /// Its id.
    pub id: i64,
    /// Its text.
    pub body: String,
}

/// A note to add.
#[derive(Debug, Deserialize)]
pub struct NewNote {
    /// Its text (not empty).
    pub body: String,
}

/// Apply [`SCHEMA`].
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(SCHEMA).execute(pool).await.map(drop)
}

/// The service's routes.
pub fn app(pool: PgPool) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/notes", get(list_notes).post(add_note))
        .with_state(pool)
}

/// Serve [`app`] on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, pool: PgPool) -> std::io::Result<()> {
    axum::serve(listener, app(pool)).await
}

type Answer<T> = Result<T, (StatusCode, String)>;

fn unavailable(e: sqlx::Error) -> (StatusCode, String) {
    (StatusCode::SERVICE_UNAVAILABLE, format!("database: {e}"))
}

async fn health(State(pool): State<PgPool>) -> Answer<Json<serde_json::Value>> {
    sqlx::query("SELECT 1")
        .execute(&pool)
        .await
        .map_err(unavailable)?;
    Ok(Json(serde_json::json!({ "status": "ok" })))
}

async fn list_notes(State(pool): State<PgPool>) -> Answer<Json<Vec<Note>>> {
    let rows: Vec<(i64, String)> = sqlx::query_as("SELECT id, body FROM notes.notes ORDER BY id")
        .fetch_all(&pool)
        .await
        .map_err(unavailable)?;
    Ok(Json(
        rows.into_iter()
            .map(|(id, body)| Note { id, body })
            .collect(),
    ))
}

async fn add_note(
    State(pool): State<PgPool>,
    Json(note): Json<NewNote>,
) -> Answer<(StatusCode, Json<Note>)> {
    if note.body.trim().is_empty() {
        return Err((StatusCode::UNPROCESSABLE_ENTITY, "body is empty".into()));
    }
    let (id,): (i64,) = sqlx::query_as("INSERT INTO notes.notes (body) VALUES ($1) RETURNING id")
        .bind(&note.body)
        .fetch_one(&pool)
        .await
        .map_err(unavailable)?;
    Ok((
        StatusCode::CREATED,
        Json(Note {
            id,
            body: note.body,
        }),
    ))
}
