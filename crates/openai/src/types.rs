//! Request builders and response objects of the OpenAI API, as far as the testers use them.
//!
//! Requests serialize to exactly the fields that were set (plus any [`extra`](ChatRequest::extra)
//! field); responses are read leniently: unknown fields are ignored and fields that
//! OpenAI-compatible servers often leave out are optional.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Extra HTTP headers of one request (e.g. `x-request-id`), in the order given.
pub type Headers = Vec<(String, String)>;

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Message {
    /// `system`, `user`, `assistant`, ...
    pub role: String,
    /// The text.
    pub content: String,
}

impl Message {
    /// A message with this role.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Message {
            role: role.into(),
            content: content.into(),
        }
    }

    /// A `user` message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }

    /// A `system` message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }
}

/// `stream_options`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct StreamOptions {
    /// Ask for a final chunk with `usage`.
    pub include_usage: bool,
}

/// `POST /v1/chat/completions`.
///
/// ```
/// use citadel_itest_openai::ChatRequest;
/// let req = ChatRequest::new("chat-small")
///     .system("Be brief.")
///     .user("Say something")
///     .max_tokens(8)
///     .seed(7)
///     .stream(true)
///     .include_usage(true)
///     .header("x-request-id", "req-1");
/// assert_eq!(
///     serde_json::to_value(&req).unwrap(),
///     serde_json::json!({
///         "model": "chat-small",
///         "messages": [
///             {"role": "system", "content": "Be brief."},
///             {"role": "user", "content": "Say something"}
///         ],
///         "max_tokens": 8,
///         "seed": 7,
///         "stream": true,
///         "stream_options": {"include_usage": true}
///     })
/// );
/// assert_eq!(req.headers, [("x-request-id".to_string(), "req-1".to_string())]);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ChatRequest {
    /// The model.
    pub model: String,
    /// The conversation.
    pub messages: Vec<Message>,
    /// `max_tokens`, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// `seed`, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// `stream` (sent only when true).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
    /// `stream_options`, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    /// Any other body field (`temperature`, `n`, `user`, ...), sent as given.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
    /// Extra HTTP headers (`x-request-id`, a routing key, ...); not part of the body.
    #[serde(skip)]
    pub headers: Headers,
}

impl ChatRequest {
    /// A request for `model` with no messages yet.
    pub fn new(model: impl Into<String>) -> Self {
        ChatRequest {
            model: model.into(),
            messages: Vec::new(),
            max_tokens: None,
            seed: None,
            stream: false,
            stream_options: None,
            extra: Map::new(),
            headers: Vec::new(),
        }
    }

    /// Add a message.
    pub fn message(mut self, message: Message) -> Self {
        self.messages.push(message);
        self
    }

    /// Add a `user` message.
    pub fn user(self, content: impl Into<String>) -> Self {
        self.message(Message::user(content))
    }

    /// Add a `system` message.
    pub fn system(self, content: impl Into<String>) -> Self {
        self.message(Message::system(content))
    }

    /// Set `max_tokens`.
    pub fn max_tokens(mut self, n: u32) -> Self {
        self.max_tokens = Some(n);
        self
    }

    /// Set `seed`.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Set `stream`. The streaming calls of [`Client`](crate::Client) set it themselves.
    pub fn stream(mut self, stream: bool) -> Self {
        self.stream = stream;
        self
    }

    /// Set `stream_options.include_usage`.
    pub fn include_usage(mut self, include: bool) -> Self {
        self.stream_options = Some(StreamOptions {
            include_usage: include,
        });
        self
    }

    /// Set any other body field.
    pub fn extra(mut self, key: impl Into<String>, value: Value) -> Self {
        self.extra.insert(key.into(), value);
        self
    }

    /// Add an HTTP header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// `POST /v1/completions` (the legacy text completions).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct CompletionRequest {
    /// The model.
    pub model: String,
    /// The prompt.
    pub prompt: String,
    /// `max_tokens`, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// `seed`, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// `stream` (sent only when true).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
    /// `stream_options`, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    /// Any other body field, sent as given.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
    /// Extra HTTP headers; not part of the body.
    #[serde(skip)]
    pub headers: Headers,
}

