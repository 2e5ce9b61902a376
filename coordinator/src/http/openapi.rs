//! `/openapi.json`: the API described by hand (OpenAPI 3.0.3). A unit test checks that every
//! path parameter is declared and every operation has answers; the e2e test checks that every
//! API route is listed.

use serde_json::{Value, json};

fn id_param() -> Value {
    json!({ "name": "id", "in": "path", "required": true, "schema": { "type": "string" }, "description": "job id, e.g. job-1" })
}

fn err() -> Value {
    json!({ "description": "error", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } })
}

fn ok_json(description: &str, schema: Value) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": schema } } })
}

fn get_job_op(summary: &str, op: &str, ok: Value) -> Value {
    json!({ "get": { "summary": summary, "operationId": op, "parameters": [id_param()],
        "responses": { "200": ok, "401": err(), "404": err() } } })
}

fn any_object() -> Value {
    json!({ "type": "object", "additionalProperties": true })
}

/// The OpenAPI document.
pub fn openapi() -> Value {
    let job_ref = json!({ "$ref": "#/components/schemas/Job" });
    let binary = |what: &str, mime: &str| json!({ "description": what, "content": { mime: { "schema": { "type": "string", "format": "binary" } } } });
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Quarry coordinator API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Jobs, leaderboards, trials and artifacts of a `quarry serve` coordinator. With --token, send `Authorization: Bearer TOKEN`."
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": {
                "Error": { "type": "object", "required": ["error"], "properties": { "error": { "type": "string" } } },
                "Artifact": { "type": "object", "properties": {
                    "name": { "type": "string" }, "size": { "type": "integer" }, "sha256": { "type": "string" } } },
                "Job": { "type": "object", "properties": {
                    "id": { "type": "string" },
                    "state": { "type": "string", "enum": ["queued", "running", "completed", "failed", "cancelled"] },
                    "phase": { "type": "string" }, "experiment": { "type": "string" },
                    "dataset": { "type": "string" }, "dataset_hash": { "type": "string" },
                    "target": { "type": "string" }, "task": { "type": "string" },
                    "metric": { "type": "string", "nullable": true },
                    "higher_is_better": { "type": "boolean", "nullable": true },
                    "budget_ms": { "type": "integer", "nullable": true },
                    "max_trials": { "type": "integer", "nullable": true },
                    "best_score": { "type": "number", "nullable": true },
                    "best_family": { "type": "string", "nullable": true },
                    "trials_finished": { "type": "integer" }, "trials_started": { "type": "integer" },
                    "created_unix_ms": { "type": "integer" },
                    "finished_unix_ms": { "type": "integer", "nullable": true },
                    "elapsed_seconds": { "type": "number" },
                    "reason": { "type": "string", "nullable": true },
                    "artifacts": { "type": "array", "items": { "$ref": "#/components/schemas/Artifact" } } } },
                "Trial": { "type": "object", "properties": {
                    "id": { "type": "integer" }, "rank": { "type": "integer" },
                    "family": { "type": "string" }, "params": { "type": "object", "additionalProperties": true },
                    "score": { "type": "number", "nullable": true }, "fit_seconds": { "type": "number" },
                    "status": { "type": "string", "enum": ["completed", "failed", "cancelled", "pruned"] },
                    "failure_reason": { "type": "string", "nullable": true },
                    "rounds": { "type": "integer", "nullable": true },
                    "finished_unix_ms": { "type": "integer", "nullable": true } } },
                "Leaderboard": { "type": "object", "properties": {
                    "job": { "type": "string" }, "metric": { "type": "string", "nullable": true },
                    "higher_is_better": { "type": "boolean", "nullable": true },
                    "entries": { "type": "array", "items": { "$ref": "#/components/schemas/Trial" } } } }
            }
        },
        "security": [ { "bearer": [] } ],
        "paths": {
            "/openapi.json": { "get": { "summary": "This document", "operationId": "openapi",
                "responses": { "200": ok_json("OpenAPI 3 document", any_object()) } } },
            "/api/jobs": {
                "get": { "summary": "All jobs", "operationId": "listJobs",
                    "responses": { "200": ok_json("jobs in creation order", json!({ "type": "object",
                        "properties": { "jobs": { "type": "array", "items": job_ref } } })), "401": err() } },
                "post": { "summary": "Upload a CSV and start a job", "operationId": "createJob",
                    "requestBody": { "required": true, "content": { "multipart/form-data": { "schema": {
                        "type": "object", "required": ["file", "target"], "properties": {
                            "file": { "type": "string", "format": "binary" },
                            "target": { "type": "string" },
                            "task": { "type": "string", "enum": ["auto", "binary", "multiclass", "regression"] },
                            "budget": { "type": "string", "example": "30s" },
                            "max_trials": { "type": "integer" }, "metric": { "type": "string" },
                            "experiment": { "type": "string" }, "seed": { "type": "integer" },
                            "scheduler": { "type": "string", "enum": ["fifo", "median", "asha"] } } } } } },
                    "responses": { "201": ok_json("created", json!({ "type": "object", "properties": { "id": { "type": "string" } } })),
                        "400": err(), "401": err(), "413": err() } }
            },
            "/api/jobs/{id}": get_job_op("One job", "getJob", ok_json("the job", job_ref.clone())),
            "/api/jobs/{id}/cancel": { "post": { "summary": "Cancel a job", "operationId": "cancelJob",
                "parameters": [id_param()], "responses": { "200": ok_json("the job", job_ref), "401": err(), "404": err() } } },
            "/api/jobs/{id}/leaderboard": get_job_op("Leaderboard, best first", "getLeaderboard",
                ok_json("leaderboard", json!({ "$ref": "#/components/schemas/Leaderboard" }))),
            "/api/jobs/{id}/leaderboard.csv": get_job_op("Leaderboard as CSV", "getLeaderboardCsv",
                json!({ "description": "CSV", "content": { "text/csv": { "schema": { "type": "string" } } } })),
            "/api/jobs/{id}/events": { "get": { "summary": "Live updates (server-sent events: `update`, then `done`)",
                "operationId": "jobEvents",
                "parameters": [id_param(), { "name": "from", "in": "query", "required": false, "schema": { "type": "integer" },
                    "description": "finished trials the client already has (finish order)" }],
                "responses": { "200": { "description": "event stream", "content": { "text/event-stream": { "schema": { "type": "string" } } } },
                    "401": err(), "404": err() } } },
            "/api/jobs/{id}/trials/{trial}": { "get": { "summary": "One trial, with its learning curve",
                "operationId": "getTrial",
                "parameters": [id_param(), { "name": "trial", "in": "path", "required": true, "schema": { "type": "integer" } }],
                "responses": { "200": ok_json("trial", any_object()), "401": err(), "404": err() } } },
            "/api/jobs/{id}/guardrails": get_job_op("Data checks (guardrails.json)", "getGuardrails", ok_json("guardrails", any_object())),
            "/api/jobs/{id}/profile": get_job_op("Run record with the inferred schema (run.json)", "getProfile", ok_json("run record", any_object())),
            "/api/jobs/{id}/importance": get_job_op("Feature importance (explanations.json)", "getImportance", ok_json("explanations", any_object())),
            "/api/jobs/{id}/artifacts": get_job_op("The run folder's files", "listArtifacts",
                ok_json("artifacts", json!({ "type": "object", "properties": { "artifacts": { "type": "array",
                    "items": { "$ref": "#/components/schemas/Artifact" } } } }))),
            "/api/jobs/{id}/artifacts/{name}": { "get": { "summary": "Download one file (e.g. model.onnx)",
                "operationId": "downloadArtifact",
                "parameters": [id_param(), { "name": "name", "in": "path", "required": true, "schema": { "type": "string" },
                    "description": "relative path in the run folder, e.g. model/pipeline.json" }],
                "responses": { "200": binary("the file", "application/octet-stream"), "401": err(), "404": err() } } },
            "/api/jobs/{id}/run.tar": get_job_op("The whole run folder as a tar file", "downloadRunFolder",
                binary("tar", "application/x-tar"))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_parameter_is_declared_and_every_operation_answers() {
        let doc = openapi();
        assert_eq!(doc["openapi"], "3.0.3");
        let paths = doc["paths"].as_object().cloned().unwrap_or_default();
        assert!(paths.len() >= 14);
        for (path, item) in &paths {
            let names: Vec<&str> = path.split('{').skip(1).filter_map(|s| s.split('}').next()).collect();
            for (method, op) in item.as_object().into_iter().flatten() {
                assert!(["get", "post"].contains(&method.as_str()), "{path} {method}");
                assert!(op["responses"].as_object().is_some_and(|r| !r.is_empty()), "{path} {method}");
                assert!(op["operationId"].is_string(), "{path} {method}");
                let declared: Vec<&str> = op["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p["in"] == "path")
                    .filter_map(|p| p["name"].as_str())
                    .collect();
                assert_eq!(declared, names, "{path} {method}");
            }
        }
    }
}
