//! `quarry worker`: registers with a coordinator, leases tasks (prepare, trial, finalize) by
//! long poll, runs them on blocking threads with the same code `quarry fit` runs, reports
//! progress, uploads artifacts and completes. Survives coordinator restarts by retrying and
//! re-registering.

mod blobs;
mod connection;
mod job_data;
mod tasks;

pub use blobs::{get_blob, put_blob};
pub use connection::{Auth, Client, channel, channel_tls};
pub use job_data::{JobData, prepare_job, prepare_options};

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use quarry_proto::pb;
use quarry_proto::{PROTOCOL_VERSION, WorkerServiceClient};
use tonic::transport::ClientTlsConfig;
use tonic::{Code, Status};

use crate::WorkerError;
use connection::{Backoff, fatal, rpc, transient, unauthenticated};
use tasks::run_task;

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

/// A job's prepared data, made once by whichever slot gets there first (errors as text).
type JobCell = Arc<tokio::sync::OnceCell<Result<Arc<JobData>, String>>>;

struct Shared {
    config: WorkerConfig,
    client: Client,
    worker_id: tokio::sync::RwLock<String>,
    register_lock: tokio::sync::Mutex<()>,
    jobs: Mutex<Vec<(String, JobCell)>>,
    lease_ttl: Mutex<Duration>,
    /// Fencing tokens of the tasks the slots run: every lease call names them, and the
    /// coordinator renews only those.
    running: Mutex<BTreeSet<u64>>,
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
        running: Mutex::new(BTreeSet::new()),
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
        names_running_leases: true,
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

async fn heartbeat_loop(shared: Arc<Shared>) -> Result<(), WorkerError> {
    loop {
        let ttl = shared.lease_ttl.lock().map_or(Duration::from_secs(30), |t| *t);
        tokio::time::sleep((ttl / 3).max(Duration::from_millis(100))).await;
        let id = shared.worker_id.read().await.clone();
        let req = pb::LeaseRequest {
            worker_id: id.clone(),
            max_tasks: 0,
            wait_ms: 0,
            running_tokens: running(&shared),
        };
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
        let req = pb::LeaseRequest {
            worker_id: id.clone(),
            max_tasks: 1,
            wait_ms: LEASE_WAIT_MS,
            running_tokens: running(&shared),
        };
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
        // Named in heartbeats until the task's result is in or given up on.
        let _running = Running::new(&shared, token);
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

/// The tokens of the running tasks.
fn running(shared: &Shared) -> Vec<u64> {
    shared.running.lock().map(|r| r.iter().copied().collect()).unwrap_or_default()
}

/// A task's token in [`Shared::running`] while the guard lives.
struct Running<'a> {
    shared: &'a Shared,
    token: u64,
}

impl<'a> Running<'a> {
    fn new(shared: &'a Shared, token: u64) -> Running<'a> {
        if let Ok(mut r) = shared.running.lock() {
            r.insert(token);
        }
        Running { shared, token }
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if let Ok(mut r) = self.shared.running.lock() {
            r.remove(&self.token);
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

/// This machine's wall clock (shifted in tests by [`crate::fault::CLOCK_OFFSET_ENV`]).
fn unix_ms() -> u64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    now.saturating_add_signed(crate::fault::clock_offset_ms())
}

/// A task's deadline as an `Instant` on this machine: from the milliseconds left when the
/// coordinator answered (no clock of ours involved), else (an older coordinator) from its
/// wall-clock time read against our clock.
fn deadline_of(unix: Option<u64>, remaining_ms: Option<u64>) -> Option<Instant> {
    match remaining_ms {
        Some(left) => Some(Instant::now() + Duration::from_millis(left)),
        None => unix.map(|d| Instant::now() + Duration::from_millis(d.saturating_sub(unix_ms()))),
    }
}
