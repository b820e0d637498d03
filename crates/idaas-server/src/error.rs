//! # Errors
//!
//! Every failed request answers with an [`ErrorBody`]: `{"error": {"kind": "not_found", "message": "..."}}`
//! and the status [`ErrorKind::http_status`] gives for the kind.
//!
//! - Engine errors keep their kind and message (they are written for users and never hold secrets).
//! - Rejected requests (bad JSON, unknown or missing field, wrong content type) are `400 invalid_input`
//!   with a message naming the field. Request bodies can hold a password, so values quoted by the JSON decoder are
//!   removed from the message (see [`scrub_values`]).
//! - Server errors (5xx) never show internals: the client sees kind `internal` and
//!   [`INTERNAL_MESSAGE`]; the full error chain goes to the server log.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use idaas_core::ErrorKind;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The message every server error (5xx) answers with.
pub const INTERNAL_MESSAGE: &str = "internal error; see the server log";

/// The JSON body of every error answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The inside of an [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// The error kind, e.g. `not_found`.
    pub kind: ErrorKind,
    /// What happened, to which object, and what to do next.
    pub message: String,
}

/// An error answer of the API. Build it from an [`idaas_core::Error`] with `?`, or from an axum rejection.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: ErrorKind,
    message: String,
}

impl ApiError {
    /// An error of `kind` with the status [`ErrorKind::http_status`] gives. A server error's message goes to
    /// the log and the client sees [`INTERNAL_MESSAGE`].
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        let status = StatusCode::from_u16(kind.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Self::with_status(status, kind, message.into())
    }

    /// An `invalid_input` error (400).
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput, message)
    }

    pub(crate) fn with_status(status: StatusCode, kind: ErrorKind, message: String) -> Self {
        if status.is_server_error() {
            tracing::error!(status = status.as_u16(), kind = ?kind, error = %message, "request failed");
            return ApiError { status, kind: ErrorKind::Internal, message: INTERNAL_MESSAGE.to_owned() };
        }
        tracing::debug!(status = status.as_u16(), kind = ?kind, error = %message, "request refused");
        ApiError { status, kind, message }
    }

    /// The HTTP status of the answer.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The body of the answer.
    pub fn body(&self) -> ErrorBody {
        ErrorBody { error: ErrorDetail { kind: self.kind, message: self.message.clone() } }
    }
}

impl From<idaas_core::Error> for ApiError {
    fn from(err: idaas_core::Error) -> Self {
        // `report()` carries the cause chain; it only ever reaches the log (server errors) or is dropped.
        let status =
            StatusCode::from_u16(err.kind.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let message = if status.is_server_error() { err.report() } else { err.message };
        Self::with_status(status, err.kind, message)
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let decoder_message = || {
            let err: &dyn std::error::Error = &rejection;
            err.source().map(|e| scrub_values(&e.to_string())).unwrap_or_default()
        };
        let message = match &rejection {
            JsonRejection::JsonDataError(_) => format!("invalid request body: {}", decoder_message()),
            JsonRejection::JsonSyntaxError(_) => {
                format!("the request body is not valid JSON: {}", decoder_message())
            }
            JsonRejection::MissingJsonContentType(_) => {
                "expected a JSON request body with the header `Content-Type: application/json`".to_owned()
            }
            _ if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return ApiError::with_status(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    ErrorKind::InvalidInput,
                    "the request body is too large".to_owned(),
                );
            }
            _ => "the request body could not be read".to_owned(),
        };
        ApiError::invalid_input(message)
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        if rejection.status().is_server_error() {
            return ApiError::new(ErrorKind::Internal, rejection.body_text());
        }
        ApiError::invalid_input("invalid path parameter: it must be valid UTF-8 text")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

/// Like [`axum::Json`], but a rejected body becomes an [`ApiError`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let Json(value) = Json::<T>::from_request(req, state).await?;
        Ok(ApiJson(value))
    }
}

/// Like [`axum::extract::Path`], but a rejected parameter becomes an [`ApiError`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(value) = Path::<T>::from_request_parts(parts, state).await?;
        Ok(ApiPath(value))
    }
}

