//! A job's data on this worker: the dataset fetched by hash, prepared once per job.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use quarry_featurize::{ColumnOverrides, Featurizer, Guardrails, Metric, TargetEncoder, Task};
use quarry_learners::Family;
use quarry_proto::pb;
use quarry_search::{DataShape, ValidationKind};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::connection::{Backoff, Client, rpc};
use super::{JOBS_CACHED, RESULT_RETRY_FOR, Shared};
use crate::{PrepareOptions, TrialData, TrialRunner, WorkerError};

/// A job's prepared data, shared by every task of the job this worker runs.
pub struct JobData {
    pub runner: TrialRunner,
    pub featurizer: Featurizer,
    pub encoder: TargetEncoder,
    pub guard: Guardrails,
    pub dataset: serde_json::Value,
    pub metric: Metric,
    pub task: Task,
    pub shape: DataShape,
    pub validation: ValidationKind,
    pub grouped_by: Option<String>,
    pub threads: usize,
}

/// A job's `JobSpec` as prepare options (the same meaning as `quarry fit`'s flags).
pub fn prepare_options(spec: &pb::JobSpec) -> Result<PrepareOptions, WorkerError> {
    let task = match spec.task.as_str() {
        "" | "auto" => None,
        "binary" => Some(Task::Binary),
        "multiclass" => Some(Task::Multiclass),
        "regression" => Some(Task::Regression),
        other => return Err(WorkerError::Invalid(format!("unknown task {other:?}"))),
    };
    let mut overrides = match &spec.column_types_file {
        Some(text) => ColumnOverrides::from_spec_str(text)?,
        None => ColumnOverrides::default(),
    };
    for arg in &spec.column_types {
        overrides.parse_kind_arg(arg)?;
    }
    overrides.drop.extend(spec.drop_columns.iter().cloned());
    Ok(PrepareOptions {
        target: spec.target.clone(),
        task,
        metric: Some(spec.metric.clone()).filter(|m| !m.is_empty()),
        overrides,
        group_column: spec.group_column.clone().filter(|g| !g.is_empty()),
        memory_limit: None,
    })
}

/// Load, featurize and split a file exactly as `quarry fit` does.
pub fn prepare_job(
    path: &Path,
    spec: &pb::JobSpec,
    threads: usize,
    memory_limit: Option<u64>,
) -> Result<JobData, WorkerError> {
    let opts = PrepareOptions { memory_limit, ..prepare_options(spec)? };
    let prepared = crate::prepare(path, &opts)?;
    let plan = prepared.validation_plan(spec.seed)?;
    let shape = prepared.shape();
    let dataset = prepared.dataset_record();
    let crate::Prepared { encoder, metric, featurizer, x, y, guard, target_encodings, .. } = prepared;
    let task = encoder.task;
    let validation = plan.kind;
    let grouped_by = opts.group_column.clone().filter(|_| plan.grouped);
    let target_encodings = (!target_encodings.is_empty()).then_some(target_encodings);
    let runner = TrialRunner::new(TrialData { x, y, task, metric, plan, target_encodings }, threads)?;
    Ok(JobData {
        runner,
        featurizer,
        encoder,
        guard,
        dataset,
        metric,
        task,
        shape,
        validation,
        grouped_by,
        threads,
    })
}

