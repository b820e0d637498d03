//! # OpenAPI document
//!
//! `GET /openapi.json` answers with an OpenAPI 3.1 document built here from the server's route table (the
//! one the router is built from) and hand-written JSON Schemas of the API types. The schemas follow the
//! types' serde form (field renames, aliases, optional fields as `null`); the tests check that serialised
//! values of every type validate.

use crate::routes::{Payload, ROUTES, Route};
use serde_json::{Map, Value, json};

/// The OpenAPI 3.1 document of the whole server.
pub fn document() -> Value {
    let mut paths = Map::new();
    for route in ROUTES {
        let item = paths.entry(route.path).or_insert_with(|| json!({}));
        item[route.verb.openapi_name()] = operation(route);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "iDaaS Open API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Manage connections and pipelines of an iDaaS server. Every error answers with the \
                `Error` body; its `kind` says what went wrong and `message` what to do about it.",
        },
        "tags": [
            {"name": "connections", "description": "Databases iDaaS reads from and writes to."},
            {"name": "pipelines", "description": "Initial load and change data capture from a source table \
                into a target table."},
            {"name": "server", "description": "Health, metrics and this document."},
        ],
        "paths": paths,
        "components": {"schemas": schemas()},
    })
}

fn operation(route: &Route) -> Value {
    let mut op = json!({
        "operationId": route.operation_id,
        "summary": route.summary,
        "tags": [route.tag],
    });
    let parameters: Vec<Value> = path_parameters(route.path)
        .map(|name| {
            json!({
                "name": name,
                "in": "path",
                "required": true,
                "description": parameter_description(route, name),
                "schema": {"type": "string"},
            })
        })
        .chain(query_parameters(route))
        .collect();
    if !parameters.is_empty() {
        op["parameters"] = Value::Array(parameters);
    }
    if let Some(schema) = route.request {
        op["requestBody"] = json!({
            "required": true,
            "content": {"application/json": {"schema": schema_ref(schema)}},
        });
    }
    let mut responses = Map::new();
    responses.insert(route.status.to_string(), success_response(route));
    for status in route.errors {
        responses.insert(
            status.to_string(),
            json!({
                "description": error_description(*status),
                "content": {"application/json": {"schema": schema_ref("Error")}},
            }),
        );
    }
    op["responses"] = Value::Object(responses);
    op
}

fn success_response(route: &Route) -> Value {
    let content = |media: &str, schema: Value| json!({media: {"schema": schema}});
    let (description, content) = match route.response {
        Payload::Json(name) => ("Success.", Some(content("application/json", schema_ref(name)))),
        Payload::JsonList(name) => (
            "Success.",
            Some(content("application/json", json!({"type": "array", "items": schema_ref(name)}))),
        ),
        Payload::AnyJson => {
            ("The OpenAPI document.", Some(content("application/json", json!({"type": "object"}))))
        }
        Payload::PrometheusText => (
            "Metrics in the Prometheus text format, version 0.0.4.",
            Some(content("text/plain", json!({"type": "string"}))),
        ),
        Payload::Empty => ("Done; no content.", None),
    };
    let mut response = json!({"description": description});
    if let Some(content) = content {
        response["content"] = content;
    }
    response
}

/// The `{name}` parameters of a path, in order.
pub(crate) fn path_parameters(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
}

/// The query parameters of an operation.
fn query_parameters(route: &Route) -> Vec<Value> {
    match route.operation_id {
        "peekRows" => vec![json!({
            "name": "limit",
            "in": "query",
            "required": false,
            "description": "How many rows to read.",
            "schema": {
                "type": "integer",
                "minimum": 1,
                "maximum": idaas_engine::browse::MAX_PEEK_ROWS,
                "default": crate::handlers::DEFAULT_PEEK_ROWS,
            },
        })],
        _ => Vec::new(),
    }
}

fn parameter_description(route: &Route, name: &str) -> &'static str {
    match (route.tag, name) {
        ("connections", "alias") => "Connection alias.",
        ("pipelines", "alias") => "Pipeline alias.",
        (_, "table") => "Table name: `name` in the connection's default database, or `database.name`.",
        _ => "Path parameter.",
    }
}