impl CompletionRequest {
    /// A request for `model` with this prompt.
    pub fn new(model: impl Into<String>, prompt: impl Into<String>) -> Self {
        CompletionRequest {
            model: model.into(),
            prompt: prompt.into(),
            max_tokens: None,
            seed: None,
            stream: false,
            stream_options: None,
            extra: Map::new(),
            headers: Vec::new(),
        }
    }

    /// Set `max_tokens`.
    pub fn max_tokens(mut self, n: u32) -> Self {
        self.max_tokens = Some(n);
        self
    }

    /// Set `seed`.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Set `stream`. The streaming calls of [`Client`](crate::Client) set it themselves.
    pub fn stream(mut self, stream: bool) -> Self {
        self.stream = stream;
        self
    }

    /// Set `stream_options.include_usage`.
    pub fn include_usage(mut self, include: bool) -> Self {
        self.stream_options = Some(StreamOptions {
            include_usage: include,
        });
        self
    }

    /// Set any other body field.
    pub fn extra(mut self, key: impl Into<String>, value: Value) -> Self {
        self.extra.insert(key.into(), value);
        self
    }

    /// Add an HTTP header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// The `input` of an embeddings request: one text or several.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
#[non_exhaustive]
pub enum EmbeddingInput {
    /// One text.
    One(String),
    /// Several texts, one vector each.
    Many(Vec<String>),
}

/// `POST /v1/embeddings`.
///
/// ```
/// use citadel_itest_openai::EmbeddingsRequest;
/// let req = EmbeddingsRequest::new("embed-small", "hello").dimensions(8);
/// assert_eq!(
///     serde_json::to_string(&req).unwrap(),
///     r#"{"model":"embed-small","input":"hello","dimensions":8}"#
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct EmbeddingsRequest {
    /// The model.
    pub model: String,
    /// The text(s) to embed.
    pub input: EmbeddingInput,
    /// `dimensions`, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<u32>,
    /// Any other body field, sent as given.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
    /// Extra HTTP headers; not part of the body.
    #[serde(skip)]
    pub headers: Headers,
}

impl EmbeddingsRequest {
    /// Embed one text.
    pub fn new(model: impl Into<String>, input: impl Into<String>) -> Self {
        Self::with_input(model, EmbeddingInput::One(input.into()))
    }

    /// Embed several texts.
    pub fn many<I, S>(model: impl Into<String>, inputs: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::with_input(
            model,
            EmbeddingInput::Many(inputs.into_iter().map(Into::into).collect()),
        )
    }

    fn with_input(model: impl Into<String>, input: EmbeddingInput) -> Self {
        EmbeddingsRequest {
            model: model.into(),
            input,
            dimensions: None,
            extra: Map::new(),
            headers: Vec::new(),
        }
    }

    /// Set `dimensions`.
    pub fn dimensions(mut self, n: u32) -> Self {
        self.dimensions = Some(n);
        self
    }

    /// Set any other body field.
    pub fn extra(mut self, key: impl Into<String>, value: Value) -> Self {
        self.extra.insert(key.into(), value);
        self
    }

    /// Add an HTTP header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// Token counts of an answer. Embeddings have no `completion_tokens` (read as 0).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Usage {
    /// Tokens in the prompt.
    pub prompt_tokens: u64,
    /// Tokens generated.
    #[serde(default)]
    pub completion_tokens: u64,
    /// Their sum, as the server says.
    pub total_tokens: u64,
}

/// `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct ModelList {
    /// `list`.
    #[serde(default)]
    pub object: String,
    /// The models.
    pub data: Vec<Model>,
}

impl ModelList {
    /// The model ids, in the server's order.
    pub fn ids(&self) -> Vec<&str> {
        self.data.iter().map(|m| m.id.as_str()).collect()
    }
}

/// One entry of [`ModelList`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct Model {
    /// The model id.
    pub id: String,
    /// `model`.
    #[serde(default)]
    pub object: String,
    /// Unix seconds, when given.
    #[serde(default)]
    pub created: Option<u64>,
    /// The owner, when given.
    #[serde(default)]
    pub owned_by: Option<String>,
}

