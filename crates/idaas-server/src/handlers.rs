//! The request handlers: each one decodes its input, makes one engine call and encodes the answer.
//! Routing and documentation of these handlers live in [`crate::routes`].

use crate::error::{ApiError, ApiJson, ApiPath};
use crate::metrics;
use crate::model::{CheckResult, Health};
use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::IntoResponse;
use idaas_core::ErrorKind;
use idaas_engine::browse::{MAX_PEEK_ROWS, RowCount, TableRows};
use idaas_engine::{
    ConnectionInfo, ConnectionSpec, Engine, PipelineInfo, PipelineSpec, PipelineStats, TableRef, TableSchema,
};
use std::sync::Arc;

type Shared = State<Arc<Engine>>;
type ApiResult<T> = Result<Json<T>, ApiError>;

pub(crate) async fn list_connections(State(engine): Shared) -> ApiResult<Vec<ConnectionInfo>> {
    Ok(Json(engine.list_connections()?))
}

pub(crate) async fn create_connection(
    State(engine): Shared,
    ApiJson(spec): ApiJson<ConnectionSpec>,
) -> Result<(StatusCode, Json<ConnectionInfo>), ApiError> {
    Ok((StatusCode::CREATED, Json(engine.create_connection(spec).await?)))
}

pub(crate) async fn get_connection(
    State(engine): Shared,
    ApiPath(alias): ApiPath<String>,
) -> ApiResult<ConnectionInfo> {
    Ok(Json(engine.get_connection(&alias)?))
}

pub(crate) async fn delete_connection(
    State(engine): Shared,
    ApiPath(alias): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    engine.delete_connection(&alias).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn test_connection(
    State(engine): Shared,
    ApiPath(alias): ApiPath<String>,
) -> ApiResult<CheckResult> {
    Ok(Json(engine.test_connection(&alias).await?.into()))
}

pub(crate) async fn list_tables(
    State(engine): Shared,
    ApiPath(alias): ApiPath<String>,
) -> ApiResult<Vec<TableRef>> {
    Ok(Json(engine.list_tables(&alias).await?))
}

pub(crate) async fn describe_table(
    State(engine): Shared,
    ApiPath((alias, table)): ApiPath<(String, String)>,
) -> ApiResult<TableSchema> {
    Ok(Json(engine.describe_table(&alias, &table).await?))
}

/// How many rows `peekRows` reads when the request names no `limit`.
pub(crate) const DEFAULT_PEEK_ROWS: u32 = 10;

pub(crate) async fn peek_rows(
    State(engine): Shared,
    ApiPath((alias, table)): ApiPath<(String, String)>,
    RawQuery(query): RawQuery,
) -> ApiResult<TableRows> {
    let limit = peek_limit(query.as_deref())?;
    Ok(Json(engine.peek_rows(&alias, &table, limit).await?))
}

/// The `limit` query parameter of `peekRows`: 1 to [`MAX_PEEK_ROWS`], [`DEFAULT_PEEK_ROWS`] when absent. Other
/// parameters are refused so a misspelt one is not silently ignored.
fn peek_limit(query: Option<&str>) -> Result<u32, ApiError> {
    let mut limit = DEFAULT_PEEK_ROWS;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if name != "limit" {
            return Err(ApiError::invalid_input(format!(
                "unknown query parameter '{name}'; this operation takes only limit (1 to {MAX_PEEK_ROWS})"
            )));
        }
        limit = value.parse().ok().filter(|n| (1..=MAX_PEEK_ROWS).contains(n)).ok_or_else(|| {
            ApiError::invalid_input(format!("limit must be a whole number from 1 to {MAX_PEEK_ROWS}"))
        })?;
    }
    Ok(limit)
}

pub(crate) async fn count_rows(
    State(engine): Shared,
    ApiPath((alias, table)): ApiPath<(String, String)>,
) -> ApiResult<RowCount> {
    Ok(Json(engine.count_rows(&alias, &table).await?))
}

pub(crate) async fn list_pipelines(State(engine): Shared) -> ApiResult<Vec<PipelineInfo>> {
    Ok(Json(engine.list_pipelines()?))
}

pub(crate) async fn create_pipeline(
    State(engine): Shared,
    ApiJson(spec): ApiJson<PipelineSpec>,
) -> Result<(StatusCode, Json<PipelineInfo>), ApiError> {
    Ok((StatusCode::CREATED, Json(engine.create_pipeline(spec).await?)))
}

pub(crate) async fn get_pipeline(
    State(engine): Shared,
    ApiPath(alias): ApiPath<String>,
) -> ApiResult<PipelineInfo> {
    Ok(Json(engine.get_pipeline(&alias)?))
}

pub(crate) async fn delete_pipeline(
    State(engine): Shared,
    ApiPath(alias): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    engine.delete_pipeline(&alias).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn start_pipeline(
    State(engine): Shared,
    ApiPath(alias): ApiPath<String>,
) -> ApiResult<PipelineInfo> {
    Ok(Json(engine.start_pipeline(&alias).await?))
}

pub(crate) async fn stop_pipeline(
    State(engine): Shared,
    ApiPath(alias): ApiPath<String>,
) -> ApiResult<PipelineInfo> {
    Ok(Json(engine.stop_pipeline(&alias).await?))
}

pub(crate) async fn pipeline_stats(
    State(engine): Shared,
    ApiPath(alias): ApiPath<String>,
) -> ApiResult<PipelineStats> {
    Ok(Json(engine.pipeline_stats(&alias)?))
}

pub(crate) async fn healthz() -> Json<Health> {
    Json(Health { status: "ok".to_owned() })
}

pub(crate) async fn openapi() -> Json<serde_json::Value> {
    Json(crate::openapi::document())
}

/// Prometheus metrics of every pipeline. A pipeline deleted between listing and reading its stats is
/// skipped; another stats failure is logged and skipped so one pipeline never hides the others.
pub(crate) async fn prometheus(State(engine): Shared) -> Result<impl IntoResponse, ApiError> {
    let mut stats = Vec::new();
    for pipeline in engine.list_pipelines()? {
        match engine.pipeline_stats(&pipeline.alias) {
            Ok(s) => stats.push(s),
            Err(e) if e.kind == ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(pipeline = %pipeline.alias, error = %e.report(), "cannot read pipeline stats")
            }
        }
    }
    Ok(([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], metrics::render(&stats)))
}

pub(crate) async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::new(ErrorKind::NotFound, format!("no route for {method} {}; see /openapi.json", uri.path()))
}

pub(crate) async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    let message = format!("{method} is not allowed on {}; see /openapi.json", uri.path());
    ApiError::with_status(StatusCode::METHOD_NOT_ALLOWED, ErrorKind::InvalidInput, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peek_limits_are_bounded() {
        assert_eq!(peek_limit(None).unwrap(), DEFAULT_PEEK_ROWS);
        assert_eq!(peek_limit(Some("")).unwrap(), DEFAULT_PEEK_ROWS);
        assert_eq!(peek_limit(Some("limit=1")).unwrap(), 1);
        assert_eq!(peek_limit(Some("limit=1000")).unwrap(), 1000);
        for bad in
            ["limit=0", "limit=1001", "limit=-1", "limit=x", "limit=", "limit", "rows=5", "limit=5&x=1"]
        {
            let err = peek_limit(Some(bad)).unwrap_err();
            assert_eq!(err.status(), StatusCode::BAD_REQUEST, "{bad}");
        }
    }
}
