//! The Open Inference Protocol v2 (KServe / Triton REST) over axum: health, server and model
//! metadata, readiness, inference, and a drift report per model.
//!
//! Inputs are columns (one per raw column the pipeline reads, shape `[N]` or `[N, 1]`); each
//! value is turned into the text a CSV cell would hold, so a request scores exactly like
//! `quarry predict` on the same rows. Tensors come as JSON `data` or, with the binary tensor
//! data extension (tritonclient's default), as bytes after the JSON; outputs go back either way.
//! Errors are the protocol's `{"error": "..."}` with a 4xx code for anything the client got
//! wrong.
//!
//! One request cannot take the server down: the body has its own limit ([`Limits::max_body`],
//! checked before reading when the length is declared), it is parsed into typed fields (never
//! a generic JSON tree), a request over [`Limits::max_rows`] is refused before its data is
//! decoded, large bodies are parsed off the async threads, and the model's queue is bounded
//! (`BatchConfig::max_queued_rows`, 503 when full).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
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
use crate::tensor::{self, DATATYPES, JsonCells};

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

/// The default [`Limits::max_body`]: 16 MiB is about a million JSON numbers.
pub const DEFAULT_MAX_REQUEST_BODY: usize = 16 << 20;
/// The default [`Limits::max_rows`] (Triton's `max_batch_size`, per request).
pub const DEFAULT_MAX_REQUEST_ROWS: usize = 65_536;

/// What one inference request may hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes of request body (JSON and binary tensors together); larger gets 413.
    pub max_body: usize,
    /// Rows per request; more gets 413.
    pub max_rows: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_body: DEFAULT_MAX_REQUEST_BODY, max_rows: DEFAULT_MAX_REQUEST_ROWS }
    }
}

/// A body up to this size is parsed on the async thread; a larger one on a blocking thread, so
/// parsing it does not hold up the small requests that share the async thread.
const INLINE_PARSE_BYTES: usize = 64 << 10;

#[derive(Clone)]
struct Api {
    source: Source,
    limits: Limits,
}

/// The protocol's routes for one model.
pub fn router(model: ServedModel, limits: Limits) -> Router {
    source_router(Arc::new(SingleModel::new(model)), limits)
}

/// The protocol's routes for every model registered under `store`.
pub fn registry_router(store: &Path, config: BatchConfig, limits: Limits) -> Router {
    source_router(Arc::new(RegistrySource::new(Registry::open(store), config)), limits)
}

pub fn source_router(source: Source, limits: Limits) -> Router {
    let max = limits.max_body;
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
        .with_state(Api { source, limits })
        // Inner to any limit of a router this one is merged into, so this one decides for /v2.
        .layer(middleware::from_fn(move |req: Request, next: Next| check_length(max, req, next)))
        .layer(DefaultBodyLimit::max(max))
}

fn too_large(max: usize) -> ServingError {
    ServingError::TooLarge(format!(
        "the request body is larger than this server's --max-request-body ({max} bytes)"
    ))
}

/// A declared length over the limit is refused before the body is read; a body without one is
/// cut off at the limit by `DefaultBodyLimit` (see `body_or_413`).
async fn check_length(max: usize, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return ApiError::from(too_large(max)).into_response();
    }
    next.run(req).await
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
    Json(
        json!({"name": "quarry", "version": env!("CARGO_PKG_VERSION"), "extensions": ["binary_tensor_data"]}),
    )
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

async fn metadata(State(s): State<Api>, UrlPath(name): UrlPath<String>) -> ApiResult {
    model_metadata(&s.source, &name, None)
}

async fn metadata_v(State(s): State<Api>, UrlPath((name, v)): UrlPath<(String, String)>) -> ApiResult {
    model_metadata(&s.source, &name, Some(&v))
}

async fn ready(State(s): State<Api>, UrlPath(name): UrlPath<String>) -> ApiResult {
    let m = s.source.resolve(&name, None)?;
    Ok(Json(json!({"name": m.name, "ready": true})))
}

