//! The Open Inference Protocol v2 (KServe / Triton REST) over axum: health, server and model
//! metadata, readiness, inference, and a drift report per model.
//!
//! Inputs are columns (one per raw column the pipeline reads, shape `[N]` or `[N, 1]`); each
//! value is turned into the text a CSV cell would hold, so a request scores exactly like
//! `quarry predict` on the same rows. Errors are the protocol's `{"error": "..."}` with a 4xx
//! code for anything the client got wrong.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use quarry_featurize::{Predictions, RawColumn, RawValues, StrColumn, Table};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::batcher::BatchConfig;
use crate::drift::Thresholds;
use crate::error::{Result, ServingError};
use crate::model::{ServedModel, load_pipeline};
use crate::registry::Registry;

/// Where the router finds models by name and version (`None`: the default version).
pub trait ModelSource: Send + Sync + 'static {
    fn resolve(&self, name: &str, version: Option<&str>) -> Result<Arc<ServedModel>>;
    /// Every version of `name`, for the metadata.
    fn versions(&self, name: &str) -> Result<Vec<String>>;
}

/// One model, served alone under its name.
pub struct SingleModel {
    model: Arc<ServedModel>,
}

impl SingleModel {
    pub fn new(model: ServedModel) -> SingleModel {
        SingleModel { model: Arc::new(model) }
    }
}

impl ModelSource for SingleModel {
    fn resolve(&self, name: &str, version: Option<&str>) -> Result<Arc<ServedModel>> {
        if name != self.model.name {
            return Err(ServingError::UnknownModel(name.into()));
        }
        match version {
            Some(v) if v != self.model.version => {
                Err(ServingError::UnknownVersion { name: name.into(), version: v.into() })
            }
            _ => Ok(self.model.clone()),
        }
    }

    fn versions(&self, name: &str) -> Result<Vec<String>> {
        self.resolve(name, None).map(|m| vec![m.version.clone()])
    }
}

/// Every model in a registry; versions are registry versions or aliases, the default is the
/// latest. Each version is loaded on first use and kept.
pub struct RegistrySource {
    registry: Registry,
    config: BatchConfig,
    loaded: Mutex<HashMap<(String, u32), Arc<ServedModel>>>,
}

impl RegistrySource {
    pub fn new(registry: Registry, config: BatchConfig) -> RegistrySource {
        RegistrySource { registry, config, loaded: Mutex::new(HashMap::new()) }
    }
}

impl ModelSource for RegistrySource {
    fn resolve(&self, name: &str, version: Option<&str>) -> Result<Arc<ServedModel>> {
        let record = self.registry.model(name, version).map_err(|e| match e {
            // A bad name in a URL is just a model that does not exist.
            ServingError::BadName(n, _) => ServingError::UnknownModel(n),
            other => other,
        })?;
        let key = (record.name.clone(), record.version);
        let mut loaded =
            self.loaded.lock().map_err(|_| ServingError::Model("model cache poisoned".into()))?;
        if let Some(m) = loaded.get(&key) {
            return Ok(m.clone());
        }
        // Loading happens once per version, under the lock, so two first requests do not both load.
        let dir = self.registry.materialize(&record)?;
        let pipeline = load_pipeline(&dir)?;
        let reference = self.registry.reference(&record);
        let model =
            Arc::new(ServedModel::new(pipeline, name, &record.version.to_string(), reference, self.config)?);
        loaded.insert(key, model.clone());
        Ok(model)
    }

    fn versions(&self, name: &str) -> Result<Vec<String>> {
        let all = self.registry.models()?;
        let v: Vec<String> = all.iter().filter(|m| m.name == name).map(|m| m.version.to_string()).collect();
        if v.is_empty() { Err(ServingError::UnknownModel(name.into())) } else { Ok(v) }
    }
}

type Source = Arc<dyn ModelSource>;

/// The protocol's routes for one model.
pub fn router(model: ServedModel) -> Router {
    source_router(Arc::new(SingleModel::new(model)))
}

/// The protocol's routes for every model registered under `store`.
pub fn registry_router(store: &Path, config: BatchConfig) -> Router {
    source_router(Arc::new(RegistrySource::new(Registry::open(store), config)))
}

