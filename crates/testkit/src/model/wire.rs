//! OpenAI's wire format: error bodies, request validation (with OpenAI's messages, `param` and
//! `code`), and the response and stream-chunk objects.
//!
//! Requests are parsed from a `serde_json::Value` by hand rather than derived, so that a wrong
//! type names the field the way OpenAI does (`Invalid type for 'max_tokens': expected an
//! integer, but got a string instead.`). Unknown fields are ignored, as vLLM and most
//! OpenAI-compatible servers do.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

/// The most choices (`n`) one request may ask for.
pub(crate) const MAX_CHOICES: u64 = 16;
/// The most inputs one embeddings request (or prompts one completions request) may carry
/// (OpenAI's limit for embeddings).
pub(crate) const MAX_EMBEDDING_INPUTS: usize = 2048;
/// The most choices (prompts times `n`) one completions request may ask for.
pub(crate) const MAX_TOTAL_CHOICES: u64 = 1024;

/// An OpenAI-style error answer: status, `{"error":{"message","type","param","code"}}` and,
/// for 429, `Retry-After`.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
    pub(crate) kind: &'static str,
    pub(crate) param: Option<String>,
    pub(crate) code: Option<&'static str>,
    retry_after: Option<u64>,
    close: bool,
}

#[derive(Serialize)]
struct ErrorEnvelope<'a> {
    error: ErrorBody<'a>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
            retry_after: None,
            close: false,
        }
    }

    fn param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    fn code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// 400 `invalid_request_error` with no param or code.
    pub(crate) fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    /// 400: the body is not JSON.
    pub(crate) fn bad_json() -> Self {
        Self::invalid_request(
            "We could not parse the JSON body of your request. (HINT: This likely means you \
             aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but \
             what was sent was not valid JSON.)",
        )
    }

    /// 400 `invalid_type` for `param`.
    pub(crate) fn invalid_type(param: &str, expected: &str, got: &Value) -> Self {
        Self::invalid_request(format!(
            "Invalid type for '{param}': expected {expected}, but got {} instead.",
            describe(got)
        ))
        .param(param)
        .code("invalid_type")
    }

    /// 400 `missing_required_parameter`.
    pub(crate) fn missing(param: &str) -> Self {
        Self::invalid_request(format!("Missing required parameter: '{param}'."))
            .param(param)
            .code("missing_required_parameter")
    }

    /// 400 `invalid_value` (or another code) for `param`.
    pub(crate) fn invalid_value(
        param: &str,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self::invalid_request(message).param(param).code(code)
    }

    /// 404 `model_not_found`.
    pub(crate) fn model_not_found(model: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("The model `{model}` does not exist or you do not have access to it."),
        )
        .code("model_not_found")
    }

    /// 401 without an API key (OpenAI sends `code: null` here).
    pub(crate) fn missing_api_key() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "You didn't provide an API key. You need to provide your API key in an Authorization \
             header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
        )
    }

    /// 401 `invalid_api_key` (the key given is not repeated).
    pub(crate) fn wrong_api_key() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "Incorrect API key provided.",
        )
        .code("invalid_api_key")
    }

    /// 429 `rate_limit_exceeded`, type `requests`, with `Retry-After: <secs>`.
    pub(crate) fn rate_limited(retry_after_secs: u64) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "requests",
            format!("Rate limit reached for requests. Please try again in {retry_after_secs}s."),
        )
        .code("rate_limit_exceeded");
        e.retry_after = Some(retry_after_secs);
        e
    }

    /// 500 `server_error`.
    pub(crate) fn server_error() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "The server had an error while processing your request. Sorry about that!",
        )
    }

    /// 503 `server_error`.
    pub(crate) fn unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "The server is overloaded or not ready yet.",
        )
    }

    /// 413 `request_too_large`; the connection is closed after it.
    pub(crate) fn too_large(limit: usize) -> Self {
        let mut e = Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!("Request body too large: the limit is {limit} bytes."),
        )
        .code("request_too_large");
        e.close = true;
        e
    }

    /// 408: the body did not arrive in time; the connection is closed after it.
    pub(crate) fn body_timeout() -> Self {
        let mut e = Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request_error",
            "The request body was not received in time.",
        )
        .code("request_timeout");
        e.close = true;
        e
    }

    /// 404 for an unknown route, as OpenAI words it.
    pub(crate) fn invalid_url(method: &str, path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("Invalid URL ({method} {path})"),
        )
    }

    /// 405 for a known route with the wrong method.
    pub(crate) fn method_not_allowed(method: &str, path: &str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            format!("Invalid method for URL ({method} {path})"),
        )
    }

    /// The JSON body.
    pub(crate) fn to_json(&self) -> String {
        let envelope = ErrorEnvelope {
            error: ErrorBody {
                message: &self.message,
                kind: self.kind,
                param: self.param.as_deref(),
                code: self.code,
            },
        };
        serde_json::to_string(&envelope).unwrap_or_else(|_| {
            r#"{"error":{"message":"error","type":"server_error","param":null,"code":null}}"#
                .to_owned()
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, json_body(self.to_json())).into_response();
        let headers = response.headers_mut();
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.close {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

/// A JSON response body with `content-type: application/json`.
pub(crate) fn json_body(json: String) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        json,
    )
        .into_response()
}

/// Serializes `value` into a JSON response (200).
pub(crate) fn json_response<T: Serialize>(value: &T) -> Response {
    match serde_json::to_string(value) {
        Ok(json) => json_body(json),
        Err(_) => ApiError::server_error().into_response(),
    }
}

/// How OpenAI names a JSON value's type in messages.
fn describe(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a decimal",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Typed access to the fields of a request object.
struct Fields<'a>(&'a Map<String, Value>);

impl<'a> Fields<'a> {
    /// The field, treating JSON `null` as absent.
    fn get(&self, name: &str) -> Option<&'a Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    fn string(&self, name: &str) -> Result<Option<&'a str>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(ApiError::invalid_type(name, "a string", v)),
        }
    }

    fn bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(ApiError::invalid_type(name, "a boolean", v)),
        }
    }

    fn integer(&self, name: &str) -> Result<Option<i64>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(v @ Value::Number(n)) => n
                .as_i64()
                .map(Some)
                .ok_or_else(|| ApiError::invalid_type(name, "an integer", v)),
            Some(v) => Err(ApiError::invalid_type(name, "an integer", v)),
        }
    }

    /// An integer in `min..=max`.
    fn integer_in(&self, name: &str, min: i64, max: i64) -> Result<Option<i64>, ApiError> {
        let Some(n) = self.integer(name)? else {
            return Ok(None);
        };
        if n < min {
            return Err(ApiError::invalid_value(
                name,
                "integer_below_min_value",
                format!(
                    "Invalid '{name}': integer below minimum value. Expected a value >= {min}, \
                     but got {n} instead."
                ),
            ));
        }
        if n > max {
            return Err(ApiError::invalid_value(
                name,
                "integer_above_max_value",
                format!(
                    "Invalid '{name}': integer above maximum value. Expected a value <= {max}, \
                     but got {n} instead."
                ),
            ));
        }
        Ok(Some(n))
    }

    /// A number in `min..=max`.
    fn number_in(&self, name: &str, min: f64, max: f64) -> Result<Option<f64>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(v @ Value::Number(n)) => {
                let x = n
                    .as_f64()
                    .ok_or_else(|| ApiError::invalid_type(name, "a number", v))?;
                if (min..=max).contains(&x) {
                    Ok(Some(x))
                } else {
                    Err(ApiError::invalid_value(
                        name,
                        "invalid_value",
                        format!(
                            "Invalid '{name}': expected a number between {min} and {max}, but got {x} instead."
                        ),
                    ))
                }
            }
            Some(v) => Err(ApiError::invalid_type(name, "a number", v)),
        }
    }

    fn required_model(&self) -> Result<String, ApiError> {
        match self.string("model")? {
            Some(m) if !m.is_empty() => Ok(m.to_owned()),
            _ => Err(ApiError::invalid_request(
                "you must provide a model parameter",
            )),
        }
    }

    /// `stream` and `stream_options.include_usage`.
    fn streaming(&self) -> Result<(bool, bool), ApiError> {
        let stream = self.bool("stream")?.unwrap_or(false);
        let include_usage = match self.get("stream_options") {
            None => false,
            Some(Value::Object(options)) => {
                if !stream {
                    return Err(ApiError::invalid_value(
                        "stream_options",
                        "invalid_value",
                        "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                    ));
                }
                match options.get("include_usage") {
                    None | Some(Value::Null) => false,
                    Some(Value::Bool(b)) => *b,
                    Some(v) => {
                        return Err(ApiError::invalid_type(
                            "stream_options.include_usage",
                            "a boolean",
                            v,
                        ));
                    }
                }
            }
            Some(v) => return Err(ApiError::invalid_type("stream_options", "an object", v)),
        };
        Ok((stream, include_usage))
    }

    /// The sampling parameters every generation endpoint accepts; validated, then ignored.
    fn sampling(&self) -> Result<(), ApiError> {
        self.number_in("temperature", 0.0, 2.0)?;
        self.number_in("top_p", 0.0, 1.0)?;
        self.number_in("presence_penalty", -2.0, 2.0)?;
        self.number_in("frequency_penalty", -2.0, 2.0)?;
        self.string("user")?;
        match self.get("stop") {
            None | Some(Value::String(_)) => {}
            Some(Value::Array(items)) if items.iter().all(Value::is_string) => {}
            Some(v) => {
                return Err(ApiError::invalid_type(
                    "stop",
                    "a string or an array of strings",
                    v,
                ));
            }
        }
        Ok(())
    }
}

/// The object at the top of a request body.
fn object(body: &Value) -> Result<Fields<'_>, ApiError> {
    match body {
        Value::Object(map) => Ok(Fields(map)),
        other => Err(ApiError::invalid_request(format!(
            "Invalid type for request body: expected an object, but got {} instead.",
            describe(other)
        ))),
    }
}

