//! The router over a real engine on an empty data directory: every documented operation answers with a
//! status its OpenAPI entry lists, and errors have the documented body. No database is needed.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use idaas_engine::Engine;
use serde_json::Value;
use tower::ServiceExt;

struct Answer {
    status: StatusCode,
    content_type: String,
    body: Vec<u8>,
}

async fn call(app: &axum::Router, method: &str, path: &str, body: Option<&str>) -> Answer {
    let mut request = Request::builder().method(method).uri(path);
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    let request = request.body(body.map_or_else(Body::empty, |b| Body::from(b.to_owned()))).unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let content_type =
        response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap().to_vec();
    Answer { status, content_type, body }
}

#[tokio::test]
async fn every_documented_operation_answers_with_a_documented_status() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).await.unwrap();
    let app = idaas_server::app(engine.clone());
    let doc = idaas_server::openapi::document();

    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            // Every path parameter names an object that does not exist; every body is empty.
            let concrete = path.replace("{alias}", "missing").replace("{table}", "crm.Missing");
            let body = operation.get("requestBody").map(|_| "{}");
            let answer = call(&app, &method.to_uppercase(), &concrete, body).await;
            let documented = &operation["responses"][answer.status.as_str()];
            assert!(
                documented.is_object(),
                "{method} {concrete} answered {} which its entry does not list: {}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
            );
            if answer.status.is_client_error() || answer.status.is_server_error() {
                assert_eq!(answer.content_type, "application/json", "{method} {concrete}");
                let error: idaas_server::ErrorBody = serde_json::from_slice(&answer.body).unwrap();
                assert!(!error.error.message.is_empty());
                assert!(!error.error.message.starts_with("no route"), "{method} {concrete} is not routed");
            }
        }
    }
    engine.shutdown().await;
}

#[tokio::test]
async fn probes_and_unknown_routes() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).await.unwrap();
    let app = idaas_server::app(engine.clone());

    let health = call(&app, "GET", "/healthz", None).await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(serde_json::from_slice::<Value>(&health.body).unwrap(), serde_json::json!({"status": "ok"}));

    let metrics = call(&app, "GET", "/metrics", None).await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert!(metrics.content_type.starts_with("text/plain; version=0.0.4"));
    assert!(String::from_utf8(metrics.body).unwrap().contains("# TYPE idaas_pipeline_running gauge"));

    let unknown = call(&app, "GET", "/api/v1/nothing", None).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let error: idaas_server::ErrorBody = serde_json::from_slice(&unknown.body).unwrap();
    assert_eq!(error.error.kind, idaas_engine::ErrorKind::NotFound);

    let wrong_method = call(&app, "PUT", "/api/v1/connections", None).await;
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
    let error: idaas_server::ErrorBody = serde_json::from_slice(&wrong_method.body).unwrap();
    assert_eq!(error.error.kind, idaas_engine::ErrorKind::InvalidInput);

    let secret = r#"{"alias": "a", "host": "h", "user": "u", "password": "hunter2", "port": "hunter3"}"#;
    let rejected = call(&app, "POST", "/api/v1/connections", Some(secret)).await;
    assert_eq!(rejected.status, StatusCode::BAD_REQUEST);
    let text = String::from_utf8(rejected.body).unwrap();
    assert!(text.contains("port: invalid type: string, expected u16"), "{text}");
    assert!(!text.contains("hunter"), "{text}");
    engine.shutdown().await;
}
