//! `quarry worker`: registers with a coordinator, leases tasks (prepare, trial, finalize) by
//! long poll, runs them on blocking threads with the same code `quarry fit` runs, reports
//! progress, uploads artifacts and completes. Survives coordinator restarts by retrying and
//! re-registering.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use quarry_featurize::{ColumnOverrides, Featurizer, Guardrails, Metric, Predictions, TargetEncoder, Task};
use quarry_learners::{Family, FittedModel, Pipeline};
use quarry_proto::convert::{params_from_pb, status_from_pb};
use quarry_proto::pb;
use quarry_proto::{AUTH_HEADER, PROTOCOL_VERSION, WorkerServiceClient};
use quarry_search::{DataShape, TrialId, TrialOutcome, TrialSpec, TrialStatus, ValidationKind, keep_set};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request, Status};

use crate::finalize::{FinishedTrial, RunFacts, run_record, write_run_folder};
use crate::run_files::{SummaryRows, search_summary_rows, write_run_explanations, write_run_onnx};
use crate::{KeptTrials, PrepareOptions, TrialArtifacts, TrialData, TrialRunner, WorkerError, final_members};

/// Bytes per streamed chunk (gRPC's default message limit is 4 MiB).
const CHUNK: usize = 1 << 20;
/// Long-poll wait asked of the coordinator.
const LEASE_WAIT_MS: u32 = 10_000;
/// Jobs whose prepared data a worker keeps in memory.
const JOBS_CACHED: usize = 2;
/// Progress reports are rate-limited: a booster runs thousands of rounds a second on small data.
const REPORT_EVERY: Duration = Duration::from_millis(100);
/// How long a result is retried while the coordinator is unreachable.
const RESULT_RETRY_FOR: Duration = Duration::from_secs(300);

/// No derived `Debug`: the token must never reach a log (see the `Debug` impl below).
#[derive(Clone)]
pub struct WorkerConfig {
    pub coordinator: String,
    pub slots: usize,
    pub gpus: u32,
    pub token: Option<String>,
    /// Training threads, shared by the slots.
    pub threads: usize,
    pub name: String,
    pub tags: Vec<String>,
    /// Datasets fetched from the coordinator, by hash.
    pub cache_dir: PathBuf,
    /// Sent on register; only tests set anything but [`PROTOCOL_VERSION`].
    pub protocol_version: u32,
    /// The longest a trial may run (besides the job's own deadline). A trial still running
    /// [`HANG_GRACE`] past its limit is recorded as failed and its thread abandoned.
    pub trial_timeout: Option<Duration>,
    /// `--memory-limit`: trials are admitted under it (see [`crate::memory`]); `None`: no limit.
    pub memory_limit: Option<u64>,
    /// TLS for an `https://` coordinator (its CA, or the system's roots); `None`: plain text.
    pub tls: Option<ClientTlsConfig>,
}

impl std::fmt::Debug for WorkerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerConfig")
            .field("coordinator", &self.coordinator)
            .field("slots", &self.slots)
            .field("gpus", &self.gpus)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("threads", &self.threads)
            .field("name", &self.name)
            .field("tags", &self.tags)
            .field("cache_dir", &self.cache_dir)
            .field("protocol_version", &self.protocol_version)
            .field("trial_timeout", &self.trial_timeout)
            .field("memory_limit", &self.memory_limit)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// How long a trial gets, past its deadline, to notice it and stop before it counts as hung.
pub const HANG_GRACE: Duration = Duration::from_secs(2);

impl WorkerConfig {
    pub fn new(coordinator: &str) -> WorkerConfig {
        WorkerConfig {
            coordinator: coordinator.to_string(),
            slots: 1,
            gpus: 0,
            token: None,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            name: hostname(),
            tags: Vec::new(),
            cache_dir: std::env::temp_dir().join("quarry-worker-cache"),
            protocol_version: PROTOCOL_VERSION,
            trial_timeout: None,
            memory_limit: None,
            tls: None,
        }
    }
}

fn hostname() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string());
    format!("{}-{}", host.unwrap_or_else(|_| "worker".into()), std::process::id())
}