/// What the generation endpoints share.
#[derive(Debug, Clone)]
pub(crate) struct Generation {
    pub(crate) model: String,
    pub(crate) stream: bool,
    pub(crate) include_usage: bool,
    pub(crate) max_tokens: Option<u64>,
    pub(crate) n: u64,
    pub(crate) seed: Option<i64>,
    /// One entry per prompt (chat: one): canonical bytes the answer is derived from, and the
    /// prompt's token count.
    pub(crate) prompts: Vec<(Vec<u8>, u64)>,
}

impl Generation {
    pub(crate) fn prompt_tokens(&self) -> u64 {
        self.prompts.iter().map(|(_, t)| t).sum()
    }
}

fn common(fields: &Fields<'_>, max_tokens_names: &[&str]) -> Result<Generation, ApiError> {
    let model = fields.required_model()?;
    let (stream, include_usage) = fields.streaming()?;
    let mut max_tokens = None;
    for name in max_tokens_names {
        if let Some(n) = fields.integer_in(name, 1, i64::from(u32::MAX))? {
            max_tokens = Some(n as u64);
        }
    }
    let n = fields
        .integer_in("n", 1, MAX_CHOICES as i64)?
        .map_or(1, |n| n as u64);
    let seed = fields.integer("seed")?;
    fields.sampling()?;
    Ok(Generation {
        model,
        stream,
        include_usage,
        max_tokens,
        n,
        seed,
        prompts: Vec::new(),
    })
}