/// Removes the request values a JSON decoder message quotes, keeping field names and what was expected.
///
/// serde writes a rejected value as `string "..."`, `integer `5``, `floating point `1.5``, `boolean `true``,
/// `character `c`` or `unknown variant `...``; those values are dropped (`invalid type: string, expected
/// u16`). Back-quoted field names (`missing field `host``, `unknown field `passwd``) and the expected lists
/// stay, since they name the schema, not the request's data.
pub fn scrub_values(message: &str) -> String {
    const VALUE_WORDS: [&str; 5] = ["integer", "point", "boolean", "character", "variant"];
    let mut out = String::with_capacity(message.len());
    let mut chars = message.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                // A Debug-quoted string value: skip to the closing unescaped quote.
                let mut escaped = false;
                for c in chars.by_ref() {
                    match c {
                        _ if escaped => escaped = false,
                        '\\' => escaped = true,
                        '"' => break,
                        _ => {}
                    }
                }
                trim_trailing_space(&mut out);
            }
            '`' if out.strip_suffix(' ').is_some_and(|s| VALUE_WORDS.iter().any(|w| s.ends_with(w))) => {
                for c in chars.by_ref() {
                    if c == '`' {
                        break;
                    }
                }
                trim_trailing_space(&mut out);
            }
            _ => out.push(c),
        }
    }
    out
}