pub fn source_router(source: Source) -> Router {
    Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(|| async { Json(json!({"live": true})) }))
        .route("/v2/health/ready", get(|| async { Json(json!({"ready": true})) }))
        .route("/v2/models/{name}", get(metadata))
        .route("/v2/models/{name}/versions/{version}", get(metadata_v))
        .route("/v2/models/{name}/ready", get(ready))
        .route("/v2/models/{name}/versions/{version}/ready", get(ready_v))
        .route("/v2/models/{name}/infer", post(infer))
        .route("/v2/models/{name}/versions/{version}/infer", post(infer_v))
        .route("/v2/models/{name}/drift", get(drift))
        .route("/v2/models/{name}/versions/{version}/drift", get(drift_v))
        .fallback(|| async {
            ApiError(ServingError::BadRequest("no such endpoint".into()), StatusCode::NOT_FOUND)
        })
        .with_state(source)
}

struct Json(Value);

impl IntoResponse for Json {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.0).unwrap_or_default();
        ([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
    }
}

struct ApiError(ServingError, StatusCode);

impl From<ServingError> for ApiError {
    fn from(e: ServingError) -> Self {
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        ApiError(e, status)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = Json(json!({"error": self.0.to_string()})).into_response();
        *r.status_mut() = self.1;
        r
    }
}

type ApiResult = std::result::Result<Json, ApiError>;

async fn server_metadata() -> Json {
    Json(json!({"name": "quarry", "version": env!("CARGO_PKG_VERSION"), "extensions": []}))
}

fn model_metadata(source: &Source, name: &str, version: Option<&str>) -> ApiResult {
    let m = source.resolve(name, version)?;
    let versions = source.versions(name)?;
    let inputs: Vec<Value> = m
        .inputs
        .iter()
        .map(|i| json!({"name": i.name, "datatype": i.datatype, "shape": [-1], "parameters": {"kind": i.kind.name()}}))
        .collect();
    let outputs: Vec<Value> =
        m.outputs().into_iter().map(|(n, d, s)| json!({"name": n, "datatype": d, "shape": s})).collect();
    let mut meta = json!({
        "name": m.name,
        "versions": versions,
        "platform": "quarry",
        "inputs": inputs,
        "outputs": outputs,
        "parameters": {"task": m.pipeline.task, "metric": m.pipeline.metric},
    });
    if m.is_classifier() {
        meta["parameters"]["classes"] = json!(m.classes());
    }
    Ok(Json(meta))
}

async fn metadata(State(s): State<Source>, UrlPath(name): UrlPath<String>) -> ApiResult {
    model_metadata(&s, &name, None)
}

async fn metadata_v(State(s): State<Source>, UrlPath((name, v)): UrlPath<(String, String)>) -> ApiResult {
    model_metadata(&s, &name, Some(&v))
}

async fn ready(State(s): State<Source>, UrlPath(name): UrlPath<String>) -> ApiResult {
    let m = s.resolve(&name, None)?;
    Ok(Json(json!({"name": m.name, "ready": true})))
}

async fn ready_v(State(s): State<Source>, UrlPath((name, v)): UrlPath<(String, String)>) -> ApiResult {
    let m = s.resolve(&name, Some(&v))?;
    Ok(Json(json!({"name": m.name, "ready": true})))
}

async fn drift(State(s): State<Source>, UrlPath(name): UrlPath<String>) -> ApiResult {
    drift_report(&s, &name, None)
}

async fn drift_v(State(s): State<Source>, UrlPath((name, v)): UrlPath<(String, String)>) -> ApiResult {
    drift_report(&s, &name, Some(&v))
}

fn drift_report(source: &Source, name: &str, version: Option<&str>) -> ApiResult {
    let m = source.resolve(name, version)?;
    let report = m.drift(&Thresholds::default())?;
    let mut v = serde_json::to_value(report).map_err(|e| ServingError::Model(e.to_string()))?;
    v["model_name"] = json!(m.name);
    v["model_version"] = json!(m.version);
    Ok(Json(v))
}