/// `POST /v1/chat/completions`.
pub(crate) fn parse_chat(body: &Value) -> Result<Generation, ApiError> {
    let fields = object(body)?;
    let mut generation = common(&fields, &["max_tokens", "max_completion_tokens"])?;
    let messages = match fields.get("messages") {
        None => return Err(ApiError::missing("messages")),
        Some(Value::Array(m)) if m.is_empty() => {
            return Err(ApiError::invalid_value(
                "messages",
                "empty_array",
                "Invalid 'messages': empty array. Expected an array with minimum length 1, but \
                 got an empty array instead.",
            ));
        }
        Some(Value::Array(m)) => m,
        Some(v) => return Err(ApiError::invalid_type("messages", "an array", v)),
    };
    let mut tokens = 0;
    for (i, message) in messages.iter().enumerate() {
        let at = |field: &str| format!("messages[{i}].{field}");
        let Value::Object(message) = message else {
            return Err(ApiError::invalid_type(
                &format!("messages[{i}]"),
                "an object",
                message,
            ));
        };
        let role = match message.get("role") {
            None | Some(Value::Null) => return Err(ApiError::missing(&at("role"))),
            Some(Value::String(r)) => r.as_str(),
            Some(v) => return Err(ApiError::invalid_type(&at("role"), "a string", v)),
        };
        if !matches!(
            role,
            "system" | "developer" | "user" | "assistant" | "tool" | "function"
        ) {
            return Err(ApiError::invalid_value(
                &at("role"),
                "invalid_value",
                format!(
                    "Invalid value: '{role}'. Supported values are: 'system', 'developer', \
                     'user', 'assistant', 'tool' and 'function'."
                ),
            ));
        }
        match message.get("content") {
            None | Some(Value::Null) if role == "assistant" => {}
            None | Some(Value::Null) => return Err(ApiError::missing(&at("content"))),
            Some(Value::String(text)) => tokens += crate::model::generate::count_tokens(text),
            Some(Value::Array(parts)) => {
                for (j, part) in parts.iter().enumerate() {
                    let Value::Object(part) = part else {
                        return Err(ApiError::invalid_type(
                            &at(&format!("content[{j}]")),
                            "an object",
                            part,
                        ));
                    };
                    match part.get("text") {
                        None | Some(Value::Null) => {}
                        Some(Value::String(text)) => {
                            tokens += crate::model::generate::count_tokens(text);
                        }
                        Some(v) => {
                            return Err(ApiError::invalid_type(
                                &at(&format!("content[{j}].text")),
                                "a string",
                                v,
                            ));
                        }
                    }
                }
            }
            Some(v) => {
                return Err(ApiError::invalid_type(
                    &at("content"),
                    "a string or an array of content parts",
                    v,
                ));
            }
        }
    }
    // serde_json's map is ordered by key, so this serialisation is canonical.
    let canonical = serde_json::to_vec(messages).unwrap_or_default();
    generation.prompts.push((canonical, tokens));
    Ok(generation)
}