fn trim_trailing_space(out: &mut String) {
    if out.ends_with(' ') {
        out.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use idaas_engine::{ConnectionSpec, PipelineSpec};

    async fn answer(err: ApiError) -> (u16, serde_json::Value) {
        let response = err.into_response();
        let status = response.status().as_u16();
        assert_eq!(response.headers()["content-type"], "application/json");
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    fn rejection_message<T: DeserializeOwned>(body: &str) -> ApiError {
        match Json::<T>::from_bytes(body.as_bytes()) {
            Ok(_) => panic!("body was accepted: {body}"),
            Err(rejection) => ApiError::from(rejection),
        }
    }

    #[tokio::test]
    async fn every_kind_maps_to_its_status_and_body() {
        let cases = [
            (ErrorKind::Unreachable, 422, "unreachable"),
            (ErrorKind::AuthFailed, 422, "auth_failed"),
            (ErrorKind::PermissionDenied, 422, "permission_denied"),
            (ErrorKind::SourceConfig, 422, "source_config"),
            (ErrorKind::NotFound, 404, "not_found"),
            (ErrorKind::AlreadyExists, 409, "already_exists"),
            (ErrorKind::InvalidInput, 400, "invalid_input"),
            (ErrorKind::Unsupported, 400, "unsupported"),
            (ErrorKind::Incompatible, 400, "incompatible"),
            (ErrorKind::PositionLost, 422, "position_lost"),
        ];
        for (kind, status, name) in cases {
            let err = idaas_core::Error::new(kind, format!("message of {name}"));
            let (got_status, body) = answer(err.into()).await;
            assert_eq!(got_status, status, "{name}");
            assert_eq!(
                body,
                serde_json::json!({"error": {"kind": name, "message": format!("message of {name}")}})
            );
        }
    }

    #[tokio::test]
    async fn server_errors_hide_their_message_and_cause() {
        let err = idaas_core::Error::with_cause(
            ErrorKind::Internal,
            "SELECT * FROM secrets failed",
            std::io::Error::other("disk path /var/x"),
        );
        let (status, body) = answer(err.into()).await;
        assert_eq!(status, 500);
        assert_eq!(body, serde_json::json!({"error": {"kind": "internal", "message": INTERNAL_MESSAGE}}));
        let (status, body) = answer(ApiError::new(ErrorKind::Internal, "boom")).await;
        assert_eq!(status, 500);
        assert_eq!(body["error"]["message"], INTERNAL_MESSAGE);
    }

    #[test]
    fn scrub_drops_quoted_values_and_keeps_field_names() {
        let cases = [
            (
                r#"password: invalid type: integer `12345`, expected a string at line 1 column 20"#,
                "password: invalid type: integer, expected a string at line 1 column 20",
            ),
            (
                r#"port: invalid type: string "s3cr\"et", expected u16 at line 1 column 9"#,
                "port: invalid type: string, expected u16 at line 1 column 9",
            ),
            (
                "port: invalid value: integer `70000`, expected u16",
                "port: invalid value: integer, expected u16",
            ),
            (
                "x: invalid type: floating point `1.5`, expected u16",
                "x: invalid type: floating point, expected u16",
            ),
            (
                "x: invalid type: boolean `true`, expected a string",
                "x: invalid type: boolean, expected a string",
            ),
            ("x: invalid type: character `c`, expected u16", "x: invalid type: character, expected u16"),
            (
                "mode: unknown variant `hunter2`, expected one of `initial_and_cdc`, `initial`, `cdc`",
                "mode: unknown variant, expected one of `initial_and_cdc`, `initial`, `cdc`",
            ),
            ("missing field `host` at line 1 column 2", "missing field `host` at line 1 column 2"),
            (
                "unknown field `passwd`, expected one of `alias`, `type`",
                "unknown field `passwd`, expected one of `alias`, `type`",
            ),
            ("expected `,` or `}` at line 1 column 30", "expected `,` or `}` at line 1 column 30"),
        ];
        for (input, expected) in cases {
            assert_eq!(scrub_values(input), expected, "{input}");
        }
    }

    #[tokio::test]
    async fn rejected_bodies_name_the_field_and_never_echo_values() {
        let wrong_type = rejection_message::<ConnectionSpec>(
            r#"{"alias": "a", "host": "h", "user": "u", "password": 987654321}"#,
        );
        let (status, body) = answer(wrong_type).await;
        assert_eq!(status, 400);
        assert_eq!(body["error"]["kind"], "invalid_input");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.starts_with("invalid request body: password: invalid type: integer,"), "{message}");
        assert!(!message.contains("987654321"), "{message}");

        let wrong_string = rejection_message::<ConnectionSpec>(
            r#"{"alias": "a", "host": "h", "user": "u", "password": "x", "port": "topsecret"}"#,
        );
        let message = wrong_string.body().error.message;
        assert!(message.contains("port: invalid type: string, expected u16"), "{message}");
        assert!(!message.contains("topsecret"), "{message}");

        let missing =
            rejection_message::<ConnectionSpec>(r#"{"alias": "a", "user": "u", "password": "pw1"}"#);
        let message = missing.body().error.message;
        assert!(message.contains("missing field `host`"), "{message}");
        assert!(!message.contains("pw1"), "{message}");

        let unknown = rejection_message::<ConnectionSpec>(
            r#"{"alias": "a", "host": "h", "user": "u", "passwd": "pw2"}"#,
        );
        let message = unknown.body().error.message;
        assert!(message.contains("unknown field `passwd`"), "{message}");
        assert!(!message.contains("pw2"), "{message}");

        let variant = rejection_message::<PipelineSpec>(
            r#"{"alias": "p", "source": {"connection": "a", "table": "t"},
                "target": {"connection": "b", "table": "t"}, "mode": "pw3"}"#,
        );
        let message = variant.body().error.message;
        assert!(message.contains("mode: unknown variant, expected one of"), "{message}");
        assert!(!message.contains("pw3"), "{message}");

        let syntax = rejection_message::<ConnectionSpec>(r#"{"alias": "a", "password": "pw4""#);
        let message = syntax.body().error.message;
        assert!(message.starts_with("the request body is not valid JSON"), "{message}");
        assert!(!message.contains("pw4"), "{message}");
        assert_eq!(syntax.status(), StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn wrong_content_type_is_invalid_input() {
        let request = Request::builder()
            .method("POST")
            .uri("/api/v1/connections")
            .header("content-type", "text/plain")
            .body(axum::body::Body::from(r#"{"alias": "a"}"#))
            .unwrap();
        let err = ApiJson::<ConnectionSpec>::from_request(request, &()).await.unwrap_err();
        let (status, body) = answer(err).await;
        assert_eq!(status, 400);
        assert_eq!(body["error"]["kind"], "invalid_input");
        assert!(body["error"]["message"].as_str().unwrap().contains("Content-Type: application/json"));
    }
}