async fn ready_v(State(s): State<Api>, UrlPath((name, v)): UrlPath<(String, String)>) -> ApiResult {
    let m = s.source.resolve(&name, Some(&v))?;
    Ok(Json(json!({"name": m.name, "ready": true})))
}

async fn drift(State(s): State<Api>, UrlPath(name): UrlPath<String>) -> ApiResult {
    drift_report(&s.source, &name, None)
}

async fn drift_v(State(s): State<Api>, UrlPath((name, v)): UrlPath<(String, String)>) -> ApiResult {
    drift_report(&s.source, &name, Some(&v))
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
    State(s): State<Api>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> std::result::Result<Response, ApiError> {
    run_infer(&s, &name, None, &headers, body_or_413(body, s.limits)?).await
}

async fn infer_v(
    State(s): State<Api>,
    UrlPath((name, v)): UrlPath<(String, String)>,
    headers: HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> std::result::Result<Response, ApiError> {
    run_infer(&s, &name, Some(&v), &headers, body_or_413(body, s.limits)?).await
}

/// The body, or the protocol's JSON error (413 for a body cut off at the limit).
fn body_or_413(body: std::result::Result<Bytes, BytesRejection>, limits: Limits) -> Result<Bytes> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large(limits.max_body)
        } else {
            ServingError::BadRequest(format!("cannot read the request body: {e}"))
        }
    })
}

/// The request's JSON, read into typed fields (the tensors' `data` straight into text cells).
#[derive(Deserialize)]
struct InferRequest {
    #[serde(default)]
    id: Option<String>,
    inputs: Vec<RequestInput>,
    #[serde(default)]
    outputs: Option<Vec<RequestOutput>>,
    #[serde(default)]
    parameters: RequestParameters,
}

#[derive(Deserialize, Default)]
struct RequestParameters {
    /// Binary tensor extension: every output as binary data unless the output says otherwise.
    #[serde(default)]
    binary_data_output: Option<bool>,
}

#[derive(Deserialize)]
struct RequestInput {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    data: Option<JsonCells>,
    #[serde(default)]
    parameters: TensorParameters,
}

#[derive(Deserialize, Default)]
struct TensorParameters {
    /// Binary tensor extension: this input's data is this many bytes after the JSON.
    #[serde(default)]
    binary_data_size: Option<u64>,
    /// Binary tensor extension: return this output as binary data.
    #[serde(default)]
    binary_data: Option<bool>,
}

#[derive(Deserialize)]
struct RequestOutput {
    name: String,
    #[serde(default)]
    parameters: TensorParameters,
}

/// The header that splits a binary-extension body into its JSON and the tensors after it.
const HEADER_LENGTH: &str = "inference-header-content-length";

/// A parsed request: its rows as text, its id, and the outputs wanted (name, as binary data?).
struct Parsed {
    table: Table,
    id: Option<String>,
    wanted: Vec<(String, bool)>,
}