/// `POST /v1/completions`.
pub(crate) fn parse_completion(body: &Value) -> Result<Generation, ApiError> {
    let fields = object(body)?;
    let mut generation = common(&fields, &["max_tokens"])?;
    fields.bool("echo")?;
    fields.string("suffix")?;
    let prompts = match fields.get("prompt") {
        None => return Err(ApiError::missing("prompt")),
        Some(p) => texts_or_tokens("prompt", p, MAX_EMBEDDING_INPUTS)?,
    };
    if prompts.len() as u64 * generation.n > MAX_TOTAL_CHOICES {
        return Err(ApiError::invalid_value(
            "n",
            "invalid_value",
            format!("Too many choices: prompts times n must be at most {MAX_TOTAL_CHOICES}."),
        ));
    }
    generation.prompts = prompts
        .into_iter()
        .map(|p| (p.canonical.into_bytes(), p.tokens))
        .collect();
    Ok(generation)
}

/// How embeddings are encoded in the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EncodingFormat {
    Float,
    Base64,
}

/// `POST /v1/embeddings`.
#[derive(Debug, Clone)]
pub(crate) struct EmbeddingRequest {
    pub(crate) model: String,
    pub(crate) inputs: Vec<Input>,
    pub(crate) dimensions: Option<usize>,
    pub(crate) encoding: EncodingFormat,
}

/// One prompt or embedding input: its canonical text and token count.
#[derive(Debug, Clone)]
pub(crate) struct Input {
    pub(crate) canonical: String,
    pub(crate) tokens: u64,
}

pub(crate) fn parse_embeddings(
    body: &Value,
    max_dimension: usize,
) -> Result<EmbeddingRequest, ApiError> {
    let fields = object(body)?;
    let model = fields.required_model()?;
    let inputs = match fields.get("input") {
        None => return Err(ApiError::missing("input")),
        Some(p) => texts_or_tokens("input", p, MAX_EMBEDDING_INPUTS)?,
    };
    if inputs
        .iter()
        .any(|i| i.tokens == 0 && i.canonical.trim().is_empty())
    {
        return Err(ApiError::invalid_value(
            "input",
            "invalid_value",
            "'$.input' is invalid: inputs must not be empty strings.",
        ));
    }
    let encoding = match fields.string("encoding_format")? {
        None | Some("float") => EncodingFormat::Float,
        Some("base64") => EncodingFormat::Base64,
        Some(other) => {
            return Err(ApiError::invalid_value(
                "encoding_format",
                "invalid_value",
                format!("Invalid value: '{other}'. Supported values are: 'float' and 'base64'."),
            ));
        }
    };
    let dimensions = fields
        .integer_in("dimensions", 1, max_dimension as i64)?
        .map(|d| d as usize);
    fields.string("user")?;
    Ok(EmbeddingRequest {
        model,
        inputs,
        dimensions,
        encoding,
    })
}

