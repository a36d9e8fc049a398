//! The one error type every launcher returns.

use std::borrow::Cow;
use std::io;
use std::time::Duration;

/// A launcher could not do what was asked: which action, on which service, and why.
///
/// The message reads as a lowercase fragment after "failed to", for example
/// `start postgres: initdb failed (exit status: 1): ...` or
/// `start prometheus: binary `prometheus` not found (install the Debian package `prometheus`)`.
/// It never contains a password.
#[derive(Debug, thiserror::Error)]
#[error("{action} {service}: {kind}")]
pub struct TestkitError {
    action: Cow<'static, str>,
    service: &'static str,
    #[source]
    kind: ErrorKind,
}

impl TestkitError {
    pub(crate) fn new(
        action: impl Into<Cow<'static, str>>,
        service: &'static str,
        kind: ErrorKind,
    ) -> Self {
        Self {
            action: action.into(),
            service,
            kind,
        }
    }

    /// The service the launcher was handling: `postgres`, `prometheus`, `nginx`, ...
    pub fn service(&self) -> &str {
        self.service
    }

    /// What went wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }
}

/// Why a launcher failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The program is not installed.
    #[error("binary `{binary}` not found (install the Debian package `{package}`)")]
    BinaryNotFound {
        /// The program that was looked for, e.g. `initdb`.
        binary: String,
        /// The Debian package that provides it.
        package: String,
    },
    /// A file-system or process operation failed.
    #[error("{what}: {error}")]
    Io {
        /// What was being done, e.g. `create temp dir`.
        what: String,
        /// The underlying error.
        #[source]
        error: io::Error,
    },
    /// A helper program (initdb, psql, ...) exited unsuccessfully.
    #[error("{program} failed ({status}): {output}")]
    CommandFailed {
        /// The program, e.g. `initdb`.
        program: String,
        /// Its exit status.
        status: String,
        /// The tail of its stderr and stdout.
        output: String,
    },
    /// A helper program did not finish in time (it was killed).
    #[error("{program} did not finish within {after:?}")]
    CommandTimedOut {
        /// The program, e.g. `psql`.
        program: String,
        /// How long it was given.
        after: Duration,
    },
    /// The server exited while starting.
    #[error("server exited during start-up ({status}); log tail:\n{log_tail}")]
    Exited {
        /// Its exit status.
        status: String,
        /// The last lines of its log.
        log_tail: String,
    },
    /// The server did not become ready in time (it was stopped).
    #[error("not ready after {waited:?}; log tail:\n{log_tail}")]
    NotReady {
        /// How long the launcher waited.
        waited: Duration,
        /// The last lines of its log.
        log_tail: String,
    },
    /// Every free port the launcher found was taken before the server could bind it.
    #[error("port already in use on all {attempts} attempts; log tail:\n{log_tail}")]
    PortInUse {
        /// How many ports were tried.
        attempts: u32,
        /// The last lines of the last attempt's log.
        log_tail: String,
    },
    /// A system user the launcher needs does not exist.
    #[error("system user `{user}` not found in /etc/passwd ({why})")]
    UserNotFound {
        /// The user name, e.g. `postgres`.
        user: String,
        /// Why it is needed.
        why: String,
    },
    /// An argument given to a builder or method is not usable.
    #[error("invalid {what}: {why}")]
    InvalidInput {
        /// The argument, e.g. `rule file name "../x"`.
        what: String,
        /// Why it was refused.
        why: String,
    },
}

impl ErrorKind {
    pub(crate) fn io(what: impl Into<String>, error: io::Error) -> Self {
        Self::Io {
            what: what.into(),
            error,
        }
    }

    pub(crate) fn invalid(what: impl Into<String>, why: impl Into<String>) -> Self {
        Self::InvalidInput {
            what: what.into(),
            why: why.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_names_action_service_and_cause() {
        let err = TestkitError::new(
            "start",
            "prometheus",
            ErrorKind::BinaryNotFound {
                binary: "prometheus".into(),
                package: "prometheus".into(),
            },
        );
        assert_eq!(
            err.to_string(),
            "start prometheus: binary `prometheus` not found (install the Debian package `prometheus`)"
        );
        assert_eq!(err.service(), "prometheus");
        assert!(std::error::Error::source(&err).is_some());
    }
}
