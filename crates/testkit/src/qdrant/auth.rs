//! The API-key check both protocols share, worded and exempted as in Qdrant 1.18.

/// The REST paths Qdrant serves without a key: `/` and `/healthz` exactly, anything under
/// `/readyz` and `/livez`. `/metrics` is not among them.
pub(crate) fn rest_path_is_open(path: &str) -> bool {
    path == "/" || path == "/healthz" || path.starts_with("/readyz") || path.starts_with("/livez")
}

/// The gRPC methods Qdrant serves without a key: the health checks.
pub(crate) fn grpc_path_is_open(path: &str) -> bool {
    path == "/qdrant.Qdrant/HealthCheck" || path == "/grpc.health.v1.Health/Check"
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuthError {
    /// Neither an `api-key` header nor an `Authorization: Bearer` token.
    Missing,
    /// A key or token that is not the configured one.
    Invalid,
}

impl AuthError {
    /// Qdrant's text: the REST 401 body and the gRPC `UNAUTHENTICATED` message.
    pub(crate) fn message(self) -> &'static str {
        match self {
            Self::Missing => "Must provide an API key or an Authorization bearer token",
            Self::Invalid => "Invalid API key or JWT",
        }
    }
}

/// The configured key.
#[derive(Clone)]
pub(crate) struct ApiKey(String);

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl ApiKey {
    pub(crate) fn new(key: String) -> Self {
        Self(key)
    }

    /// Checks a request's `api-key` header, else its `authorization` header (`Bearer TOKEN`),
    /// the way Qdrant does: a present `api-key` header is the one that counts.
    pub(crate) fn check(
        &self,
        api_key: Option<&str>,
        authorization: Option<&str>,
    ) -> Result<(), AuthError> {
        let given = api_key
            .or_else(|| authorization.and_then(|v| v.strip_prefix("Bearer ")))
            .ok_or(AuthError::Missing)?;
        if constant_time_eq(given.as_bytes(), self.0.as_bytes()) {
            Ok(())
        } else {
            Err(AuthError::Invalid)
        }
    }
}

/// Compares without stopping at the first difference (the length still shows).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_header_then_bearer() {
        let key = ApiKey::new("s3cret".into());
        assert_eq!(key.check(Some("s3cret"), None), Ok(()));
        assert_eq!(key.check(None, Some("Bearer s3cret")), Ok(()));
        assert_eq!(key.check(None, None), Err(AuthError::Missing));
        assert_eq!(
            key.check(None, Some("Basic s3cret")),
            Err(AuthError::Missing)
        );
        assert_eq!(
            key.check(Some("nope"), Some("Bearer s3cret")),
            Err(AuthError::Invalid)
        );
        assert_eq!(key.check(Some("s3cre"), None), Err(AuthError::Invalid));
        assert!(!format!("{key:?}").contains("s3cret"));
    }

    #[test]
    fn open_paths() {
        for open in ["/", "/healthz", "/readyz", "/livez"] {
            assert!(rest_path_is_open(open), "{open}");
        }
        for closed in ["/metrics", "/collections", "/healthz/x", "/telemetry"] {
            assert!(!rest_path_is_open(closed), "{closed}");
        }
        assert!(grpc_path_is_open("/qdrant.Qdrant/HealthCheck"));
        assert!(!grpc_path_is_open("/qdrant.Collections/List"));
    }
}