/// A string, an array of strings, an array of token ids or an array of such arrays.
fn texts_or_tokens(param: &str, value: &Value, max_items: usize) -> Result<Vec<Input>, ApiError> {
    let expected =
        "a string, an array of strings, an array of integers or an array of arrays of integers";
    let tokens = |items: &[Value], at: &str| -> Result<Input, ApiError> {
        let mut ids = Vec::with_capacity(items.len());
        for item in items {
            match item.as_u64() {
                Some(id) => ids.push(id.to_string()),
                None => return Err(ApiError::invalid_type(at, "an integer token id", item)),
            }
        }
        Ok(Input {
            canonical: ids.join(" "),
            tokens: ids.len() as u64,
        })
    };
    let text = |s: &str| Input {
        canonical: s.to_owned(),
        tokens: crate::model::generate::count_tokens(s),
    };
    let inputs = match value {
        Value::String(s) => vec![text(s)],
        Value::Array(items) if items.is_empty() => {
            return Err(ApiError::invalid_value(
                param,
                "empty_array",
                format!("Invalid '{param}': empty array. Expected an array with minimum length 1."),
            ));
        }
        Value::Array(items) if items.iter().all(Value::is_string) => items
            .iter()
            .map(|s| text(s.as_str().unwrap_or_default()))
            .collect(),
        Value::Array(items) if items.iter().all(Value::is_number) => vec![tokens(items, param)?],
        Value::Array(items) if items.iter().all(Value::is_array) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let inner = item.as_array().map(Vec::as_slice).unwrap_or_default();
                if inner.is_empty() {
                    return Err(ApiError::invalid_value(
                        &format!("{param}[{i}]"),
                        "empty_array",
                        format!("Invalid '{param}[{i}]': empty array."),
                    ));
                }
                out.push(tokens(inner, &format!("{param}[{i}]"))?);
            }
            out
        }
        other => return Err(ApiError::invalid_type(param, expected, other)),
    };
    if inputs.len() > max_items {
        return Err(ApiError::invalid_value(
            param,
            "array_above_max_length",
            format!(
                "Invalid '{param}': array too long. Expected an array with maximum length {max_items}, but got an array with length {} instead.",
                inputs.len()
            ),
        ));
    }
    Ok(inputs)
}

// ---------------------------------------------------------------------------------------------
// Responses.

/// Serializes as JSON `null` whatever the value (for always-null fields such as `logprobs`).
fn null<T, S: Serializer>(_: &T, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_none()
}

/// `usage`.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Usage {
    pub(crate) prompt_tokens: u64,
    pub(crate) completion_tokens: u64,
    pub(crate) total_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_tokens_details: Option<PromptTokensDetails>,
    #[serde(skip_serializing_if = "Option::is_none")]
    completion_tokens_details: Option<CompletionTokensDetails>,
}

#[derive(Debug, Clone, Copy, Serialize)]
struct PromptTokensDetails {
    cached_tokens: u64,
    audio_tokens: u64,
}

#[derive(Debug, Clone, Copy, Serialize)]
struct CompletionTokensDetails {
    reasoning_tokens: u64,
    audio_tokens: u64,
    accepted_prediction_tokens: u64,
    rejected_prediction_tokens: u64,
}

impl Usage {
    /// Usage as `/v1/chat/completions` reports it (with the zeroed details objects).
    pub(crate) fn chat(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Self {
            prompt_tokens_details: Some(PromptTokensDetails {
                cached_tokens: 0,
                audio_tokens: 0,
            }),
            completion_tokens_details: Some(CompletionTokensDetails {
                reasoning_tokens: 0,
                audio_tokens: 0,
                accepted_prediction_tokens: 0,
                rejected_prediction_tokens: 0,
            }),
            ..Self::text(prompt_tokens, completion_tokens)
        }
    }