async fn infer(
    State(s): State<Source>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    run_infer(&s, &name, None, &headers, &body).await
}

async fn infer_v(
    State(s): State<Source>,
    UrlPath((name, v)): UrlPath<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    run_infer(&s, &name, Some(&v), &headers, &body).await
}

#[derive(Deserialize)]
struct InferRequest {
    #[serde(default)]
    id: Option<String>,
    inputs: Vec<RequestInput>,
    #[serde(default)]
    outputs: Option<Vec<RequestOutput>>,
}

#[derive(Deserialize)]
struct RequestInput {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    data: Value,
}

#[derive(Deserialize)]
struct RequestOutput {
    name: String,
}

const DATATYPES: &[&str] = &[
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64",
    "BYTES",
];

async fn run_infer(
    source: &Source,
    name: &str,
    version: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult {
    let model = source.resolve(name, version)?;
    let arrival = model.arriving();
    if headers.contains_key("inference-header-content-length") {
        return Err(ServingError::BadRequest(
            "the binary tensor extension is not supported: send JSON tensors (tritonclient: binary_data=False)"
                .into(),
        )
        .into());
    }
    let request: InferRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        // Python's json (tritonclient) writes NaN and Infinity bare, which JSON does not allow.
        Err(e) => serde_json::from_slice(&non_finite_to_strings(body).ok_or(e).map_err(malformed)?)
            .map_err(malformed)?,
    };
    let table = request_table(&model, &request)?;
    let n = table.n_rows;
    let wanted: Vec<String> = match &request.outputs {
        Some(outs) if !outs.is_empty() => {
            let known = model.outputs();
            for o in outs {
                if !known.iter().any(|(k, _, _)| *k == o.name) {
                    let names: Vec<&str> = known.iter().map(|(k, _, _)| *k).collect();
                    return Err(ServingError::BadRequest(format!(
                        "unknown output {:?} (this model has {})",
                        o.name,
                        names.join(", ")
                    ))
                    .into());
                }
            }
            outs.iter().map(|o| o.name.clone()).collect()
        }
        _ => model.outputs().into_iter().map(|(k, _, _)| k.to_string()).collect(),
    };
    let predictions = model.score(arrival, table).await?;
    let mut outputs = Vec::new();
    match &predictions {
        Predictions::Probabilities { n_classes, values } => {
            let classes = model.classes();
            if wanted.iter().any(|w| w == "label") {
                let labels: Vec<&str> = predictions
                    .class_codes()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|c| classes.get(c as usize).map_or("", String::as_str))
                    .collect();
                outputs.push(json!({"name": "label", "datatype": "BYTES", "shape": [n], "data": labels}));
            }
            if wanted.iter().any(|w| w == "probabilities") {
                outputs.push(json!({"name": "probabilities", "datatype": "FP64", "shape": [n, n_classes], "data": values}));
            }
        }
        Predictions::Values(v) => {
            outputs.push(json!({"name": "prediction", "datatype": "FP64", "shape": [n], "data": v}));
        }
    }
    let mut response = json!({"model_name": model.name, "model_version": model.version, "outputs": outputs});
    if let Some(id) = request.id {
        response["id"] = json!(id);
    }
    Ok(Json(response))
}

fn malformed(e: serde_json::Error) -> ServingError {
    ServingError::BadRequest(format!("malformed inference request: {e}"))
}

