//! The JSON API under `/api/` (listed in `/openapi.json`).

use axum::Router;
use axum::body::Body;
use axum::extract::multipart::Field;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::{ApiError, AppState, data};
use crate::limits;
use crate::state::JobSpec;

/// Artifacts read into a JSON answer (guardrails, run record, explanations) at most this big.
const MAX_JSON_ARTIFACT: u64 = 16 << 20;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/openapi.json", get(|| async { axum::Json(super::openapi()) }))
        .route("/api/jobs", get(list_jobs).post(create_job))
        .route("/api/jobs/{id}", get(get_job))
        .route("/api/jobs/{id}/cancel", post(cancel_job))
        .route("/api/jobs/{id}/leaderboard", get(leaderboard))
        .route("/api/jobs/{id}/leaderboard.csv", get(leaderboard_csv))
        .route("/api/jobs/{id}/events", get(events))
        .route("/api/jobs/{id}/trials/{trial}", get(trial))
        .route("/api/jobs/{id}/guardrails", get(|s, p| json_artifact(s, p, "guardrails.json")))
        .route("/api/jobs/{id}/profile", get(|s, p| json_artifact(s, p, "run.json")))
        .route("/api/jobs/{id}/importance", get(|s, p| json_artifact(s, p, "explanations.json")))
        .route("/api/jobs/{id}/artifacts", get(list_artifacts))
        .route("/api/jobs/{id}/artifacts/{*name}", get(download_artifact))
        .route("/api/jobs/{id}/run.tar", get(run_tar))
}

async fn list_jobs(State(s): State<AppState>) -> axum::Json<Value> {
    axum::Json(json!({ "jobs": jobs_json(&s) }))
}

pub fn jobs_json(s: &AppState) -> Vec<Value> {
    s.server.read(|c| c.jobs().map(data::job_summary).collect())
}

async fn get_job(State(s): State<AppState>, Path(id): Path<String>) -> Result<axum::Json<Value>, ApiError> {
    s.server.read(|c| data::job(c, &id).map(data::job_summary)).map(axum::Json)
}

async fn cancel_job(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    s.server.cancel_job(&id).await.map_err(ApiError::from_status)?;
    s.server.read(|c| data::job(c, &id).map(data::job_summary)).map(axum::Json)
}

async fn leaderboard(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    s.server.read(|c| data::job(c, &id).map(|j| data::leaderboard(j, &s.live))).map(axum::Json)
}

async fn leaderboard_csv(State(s): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let csv = s.server.read(|c| data::job(c, &id).map(data::leaderboard_csv))?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{}-leaderboard.csv\"", safe_name(&id)),
            ),
        ],
        csv,
    )
        .into_response())
}

#[derive(serde::Deserialize)]
struct From {
    #[serde(default)]
    from: usize,
}

async fn events(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<From>,
) -> Result<Response, ApiError> {
    s.server.read(|c| data::job(c, &id).map(|_| ()))?;
    Ok(s.live.job_stream(s.server.clone(), id, q.from).into_response())
}

async fn trial(
    State(s): State<AppState>,
    Path((id, trial)): Path<(String, u64)>,
) -> Result<axum::Json<Value>, ApiError> {
    trial_json(&s, &id, trial).map(axum::Json)
}

pub fn trial_json(s: &AppState, id: &str, trial: u64) -> Result<Value, ApiError> {
    let curve = s.server.trial_curve(id, trial);
    s.server.read(|c| data::trial(data::job(c, id)?, &s.live, trial, curve))
}

/// A JSON artifact of the job (404 until a worker produced it).
pub async fn read_json_artifact(s: &AppState, id: &str, name: &str) -> Result<Value, ApiError> {
    let hash = s.server.read(|c| data::job(c, id).map(|j| data::artifact_hash(j, name)))?;
    let hash = hash.ok_or_else(|| ApiError::not_found(format!("job {id} has no {name} (yet)")))?;
    let path = s.server.blobs().path(&hash).map_err(|e| ApiError::not_found(e.to_string()))?;
    let size = tokio::fs::metadata(&path).await.map(|m| m.len()).unwrap_or(0);
    if size > MAX_JSON_ARTIFACT {
        return Err(ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            format!("{name} is too large to show ({size} bytes); download it"),
        ));
    }
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("reading {name}: {e}")))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{name} is not JSON: {e}")))
}