    /// Usage as `/v1/completions` reports it.
    pub(crate) fn text(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            prompt_tokens_details: None,
            completion_tokens_details: None,
        }
    }
}

/// The fields every completion object and chunk starts with.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Head {
    pub(crate) id: String,
    pub(crate) object: &'static str,
    pub(crate) created: u64,
    pub(crate) model: String,
}

/// `chat.completion`.
#[derive(Debug, Serialize)]
pub(crate) struct ChatCompletion<'a> {
    #[serde(flatten)]
    pub(crate) head: &'a Head,
    pub(crate) choices: Vec<ChatChoice>,
    pub(crate) usage: Usage,
    pub(crate) service_tier: &'static str,
    pub(crate) system_fingerprint: &'a str,
}

/// One choice of a `chat.completion`.
#[derive(Debug, Serialize)]
pub(crate) struct ChatChoice {
    pub(crate) index: u64,
    pub(crate) message: AssistantMessage,
    #[serde(serialize_with = "null")]
    pub(crate) logprobs: (),
    pub(crate) finish_reason: &'static str,
}

/// The generated message.
#[derive(Debug, Serialize)]
pub(crate) struct AssistantMessage {
    pub(crate) role: &'static str,
    pub(crate) content: String,
    #[serde(serialize_with = "null")]
    pub(crate) refusal: (),
    pub(crate) annotations: [(); 0],
}

/// `chat.completion.chunk`.
#[derive(Debug, Serialize)]
pub(crate) struct ChatChunk<'a> {
    #[serde(flatten)]
    pub(crate) head: &'a Head,
    pub(crate) service_tier: &'static str,
    pub(crate) system_fingerprint: &'a str,
    pub(crate) choices: Vec<ChatChunkChoice>,
    /// Absent unless `include_usage`; then `null` except on the last chunk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) usage: Option<Option<Usage>>,
}

/// One choice of a chat chunk.
#[derive(Debug, Serialize)]
pub(crate) struct ChatChunkChoice {
    pub(crate) index: u64,
    pub(crate) delta: Delta,
    #[serde(serialize_with = "null")]
    pub(crate) logprobs: (),
    pub(crate) finish_reason: Option<&'static str>,
}

/// A chunk's `delta`: `{"role":"assistant","content":"","refusal":null}` first, then
/// `{"content":"..."}`, then `{}` with the finish reason.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Delta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) content: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not", serialize_with = "null")]
    pub(crate) refusal: bool,
}

/// `text_completion` (also each chunk of a completions stream).
#[derive(Debug, Serialize)]
pub(crate) struct TextCompletion<'a> {
    #[serde(flatten)]
    pub(crate) head: &'a Head,
    pub(crate) choices: Vec<TextChoice>,
    pub(crate) system_fingerprint: &'a str,
    /// Always present on a whole completion; on chunks as for [`ChatChunk::usage`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) usage: Option<Option<Usage>>,
}

/// One choice of a text completion.
#[derive(Debug, Serialize)]
pub(crate) struct TextChoice {
    pub(crate) text: String,
    pub(crate) index: u64,
    #[serde(serialize_with = "null")]
    pub(crate) logprobs: (),
    pub(crate) finish_reason: Option<&'static str>,
}

/// `list` of `embedding`.
#[derive(Debug, Serialize)]
pub(crate) struct EmbeddingList<'a> {
    pub(crate) object: &'static str,
    pub(crate) data: Vec<Embedding>,
    pub(crate) model: &'a str,
    pub(crate) usage: EmbeddingUsage,
}

/// One embedding.
#[derive(Debug, Serialize)]
pub(crate) struct Embedding {
    pub(crate) object: &'static str,
    pub(crate) index: u64,
    pub(crate) embedding: EmbeddingValue,
}

/// A float array, or base64 of little-endian `f32`s.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub(crate) enum EmbeddingValue {
    Float(Vec<f32>),
    Base64(String),
}

/// Embeddings' `usage`.
#[derive(Debug, Serialize)]
pub(crate) struct EmbeddingUsage {
    pub(crate) prompt_tokens: u64,
    pub(crate) total_tokens: u64,
}