async fn run_infer(
    api: &Api,
    name: &str,
    version: Option<&str>,
    headers: &HeaderMap,
    body: Bytes,
) -> std::result::Result<Response, ApiError> {
    let model = api.source.resolve(name, version)?;
    let arrival = model.arriving();
    let header_length = headers.get(HEADER_LENGTH).cloned();
    let limits = api.limits;
    let parsed = if body.len() <= INLINE_PARSE_BYTES {
        parse_request(&model, header_length.as_ref(), &body, limits)?
    } else {
        let m = model.clone();
        tokio::task::spawn_blocking(move || parse_request(&m, header_length.as_ref(), &body, limits))
            .await
            .map_err(|e| ServingError::Model(format!("parsing the request failed: {e}")))??
    };
    let Parsed { table, id, wanted } = parsed;
    let n = table.n_rows;
    let as_binary = |name: &str| wanted.iter().find(|(w, _)| w == name).map(|(_, b)| *b);
    let predictions = model.score(arrival, table).await?;
    let mut response = ResponseBuilder::default();
    match &predictions {
        Predictions::Probabilities { n_classes, values } => {
            let classes = model.classes();
            if let Some(binary) = as_binary("label") {
                let labels: Vec<&str> = predictions
                    .class_codes()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|c| classes.get(c as usize).map_or("", String::as_str))
                    .collect();
                let head = json!({"name": "label", "datatype": "BYTES", "shape": [n]});
                response.push(
                    head,
                    binary,
                    || json!(labels),
                    || tensor::encode_bytes(labels.iter().copied()),
                );
            }
            if let Some(binary) = as_binary("probabilities") {
                let head = json!({"name": "probabilities", "datatype": "FP64", "shape": [n, n_classes]});
                response.push(head, binary, || json!(values), || tensor::encode_f64(values));
            }
        }
        Predictions::Values(v) => {
            if let Some(binary) = as_binary("prediction") {
                let head = json!({"name": "prediction", "datatype": "FP64", "shape": [n]});
                response.push(head, binary, || json!(v), || tensor::encode_f64(v));
            }
        }
    }
    let mut head =
        json!({"model_name": model.name, "model_version": model.version, "outputs": response.outputs});
    if let Some(id) = id {
        head["id"] = json!(id);
    }
    Ok(response.finish(head))
}

fn parse_request(
    model: &ServedModel,
    header_length: Option<&HeaderValue>,
    body: &[u8],
    limits: Limits,
) -> Result<Parsed> {
    let (json, binary) = split_body(header_length, body)?;
    let request: InferRequest = match serde_json::from_slice(json) {
        Ok(r) => r,
        // Python's json (tritonclient) writes NaN and Infinity bare, which JSON does not allow.
        Err(e) => serde_json::from_slice(&non_finite_to_strings(json).ok_or(e).map_err(malformed)?)
            .map_err(malformed)?,
    };
    let table = request_table(model, &request, binary, limits)?;
    let known = model.outputs();
    let default_binary = request.parameters.binary_data_output.unwrap_or(false);
    let wanted: Vec<(String, bool)> = match &request.outputs {
        Some(outs) if !outs.is_empty() => {
            for o in outs {
                if !known.iter().any(|(k, _, _)| *k == o.name) {
                    let names: Vec<&str> = known.iter().map(|(k, _, _)| *k).collect();
                    return Err(ServingError::BadRequest(format!(
                        "unknown output {:?} (this model has {})",
                        o.name,
                        names.join(", ")
                    )));
                }
            }
            outs.iter()
                .map(|o| (o.name.clone(), o.parameters.binary_data.unwrap_or(default_binary)))
                .collect()
        }
        _ => known.iter().map(|(k, _, _)| (k.to_string(), default_binary)).collect(),
    };
    Ok(Parsed { table, id: request.id, wanted })
}

/// Outputs in order, each as JSON `data` or as binary data after the JSON.
#[derive(Default)]
struct ResponseBuilder {
    outputs: Vec<Value>,
    binary: Vec<u8>,
    any_binary: bool,
}

impl ResponseBuilder {
    fn push(
        &mut self,
        mut head: Value,
        binary: bool,
        as_json: impl FnOnce() -> Value,
        as_bytes: impl FnOnce() -> Vec<u8>,
    ) {
        if binary {
            let bytes = as_bytes();
            head["parameters"] = json!({"binary_data_size": bytes.len()});
            self.binary.extend_from_slice(&bytes);
            self.any_binary = true;
        } else {
            head["data"] = as_json();
        }
        self.outputs.push(head);
    }