fn error_description(status: u16) -> &'static str {
    match status {
        400 => "Invalid input (kind `invalid_input`, `unsupported` or `incompatible`).",
        404 => "No such object (kind `not_found`).",
        409 => "An object with that alias exists already (kind `already_exists`).",
        405 => "Method not allowed on this path.",
        422 => {
            "The database refused or could not be reached (kind `unreachable`, `auth_failed`, \
                `permission_denied`, `source_config` or `position_lost`)."
        }
        500 => "Internal error (kind `internal`); details are in the server log.",
        _ => "Error.",
    }
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn string(description: &str) -> Value {
    json!({"type": "string", "description": description})
}

fn nullable_string(description: &str) -> Value {
    json!({"type": ["string", "null"], "description": description})
}

fn boolean(description: &str) -> Value {
    json!({"type": "boolean", "description": description})
}

fn count(description: &str) -> Value {
    json!({"type": "integer", "minimum": 0, "description": description})
}

fn timestamp(description: &str, nullable: bool) -> Value {
    let kind = if nullable { json!(["string", "null"]) } else { json!("string") };
    json!({"type": kind, "format": "date-time", "description": description})
}

fn with_description(mut schema: Value, description: &str) -> Value {
    schema["description"] = json!(description);
    schema
}

/// An object schema. `closed` objects (request bodies, which the server decodes with
/// `deny_unknown_fields`) refuse other properties; answers stay open so new fields do not break clients.
fn object(description: &str, properties: Value, required: &[&str], closed: bool) -> Value {
    let mut schema = json!({
        "type": "object",
        "description": description,
        "properties": properties,
        "required": required,
    });
    if closed {
        schema["additionalProperties"] = json!(false);
    }
    schema
}

/// One variant of the internally tagged `DataType`.
fn data_type_variant(kind: &str, description: &str, properties: Value) -> Value {
    let mut props = json!({"kind": {"const": kind}});
    let mut required = vec!["kind".to_owned()];
    for (name, schema) in properties.as_object().into_iter().flatten() {
        props[name] = schema.clone();
        required.push(name.clone());
    }
    json!({
        "type": "object",
        "title": kind,
        "description": description,
        "properties": props,
        "required": required,
    })
}