/// A `model` object.
#[derive(Debug, Serialize)]
pub(crate) struct ModelObject<'a> {
    pub(crate) id: &'a str,
    pub(crate) object: &'static str,
    pub(crate) created: u64,
    pub(crate) owned_by: &'static str,
}

/// `list` of `model`.
#[derive(Debug, Serialize)]
pub(crate) struct ModelList<'a> {
    pub(crate) object: &'static str,
    pub(crate) data: Vec<ModelObject<'a>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(r: Result<Generation, ApiError>) -> ApiError {
        r.expect_err("should be rejected")
    }

    #[test]
    fn chat_requests_are_validated_like_openai() {
        let ok = parse_chat(
            &json!({"model":"m","messages":[{"role":"user","content":"a b c"}],
            "max_tokens":3,"stream":true,"stream_options":{"include_usage":true}}),
        )
        .unwrap();
        assert_eq!(ok.prompt_tokens(), 3);
        assert_eq!(ok.max_tokens, Some(3));
        assert!(ok.stream && ok.include_usage);

        let e = err(parse_chat(
            &json!({"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":"5"}),
        ));
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.param.as_deref(), Some("max_tokens"));
        assert_eq!(e.code, Some("invalid_type"));
        assert_eq!(
            e.message,
            "Invalid type for 'max_tokens': expected an integer, but got a string instead."
        );

        let e = err(parse_chat(&json!({"model":"m"})));
        assert_eq!(e.code, Some("missing_required_parameter"));
        assert_eq!(e.param.as_deref(), Some("messages"));

        let e = err(parse_chat(&json!({"messages":[]})));
        assert_eq!(e.message, "you must provide a model parameter");

        let e = err(parse_chat(
            &json!({"model":"m","messages":[{"role":"user","content":7}]}),
        ));
        assert_eq!(e.param.as_deref(), Some("messages[0].content"));

        let e = err(parse_chat(
            &json!({"model":"m","messages":[{"role":"user","content":"x"}],
            "stream_options":{"include_usage":true}}),
        ));
        assert_eq!(e.param.as_deref(), Some("stream_options"));

        let e = err(parse_chat(&json!([1, 2])));
        assert!(e.message.contains("expected an object"), "{}", e.message);
    }

    #[test]
    fn error_bodies_have_all_four_fields() {
        let body: Value = serde_json::from_str(&ApiError::model_not_found("x").to_json()).unwrap();
        assert_eq!(
            body,
            json!({"error":{"message":"The model `x` does not exist or you do not have access to it.",
                "type":"invalid_request_error","param":null,"code":"model_not_found"}})
        );
    }

    #[test]
    fn embedding_inputs_accept_every_openai_shape() {
        for (input, count) in [
            (json!("a b"), 1),
            (json!(["a", "b", "c"]), 3),
            (json!([1, 2, 3]), 1),
            (json!([[1, 2], [3]]), 2),
        ] {
            let r = parse_embeddings(&json!({"model":"m","input":input}), 8).unwrap();
            assert_eq!(r.inputs.len(), count);
        }
        for bad in [json!(""), json!([]), json!(5), json!([["a"]]), json!([[]])] {
            assert!(parse_embeddings(&json!({"model":"m","input":bad}), 8).is_err());
        }
        assert!(parse_embeddings(&json!({"model":"m","input":"a","dimensions":9}), 8).is_err());
    }

    #[test]
    fn chunks_serialize_as_openai_sends_them() {
        let head = Head {
            id: "chatcmpl-1".into(),
            object: "chat.completion.chunk",
            created: 1,
            model: "m".into(),
        };
        let chunk = ChatChunk {
            head: &head,
            service_tier: "default",
            system_fingerprint: "fp",
            choices: vec![ChatChunkChoice {
                index: 0,
                delta: Delta {
                    role: Some("assistant"),
                    content: Some(String::new()),
                    refusal: true,
                },
                logprobs: (),
                finish_reason: None,
            }],
            usage: Some(None),
        };
        assert_eq!(
            serde_json::to_string(&chunk).unwrap(),
            r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","service_tier":"default","system_fingerprint":"fp","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}"#
        );
    }
}