async fn json_artifact(
    State(s): State<AppState>,
    Path(id): Path<String>,
    name: &'static str,
) -> Result<axum::Json<Value>, ApiError> {
    read_json_artifact(&s, &id, name).await.map(axum::Json)
}

async fn list_artifacts(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    s.server
        .read(|c| {
            data::job(c, &id).map(|j| json!({ "artifacts": j.final_artifacts.iter().map(data::artifact_json).collect::<Vec<_>>() }))
        })
        .map(axum::Json)
}

/// A file name safe inside a quoted Content-Disposition value.
fn safe_name(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect()
}

async fn download_artifact(
    State(s): State<AppState>,
    Path((id, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let hash = s.server.read(|c| {
        data::job(c, &id).map(|j| j.final_artifacts.iter().find(|a| a.name == name).map(|a| a.hash.clone()))
    })?;
    let hash = hash.ok_or_else(|| ApiError::not_found(format!("job {id} has no artifact {name:?}")))?;
    let file = s.server.blobs().open_blob(&hash).await.map_err(|e| ApiError::not_found(e.to_string()))?;
    let base = name.rsplit('/').next().unwrap_or(&name);
    let kind = if name.ends_with(".json") { "application/json" } else { "application/octet-stream" };
    Ok((
        [
            (header::CONTENT_TYPE, kind.to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{}\"", safe_name(base))),
        ],
        Body::from_stream(tokio_util::io::ReaderStream::new(file)),
    )
        .into_response())
}

/// The run folder as one tar file (the job's final artifacts under `JOB/`).
async fn run_tar(State(s): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let artifacts = s.server.read(|c| data::job(c, &id).map(|j| j.final_artifacts.clone()))?;
    if artifacts.is_empty() {
        return Err(ApiError::not_found(format!("job {id} has no run folder yet (it is not completed)")));
    }
    let mut files = Vec::new();
    for a in &artifacts {
        let path = s.server.blobs().path(&a.hash).map_err(|e| ApiError::not_found(e.to_string()))?;
        files.push((a.name.clone(), path));
    }
    let dir = safe_name(&id);
    let tar = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, path) in files {
            let mut f = std::fs::File::open(&path)?;
            b.append_file(format!("{dir}/{name}"), &mut f)?;
        }
        b.into_inner()
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("building the tar: {e}")))?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-tar".to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{}.tar\"", safe_name(&id))),
        ],
        tar,
    )
        .into_response())
}

/// `POST /api/jobs`: a multipart upload (`file`, `target`, and optionally `task`, `budget`,
/// `max_trials`, `metric`, `experiment`, `seed`, `scheduler`). The file goes to the blob store
/// by content hash, as an uploaded dataset does over gRPC.
async fn create_job(State(s): State<AppState>, multipart: Multipart) -> Result<Response, ApiError> {
    let id = create_from_form(&s, multipart).await?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/api/jobs/{id}"))],
        axum::Json(json!({ "id": id })),
    )
        .into_response())
}

