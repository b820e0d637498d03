//! # Errors
//!
//! Every connector and engine error is an [`Error`]: a [`ErrorKind`] that decides what happens next (see
//! [`ErrorKind::retry_policy`]), a message a user can act on, and the underlying cause as its `source()`.
//! Messages never contain passwords or row values.

use std::time::Duration;

/// Boxed underlying cause.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What kind of failure this is; decides the retry policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The server could not be reached or the connection dropped. Transient.
    Unreachable,
    /// The server rejected the user name or password.
    AuthFailed,
    /// The user lacks a privilege.
    PermissionDenied,
    /// The server is not set up for this use (binlog off, wrong format, ...).
    SourceConfig,
    /// A named object (table, connection, pipeline) does not exist.
    NotFound,
    /// An object with that name exists already.
    AlreadyExists,
    /// The request or configuration is invalid.
    InvalidInput,
    /// A type or value cannot be carried.
    Unsupported,
    /// The target exists with a shape that does not fit.
    Incompatible,
    /// The source's log no longer holds the position to resume from.
    PositionLost,
    /// A bug or an unexpected answer.
    Internal,
}

/// What the engine does after an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryPolicy {
    /// Reconnect and resume from the last checkpoint after a back-off that grows from `initial` to `max`.
    Retry {
        /// First back-off.
        initial: Duration,
        /// Largest back-off.
        max: Duration,
    },
    /// Stop the pipeline and report the error; a user must act.
    Stop,
}

impl ErrorKind {
    /// The single place that classifies errors into transient and definite.
    pub fn retry_policy(self) -> RetryPolicy {
        match self {
            ErrorKind::Unreachable => {
                RetryPolicy::Retry { initial: Duration::from_millis(200), max: Duration::from_secs(30) }
            }
            _ => RetryPolicy::Stop,
        }
    }

    /// The HTTP status an API answers with for this kind.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::NotFound => 404,
            ErrorKind::AlreadyExists => 409,
            ErrorKind::InvalidInput | ErrorKind::Unsupported | ErrorKind::Incompatible => 400,
            ErrorKind::AuthFailed
            | ErrorKind::PermissionDenied
            | ErrorKind::SourceConfig
            | ErrorKind::Unreachable
            | ErrorKind::PositionLost => 422,
            ErrorKind::Internal => 500,
        }
    }
}

/// An error with a kind, a user-facing message and an optional cause.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    /// The kind.
    pub kind: ErrorKind,
    /// What happened, to which object, and what to do next.
    pub message: String,
    /// The underlying cause.
    #[source]
    pub cause: Option<Cause>,
}

impl Error {
    /// An error without a cause.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error { kind, message: message.into(), cause: None }
    }

    /// An error with a cause.
    pub fn with_cause(kind: ErrorKind, message: impl Into<String>, cause: impl Into<Cause>) -> Self {
        Error { kind, message: message.into(), cause: Some(cause.into()) }
    }

    /// Shorthand for [`ErrorKind::InvalidInput`].
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidInput, message)
    }

    /// Shorthand for [`ErrorKind::Internal`].
    pub fn internal(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Internal, message)
    }

    /// The message followed by its chain of causes, for logs and stats.
    pub fn report(&self) -> String {
        let mut out = self.message.clone();
        let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(self);
        while let Some(c) = cur {
            out.push_str(": ");
            out.push_str(&c.to_string());
            cur = c.source();
        }
        out
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unreachable_is_retried() {
        assert!(matches!(ErrorKind::Unreachable.retry_policy(), RetryPolicy::Retry { .. }));
        for k in
            [ErrorKind::AuthFailed, ErrorKind::SourceConfig, ErrorKind::Incompatible, ErrorKind::Internal]
        {
            assert_eq!(k.retry_policy(), RetryPolicy::Stop);
        }
    }

    #[test]
    fn report_walks_the_cause_chain() {
        let e =
            Error::with_cause(ErrorKind::Unreachable, "cannot reach db", std::io::Error::other("refused"));
        assert_eq!(e.to_string(), "cannot reach db");
        assert_eq!(e.report(), "cannot reach db: refused");
    }
}