fn memory_bytes() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct Auth(Option<AsciiMetadataValue>);

impl Auth {
    pub fn new(token: Option<&str>) -> Result<Auth, WorkerError> {
        let value = token
            .map(|t| {
                MetadataValue::try_from(format!("Bearer {t}"))
                    .map_err(|_| WorkerError::Invalid("--token must be printable ASCII".into()))
            })
            .transpose()?;
        Ok(Auth(value))
    }
}

impl Interceptor for Auth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            request.metadata_mut().insert(AUTH_HEADER, v.clone());
        }
        Ok(request)
    }
}

pub type Client = WorkerServiceClient<InterceptedService<Channel, Auth>>;

/// A channel that (re)connects on use, so a coordinator restart only costs retries.
pub fn channel(url: &str) -> Result<Channel, WorkerError> {
    channel_tls(url, None)
}

/// [`channel`] over TLS when `tls` is given.
pub fn channel_tls(url: &str, tls: Option<ClientTlsConfig>) -> Result<Channel, WorkerError> {
    let mut endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| WorkerError::Invalid(format!("coordinator address {url:?}: {e}")))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(20));
    if let Some(tls) = tls {
        endpoint =
            endpoint.tls_config(tls).map_err(|e| WorkerError::Invalid(format!("TLS for {url}: {e}")))?;
    }
    Ok(endpoint.connect_lazy())
}

fn rpc(what: &str, status: Status) -> WorkerError {
    WorkerError::Rpc {
        call: what.to_string(),
        code: format!("{:?}", status.code()),
        message: status.message().to_string(),
    }
}

/// Whether a failed call is worth retrying (the coordinator is restarting or unreachable).
fn transient(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded | Code::Aborted
    )
}

/// Answers to `Register` that no retry can fix (wrong token, protocol version): stop and say why.
fn fatal(status: &Status) -> bool {
    matches!(status.code(), Code::Unauthenticated | Code::FailedPrecondition | Code::PermissionDenied)
}

/// A wrong token on any later call (the coordinator restarted with another one).
fn unauthenticated(status: &Status) -> bool {
    status.code() == Code::Unauthenticated
}

/// A job's prepared data, made once by whichever slot gets there first (errors as text).
type JobCell = Arc<tokio::sync::OnceCell<Result<Arc<JobData>, String>>>;

struct Shared {
    config: WorkerConfig,
    client: Client,
    worker_id: tokio::sync::RwLock<String>,
    register_lock: tokio::sync::Mutex<()>,
    jobs: Mutex<Vec<(String, JobCell)>>,
    lease_ttl: Mutex<Duration>,
    /// One budget for all slots and jobs: concurrent trials must fit together.
    memory: Option<Arc<crate::MemoryBudget>>,
}

