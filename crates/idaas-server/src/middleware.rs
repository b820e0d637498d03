//! The layer every request passes through: a debug log line per request, and a 500 answer with the usual
//! error body when a handler panics.

use crate::error::ApiError;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use idaas_core::ErrorKind;
use std::time::Instant;

/// Runs the request in its own task. A panic then becomes a 500 answer instead of a dropped connection, and
/// an engine operation runs to its end even when the client disconnects halfway (a create or a stop is never
/// cancelled between two of its steps).
pub(crate) async fn guard(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let started = Instant::now();
    let response = match tokio::spawn(next.run(req)).await {
        Ok(response) => response,
        Err(join_error) => {
            let reason = if join_error.is_panic() { "handler panicked" } else { "handler was cancelled" };
            ApiError::new(ErrorKind::Internal, format!("{method} {path}: {reason}")).into_response()
        }
    };
    tracing::debug!(
        %method,
        path,
        status = response.status().as_u16(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "request"
    );
    response
}
