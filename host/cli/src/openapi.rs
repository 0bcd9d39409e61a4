//! `GET /v1/openapi.json`: an OpenAPI 3.1 description of the HTTP API,
//! generated from the loaded plugins' WIT.
//!
//! Each function of each actor type is one operation,
//! `POST /v1/actors/{type}/{key}/{function}` with the type and function
//! written into the path and the key left as its parameter. Its request body
//! is the JSON array of its arguments and its answer the JSON of its result,
//! both described by [`grove_values::schema`], which follows the JSON
//! mapping of `docs/http-api.md` exactly. The document's version is derived
//! from the plugins' content hashes, so it changes whenever a plugin does.

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use grove_host::plugin::Function;
use grove_host::{Host, Plugin};
use grove_values::schema::json_schema;

/// The statuses a call answers with besides 200, as `http-api.md` lists
/// them.
const CALL_ERRORS: [(&str, &str); 7] = [
    (
        "400",
        "The arguments do not fit the function's types, or the actor ref is malformed.",
    ),
    ("404", "No such actor type or function."),
    (
        "429",
        "The actor's mailbox stayed full until the call's deadline.",
    ),
    (
        "500",
        "The actor failed: a trap, its deadline, its memory limit, a call cycle.",
    ),
    (
        "503",
        "The actor could not be activated, its state store is down, or the host is shutting down.",
    ),
    (
        "504",
        "The actor, or an actor it called, did not answer in time.",
    ),
    ("default", "Another error."),
];

/// The OpenAPI document for the plugins `host` has loaded now.
pub fn document(host: &Host) -> Value {
    let plugins = host.plugins();
    let mut paths = Map::new();
    for plugin in &plugins {
        for function in &plugin.functions {
            if let Some(operation) = operation(plugin, function) {
                let path = format!("/v1/actors/{}/{{key}}/{}", plugin.actor_type, function.name);
                paths.insert(path, json!({ "post": operation }));
            }
        }
    }
    paths.insert("/v1/health".into(), json!({ "get": health() }));
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Grove host",
            "description": "Calls to the actors of the plugins this host has loaded, with arguments and results in the JSON mapping of Grove's HTTP API (docs/http-api.md).",
            "version": version(&plugins),
        },
        "paths": paths,
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "properties": {
                        "error": {
                            "type": "object",
                            "properties": {
                                "kind": { "type": "string" },
                                "message": { "type": "string" },
                                "backtrace": { "type": "string" },
                                "changes": { "type": "array", "items": { "type": "string" } },
                            },
                            "required": ["kind", "message"],
                        },
                    },
                    "required": ["error"],
                },
            },
        },
    })
}

/// Grove's version, `+`, and the first 16 hex digits of a hash over every
/// loaded type and its version.
fn version(plugins: &[std::sync::Arc<Plugin>]) -> String {
    let mut hash = Sha256::new();
    for plugin in plugins {
        hash.update(plugin.actor_type.as_bytes());
        hash.update(b"@");
        hash.update(plugin.content_hash.as_bytes());
        hash.update(b"\n");
    }
    let digest = hash.finalize();
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("{}+{hex}", env!("CARGO_PKG_VERSION"))
}

/// The operation calling `function`, or `None` if its arguments or result
/// cannot be JSON (a resource, future or stream).
fn operation(plugin: &Plugin, function: &Function) -> Option<Value> {
    let params = function
        .params
        .iter()
        .map(|p| {
            let mut schema = json_schema(&p.ty).ok()?;
            if let Some(object) = schema.as_object_mut() {
                object.insert("title".into(), json!(p.name));
            }
            Some(schema)
        })
        .collect::<Option<Vec<_>>>()?;
    let result = match &function.result {
        Some(ty) => json_schema(ty).ok()?,
        None => json!({ "type": "null" }),
    };
    let arity = params.len();
    let mut responses = Map::new();
    responses.insert(
        "200".into(),
        json!({
            "description": "The function's result (null if it has none).",
            "content": { "application/json": { "schema": result } },
        }),
    );
    for (status, description) in CALL_ERRORS {
        responses.insert(
            status.into(),
            json!({
                "description": description,
                "content": { "application/json": {
                    "schema": { "$ref": "#/components/schemas/Error" },
                } },
            }),
        );
    }
    let mut description = format!("`{}`", function.signature);
    if let Some(docs) = &function.docs {
        description.push_str("\n\n");
        description.push_str(docs);
    }
    Some(json!({
        "operationId": format!("{}.{}", plugin.actor_type, function.name),
        "tags": [plugin.actor_type],
        "summary": function.signature,
        "description": description,
        "parameters": [{
            "name": "key",
            "in": "path",
            "required": true,
            "description": format!("Which {} actor: its key.", plugin.actor_type),
            "schema": { "type": "string" },
        }],
        "requestBody": {
            "description": "The arguments, one array element per parameter, in order.",
            "required": arity > 0,
            "content": { "application/json": { "schema": {
                "type": "array",
                "prefixItems": params,
                "minItems": arity,
                "maxItems": arity,
            } } },
        },
        "responses": responses,
    }))
}

fn health() -> Value {
    json!({
        "operationId": "health",
        "summary": "Liveness and the number of activations.",
        "responses": { "200": {
            "description": "The host runs.",
            "content": { "application/json": { "schema": {
                "type": "object",
                "properties": {
                    "status": { "const": "ok" },
                    "activations": { "type": "integer", "minimum": 0 },
                },
                "required": ["status", "activations"],
            } } },
        } },
    })
}