fn schemas() -> Value {
    let charset = || schema_ref("Charset");
    let width = |d: &str| json!({"type": "integer", "minimum": 0, "description": d});
    let fsp =
        || json!({"type": "integer", "minimum": 0, "maximum": 6, "description": "Fractional-second digits."});
    let names = |d: &str| json!({"type": "array", "items": {"type": "string"}, "description": d});
    json!({
        "Error": object(
            "The body of every error answer.",
            json!({"error": object(
                "What went wrong.",
                json!({
                    "kind": {
                        "type": "string",
                        "enum": ["unreachable", "auth_failed", "permission_denied", "source_config",
                            "not_found", "already_exists", "invalid_input", "unsupported", "incompatible",
                            "position_lost", "internal"],
                        "description": "The error kind; decides the HTTP status.",
                    },
                    "message": string("What happened, to which object, and what to do next. Never holds \
                        request values or secrets."),
                }),
                &["kind", "message"],
                false,
            )}),
            &["error"],
            false,
        ),
        "Health": object(
            "Liveness answer.",
            json!({"status": {"const": "ok", "description": "Always `ok` while the server answers."}}),
            &["status"],
            false,
        ),
        "ConnectionSpec": {
            "type": "object",
            "description": "A request to register a connection. `ip` is accepted for `host`, `db` for \
                `database` and `daas_db` for `DaaSDB`.",
            "properties": {
                "alias": string("Unique name of the connection."),
                "type": {
                    "type": ["string", "null"],
                    "description": "`mysql` (MySQL or MariaDB) or `postgres`; found by talking to the server \
                        when absent.",
                },
                "host": string("Host name or IP address."),
                "ip": string("Same as `host`."),
                "port": {
                    "type": ["integer", "null"],
                    "minimum": 0,
                    "maximum": 65535,
                    "description": "TCP port; the kind's default when absent.",
                },
                "user": string("User name."),
                "password": {
                    "type": "string",
                    "format": "password",
                    "writeOnly": true,
                    "description": "Password; stored encrypted, never returned.",
                },
                "database": nullable_string("Default database."),
                "db": nullable_string("Same as `database`."),
                "DaaSDB": boolean("True for the connection that holds the DaaS store."),
                "daas_db": boolean("Same as `DaaSDB`."),
            },
            "required": ["alias", "user"],
            "anyOf": [{"required": ["host"]}, {"required": ["ip"]}],
            "additionalProperties": false,
        },
        "ConnectionInfo": object(
            "A registered connection; never its password.",
            json!({
                "alias": string("Unique name."),
                "type": string("`mysql` or `postgres`."),
                "host": string("Host."),
                "port": {"type": "integer", "minimum": 0, "maximum": 65535, "description": "Port."},
                "user": string("User name."),
                "database": nullable_string("Default database."),
                "daas_db": boolean("True for the DaaS store connection."),
                "created_at": timestamp("Creation time, RFC 3339 UTC.", false),
            }),
            &["alias", "type", "host", "port", "user", "database", "daas_db", "created_at"],
            false,
        ),
        "CheckItem": object(
            "One finding of a live check.",
            json!({
                "name": string("What was checked, e.g. `binlog_format`."),
                "ok": boolean("True when it is fine."),
                "detail": string("What was found, and the fix when it is not fine."),
            }),
            &["name", "ok", "detail"],
            false,
        ),
        "CheckResult": object(
            "The result of a live connection check: every finding, so all problems can be fixed at once.",
            json!({
                "ok": boolean("True when every item is fine."),
                "server_version": nullable_string("Server version as it reports itself."),
                "items": {"type": "array", "items": schema_ref("CheckItem"), "description": "The findings."},
            }),
            &["ok", "server_version", "items"],
            false,
        ),
        "TableRef": object(
            "A table's name.",
            json!({
                "namespace": string("Database (MySQL) or schema (PostgreSQL) holding the table."),
                "name": string("Table name."),
            }),
            &["namespace", "name"],
            false,
        ),
        "Charset": {
            "type": "string",
            "enum": ["utf8", "latin1", "ascii", "other"],
            "description": "Character set of a text column.",
        },
        "DataType": {
            "description": "The portable type of a column, tagged by `kind`.",
            "oneOf": [
                data_type_variant("bool", "Boolean.", json!({})),
                data_type_variant("int", "Integer.", json!({
                    "bytes": width("Storage width in bytes: 1, 2, 3, 4 or 8."),
                    "unsigned": boolean("True for unsigned."),
                })),
                data_type_variant("decimal", "Exact decimal.", json!({
                    "precision": width("Total digits."),
                    "scale": width("Digits after the point."),
                    "unsigned": boolean("True for MySQL's unsigned decimals."),
                })),
                data_type_variant("float", "4-byte float.", json!({})),
                data_type_variant("double", "8-byte float.", json!({})),
                data_type_variant("char", "Fixed-length text.", json!({
                    "length": width("Length in characters."),
                    "charset": charset(),
                })),
                data_type_variant("varchar", "Variable-length text.", json!({
                    "length": width("Maximum length in characters."),
                    "charset": charset(),
                })),
                data_type_variant("text", "Long text.", json!({
                    "max_bytes": width("Maximum length in bytes."),
                    "charset": charset(),
                })),
                data_type_variant("binary", "Fixed-length binary.", json!({
                    "length": width("Length in bytes."),
                })),
                data_type_variant("varbinary", "Variable-length binary.", json!({
                    "length": width("Maximum length in bytes."),
                })),
                data_type_variant("blob", "Binary large object.", json!({
                    "max_bytes": width("Maximum length in bytes."),
                })),
                data_type_variant("date", "Date.", json!({})),
                data_type_variant("time", "Time of day or duration.", json!({"fsp": fsp()})),
                data_type_variant("date_time", "Date and time without time zone.", json!({"fsp": fsp()})),
                data_type_variant("timestamp", "Instant.", json!({"fsp": fsp()})),
                data_type_variant("year", "MySQL `YEAR`.", json!({})),
                data_type_variant("enum", "Enum.", json!({"labels": names("The labels in declared order.")})),
                data_type_variant("set", "Set.", json!({"members": names("The members in declared order.")})),
                data_type_variant("bit", "Bit string.", json!({"bits": width("Width in bits, 1 to 64.")})),
                data_type_variant("json", "JSON document.", json!({})),
                data_type_variant("uuid", "UUID.", json!({})),
                data_type_variant("other", "A type no mapping knows.", json!({
                    "name": string("The source's type name."),
                })),
            ],
        },
        "ColumnSchema": object(
            "One column.",
            json!({
                "name": string("Column name."),
                "data_type": with_description(schema_ref("DataType"), "Portable type."),
                "source_type": string("The source's declaration, e.g. `decimal(12,2) unsigned`."),
                "nullable": boolean("True when NULL is allowed."),
                "default": nullable_string("The default as the source prints it, if any."),
                "collation": string("Collation of a text column (decides which values are equal as keys); absent for other types."),
            }),
            &["name", "data_type", "source_type", "nullable", "default"],
            false,
        ),
        "TableSchema": object(
            "A table's shape.",
            json!({
                "table": schema_ref("TableRef"),
                "columns": {"type": "array", "items": schema_ref("ColumnSchema"), "description": "Columns in \
                    ordinal order."},
                "primary_key": names("Primary-key column names in key order; empty when the table has none."),
                "version": count("Increases by one on every schema change a pipeline sees."),
            }),
            &["table", "columns", "primary_key", "version"],
            false,
        ),
        "Value": {
            "type": "object",
            "description": "One column value in its typed form (see docs/open-cdc.md): `type` names the kind, \
                `value` holds it (absent for `null`, `zero_timestamp` and `unchanged`). Decimals are exact \
                text, bytes are base64, timestamps are microseconds since 1970-01-01 UTC.",
            "properties": {
                "type": {
                    "type": "string",
                    "enum": ["null", "bool", "int", "uint", "float", "double", "decimal", "text", "bytes",
                        "date", "time", "datetime", "timestamp", "zero_timestamp", "year", "json", "enum", "set",
                        "bit", "uuid", "array", "unchanged"],
                    "description": "The value's kind.",
                },
                "value": {"description": "The value; its JSON shape depends on `type`."},
            },
            "required": ["type"],
        },
        "TableRows": object(
            "The first rows of a table, read-only.",
            json!({
                "table": schema_ref("TableRef"),
                "columns": names("Column names in ordinal order."),
                "rows": {
                    "type": "array",
                    "items": {"type": "array", "items": schema_ref("Value")},
                    "description": "Rows in primary-key order, each with one value per column in column order.",
                },
                "limit": count("The limit the rows were read with."),
            }),
            &["table", "columns", "rows", "limit"],
            false,
        ),
        "RowCount": object(
            "The exact number of rows in a table.",
            json!({
                "table": schema_ref("TableRef"),
                "count": count("Rows (`SELECT COUNT(*)`)."),
            }),
            &["table", "count"],
            false,
        ),
        "TableSpec": object(
            "One end of a pipeline: a table of a connection.",
            json!({
                "connection": string("Connection alias."),
                "table": string("Table name, optionally `database.table`; the connection's default database \
                    otherwise."),
            }),
            &["connection", "table"],
            true,
        ),
        "SyncMode": {
            "type": "string",
            "enum": ["initial_and_cdc", "initial", "cdc"],
            "description": "`initial_and_cdc`: initial load, then change data capture. `initial`: initial load \
                only. `cdc`: changes only, from the current end of the source's log.",
        },
        "DdlPolicy": {
            "type": "string",
            "enum": ["apply", "ignore", "stop"],
            "description": "What a source schema change does: `apply` it to the target, `ignore` it (keep the \
                target's shape), or `stop` the pipeline with an error naming it.",
        },
        "PipelineSpec": {
            "type": "object",
            "description": "A request to create a pipeline. `AutoCreate` is accepted for `auto_create`.",
            "properties": {
                "alias": string("Unique name of the pipeline."),
                "source": with_description(schema_ref("TableSpec"), "The source table."),
                "target": with_description(schema_ref("TableSpec"), "The target table."),
                "auto_create": boolean("Create the target table when it is missing. Default false."),
                "AutoCreate": boolean("Same as `auto_create`."),
                "mode": with_description(schema_ref("SyncMode"), "Default `initial_and_cdc`."),
                "ddl_policy": with_description(schema_ref("DdlPolicy"), "Default `apply`."),
                "start": boolean("Start right after creating it. Default false."),
            },
            "required": ["alias", "source", "target"],
            "additionalProperties": false,
        },
        "PipelineInfo": object(
            "A pipeline.",
            json!({
                "alias": string("Unique name."),
                "spec": with_description(schema_ref("PipelineSpec"), "What it was created with."),
                "status": string("`created`, `starting`, `snapshot`, `running`, `stopped`, `completed` or \
                    `failed`."),
                "created_at": timestamp("Creation time, RFC 3339 UTC.", false),
                "last_error": nullable_string("The error that stopped it, if any."),
            }),
            &["alias", "spec", "status", "created_at", "last_error"],
            false,
        ),
        "TableProgress": object(
            "Initial-load progress of one table.",
            json!({
                "table": schema_ref("TableRef"),
                "rows_copied": count("Rows copied so far."),
                "rows_estimated": count("The source's row estimate when the load began."),
                "done": boolean("True when the table is fully copied."),
            }),
            &["table", "rows_copied", "rows_estimated", "done"],
            false,
        ),
        "PipelineStats": object(
            "A pipeline's live figures.",
            json!({
                "alias": string("Pipeline alias."),
                "status": string("Same as the pipeline's `status`."),
                "input_total": count("Events read from the source (snapshot rows and changes)."),
                "output_total": count("Events written to the target."),
                "throughput_eps": {"type": "number", "minimum": 0, "description": "Events written per second \
                    over the last few seconds."},
                "last_input": timestamp("When the last event was read, RFC 3339 UTC with milliseconds.",
                    true),
                "last_output": timestamp("When the last event was written, RFC 3339 UTC with milliseconds.",
                    true),
                "lag_ms": {
                    "type": ["integer", "null"],
                    "description": "Target commit time minus source commit time of the last written change, in \
                        milliseconds.",
                },
                "snapshot_rows": count("Snapshot rows read."),
                "cdc_events": count("Changes (insert, update, delete) read from the stream."),
                "snapshot": {
                    "type": "array",
                    "items": schema_ref("TableProgress"),
                    "description": "Per-table initial-load progress.",
                },
                "checkpoint": {
                    "description": "The source position of the last checkpoint (opaque), or null.",
                },
                "last_error": nullable_string("The error that stopped the pipeline or that it is retrying, if \
                    any."),
            }),
            &["alias", "status", "input_total", "output_total", "throughput_eps", "last_input", "last_output",
                "lag_ms", "snapshot_rows", "cdc_events", "snapshot", "checkpoint", "last_error"],
            false,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorBody;
    use crate::model::{CheckResult, Health};
    use idaas_core::Value as IdaasValue;
    use idaas_core::{Charset, CheckItem, ColumnSchema, DataType, ErrorKind, TableRef, TableSchema};
    use idaas_engine::browse::{RowCount, TableRows};
    use idaas_engine::{
        ConnectionInfo, ConnectionSpec, DdlPolicy, PipelineInfo, PipelineSpec, PipelineStats, SyncMode,
        TableProgress, TableSpec,
    };
    use serde::Serialize;
    use std::collections::BTreeSet;

    /// Checks `value` against `schema` for the keywords the document uses. Object properties that the schema
    /// does not declare are errors here even for open objects: every field the server sends is documented.
    fn validate(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
        if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
            let name = reference.strip_prefix("#/components/schemas/").ok_or(format!("{at}: bad ref"))?;
            let target = doc["components"]["schemas"].get(name).ok_or(format!("{at}: no schema {name}"))?;
            return validate(doc, target, value, at);
        }
        if let Some(expected) = schema.get("const")
            && expected != value
        {
            return Err(format!("{at}: {value} is not {expected}"));
        }
        if let Some(options) = schema.get("enum").and_then(Value::as_array)
            && !options.contains(value)
        {
            return Err(format!("{at}: {value} is not one of {options:?}"));
        }
        if let Some(kind) = schema.get("type") {
            let kinds: Vec<&str> = match kind {
                Value::Array(kinds) => kinds.iter().filter_map(Value::as_str).collect(),
                other => vec![other.as_str().unwrap()],
            };
            let fits = kinds.iter().any(|k| match *k {
                "null" => value.is_null(),
                "string" => value.is_string(),
                "boolean" => value.is_boolean(),
                "integer" => value.is_i64() || value.is_u64(),
                "number" => value.is_number(),
                "array" => value.is_array(),
                "object" => value.is_object(),
                other => panic!("unknown type {other}"),
            });
            if !fits {
                return Err(format!("{at}: {value} is not of type {kinds:?}"));
            }
        }
        if let Some(n) = value.as_f64() {
            if schema.get("minimum").and_then(Value::as_f64).is_some_and(|min| n < min) {
                return Err(format!("{at}: {n} is below the minimum"));
            }
            if schema.get("maximum").and_then(Value::as_f64).is_some_and(|max| n > max) {
                return Err(format!("{at}: {n} is above the maximum"));
            }
        }
        if let Some(options) = schema.get("oneOf").and_then(Value::as_array) {
            let matching = options.iter().filter(|o| validate(doc, o, value, at).is_ok()).count();
            if matching != 1 {
                return Err(format!("{at}: {value} matches {matching} of the oneOf schemas"));
            }
        }
        if let Some(options) = schema.get("anyOf").and_then(Value::as_array)
            && !options.iter().any(|o| validate(doc, o, value, at).is_ok())
        {
            return Err(format!("{at}: {value} matches none of the anyOf schemas"));
        }
        if let (Some(items), Some(values)) = (schema.get("items"), value.as_array()) {
            for (i, item) in values.iter().enumerate() {
                validate(doc, items, item, &format!("{at}[{i}]"))?;
            }
        }
        if let Some(object) = value.as_object() {
            for name in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
                let name = name.as_str().unwrap();
                if !object.contains_key(name) {
                    return Err(format!("{at}: missing required {name}"));
                }
            }
            if let Some(properties) = schema.get("properties") {
                for (name, field) in object {
                    let field_schema =
                        properties.get(name).ok_or(format!("{at}: property {name} is not documented"))?;
                    validate(doc, field_schema, field, &format!("{at}.{name}"))?;
                }
            }
        }
        Ok(())
    }

    fn assert_valid(doc: &Value, name: &str, sample: impl Serialize) {
        let value = serde_json::to_value(sample).unwrap();
        if let Err(e) = validate(doc, &schema_ref(name), &value, name) {
            panic!("a serialised {name} does not fit its schema: {e}");
        }
    }

    fn assert_invalid(doc: &Value, name: &str, value: Value) {
        assert!(validate(doc, &schema_ref(name), &value, name).is_err(), "{name} accepted {value}");
    }

    fn every_data_type() -> Vec<DataType> {
        vec![
            DataType::Bool,
            DataType::Int { bytes: 8, unsigned: true },
            DataType::Decimal { precision: 12, scale: 2, unsigned: false },
            DataType::Float,
            DataType::Double,
            DataType::Char { length: 3, charset: Charset::Latin1 },
            DataType::Varchar { length: 255, charset: Charset::Utf8 },
            DataType::Text { max_bytes: 65535, charset: Charset::Ascii },
            DataType::Binary { length: 16 },
            DataType::Varbinary { length: 64 },
            DataType::Blob { max_bytes: 16_777_215 },
            DataType::Date,
            DataType::Time { fsp: 3 },
            DataType::DateTime { fsp: 6 },
            DataType::Timestamp { fsp: 0 },
            DataType::Year,
            DataType::Enum { labels: vec!["a".into(), "b".into()] },
            DataType::Set { members: vec!["x".into()] },
            DataType::Bit { bits: 1 },
            DataType::Json,
            DataType::Uuid,
            DataType::Other { name: "geometry".into() },
        ]
    }

    /// Fails to compile when `ErrorKind` gains a variant, so the list below stays complete.
    fn every_error_kind() -> Vec<ErrorKind> {
        let all = vec![
            ErrorKind::Unreachable,
            ErrorKind::AuthFailed,
            ErrorKind::PermissionDenied,
            ErrorKind::SourceConfig,
            ErrorKind::NotFound,
            ErrorKind::AlreadyExists,
            ErrorKind::InvalidInput,
            ErrorKind::Unsupported,
            ErrorKind::Incompatible,
            ErrorKind::PositionLost,
            ErrorKind::Internal,
        ];
        for kind in &all {
            match kind {
                ErrorKind::Unreachable
                | ErrorKind::AuthFailed
                | ErrorKind::PermissionDenied
                | ErrorKind::SourceConfig
                | ErrorKind::NotFound
                | ErrorKind::AlreadyExists
                | ErrorKind::InvalidInput
                | ErrorKind::Unsupported
                | ErrorKind::Incompatible
                | ErrorKind::PositionLost
                | ErrorKind::Internal => {}
            }
        }
        all
    }

    fn pipeline_spec() -> PipelineSpec {
        PipelineSpec {
            alias: "my_pipeline".into(),
            source: TableSpec { connection: "mysql_crm_db".into(), table: "crm.Customer".into() },
            target: TableSpec { connection: "mysql_analytical_db".into(), table: "CRM_Customer".into() },
            auto_create: true,
            mode: SyncMode::Cdc,
            ddl_policy: DdlPolicy::Stop,
            start: true,
        }
    }

    fn collect_refs(value: &Value, refs: &mut BTreeSet<String>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(r)) = map.get("$ref") {
                    refs.insert(r.clone());
                }
                map.values().for_each(|v| collect_refs(v, refs));
            }
            Value::Array(items) => items.iter().for_each(|v| collect_refs(v, refs)),
            _ => {}
        }
    }

    #[test]
    fn every_route_is_documented_with_its_parameters() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        let mut operations = 0;
        for route in ROUTES {
            let op = &doc["paths"][route.path][route.verb.openapi_name()];
            assert!(op.is_object(), "{} {} is not in the document", route.verb.openapi_name(), route.path);
            assert_eq!(op["operationId"], route.operation_id);
            assert!(op["responses"][route.status.to_string()].is_object());
            let declared: Vec<&str> = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "path")
                .map(|p| p["name"].as_str().unwrap())
                .collect();
            let in_path: Vec<&str> = path_parameters(route.path).collect();
            assert_eq!(declared, in_path, "{}", route.path);
            assert_eq!(op["requestBody"].is_object(), route.request.is_some());
            operations += 1;
        }
        let documented: usize =
            doc["paths"].as_object().unwrap().values().map(|i| i.as_object().unwrap().len()).sum();
        assert_eq!(documented, operations, "the document has operations the router does not serve");
    }

    #[test]
    fn the_brief_routes_are_all_there() {
        let doc = document();
        let expected = [
            ("get", "/api/v1/connections"),
            ("post", "/api/v1/connections"),
            ("get", "/api/v1/connections/{alias}"),
            ("delete", "/api/v1/connections/{alias}"),
            ("post", "/api/v1/connections/{alias}/test"),
            ("get", "/api/v1/connections/{alias}/tables"),
            ("get", "/api/v1/connections/{alias}/tables/{table}"),
            ("get", "/api/v1/connections/{alias}/tables/{table}/rows"),
            ("get", "/api/v1/connections/{alias}/tables/{table}/count"),
            ("get", "/api/v1/pipelines"),
            ("post", "/api/v1/pipelines"),
            ("get", "/api/v1/pipelines/{alias}"),
            ("delete", "/api/v1/pipelines/{alias}"),
            ("post", "/api/v1/pipelines/{alias}/start"),
            ("post", "/api/v1/pipelines/{alias}/stop"),
            ("get", "/api/v1/pipelines/{alias}/stats"),
            ("get", "/openapi.json"),
            ("get", "/healthz"),
            ("get", "/metrics"),
        ];
        for (verb, path) in expected {
            assert!(doc["paths"][path][verb].is_object(), "{verb} {path} missing");
        }
        assert_eq!(ROUTES.len(), expected.len());
    }

    #[test]
    fn every_reference_resolves_and_every_schema_is_used() {
        let doc = document();
        let mut refs = BTreeSet::new();
        collect_refs(&doc, &mut refs);
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for r in &refs {
            let name = r.strip_prefix("#/components/schemas/").unwrap();
            assert!(schemas.contains_key(name), "{r} does not resolve");
        }
        for name in schemas.keys() {
            assert!(refs.contains(&format!("#/components/schemas/{name}")), "schema {name} is never used");
        }
    }

    #[test]
    fn serialised_api_types_fit_their_schemas() {
        let doc = document();
        let spec = ConnectionSpec {
            alias: "mysql_crm_db".into(),
            kind: Some("mysql".into()),
            host: "127.0.0.1".into(),
            port: Some(3306),
            user: "demo".into(),
            password: "pw".into(),
            database: Some("crm".into()),
            daas_db: true,
        };
        assert_valid(&doc, "ConnectionSpec", &spec);
        assert_valid(
            &doc,
            "ConnectionSpec",
            ConnectionSpec { kind: None, port: None, database: None, ..spec },
        );
        assert_valid(&doc, "ConnectionSpec", json!({"alias": "a", "ip": "h", "user": "u", "db": "crm"}));
        assert_invalid(&doc, "ConnectionSpec", json!({"alias": "a", "user": "u"}));
        assert_invalid(&doc, "ConnectionSpec", json!({"alias": "a", "host": "h", "user": "u", "pass": "x"}));

        let info = ConnectionInfo {
            alias: "a".into(),
            kind: "postgres".into(),
            host: "h".into(),
            port: 5432,
            user: "u".into(),
            database: None,
            daas_db: false,
            created_at: "2022-02-01T15:00:03Z".into(),
        };
        assert_valid(&doc, "ConnectionInfo", &info);
        assert_invalid(&doc, "ConnectionInfo", json!({"alias": "a"}));

        let report = idaas_core::CheckReport {
            server_version: Some("10.11.6-MariaDB".into()),
            items: vec![CheckItem { name: "binlog_format".into(), ok: false, detail: "set ROW".into() }],
        };
        assert_valid(&doc, "CheckResult", CheckResult::from(report));
        assert_valid(&doc, "CheckResult", CheckResult::from(idaas_core::CheckReport::default()));

        let columns = every_data_type()
            .into_iter()
            .enumerate()
            .map(|(i, data_type)| ColumnSchema {
                name: format!("c{i}"),
                data_type,
                source_type: "x".into(),
                nullable: i % 2 == 0,
                default: (i % 3 == 0).then(|| "0".into()),
                collation: None,
            })
            .collect();
        let schema = TableSchema {
            table: TableRef::new("crm", "Customer"),
            columns,
            primary_key: vec!["c0".into()],
            version: 1,
        };
        assert_valid(&doc, "TableSchema", &schema);
        assert_valid(&doc, "TableRef", TableRef::new("public", "t"));
        let rows = TableRows {
            table: TableRef::new("crm", "Customer"),
            columns: vec!["id".into(), "name".into(), "note".into()],
            rows: vec![
                vec![IdaasValue::UInt(1), IdaasValue::Text("Ada".into()), IdaasValue::Null],
                vec![IdaasValue::UInt(2), IdaasValue::Decimal("1.50".into()), IdaasValue::ZeroTimestamp],
            ],
            limit: 10,
        };
        assert_valid(&doc, "TableRows", &rows);
        assert_valid(&doc, "RowCount", RowCount { table: TableRef::new("crm", "Customer"), count: 2 });
        assert_invalid(&doc, "Value", json!({"type": "float64", "value": 1}));

        let spec = pipeline_spec();
        assert_valid(&doc, "PipelineSpec", &spec);
        assert_valid(
            &doc,
            "PipelineSpec",
            json!({"alias": "p", "source": {"connection": "a", "table": "t"},
            "target": {"connection": "b", "table": "t"}, "AutoCreate": true}),
        );
        assert_invalid(
            &doc,
            "PipelineSpec",
            json!({"alias": "p", "source": {"connection": "a", "table": "t"},
            "target": {"connection": "b", "table": "t"}, "mode": "full"}),
        );
        let info = PipelineInfo {
            alias: "my_pipeline".into(),
            spec,
            status: "running".into(),
            created_at: "2022-02-01T15:00:03Z".into(),
            last_error: Some("boom".into()),
        };
        assert_valid(&doc, "PipelineInfo", &info);
        assert_valid(&doc, "PipelineInfo", PipelineInfo { last_error: None, ..info });

        let stats = PipelineStats {
            alias: "my_pipeline".into(),
            status: "running".into(),
            input_total: 2400,
            output_total: 2300,
            throughput_eps: 500.5,
            last_input: Some("2022-02-01T15:00:03.203Z".into()),
            last_output: Some("2022-02-01T15:00:03.829Z".into()),
            lag_ms: Some(12),
            snapshot_rows: 2000,
            cdc_events: 400,
            snapshot: vec![TableProgress {
                table: TableRef::new("crm", "Customer"),
                rows_copied: 10,
                rows_estimated: 10,
                done: true,
            }],
            checkpoint: Some(json!({"file": "binlog.000001", "pos": 4})),
            last_error: None,
        };
        assert_valid(&doc, "PipelineStats", &stats);
        let empty = PipelineStats {
            last_input: None,
            last_output: None,
            lag_ms: None,
            snapshot: vec![],
            checkpoint: None,
            last_error: Some("x".into()),
            ..stats
        };
        assert_valid(&doc, "PipelineStats", empty);

        assert_valid(&doc, "Health", Health { status: "ok".into() });
        for kind in every_error_kind() {
            let body = crate::error::ApiError::new(kind, "m").body();
            assert_valid(&doc, "Error", &body);
            let raw = ErrorBody { error: crate::error::ErrorDetail { kind, message: "m".into() } };
            assert_valid(&doc, "Error", raw);
        }
    }
}