/// Runs until a fatal error (wrong token, protocol mismatch). Slots lease and run tasks in
/// parallel; a heartbeat task keeps running leases alive.
pub async fn run_worker(config: WorkerConfig) -> Result<(), WorkerError> {
    let auth = Auth::new(config.token.as_deref())?;
    let client =
        WorkerServiceClient::with_interceptor(channel_tls(&config.coordinator, config.tls.clone())?, auth)
            .max_decoding_message_size(quarry_proto::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(quarry_proto::MAX_MESSAGE_BYTES);
    std::fs::create_dir_all(&config.cache_dir)
        .map_err(|error| WorkerError::Io { path: config.cache_dir.clone(), error })?;
    let shared = Arc::new(Shared {
        client,
        worker_id: tokio::sync::RwLock::new(String::new()),
        register_lock: tokio::sync::Mutex::new(()),
        jobs: Mutex::new(Vec::new()),
        lease_ttl: Mutex::new(Duration::from_secs(30)),
        memory: config.memory_limit.map(|l| Arc::new(crate::MemoryBudget::new(l))),
        config,
    });
    register(&shared, "").await?;
    let mut tasks = tokio::task::JoinSet::new();
    for slot in 0..shared.config.slots.max(1) {
        let s = shared.clone();
        tasks.spawn(async move { slot_loop(s, slot).await });
    }
    let s = shared.clone();
    tasks.spawn(async move { heartbeat_loop(s).await });
    // Any task ending means a fatal error: stop the others with it.
    let result = match tasks.join_next().await {
        Some(Ok(r)) => r,
        Some(Err(e)) => Err(WorkerError::Invalid(format!("worker task ended: {e}"))),
        None => Ok(()),
    };
    tasks.abort_all();
    result
}

/// Registers (again, when `stale_id` is still the current id), retrying while the coordinator
/// is unreachable.
async fn register(shared: &Shared, stale_id: &str) -> Result<String, WorkerError> {
    let _guard = shared.register_lock.lock().await;
    {
        let current = shared.worker_id.read().await;
        if !current.is_empty() && *current != stale_id {
            return Ok(current.clone());
        }
    }
    let c = &shared.config;
    let info = pb::WorkerInfo {
        protocol_version: c.protocol_version,
        name: c.name.clone(),
        cores: c.threads as u32,
        memory_bytes: memory_bytes(),
        gpus: c.gpus,
        tags: c.tags.clone(),
        slots: c.slots as u32,
    };
    let mut backoff = Backoff::new();
    loop {
        match shared.client.clone().register(info.clone()).await {
            Ok(resp) => {
                let resp = resp.into_inner();
                tracing::info!(worker_id = %resp.worker_id, "registered with {}", c.coordinator);
                if resp.lease_ttl_ms > 0
                    && let Ok(mut ttl) = shared.lease_ttl.lock()
                {
                    *ttl = Duration::from_millis(resp.lease_ttl_ms);
                }
                *shared.worker_id.write().await = resp.worker_id.clone();
                return Ok(resp.worker_id);
            }
            Err(s) if fatal(&s) => return Err(WorkerError::Refused(s.message().to_string())),
            Err(s) => {
                tracing::warn!("register: {} (retrying)", s.message());
                backoff.wait().await;
            }
        }
    }
}

struct Backoff(Duration);

impl Backoff {
    fn new() -> Backoff {
        Backoff(Duration::from_millis(50))
    }
    async fn wait(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(Duration::from_secs(2));
    }
}

async fn heartbeat_loop(shared: Arc<Shared>) -> Result<(), WorkerError> {
    loop {
        let ttl = shared.lease_ttl.lock().map_or(Duration::from_secs(30), |t| *t);
        tokio::time::sleep((ttl / 3).max(Duration::from_millis(100))).await;
        let id = shared.worker_id.read().await.clone();
        let req = pb::LeaseRequest { worker_id: id.clone(), max_tasks: 0, wait_ms: 0 };
        match shared.client.clone().lease(req).await {
            Ok(_) => {}
            Err(s) if s.code() == Code::NotFound => {
                register(&shared, &id).await?;
            }
            Err(s) if unauthenticated(&s) => return Err(WorkerError::Refused(s.message().to_string())),
            Err(s) => tracing::debug!("heartbeat: {}", s.message()),
        }
    }
}

async fn slot_loop(shared: Arc<Shared>, slot: usize) -> Result<(), WorkerError> {
    let mut backoff = Backoff::new();
    loop {
        let id = shared.worker_id.read().await.clone();
        let req = pb::LeaseRequest { worker_id: id.clone(), max_tasks: 1, wait_ms: LEASE_WAIT_MS };
        let task = match shared.client.clone().lease(req).await {
            Ok(resp) => {
                backoff = Backoff::new();
                resp.into_inner().task
            }
            Err(s) if s.code() == Code::NotFound => {
                register(&shared, &id).await?;
                continue;
            }
            Err(s) if unauthenticated(&s) => return Err(WorkerError::Refused(s.message().to_string())),
            Err(s) => {
                tracing::debug!(slot, "lease: {} (retrying)", s.message());
                backoff.wait().await;
                continue;
            }
        };
        let Some(task) = task else { continue };
        let token = task.fencing_token;
        let job_id = task.job_id.clone();
        tracing::info!(slot, job = %job_id, token, attempt = task.attempt, "leased a task");
        match run_task(&shared, task).await {
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(job = %job_id, token, "task failed: {e}");
                let reason = e.to_string();
                let _ = retry_result(&shared, |c, worker_id| {
                    let req = pb::FailRequest { worker_id, fencing_token: token, reason: reason.clone() };
                    async move { c.clone().fail(req).await.map(|r| r.into_inner()) }
                })
                .await;
            }
        }
    }
}