/// A non-streaming chat completion.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct ChatCompletion {
    /// The completion id.
    pub id: String,
    /// `chat.completion`.
    pub object: String,
    /// Unix seconds.
    #[serde(default)]
    pub created: u64,
    /// The model that answered.
    pub model: String,
    /// The choices.
    pub choices: Vec<ChatChoice>,
    /// Token counts, when given.
    #[serde(default)]
    pub usage: Option<Usage>,
    /// `system_fingerprint`, when given.
    #[serde(default)]
    pub system_fingerprint: Option<String>,
}

impl ChatCompletion {
    /// The text of the first choice (empty when there is none).
    pub fn content(&self) -> &str {
        self.choices
            .first()
            .and_then(|c| c.message.content.as_deref())
            .unwrap_or("")
    }
}

/// One choice of a [`ChatCompletion`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct ChatChoice {
    /// The choice index.
    pub index: u64,
    /// The answer.
    pub message: AssistantMessage,
    /// `stop`, `length`, ...
    #[serde(default)]
    pub finish_reason: Option<String>,
}

/// The message of a [`ChatChoice`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct AssistantMessage {
    /// `assistant`.
    pub role: String,
    /// The text (`null` for a refusal or a tool call).
    #[serde(default)]
    pub content: Option<String>,
}

/// A non-streaming text completion.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct Completion {
    /// The completion id.
    pub id: String,
    /// `text_completion`.
    pub object: String,
    /// Unix seconds.
    #[serde(default)]
    pub created: u64,
    /// The model that answered.
    pub model: String,
    /// The choices.
    pub choices: Vec<CompletionChoice>,
    /// Token counts, when given.
    #[serde(default)]
    pub usage: Option<Usage>,
}

impl Completion {
    /// The text of the first choice (empty when there is none).
    pub fn text(&self) -> &str {
        self.choices.first().map_or("", |c| c.text.as_str())
    }
}

/// One choice of a [`Completion`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct CompletionChoice {
    /// The choice index.
    pub index: u64,
    /// The text.
    pub text: String,
    /// `stop`, `length`, ...
    #[serde(default)]
    pub finish_reason: Option<String>,
}

/// The answer to an embeddings request.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct Embeddings {
    /// `list`.
    #[serde(default)]
    pub object: String,
    /// One vector per input, by `index`.
    pub data: Vec<Embedding>,
    /// The model that answered.
    pub model: String,
    /// Token counts, when given.
    #[serde(default)]
    pub usage: Option<Usage>,
}

/// One vector of [`Embeddings`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct Embedding {
    /// Which input it embeds.
    pub index: u64,
    /// The vector (`encoding_format: float`).
    pub embedding: Vec<f32>,
}

/// One chunk of a chat or text completion stream, read leniently: only `choices` is required.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct StreamChunk {
    /// The completion id, when given.
    #[serde(default)]
    pub id: Option<String>,
    /// The model, when given.
    #[serde(default)]
    pub model: Option<String>,
    /// The choices (empty in the final `usage` chunk).
    pub choices: Vec<ChunkChoice>,
    /// Token counts (the final chunk, with `include_usage`).
    #[serde(default)]
    pub usage: Option<Usage>,
}

/// One choice of a [`StreamChunk`]: a chat `delta` or a completion `text`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct ChunkChoice {
    /// The choice index.
    #[serde(default)]
    pub index: u64,
    /// Chat: what this chunk adds.
    #[serde(default)]
    pub delta: Option<Delta>,
    /// Text completions: what this chunk adds.
    #[serde(default)]
    pub text: Option<String>,
    /// Set on the choice's last chunk.
    #[serde(default)]
    pub finish_reason: Option<String>,
}

impl ChunkChoice {
    /// The text this chunk adds (chat `delta.content` or completion `text`), if any.
    pub fn content(&self) -> Option<&str> {
        self.delta
            .as_ref()
            .and_then(|d| d.content.as_deref())
            .or(self.text.as_deref())
    }
}

/// The `delta` of a chat stream chunk.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct Delta {
    /// `assistant`, on the first chunk.
    #[serde(default)]
    pub role: Option<String>,
    /// The text added.
    #[serde(default)]
    pub content: Option<String>,
}