/// The job's prepared data: fetched and prepared once, then shared.
pub(super) async fn job_data(shared: &Arc<Shared>, task: &pb::Task) -> Result<Arc<JobData>, WorkerError> {
    let spec = task.spec.clone().ok_or(WorkerError::Invalid("task without a job spec".into()))?;
    let cell = {
        let mut jobs = shared.jobs.lock().map_err(|_| WorkerError::Invalid("job cache poisoned".into()))?;
        match jobs.iter().find(|(id, _)| *id == task.job_id) {
            Some((_, cell)) => cell.clone(),
            None => {
                let cell = Arc::new(tokio::sync::OnceCell::new());
                jobs.push((task.job_id.clone(), cell.clone()));
                if jobs.len() > JOBS_CACHED {
                    jobs.remove(0);
                }
                cell
            }
        }
    };
    let result = cell
        .get_or_init(|| async {
            let path = match fetch_dataset(shared, &spec).await {
                Ok(p) => p,
                Err(e) => return Err(e.to_string()),
            };
            let threads = shared.config.threads;
            let memory = shared.memory.clone();
            let prepare = move || {
                let limit = memory.as_ref().map(|b| b.limit());
                let mut data = prepare_job(&path, &spec, threads, limit)?;
                if let Some(budget) = memory {
                    data.runner.set_memory_budget(budget);
                }
                Ok::<_, WorkerError>(data)
            };
            match tokio::task::spawn_blocking(prepare).await {
                Ok(Ok(data)) => Ok(Arc::new(data)),
                Ok(Err(e)) => Err(e.to_string()),
                Err(e) => Err(format!("prepare panicked: {e}")),
            }
        })
        .await;
    match result {
        Ok(d) => Ok(d.clone()),
        Err(e) => {
            // A transient failure (the coordinator went away mid-download) must not stick.
            if let Ok(mut jobs) = shared.jobs.lock() {
                jobs.retain(|(id, _)| *id != task.job_id);
            }
            Err(WorkerError::Invalid(e.clone()))
        }
    }
}

/// Downloads the dataset into the cache (by hash, so a second job on the same data reuses it),
/// checking its sha256.
pub(super) async fn fetch_dataset(shared: &Shared, spec: &pb::JobSpec) -> Result<PathBuf, WorkerError> {
    let hash = spec.dataset_hash.to_ascii_lowercase();
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(WorkerError::Invalid(format!("dataset hash {hash:?} is not a sha256")));
    }
    // The cached copy is named after the file: it must stay inside the cache.
    if !spec.file_name.is_empty() {
        quarry_featurize::safe_name(&spec.file_name)
            .map_err(|why| WorkerError::Invalid(format!("dataset file name {:?}: {why}", spec.file_name)))?;
    }
    // The extension picks the reader.
    let ext =
        Path::new(&spec.file_name).extension().and_then(|e| e.to_str()).unwrap_or("csv").to_ascii_lowercase();
    let path = shared.config.cache_dir.join(format!("{hash}.{ext}"));
    if path.exists() {
        return Ok(path);
    }
    let mut backoff = Backoff::new();
    let start = Instant::now();
    loop {
        match download(shared.client.clone(), &hash, &path).await {
            Ok(()) => return Ok(path),
            Err(WorkerError::Rpc { code, .. })
                if code != "NotFound" && start.elapsed() < RESULT_RETRY_FOR =>
            {
                backoff.wait().await
            }
            Err(e) => return Err(e),
        }
    }
}

pub(super) async fn download(mut client: Client, hash: &str, path: &Path) -> Result<(), WorkerError> {
    let io = |error| WorkerError::Io { path: path.to_path_buf(), error };
    let mut stream = client
        .fetch_dataset(pb::DatasetRef { hash: hash.to_string(), size: 0 })
        .await
        .map_err(|s| rpc("FetchDataset", s))?
        .into_inner();
    let tmp = path.with_extension(format!("part{}", std::process::id()));
    let mut file = tokio::fs::File::create(&tmp).await.map_err(io)?;
    let mut sha = Sha256::new();
    while let Some(chunk) = stream.message().await.map_err(|s| rpc("FetchDataset", s))? {
        sha.update(&chunk.data);
        file.write_all(&chunk.data).await.map_err(io)?;
    }
    file.flush().await.map_err(io)?;
    drop(file);
    let got = hex::encode(sha.finalize());
    if got != hash {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(WorkerError::Invalid(format!("dataset {hash}: downloaded bytes hash to {got}")));
    }
    tokio::fs::rename(&tmp, path).await.map_err(io)
}

pub(super) fn shape_info(data: &JobData) -> pb::DataShapeInfo {
    pb::DataShapeInfo {
        n_rows: data.shape.n_rows as u64,
        n_features: data.shape.n_features as u64,
        n_classes: data.shape.n_classes as u64,
        task: data.task.to_string(),
        metric: data.metric.name().to_string(),
        n_folds: data.runner.data().plan.folds.len() as u32,
        families: Family::for_task(data.task).map(|f| f.name().to_string()).collect(),
    }
}