/// Calls a result RPC (complete, fail) until it gets an answer, re-registering when the
/// coordinator forgot this worker and retrying while it is unreachable.
async fn retry_result<F, Fut>(shared: &Shared, call: F) -> Result<pb::CompleteResponse, WorkerError>
where
    F: Fn(Client, String) -> Fut,
    Fut: std::future::Future<Output = Result<pb::CompleteResponse, Status>>,
{
    let start = Instant::now();
    let mut backoff = Backoff::new();
    loop {
        let id = shared.worker_id.read().await.clone();
        match call(shared.client.clone(), id.clone()).await {
            Ok(r) => {
                if !r.accepted {
                    tracing::warn!("result not accepted: {}", r.message);
                }
                return Ok(r);
            }
            Err(s) if s.code() == Code::NotFound && s.message().contains("worker") => {
                register(shared, &id).await?;
            }
            Err(s) if transient(&s) && start.elapsed() < RESULT_RETRY_FOR => backoff.wait().await,
            Err(s) => return Err(rpc("complete", s)),
        }
    }
}

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
    })
}

/// Load, featurize and split a file exactly as `quarry fit` does.
pub fn prepare_job(path: &Path, spec: &pb::JobSpec, threads: usize) -> Result<JobData, WorkerError> {
    let opts = prepare_options(spec)?;
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
async fn job_data(shared: &Arc<Shared>, task: &pb::Task) -> Result<Arc<JobData>, WorkerError> {
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
                let mut data = prepare_job(&path, &spec, threads)?;
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
async fn fetch_dataset(shared: &Shared, spec: &pb::JobSpec) -> Result<PathBuf, WorkerError> {
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

async fn download(mut client: Client, hash: &str, path: &Path) -> Result<(), WorkerError> {
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

pub async fn get_blob(mut client: Client, hash: &str) -> Result<Vec<u8>, WorkerError> {
    let mut stream = client
        .get_blob(pb::BlobRef { hash: hash.to_string(), size: 0 })
        .await
        .map_err(|s| rpc("GetBlob", s))?
        .into_inner();
    let mut out = Vec::new();
    while let Some(chunk) = stream.message().await.map_err(|s| rpc("GetBlob", s))? {
        out.extend_from_slice(&chunk.data);
    }
    Ok(out)
}

/// Streams bytes to the coordinator's blob store; returns the artifact record naming them.
pub async fn put_blob(
    mut client: Client,
    name: &str,
    bytes: Vec<u8>,
) -> Result<pb::ArtifactInfo, WorkerError> {
    let size = bytes.len() as u64;
    let bytes = Arc::new(bytes);
    let n = bytes.len().div_ceil(CHUNK).max(1);
    let first_name = name.to_string();
    let chunks = tokio_stream::iter((0..n).map(move |i| pb::Chunk {
        data: bytes[i * CHUNK..((i + 1) * CHUNK).min(bytes.len())].to_vec(),
        name: if i == 0 { first_name.clone() } else { String::new() },
    }));
    let r = client.put_blob(chunks).await.map_err(|s| rpc("PutBlob", s))?.into_inner();
    Ok(pb::ArtifactInfo { name: name.to_string(), hash: r.hash, size })
}

/// Uploads blobs, retrying while the coordinator is unreachable.
async fn put_blob_retry(
    shared: &Shared,
    name: &str,
    bytes: Vec<u8>,
) -> Result<pb::ArtifactInfo, WorkerError> {
    let start = Instant::now();
    let mut backoff = Backoff::new();
    loop {
        match put_blob(shared.client.clone(), name, bytes.clone()).await {
            Ok(a) => return Ok(a),
            Err(WorkerError::Rpc { code, .. })
                if (code == "Unavailable" || code == "Unknown") && start.elapsed() < RESULT_RETRY_FOR =>
            {
                backoff.wait().await
            }
            Err(e) => return Err(e),
        }
    }
}

/// Out-of-fold predictions as they travel between workers (JSON keeps f64 bit-exact).
#[derive(Serialize, Deserialize)]
struct OofBlob {
    n_classes: Option<usize>,
    values: Vec<f64>,
}

fn encode_artifacts(artifacts: &TrialArtifacts) -> Result<Vec<(&'static str, Vec<u8>)>, WorkerError> {
    let mut out = Vec::new();
    if let Some(oof) = &artifacts.oof {
        let blob = match oof {
            Predictions::Probabilities { n_classes, values } => {
                OofBlob { n_classes: Some(*n_classes), values: values.clone() }
            }
            Predictions::Values(values) => OofBlob { n_classes: None, values: values.clone() },
        };
        out.push(("oof", serde_json::to_vec(&blob)?));
    }
    out.push(("fold_models", serde_json::to_vec(&artifacts.fold_models)?));
    Ok(out)
}

fn decode_artifacts(oof: Option<&[u8]>, models: &[u8]) -> Result<TrialArtifacts, WorkerError> {
    let oof = match oof {
        Some(bytes) => {
            let b: OofBlob = serde_json::from_slice(bytes)?;
            Some(match b.n_classes {
                Some(n_classes) => Predictions::Probabilities { n_classes, values: b.values },
                None => Predictions::Values(b.values),
            })
        }
        None => None,
    };
    let fold_models: Vec<FittedModel> = serde_json::from_slice(models)?;
    Ok(TrialArtifacts { fold_models, oof })
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A wall-clock deadline from the coordinator as an `Instant` on this machine.
fn deadline_of(unix: Option<u64>) -> Option<Instant> {
    unix.map(|d| Instant::now() + Duration::from_millis(d.saturating_sub(unix_ms())))
}

fn shape_info(data: &JobData) -> pb::DataShapeInfo {
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

async fn run_task(shared: &Arc<Shared>, task: pb::Task) -> Result<(), WorkerError> {
    let token = task.fencing_token;
    let data = job_data(shared, &task).await?;
    let (result, artifacts) = match task.kind.clone() {
        None => {
            return Err(WorkerError::Invalid(
                "task of an unknown kind (is this worker older than the coordinator?)".into(),
            ));
        }
        Some(pb::task::Kind::Prepare(_)) => {
            let guard = serde_json::to_vec_pretty(&data.guard)?;
            let artifact = put_blob_retry(shared, "guardrails.json", guard).await?;
            (
                pb::complete_request::Result::Prepare(pb::PrepareResult { shape: Some(shape_info(&data)) }),
                vec![artifact],
            )
        }
        Some(pb::task::Kind::Trial(t)) => run_trial(shared, &data, &task.job_id, token, t).await?,
        Some(pb::task::Kind::Finalize(f)) => run_finalize(shared, &data, &task, f).await?,
    };
    retry_result(shared, |c, worker_id| {
        let req = pb::CompleteRequest {
            worker_id,
            fencing_token: token,
            result: Some(result.clone()),
            artifacts: artifacts.clone(),
            // Slots lease with a long poll of their own.
            lease_next: false,
        };
        async move { c.clone().complete(req).await.map(|r| r.into_inner()) }
    })
    .await?;
    Ok(())
}

async fn run_trial(
    shared: &Arc<Shared>,
    data: &Arc<JobData>,
    job_id: &str,
    token: u64,
    task: pb::TrialTask,
) -> Result<(pb::complete_request::Result, Vec<pb::ArtifactInfo>), WorkerError> {
    let spec =
        TrialSpec::try_from(task.trial.ok_or(WorkerError::Invalid("trial task without a trial".into()))?)
            .map_err(|e| WorkerError::Invalid(e.to_string()))?;
    let timeout = shared.config.trial_timeout.map(|t| Instant::now() + t);
    let deadline = match (deadline_of(task.deadline_unix_ms), timeout) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let handle = tokio::runtime::Handle::current();
    let client = shared.client.clone();
    let worker_id = shared.worker_id.read().await.clone();
    let runner_data = data.clone();
    let trial_id = spec.id;
    let started = Instant::now();
    let join = tokio::task::spawn_blocking(move || {
        let cancelled = move || deadline.is_some_and(|d| Instant::now() >= d);
        let mut last: Option<Instant> = None;
        let mut stop = false;
        let mut report = |resource: usize, loss: f64| {
            if stop {
                return false;
            }
            if last.is_some_and(|t| t.elapsed() < REPORT_EVERY) {
                return true;
            }
            last = Some(Instant::now());
            let req = pb::ProgressRequest {
                worker_id: worker_id.clone(),
                fencing_token: token,
                resource: resource as u64,
                loss,
            };
            // A blocking thread may wait on the runtime; an unreachable coordinator means go on.
            if let Ok(r) = handle.block_on(client.clone().report_progress(req)) {
                stop = r.into_inner().stop;
            }
            !stop
        };
        runner_data.runner.run(&spec, &cancelled, &mut report)
    });
    let joined = match deadline {
        Some(d) => tokio::time::timeout_at((d + HANG_GRACE).into(), join).await.ok(),
        None => Some(join.await),
    };
    let (outcome, artifacts) = match joined {
        Some(r) => r.map_err(|e| WorkerError::Invalid(format!("trial thread: {e}")))?,
        None => {
            // A fit that ignores its deadline cannot be stopped from outside: leave its thread
            // behind and drop the job's runner, whose pool that thread holds, so the next task
            // of the job prepares a fresh one.
            tracing::error!(job = %job_id, trial = trial_id.0, "trial hung past its deadline; its thread is abandoned");
            if let Ok(mut jobs) = shared.jobs.lock() {
                jobs.retain(|(id, _)| id != job_id);
            }
            let outcome = TrialOutcome {
                id: trial_id,
                status: TrialStatus::Failed,
                score: None,
                fit_seconds: started.elapsed().as_secs_f64(),
                rounds: None,
                failure_reason: Some(format!(
                    "hung: still running {} s past its deadline; abandoned",
                    HANG_GRACE.as_secs()
                )),
            };
            (outcome, TrialArtifacts::default())
        }
    };
    let mut uploaded = Vec::new();
    if outcome.status == TrialStatus::Completed {
        for (name, bytes) in encode_artifacts(&artifacts)? {
            uploaded.push(put_blob_retry(shared, name, bytes).await?);
        }
    }
    Ok((pb::complete_request::Result::Trial(pb::TrialOutcome::from(&outcome)), uploaded))
}

fn finished_of(e: pb::LeaderboardEntry) -> Result<FinishedTrial, WorkerError> {
    Ok(FinishedTrial {
        id: TrialId(e.trial_id),
        family: e.family,
        params: params_from_pb(e.params),
        metric: e.metric,
        validation_score: e.validation_score,
        fit_seconds: e.fit_seconds,
        status: status_from_pb(e.status).map_err(|e| WorkerError::Invalid(e.to_string()))?,
        failure_reason: e.failure_reason,
        rounds: e.rounds.map(|r| r as usize),
    })
}

async fn run_finalize(
    shared: &Arc<Shared>,
    data: &Arc<JobData>,
    task: &pb::Task,
    f: pb::FinalizeTask,
) -> Result<(pb::complete_request::Result, Vec<pb::ArtifactInfo>), WorkerError> {
    let spec = task.spec.clone().unwrap_or_default();
    let board: Vec<FinishedTrial> = f
        .leaderboard
        .map(|l| l.entries)
        .unwrap_or_default()
        .into_iter()
        .map(finished_of)
        .collect::<Result<_, _>>()?;
    let losses: HashMap<TrialId, (&str, f64)> = board
        .iter()
        .filter_map(|e| e.validation_score.map(|s| (e.id, (e.family.as_str(), data.metric.to_loss(s)))))
        .collect();
    // The same candidates `quarry fit` keeps: completed trials offered in id order.
    let mut completed: Vec<(TrialId, String, f64)> = board
        .iter()
        .filter(|e| e.status == TrialStatus::Completed)
        .filter_map(|e| losses.get(&e.id).map(|(f, l)| (e.id, f.to_string(), *l)))
        .collect();
    completed.sort_by_key(|c| c.0);
    let keep = keep_set(&completed);
    let mut kept = KeptTrials::default();
    for t in &f.kept {
        let id = TrialId(t.trial_id);
        if !keep.contains(&id) {
            continue;
        }
        let Some((family, loss)) = losses.get(&id) else { continue };
        let mut oof = None;
        let mut models = None;
        for a in &t.artifacts {
            let bytes = get_blob(shared.client.clone(), &a.hash).await?;
            match a.name.as_str() {
                "oof" => oof = Some(bytes),
                "fold_models" => models = Some(bytes),
                _ => {}
            }
        }
        let Some(models) = models else { continue };
        kept.insert(id, family, *loss, decode_artifacts(oof.as_deref(), &models)?);
    }
    let deadline = deadline_of(f.deadline_unix_ms);
    quarry_featurize::safe_name(&task.job_id)
        .map_err(|why| WorkerError::Invalid(format!("job id {:?}: {why}", task.job_id)))?;
    let dir = shared.config.cache_dir.join(format!("run-{}-{}", task.job_id, task.fencing_token));
    let data2 = data.clone();
    let dir2 = dir.clone();
    let elapsed = f.elapsed_seconds;
    tokio::task::spawn_blocking(move || -> Result<(), WorkerError> {
        let data = data2;
        let (final_model, members) =
            final_members(&data.runner, data.metric, kept, &board, deadline, spec.seed)?;
        let pipeline =
            Pipeline::new(data.task, data.metric, data.featurizer.clone(), data.encoder.clone(), members);
        std::fs::create_dir_all(&dir2).map_err(|error| WorkerError::Io { path: dir2.clone(), error })?;
        let onnx =
            write_run_onnx(&dir2, &pipeline, data.dataset["content_hash"].as_str().unwrap_or_default())?;
        let mut record = run_record(&RunFacts {
            dataset: data.dataset.clone(),
            target: &spec.target,
            pipeline: &pipeline,
            n_features: data.shape.n_features,
            validation: data.validation,
            grouped_by: data.grouped_by.as_deref(),
            seed: spec.seed,
            budget_seconds: spec.budget_ms.map(|b| b as f64 / 1000.0),
            max_trials: spec.max_trials.map(|m| m as usize),
            threads: data.threads,
            board: &board,
            final_model: &final_model,
            elapsed_seconds: elapsed,
        });
        if let Some(r) = record.as_object_mut() {
            r.insert("onnx".into(), onnx);
        }
        write_run_folder(&dir2, &pipeline, &board, &data.guard, &record)?;
        // The same explanations.json as `quarry fit` (same rows, seed and code).
        let (sx, sy, description) = search_summary_rows(data.runner.data(), spec.seed);
        let rows = SummaryRows { x: &sx, y: &sy, description: description.into() };
        write_run_explanations(&dir2, &pipeline, &data.runner.data().x, rows, deadline, spec.seed)
    })
    .await
    .map_err(|e| WorkerError::Invalid(format!("finalize thread: {e}")))??;
    let mut uploaded = Vec::new();
    for file in files_under(&dir)? {
        let bytes = std::fs::read(&file).map_err(|error| WorkerError::Io { path: file.clone(), error })?;
        let name = file.strip_prefix(&dir).unwrap_or(&file).to_string_lossy().replace('\\', "/");
        uploaded.push(put_blob_retry(shared, &name, bytes).await?);
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok((pb::complete_request::Result::Finalize(pb::FinalizeResult {}), uploaded))
}

fn files_under(dir: &Path) -> Result<Vec<PathBuf>, WorkerError> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|error| WorkerError::Io { path: d.clone(), error })?;
        for e in entries {
            let p = e.map_err(|error| WorkerError::Io { path: d.clone(), error })?.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}
