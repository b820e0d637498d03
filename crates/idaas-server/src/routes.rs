//! The one list of routes: [`ROUTES`] builds the router ([`router`]) and the OpenAPI document
//! ([`crate::openapi::document`]), so a route cannot be served without being documented.

use crate::handlers as h;
use axum::Router;
use axum::routing::{MethodFilter, MethodRouter, on};
use idaas_engine::Engine;
use std::sync::Arc;

/// The router state: the shared engine.
pub(crate) type AppState = Arc<Engine>;

/// An HTTP method the API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Verb {
    Get,
    Post,
    Delete,
}

impl Verb {
    /// The lowercase name an OpenAPI path item uses.
    pub(crate) fn openapi_name(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::Post => "post",
            Verb::Delete => "delete",
        }
    }

    fn filter(self) -> MethodFilter {
        match self {
            Verb::Get => MethodFilter::GET,
            Verb::Post => MethodFilter::POST,
            Verb::Delete => MethodFilter::DELETE,
        }
    }
}

/// What a successful answer carries.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Payload {
    /// A JSON document of the named component schema.
    Json(&'static str),
    /// A JSON array of the named component schema.
    JsonList(&'static str),
    /// Any JSON document (the OpenAPI document itself).
    AnyJson,
    /// Prometheus text.
    PrometheusText,
    /// No body.
    Empty,
}

/// One operation: its method and path, its documentation and its handler.
pub(crate) struct Route {
    pub verb: Verb,
    /// Path in axum and OpenAPI syntax (`/api/v1/connections/{alias}`).
    pub path: &'static str,
    pub operation_id: &'static str,
    pub tag: &'static str,
    pub summary: &'static str,
    /// Component schema of the JSON request body, if the operation takes one.
    pub request: Option<&'static str>,
    /// Status of a successful answer.
    pub status: u16,
    pub response: Payload,
    /// Error statuses the operation can answer with (all with the `Error` body).
    pub errors: &'static [u16],
    handler: fn(MethodFilter) -> MethodRouter<AppState>,
}

/// Errors of an operation on a named object that reads the catalogue only.
const LOOKUP: &[u16] = &[400, 404, 500];
/// Errors of an operation that talks to a database.
const LIVE: &[u16] = &[400, 404, 422, 500];
/// Errors of a create operation.
const CREATE: &[u16] = &[400, 404, 409, 422, 500];

/// Every route of the server.
pub(crate) const ROUTES: &[Route] = &[
    Route {
        verb: Verb::Get,
        path: "/api/v1/connections",
        operation_id: "listConnections",
        tag: "connections",
        summary: "List the registered connections.",
        request: None,
        status: 200,
        response: Payload::JsonList("ConnectionInfo"),
        errors: &[500],
        handler: |m| on(m, h::list_connections),
    },
    Route {
        verb: Verb::Post,
        path: "/api/v1/connections",
        operation_id: "createConnection",
        tag: "connections",
        summary: "Register a connection after checking that it can log in.",
        request: Some("ConnectionSpec"),
        status: 201,
        response: Payload::Json("ConnectionInfo"),
        errors: CREATE,
        handler: |m| on(m, h::create_connection),
    },
    Route {
        verb: Verb::Get,
        path: "/api/v1/connections/{alias}",
        operation_id: "getConnection",
        tag: "connections",
        summary: "Show one connection (never its password).",
        request: None,
        status: 200,
        response: Payload::Json("ConnectionInfo"),
        errors: LOOKUP,
        handler: |m| on(m, h::get_connection),
    },
    Route {
        verb: Verb::Delete,
        path: "/api/v1/connections/{alias}",
        operation_id: "deleteConnection",
        tag: "connections",
        summary: "Delete a connection that no pipeline uses.",
        request: None,
        status: 204,
        response: Payload::Empty,
        errors: LOOKUP,
        handler: |m| on(m, h::delete_connection),
    },
    Route {
        verb: Verb::Post,
        path: "/api/v1/connections/{alias}/test",
        operation_id: "testConnection",
        tag: "connections",
        summary: "Check a connection live: login, privileges and change-data-capture settings.",
        request: None,
        status: 200,
        response: Payload::Json("CheckResult"),
        errors: LIVE,
        handler: |m| on(m, h::test_connection),
    },
    Route {
        verb: Verb::Get,
        path: "/api/v1/connections/{alias}/tables",
        operation_id: "listTables",
        tag: "connections",
        summary: "List the tables a connection sees.",
        request: None,
        status: 200,
        response: Payload::JsonList("TableRef"),
        errors: LIVE,
        handler: |m| on(m, h::list_tables),
    },
    Route {
        verb: Verb::Get,
        path: "/api/v1/connections/{alias}/tables/{table}",
        operation_id: "describeTable",
        tag: "connections",
        summary: "Describe a table: columns, types, nullability, defaults and primary key.",
        request: None,
        status: 200,
        response: Payload::Json("TableSchema"),
        errors: LIVE,
        handler: |m| on(m, h::describe_table),
    },
    Route {
        verb: Verb::Get,
        path: "/api/v1/connections/{alias}/tables/{table}/rows",
        operation_id: "peekRows",
        tag: "connections",
        summary: "Read the first rows of a table in primary-key order, read-only: `limit` rows (1 to 1000, \
            default 10).",
        request: None,
        status: 200,
        response: Payload::Json("TableRows"),
        errors: LIVE,
        handler: |m| on(m, h::peek_rows),
    },
    Route {
        verb: Verb::Get,
        path: "/api/v1/connections/{alias}/tables/{table}/count",
        operation_id: "countRows",
        tag: "connections",
        summary: "Count the rows of a table exactly (`SELECT COUNT(*)`), read-only.",
        request: None,
        status: 200,
        response: Payload::Json("RowCount"),
        errors: LIVE,
        handler: |m| on(m, h::count_rows),
    },
    Route {
        verb: Verb::Get,
        path: "/api/v1/pipelines",
        operation_id: "listPipelines",
        tag: "pipelines",
        summary: "List the pipelines.",
        request: None,
        status: 200,
        response: Payload::JsonList("PipelineInfo"),
        errors: &[500],
        handler: |m| on(m, h::list_pipelines),
    },
    Route {
        verb: Verb::Post,
        path: "/api/v1/pipelines",
        operation_id: "createPipeline",
        tag: "pipelines",
        summary: "Create a pipeline (and start it when `start` is true) after validating both ends.",
        request: Some("PipelineSpec"),
        status: 201,
        response: Payload::Json("PipelineInfo"),
        errors: CREATE,
        handler: |m| on(m, h::create_pipeline),
    },
    Route {
        verb: Verb::Get,
        path: "/api/v1/pipelines/{alias}",
        operation_id: "getPipeline",
        tag: "pipelines",
        summary: "Show one pipeline.",
        request: None,
        status: 200,
        response: Payload::Json("PipelineInfo"),
        errors: LOOKUP,
        handler: |m| on(m, h::get_pipeline),
    },
    Route {
        verb: Verb::Delete,
        path: "/api/v1/pipelines/{alias}",
        operation_id: "deletePipeline",
        tag: "pipelines",
        summary: "Stop and delete a pipeline and its checkpoint; the target table stays.",
        request: None,
        status: 204,
        response: Payload::Empty,
        errors: LOOKUP,
        handler: |m| on(m, h::delete_pipeline),
    },
    Route {
        verb: Verb::Post,
        path: "/api/v1/pipelines/{alias}/start",
        operation_id: "startPipeline",
        tag: "pipelines",
        summary: "Start or resume a pipeline from its checkpoint.",
        request: None,
        status: 200,
        response: Payload::Json("PipelineInfo"),
        errors: LIVE,
        handler: |m| on(m, h::start_pipeline),
    },
    Route {
        verb: Verb::Post,
        path: "/api/v1/pipelines/{alias}/stop",
        operation_id: "stopPipeline",
        tag: "pipelines",
        summary: "Stop a pipeline after its current batch, keeping its checkpoint.",
        request: None,
        status: 200,
        response: Payload::Json("PipelineInfo"),
        errors: LOOKUP,
        handler: |m| on(m, h::stop_pipeline),
    },
    Route {
        verb: Verb::Get,
        path: "/api/v1/pipelines/{alias}/stats",
        operation_id: "pipelineStats",
        tag: "pipelines",
        summary: "A pipeline's live figures: totals, throughput, last events, lag, snapshot progress.",
        request: None,
        status: 200,
        response: Payload::Json("PipelineStats"),
        errors: LOOKUP,
        handler: |m| on(m, h::pipeline_stats),
    },
    Route {
        verb: Verb::Get,
        path: "/healthz",
        operation_id: "health",
        tag: "server",
        summary: "Liveness probe.",
        request: None,
        status: 200,
        response: Payload::Json("Health"),
        errors: &[],
        handler: |m| on(m, h::healthz),
    },
    Route {
        verb: Verb::Get,
        path: "/metrics",
        operation_id: "metrics",
        tag: "server",
        summary: "Pipeline metrics in the Prometheus text format (see METRICS.md).",
        request: None,
        status: 200,
        response: Payload::PrometheusText,
        errors: &[500],
        handler: |m| on(m, h::prometheus),
    },
    Route {
        verb: Verb::Get,
        path: "/openapi.json",
        operation_id: "openapi",
        tag: "server",
        summary: "This OpenAPI 3.1 document.",
        request: None,
        status: 200,
        response: Payload::AnyJson,
        errors: &[],
        handler: |m| on(m, h::openapi),
    },
];

/// The router of every route in [`ROUTES`], waiting for its state.
pub(crate) fn router() -> Router<AppState> {
    ROUTES.iter().fold(Router::new(), |router, route| {
        // Routes on the same path merge into one method router.
        router.route(route.path, (route.handler)(route.verb.filter()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn routes_are_unique_and_build_a_router() {
        let mut seen = HashSet::new();
        let mut ids = HashSet::new();
        for route in ROUTES {
            assert!(seen.insert((route.verb, route.path)), "{:?} {} twice", route.verb, route.path);
            assert!(ids.insert(route.operation_id), "operation id {} twice", route.operation_id);
            assert!(route.path.starts_with('/'));
            assert_eq!(route.request.is_some(), route.verb == Verb::Post && route.status == 201);
        }
        // Panics on a malformed path or a method registered twice on one path.
        let _ = router();
    }
}