/// Rewrites bare `NaN`, `Infinity` and `-Infinity` tokens (outside strings) as the strings
/// "NaN", "inf" and "-inf"; `None` when there are none.
fn non_finite_to_strings(body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(body.len() + 16);
    let (mut in_string, mut escaped, mut changed, mut i) = (false, false, false, 0);
    while i < body.len() {
        let b = body[i];
        if in_string {
            out.push(b);
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        let rest = &body[i..];
        let token: Option<(&[u8], &[u8])> =
            [(&b"NaN"[..], &b"\"NaN\""[..]), (b"-Infinity", b"\"-inf\""), (b"Infinity", b"\"inf\"")]
                .into_iter()
                .find(|(t, _)| rest.starts_with(t));
        if let Some((t, replacement)) = token {
            out.extend_from_slice(replacement);
            i += t.len();
            changed = true;
            continue;
        }
        if b == b'"' {
            in_string = true;
        }
        out.push(b);
        i += 1;
    }
    changed.then_some(out)
}

/// The request's columns as text, in the model's input order.
fn request_table(model: &ServedModel, request: &InferRequest) -> Result<Table> {
    let bad = |m: String| ServingError::BadRequest(m);
    for input in &request.inputs {
        if !model.inputs.iter().any(|i| i.name == input.name) {
            let names: Vec<&str> = model.inputs.iter().map(|i| i.name.as_str()).collect();
            return Err(bad(format!(
                "unknown input {:?} (this model reads {})",
                input.name,
                names.join(", ")
            )));
        }
    }
    let mut n_rows: Option<usize> = None;
    let mut columns = Vec::with_capacity(model.inputs.len());
    for spec in &model.inputs {
        let mut found = request.inputs.iter().filter(|i| i.name == spec.name);
        let input = found.next().ok_or_else(|| bad(format!("missing input {:?}", spec.name)))?;
        if found.next().is_some() {
            return Err(bad(format!("input {:?} is given twice", spec.name)));
        }
        if !DATATYPES.contains(&input.datatype.as_str()) {
            return Err(bad(format!("input {:?}: unknown datatype {:?}", input.name, input.datatype)));
        }
        let rows = match input.shape.as_slice() {
            [n] | [n, 1] if *n >= 0 => *n as usize,
            _ => {
                return Err(bad(format!(
                    "input {:?}: shape {:?} is not [N] or [N, 1] (one column per input)",
                    input.name, input.shape
                )));
            }
        };
        if *n_rows.get_or_insert(rows) != rows {
            return Err(bad(format!(
                "input {:?} has {rows} rows but another input has {}",
                input.name,
                n_rows.unwrap_or(0)
            )));
        }
        let mut values = StrColumn::new();
        let mut count = 0usize;
        push_values(&input.data, &input.datatype, &mut values, &mut count)
            .map_err(|m| bad(format!("input {:?}: {m}", input.name)))?;
        if count != rows {
            return Err(bad(format!(
                "input {:?}: shape says {rows} values but data has {count}",
                input.name
            )));
        }
        columns.push(RawColumn { name: spec.name.clone(), values: RawValues::Text(values) });
    }
    let n_rows = n_rows.unwrap_or(0);
    if n_rows == 0 {
        return Err(bad("the request has no rows".into()));
    }
    Ok(Table { n_rows, columns })
}

/// Flattens (row-major) nested arrays into text cells, as a CSV file would hold them.
fn push_values(
    data: &Value,
    datatype: &str,
    out: &mut StrColumn,
    count: &mut usize,
) -> std::result::Result<(), String> {
    match data {
        Value::Array(items) => {
            for item in items {
                push_values(item, datatype, out, count)?;
            }
            return Ok(());
        }
        Value::Null => out.push(None),
        Value::String(s) if datatype == "BYTES" => out.push(Some(s.as_str())),
        // Non-finite numbers arrive as strings (see `non_finite_to_strings`); NaN is missing.
        Value::String(s) if matches!(s.as_str(), "NaN" | "inf" | "-inf") => {
            out.push(Some(s.as_str()).filter(|s| *s != "NaN"))
        }
        Value::Bool(b) if datatype == "BOOL" => out.push(Some(if *b { "true" } else { "false" })),
        Value::Number(n) if datatype != "BYTES" && datatype != "BOOL" => {
            // Integers print without ".0" and floats in shortest round-trip form, so the
            // featurizer parses back exactly the number that was sent.
            let text = match (n.as_i64(), n.as_u64(), n.as_f64()) {
                (Some(i), _, _) => i.to_string(),
                (_, Some(u), _) => u.to_string(),
                (_, _, Some(f)) => f.to_string(),
                _ => return Err(format!("cannot read {n}")),
            };
            out.push(Some(&text))
        }
        other => return Err(format!("value {other} does not match datatype {datatype}")),
    };
    *count += 1;
    if *count > u32::MAX as usize {
        return Err("too many values".into());
    }
    Ok(())
}