    fn finish(self, head: Value) -> Response {
        if !self.any_binary {
            return Json(head).into_response();
        }
        let mut body = serde_json::to_vec(&head).unwrap_or_default();
        let json_len = body.len();
        body.extend_from_slice(&self.binary);
        (
            [
                (axum::http::header::CONTENT_TYPE, "application/octet-stream".to_string()),
                (axum::http::HeaderName::from_static(HEADER_LENGTH), json_len.to_string()),
            ],
            body,
        )
            .into_response()
    }
}

/// The JSON part of a body and the binary tensor data after it (empty without the header).
fn split_body<'a>(header_length: Option<&HeaderValue>, body: &'a [u8]) -> Result<(&'a [u8], &'a [u8])> {
    let Some(value) = header_length else { return Ok((body, &[])) };
    let json_len = value.to_str().ok().and_then(|v| v.trim().parse::<usize>().ok()).ok_or_else(|| {
        ServingError::BadRequest(format!(
            "header Inference-Header-Content-Length: {value:?} is not a byte count"
        ))
    })?;
    if json_len > body.len() {
        return Err(ServingError::BadRequest(format!(
            "header Inference-Header-Content-Length: {json_len} is more than the body's {} bytes",
            body.len()
        )));
    }
    Ok(body.split_at(json_len))
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

/// The request's columns as text, in the model's input order; `binary` is the data after the
/// JSON, taken in input order by the inputs that give a `binary_data_size`.
fn request_table(
    model: &ServedModel,
    request: &InferRequest,
    binary: &[u8],
    limits: Limits,
) -> Result<Table> {
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
    // Each binary input's slice of the data, in the order the inputs are listed.
    let mut rest = binary;
    let mut slices: Vec<Option<&[u8]>> = Vec::with_capacity(request.inputs.len());
    for input in &request.inputs {
        let slice = match (input.parameters.binary_data_size, &input.data) {
            (Some(_), Some(_)) => {
                return Err(bad(format!("input {:?} has both data and binary_data_size", input.name)));
            }
            (Some(size), None) => {
                let size = usize::try_from(size).unwrap_or(usize::MAX);
                if size > rest.len() {
                    return Err(bad(format!(
                        "input {:?}: binary_data_size {size} is more than the {} bytes of binary data left \
                         (is the Inference-Header-Content-Length header set?)",
                        input.name,
                        rest.len()
                    )));
                }
                let (mine, tail) = rest.split_at(size);
                rest = tail;
                Some(mine)
            }
            (None, Some(_)) => None,
            (None, None) => return Err(bad(format!("input {:?} has no data", input.name))),
        };
        slices.push(slice);
    }
    if !rest.is_empty() {
        return Err(bad(format!("{} bytes of binary data after the JSON belong to no input", rest.len())));
    }
    let mut n_rows: Option<usize> = None;
    let mut columns = Vec::with_capacity(model.inputs.len());
    for spec in &model.inputs {
        let mut found = request.inputs.iter().zip(&slices).filter(|(i, _)| i.name == spec.name);
        let (input, slice) = found.next().ok_or_else(|| bad(format!("missing input {:?}", spec.name)))?;
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
        if rows > limits.max_rows {
            return Err(ServingError::TooLarge(format!(
                "input {:?}: {rows} rows is more than this server's --max-request-rows ({}); send fewer rows \
                 per request",
                input.name, limits.max_rows
            )));
        }
        if *n_rows.get_or_insert(rows) != rows {
            return Err(bad(format!(
                "input {:?} has {rows} rows but another input has {}",
                input.name,
                n_rows.unwrap_or(0)
            )));
        }
        let in_input = |m: String| bad(format!("input {:?}: {m}", input.name));
        let (values, count) = match (slice, &input.data) {
            (Some(bytes), _) => {
                let mut values = StrColumn::new();
                let count = tensor::decode_binary(&input.datatype, bytes, &mut values).map_err(in_input)?;
                (values, count)
            }
            (None, Some(cells)) => (cells.to_column(&input.datatype).map_err(in_input)?, cells.len()),
            (None, None) => return Err(bad(format!("input {:?} has no data", input.name))),
        };
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
