//! An OpenAI-compatible client layer for citadel-itest testers: request builders for
//! `/v1/models`, chat and text completions and embeddings; OpenAI error bodies as a typed
//! [`ApiError`]; and a bounded SSE stream reader ([`read_stream`]) that times every event
//! (time to first token, inter-token gaps, end to end), counts tokens (from the `usage` chunk,
//! or else content chunks, and says which) and classifies how the stream ended
//! ([`StreamEnd`]): only `[DONE]` without an in-band error is a success.
//!
//! Every call is bounded: non-streaming bodies are read through
//! [`citadel_itest_core::http::read_body`] (byte cap and deadline), streams within
//! [`StreamLimits`] (event size, total size, kept content, stall bound, total time).
//!
//! ```
//! use std::time::Duration;
//! use citadel_itest_openai::{ChatRequest, Client, StreamEnd, StreamLimits, TokenCount};
//! use citadel_itest_testkit::model::ModelServer;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = ModelServer::builder()
//!     .models(["chat-small"])
//!     .ttft(Duration::from_millis(20))
//!     .itl(Duration::from_millis(5))
//!     .start()
//!     .await?;
//! let client = Client::new(&server.base_url())?;
//!
//! let models = client.models().await?;
//! assert_eq!(models.body.ids(), ["chat-small"]);
//!
//! let request = ChatRequest::new("chat-small")
//!     .user("Say something")
//!     .max_tokens(4)
//!     .header("x-request-id", "doc-1");
//! let answer = client.chat(&request).await?;
//! assert_eq!(answer.body.usage.unwrap().completion_tokens, 4);
//! assert_eq!(answer.header("x-request-id"), Some("doc-1"));
//!
//! let report = client
//!     .chat_stream(&request.include_usage(true), &StreamLimits::default())
//!     .await?;
//! assert_eq!(report.end, StreamEnd::Done);
//! assert_eq!(report.tokens, TokenCount::Usage(4));
//! assert!(report.ttft.unwrap() >= Duration::from_millis(20));
//! assert_eq!(report.gaps.count, 3);
//!
//! let err = client.chat(&ChatRequest::new("no-such-model").user("hi")).await.unwrap_err();
//! assert_eq!(err.api_error().unwrap().code.as_deref(), Some("model_not_found"));
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod client;
mod error;
pub mod sse;
mod stream;
mod types;

pub use client::{Client, DEFAULT_TIMEOUT, RawReply, Reply};
pub use error::{ApiError, RequestError};
pub use stream::{
    Gaps, StreamEnd, StreamLimits, StreamReport, StreamTracker, TokenCount, read_stream,
};
pub use types::{
    AssistantMessage, ChatChoice, ChatCompletion, ChatRequest, ChunkChoice, Completion,
    CompletionChoice, CompletionRequest, Delta, Embedding, EmbeddingInput, Embeddings,
    EmbeddingsRequest, Headers, Message, Model, ModelList, StreamChunk, StreamOptions, Usage,
};

/// Re-exported so callers name the same reqwest types (`StatusCode`, `HeaderMap`, `Method`).
pub use reqwest;