pub async fn create_from_form(s: &AppState, mut multipart: Multipart) -> Result<String, ApiError> {
    let mut spec = JobSpec::default();
    let mut budget: Option<String> = None;
    let mut uploaded = false;
    while let Some(mut field) = multipart.next_field().await.map_err(field_err)? {
        let name = field.name().unwrap_or_default().to_string();
        if name == "file" {
            // Browsers send a quote in a file name as %22 (HTML's multipart encoding).
            spec.file_name = field.file_name().unwrap_or("upload.csv").replace("%22", "\"");
            limits::check_field("file_name", &spec.file_name)
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
            let mut w = s
                .server
                .blobs()
                .writer()
                .await
                .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
            let mut size = 0u64;
            while let Some(chunk) = field.chunk().await.map_err(field_err)? {
                size += chunk.len() as u64;
                w.write(&chunk)
                    .await
                    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
            }
            if size == 0 {
                return Err(ApiError::bad_request(format!(
                    "the uploaded file {:?} is empty",
                    spec.file_name
                )));
            }
            let (hash, _) = w
                .finish()
                .await
                .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
            spec.dataset_hash = hash;
            uploaded = true;
            continue;
        }
        let value = match field_text(&mut field, &name).await {
            Ok(v) => v.trim().to_string(),
            Err(e) => {
                // Read the rest before answering: a client still sending would see its
                // connection reset instead of the reason.
                while let Ok(Some(_)) = field.chunk().await {}
                drop(field);
                drain(&mut multipart).await;
                return Err(e);
            }
        };
        if value.is_empty() {
            continue;
        }
        match name.as_str() {
            "target" => spec.target = value,
            "task" => spec.task = if value == "auto" { String::new() } else { value },
            "metric" => spec.metric = value,
            "experiment" => spec.experiment = value,
            "scheduler" => spec.scheduler = value,
            "budget" => budget = Some(value),
            "max_trials" => {
                spec.max_trials = Some(value.parse().map_err(|_| {
                    ApiError::bad_request(format!("max_trials {value:?} is not a whole number"))
                })?)
            }
            "seed" => {
                spec.seed = value
                    .parse()
                    .map_err(|_| ApiError::bad_request(format!("seed {value:?} is not a whole number")))?
            }
            other => return Err(ApiError::bad_request(format!("unknown form field {other:?}"))),
        }
    }
    if !uploaded {
        return Err(ApiError::bad_request("no dataset: send the CSV as the multipart field \"file\""));
    }
    if spec.target.is_empty() {
        return Err(ApiError::bad_request(
            "no target: set the form field \"target\" to the column to predict",
        ));
    }
    if let Some(b) = budget {
        spec.budget_ms = Some(
            parse_budget(&b)
                .ok_or_else(|| ApiError::bad_request(format!("budget {b:?}: use e.g. 30s, 5m or 1h")))?,
        );
    }
    if let Some(task) = Some(spec.task.as_str()).filter(|t| !t.is_empty())
        && !["binary", "multiclass", "regression"].contains(&task)
    {
        return Err(ApiError::bad_request(format!(
            "task {task:?}: use auto, binary, multiclass or regression"
        )));
    }
    s.server.create_job(spec).await.map_err(ApiError::from_status)
}

/// A text form field, refused with 400 naming it once it passes [`limits::MAX_FIELD_BYTES`]
/// (no form field is longer; reading it whole first would hold up to `--max-upload` bytes).
async fn field_text(field: &mut Field<'_>, name: &str) -> Result<String, ApiError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(field_err)? {
        if bytes.len() + chunk.len() > limits::MAX_FIELD_BYTES {
            return Err(ApiError::bad_request(format!(
                "form field {:?} is longer than the {} bytes allowed",
                safe_name(name),
                limits::MAX_FIELD_BYTES
            )));
        }
        bytes.extend_from_slice(&chunk);
    }
    String::from_utf8(bytes)
        .map_err(|_| ApiError::bad_request(format!("form field {:?} is not UTF-8 text", safe_name(name))))
}

/// Reads and drops the rest of a refused form (the body limit bounds it).
async fn drain(multipart: &mut Multipart) {
    while let Ok(Some(mut f)) = multipart.next_field().await {
        while let Ok(Some(_)) = f.chunk().await {}
    }
}

fn field_err(e: axum::extract::multipart::MultipartError) -> ApiError {
    ApiError::new(e.status(), e.body_text())
}

/// `30s`, `5m`, `1h`, `500ms` or plain seconds.
pub fn parse_budget(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let ms = match unit.trim() {
        "ms" => n,
        "" | "s" => n * 1e3,
        "m" | "min" => n * 60e3,
        "h" => n * 3600e3,
        _ => return None,
    };
    (ms.is_finite() && ms >= 1.0).then_some(ms as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_parse_with_units() {
        assert_eq!(parse_budget("30s"), Some(30_000));
        assert_eq!(parse_budget("5m"), Some(300_000));
        assert_eq!(parse_budget("90"), Some(90_000));
        assert_eq!(parse_budget("1.5h"), Some(5_400_000));
        assert_eq!(parse_budget("250ms"), Some(250));
        assert_eq!(parse_budget("soon"), None);
        assert_eq!(parse_budget("0s"), None);
        assert_eq!(safe_name("a\"b/c.onnx"), "a_b_c.onnx");
    }
}
