//! The HTTP server of iDaaS: the Open API (`/api/v1/...`) over the [`Engine`], its OpenAPI document
//! (`/openapi.json`), Prometheus metrics (`/metrics`) and a liveness probe (`/healthz`).
//!
//! Requests and answers are JSON; the bodies are the engine's API types ([`idaas_engine::api`]) plus
//! [`CheckResult`], [`Health`] and, for every error, [`ErrorBody`] (see [`error`]).
#![deny(rustdoc::broken_intra_doc_links)]
#![warn(missing_docs)]

pub mod error;
mod handlers;
pub mod metrics;
mod middleware;
pub mod model;
pub mod openapi;
mod routes;

pub use error::{ApiError, ErrorBody, ErrorDetail};
pub use model::{CheckResult, Health};

use axum::Router;
use idaas_engine::Engine;
use std::future::Future;
use std::sync::Arc;

/// The router of the whole server over `engine`.
pub fn app(engine: Arc<Engine>) -> Router {
    routes::router()
        .fallback(handlers::no_route)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(axum::middleware::from_fn(middleware::guard))
        .with_state(engine)
}

/// Serves [`app`] on `listener` until `shutdown` completes, then waits for the requests in flight.
/// Stopping the engine's pipelines is the caller's job (see [`Engine::shutdown`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    engine: Arc<Engine>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(engine)).with_graceful_shutdown(shutdown).await
}
