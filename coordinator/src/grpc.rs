//! The gRPC face of the server: `QuarryService` (clients) and `WorkerService` (workers) over the
//! [`Coordinator`] state machine. The only module of this crate that names `pb::` types.
//!
//! Durability: a handler changes the state under a short lock, hands the resulting events to
//! the log thread, and answers only once they are durable. The log thread writes whatever has
//! queued up in one batch with one fsync (group commit), so many workers share each fsync.

// tonic's `Status` is the error of every handler and of the auth interceptor; boxing it here
// would only be unboxed again at the service boundary.
#![allow(clippy::result_large_err)]

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use quarry_proto::{PROTOCOL_VERSION, pb};
use subtle::ConstantTimeEq;
use tokio::io::AsyncReadExt;
use tokio::sync::{Notify, broadcast, mpsc, watch};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::blobs::{BlobError, BlobStore};
use crate::job::LeaderboardEntry;
use crate::log::{EventLog, LogError};
use crate::state::{
    Artifact, Coordinator, Event, Job, JobSpec, JobState, LeasedKind, LeasedTask, Now, PreparedShape,
    StateError, TaskResult,
};

/// The longest a `Lease` call waits for a task.
pub const MAX_LEASE_WAIT: Duration = Duration::from_secs(10);
const CHUNK: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Blob(#[from] BlobError),
    #[error("event log record {index}: {message}")]
    BadRecord { index: usize, message: String },
    #[error("grpc server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

struct Shared {
    state: Mutex<Coordinator>,
    log_tx: std::sync::mpsc::Sender<Vec<Vec<u8>>>,
    /// Records handed to the log thread (under the state lock, so in apply order).
    submitted: AtomicU64,
    durable: watch::Receiver<u64>,
    /// Why the log thread's current batch cannot be written (disk full, Redis down), while it
    /// retries; `None` when the log is healthy.
    log_fault: Arc<Mutex<Option<String>>>,
    /// Woken whenever tasks may have become available.
    tasks: Notify,
    job_events: broadcast::Sender<(String, pb::JobEvent)>,
    event_seq: AtomicU64,
    blobs: BlobStore,
    progress: crate::progress::ProgressLog,
    /// The largest dataset `UploadDataset` takes (`quarry serve --max-upload`).
    max_upload: AtomicU64,
}

/// The server; clone it into both services.
#[derive(Clone)]
pub struct Server {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").finish_non_exhaustive()
    }
}

fn status_of(e: StateError) -> Status {
    match e {
        StateError::UnknownWorker(_) | StateError::UnknownJob(_) => Status::not_found(e.to_string()),
        StateError::InvalidSpec(_) | StateError::WrongResult { .. } => {
            Status::invalid_argument(e.to_string())
        }
        StateError::StaleLease(_) => Status::failed_precondition(e.to_string()),
        StateError::Job { .. } => Status::failed_precondition(e.to_string()),
    }
}

fn blob_status(e: BlobError) -> Status {
    match e {
        BlobError::BadHash(_) => Status::invalid_argument(e.to_string()),
        BlobError::Missing(_) => Status::not_found(e.to_string()),
        BlobError::Io { .. } => Status::internal(e.to_string()),
    }
}

impl Server {
    /// Replays `log` into a fresh state and starts the log thread and the lease reaper.
    /// Must be called inside a tokio runtime.
    pub fn start(
        mut log: Box<dyn EventLog>,
        blobs: BlobStore,
        lease_ttl: Duration,
    ) -> Result<Server, ServeError> {
        let records = log.replay()?;
        let mut events = Vec::with_capacity(records.len());
        for (index, r) in records.iter().enumerate() {
            let e: Event = serde_json::from_slice(r)
                .map_err(|e| ServeError::BadRecord { index, message: e.to_string() })?;
            events.push(e);
        }
        let n = events.len() as u64;
        let mut state = Coordinator::replay(lease_ttl, events, Now::system());
        tracing::info!(
            events = n,
            jobs = state.jobs().count(),
            leases = state.leases().count(),
            "state replayed"
        );
        let (durable_tx, durable_rx) = watch::channel(n);
        let (log_tx, log_rx) = std::sync::mpsc::channel::<Vec<Vec<u8>>>();
        // Decisions replay re-took (a crash between an event and its consequence) are logged now.
        let again: Vec<Vec<u8>> =
            state.take_pending().iter().filter_map(|e| serde_json::to_vec(e).ok()).collect();
        let submitted = n + again.len() as u64;
        if !again.is_empty() {
            log.append_batch(&again)?;
            let _ = durable_tx.send(submitted);
        }
        let log_fault = Arc::new(Mutex::new(None));
        let fault = Arc::clone(&log_fault);
        std::thread::Builder::new()
            .name("quarry-event-log".into())
            .spawn(move || log_thread(log, log_rx, durable_tx, &fault))
            .map_err(|source| LogError::Io { path: "event log thread".into(), source })?;
        let (job_events, _) = broadcast::channel(4096);
        let server = Server {
            shared: Arc::new(Shared {
                state: Mutex::new(state),
                log_tx,
                submitted: AtomicU64::new(submitted),
                durable: durable_rx,
                log_fault,
                tasks: Notify::new(),
                job_events,
                event_seq: AtomicU64::new(0),
                blobs,
                progress: crate::progress::ProgressLog::default(),
                max_upload: AtomicU64::new(u64::MAX),
            }),
        };
        let reaper = server.clone();
        let period = (lease_ttl / 4).max(Duration::from_millis(50));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                let _ = reaper.mutate(|c, now| Ok(c.expire(now))).await;
            }
        });
        Ok(server)
    }

    fn lock(&self) -> MutexGuard<'_, Coordinator> {
        // A panic while holding the lock leaves a state that was being changed; the log is
        // the truth, so carrying on with the in-memory copy is no worse than restarting.
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the state, logs what it changed and waits until that is durable.
    async fn mutate<T>(
        &self,
        f: impl FnOnce(&mut Coordinator, Now) -> Result<T, StateError>,
    ) -> Result<T, Status> {
        if let Some(why) = self.shared.log_fault.lock().ok().and_then(|f| f.clone()) {
            // Refused before it changes anything: what is applied must reach the log first.
            return Err(Status::unavailable(format!(
                "the coordinator takes no changes while its event log cannot be written ({why}); retry later"
            )));
        }
        let (out, target) = {
            let mut c = self.lock();
            let out = f(&mut c, Now::system());
            let events = c.take_pending();
            let garbage = c.take_garbage();
            if events.is_empty() {
                return out.map_err(status_of);
            }
            // Building watchers' events costs a JobInfo per touched job: skip it when nobody watches.
            if self.shared.job_events.receiver_count() > 0 {
                for (job, e) in job_events(&c, &events) {
                    let seq = self.shared.event_seq.fetch_add(1, Ordering::Relaxed) + 1;
                    let _ = self.shared.job_events.send((job, pb::JobEvent { seq, kind: Some(e) }));
                }
            }
            let records: Vec<Vec<u8>> = events.iter().filter_map(|e| serde_json::to_vec(e).ok()).collect();
            let target = self.shared.submitted.fetch_add(records.len() as u64, Ordering::SeqCst)
                + records.len() as u64;
            if self.shared.log_tx.send(records).is_err() {
                return Err(Status::unavailable("the event log is closed; the coordinator is shutting down"));
            }
            for hash in garbage {
                self.shared.blobs.remove(&hash);
            }
            (out, target)
        };
        self.shared.tasks.notify_waiters();
        let mut durable = self.shared.durable.clone();
        if durable.wait_for(|d| *d >= target).await.is_err() {
            return Err(Status::unavailable("the event log failed; see the coordinator's log"));
        }
        out.map_err(status_of)
    }

    async fn stream_blob(&self, hash: &str) -> Result<ChunkStream, Status> {
        let mut file = self.shared.blobs.open_blob(hash).await.map_err(blob_status)?;
        let (tx, rx) = mpsc::channel::<Result<pb::Chunk, Status>>(4);
        tokio::spawn(async move {
            loop {
                let mut buf = vec![0u8; CHUNK];
                match file.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => {
                        buf.truncate(n);
                        if tx.send(Ok(pb::Chunk { data: buf, name: String::new() })).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(Status::internal(format!("reading a blob: {e}")))).await;
                        break;
                    }
                }
            }
        });
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    async fn receive_blob(&self, stream: Streaming<pb::Chunk>) -> Result<(String, u64), Status> {
        self.receive_limited(stream, u64::MAX).await
    }

    /// Refuses the stream (`ResourceExhausted`, the partial file deleted) once it passes `max`.
    async fn receive_limited(
        &self,
        mut stream: Streaming<pb::Chunk>,
        max: u64,
    ) -> Result<(String, u64), Status> {
        let mut w = self.shared.blobs.writer().await.map_err(blob_status)?;
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    w.abort().await;
                    return Err(e);
                }
            };
            if w.size().saturating_add(chunk.data.len() as u64) > max {
                w.abort().await;
                return Err(Status::resource_exhausted(format!(
                    "the upload is larger than this coordinator's --max-upload ({max} bytes)"
                )));
            }
            w.write(&chunk.data).await.map_err(blob_status)?;
        }
        w.finish().await.map_err(blob_status)
    }

    /// The largest dataset `UploadDataset` accepts (default: no limit).
    pub fn set_max_upload(&self, bytes: u64) {
        self.shared.max_upload.store(bytes, Ordering::Relaxed);
    }
}

/// A subscription to "this job changed" notices (the HTTP layer's live views).
pub struct JobChanges(broadcast::Receiver<(String, pb::JobEvent)>);

impl JobChanges {
    /// The next changed job's id; `None` when this reader fell behind (anything may have
    /// changed) and `Err` once the server is gone.
    pub async fn recv(&mut self) -> Result<Option<String>, ()> {
        match self.0.recv().await {
            Ok((job, _)) => Ok(Some(job)),
            Err(broadcast::error::RecvError::Lagged(_)) => Ok(None),
            Err(broadcast::error::RecvError::Closed) => Err(()),
        }
    }
}

/// What the HTTP layer (`crate::http`) reads and changes; the same paths the gRPC handlers take.
impl Server {
    /// Runs `f` on the current state under the lock (keep it short).
    pub fn read<T>(&self, f: impl FnOnce(&Coordinator) -> T) -> T {
        f(&self.lock())
    }

    pub fn blobs(&self) -> &BlobStore {
        &self.shared.blobs
    }

    pub fn subscribe(&self) -> JobChanges {
        JobChanges(self.shared.job_events.subscribe())
    }

    /// Reported `(resource, loss)` points of a trial (since this process started).
    pub fn trial_curve(&self, job: &str, trial: u64) -> Vec<(u64, f64)> {
        self.shared.progress.curve(job, trial)
    }

    /// Creates a job on an uploaded dataset, as `CreateJob` does.
    pub async fn create_job(&self, spec: JobSpec) -> Result<String, Status> {
        if !self.shared.blobs.contains(&spec.dataset_hash) {
            return Err(Status::not_found(format!(
                "dataset {:?} is not on the coordinator: upload it first",
                spec.dataset_hash
            )));
        }
        let id = self.mutate(|c, now| c.create_job(spec, now)).await?;
        tracing::info!(job = %id, "job created");
        Ok(id)
    }

    pub async fn cancel_job(&self, id: &str) -> Result<(), Status> {
        self.mutate(|c, now| c.cancel(id, now)).await
    }
}

/// The longest pause between two tries of a batch the log refused.
const LOG_RETRY_MAX: Duration = Duration::from_secs(1);

/// Writes queued batches in order. A transient failure (disk full, Redis restarting) is
/// retried with the same batch until it succeeds: the in-memory state already holds those
/// events, so they must be the next records, and their callers wait for them. Meanwhile
/// `log_fault` makes new changes fail fast with the reason. A permanent failure stops the
/// thread, so every waiter gets an error.
fn log_thread(
    mut log: Box<dyn EventLog>,
    rx: std::sync::mpsc::Receiver<Vec<Vec<u8>>>,
    durable: watch::Sender<u64>,
    fault: &Mutex<Option<String>>,
) {
    let set_fault = |why: Option<String>| {
        if let Ok(mut f) = fault.lock() {
            *f = why;
        }
    };
    while let Ok(first) = rx.recv() {
        let mut batch = first;
        while let Ok(more) = rx.try_recv() {
            batch.extend(more);
        }
        let mut failures = 0u32;
        let mut pause = Duration::from_millis(50);
        loop {
            match log.append_batch(&batch) {
                Ok(seq) => {
                    if failures > 0 {
                        tracing::info!(failures, "event log writable again; the coordinator takes changes");
                        set_fault(None);
                    }
                    let _ = durable.send(seq);
                    break;
                }
                Err(e) if e.is_transient() => {
                    if failures == 0 {
                        tracing::error!(error = %e, "event log append failed; retrying, and refusing changes until it succeeds");
                        set_fault(Some(e.to_string()));
                    } else if failures.is_multiple_of(30) {
                        tracing::warn!(error = %e, failures, "event log append still failing");
                    }
                    failures += 1;
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(LOG_RETRY_MAX);
                }
                Err(e) => {
                    tracing::error!(error = %e, "event log append failed; the coordinator stops accepting changes");
                    set_fault(Some(e.to_string()));
                    return;
                }
            }
        }
    }
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<pb::Chunk, Status>> + Send>>;
type JobEventStream = Pin<Box<dyn Stream<Item = Result<pb::JobEvent, Status>> + Send>>;

// ---- conversions (pb ↔ the state machine's types) ----

fn spec_from_pb(s: pb::JobSpec) -> JobSpec {
    JobSpec {
        experiment: s.experiment,
        dataset_hash: s.dataset_hash,
        file_name: s.file_name,
        target: s.target,
        task: s.task,
        metric: s.metric,
        seed: s.seed,
        budget_ms: s.budget_ms,
        max_trials: s.max_trials,
        scheduler: s.scheduler,
        column_types: s.column_types,
        drop_columns: s.drop_columns,
        group_column: s.group_column,
        column_types_file: s.column_types_file,
        searcher: s.searcher,
    }
}

fn spec_to_pb(s: &JobSpec) -> pb::JobSpec {
    pb::JobSpec {
        experiment: s.experiment.clone(),
        dataset_hash: s.dataset_hash.clone(),
        file_name: s.file_name.clone(),
        target: s.target.clone(),
        task: s.task.clone(),
        metric: s.metric.clone(),
        seed: s.seed,
        budget_ms: s.budget_ms,
        max_trials: s.max_trials,
        scheduler: s.scheduler.clone(),
        column_types: s.column_types.clone(),
        drop_columns: s.drop_columns.clone(),
        group_column: s.group_column.clone(),
        column_types_file: s.column_types_file.clone(),
        searcher: s.searcher.clone(),
    }
}

fn shape_to_pb(s: &PreparedShape) -> pb::DataShapeInfo {
    pb::DataShapeInfo {
        n_rows: s.n_rows,
        n_features: s.n_features,
        n_classes: s.n_classes,
        task: s.task.clone(),
        metric: s.metric.clone(),
        n_folds: s.n_folds,
        families: s.families.clone(),
    }
}

fn shape_from_pb(s: pb::DataShapeInfo) -> PreparedShape {
    PreparedShape {
        n_rows: s.n_rows,
        n_features: s.n_features,
        n_classes: s.n_classes,
        task: s.task,
        metric: s.metric,
        n_folds: s.n_folds,
        families: s.families,
    }
}

fn artifact_to_pb(a: &Artifact) -> pb::ArtifactInfo {
    pb::ArtifactInfo { name: a.name.clone(), hash: a.hash.clone(), size: a.size }
}

fn artifact_from_pb(a: pb::ArtifactInfo) -> Artifact {
    Artifact { name: a.name, hash: a.hash, size: a.size }
}

pub fn entry_to_pb(e: &LeaderboardEntry) -> pb::LeaderboardEntry {
    pb::LeaderboardEntry {
        trial_id: e.id.0,
        family: e.family.clone(),
        params: quarry_proto::convert::params_to_pb(&e.params),
        metric: e.metric.clone(),
        validation_score: e.validation_score,
        fit_seconds: e.fit_seconds,
        status: quarry_proto::convert::status_to_pb(e.status) as i32,
        failure_reason: e.failure_reason.clone(),
        rounds: e.rounds.map(|r| r as u64),
    }
}

fn state_to_pb(s: JobState) -> pb::JobState {
    match s {
        JobState::Queued => pb::JobState::Queued,
        JobState::Running => pb::JobState::Running,
        JobState::Completed => pb::JobState::Completed,
        JobState::Failed => pb::JobState::Failed,
        JobState::Cancelled => pb::JobState::Cancelled,
    }
}

fn job_info(j: &Job) -> pb::JobInfo {
    let best = j.best();
    pb::JobInfo {
        id: j.id.clone(),
        spec: Some(spec_to_pb(&j.spec)),
        state: state_to_pb(j.state) as i32,
        phase: j.phase().to_string(),
        trials_finished: j.trials_finished(),
        trials_started: j.trials_started(),
        best_score: best.and_then(|b| b.validation_score),
        best_family: best.map(|b| b.family.clone()),
        reason: j.reason.clone(),
        created_unix_ms: j.created_ms,
        finished_unix_ms: j.finished_ms,
        shape: j.shape.as_ref().map(shape_to_pb),
    }
}

fn leaderboard_pb(j: &Job) -> pb::Leaderboard {
    let board = j.leaderboard();
    let metric = board.first().map(|e| e.metric.clone()).unwrap_or_default();
    pb::Leaderboard { metric, entries: board.iter().map(entry_to_pb).collect() }
}

/// What watchers of each job hear about a batch of events.
fn job_events(c: &Coordinator, events: &[Event]) -> Vec<(String, pb::job_event::Kind)> {
    use pb::job_event::Kind;
    let mut out = Vec::new();
    let mut touched: Vec<String> = Vec::new();
    for e in events {
        let job = match e {
            Event::TrialIssued { job, trial } => {
                if let Some(spec) = c
                    .job(job)
                    .and_then(|j| j.driver.as_ref())
                    .and_then(|d| d.spec(quarry_search::TrialId(*trial)))
                {
                    out.push((job.clone(), Kind::TrialStarted(pb::TrialSpec::from(spec))));
                }
                continue;
            }
            Event::TrialFinished { job, outcome, .. } => {
                let entry = c
                    .job(job)
                    .and_then(|j| j.driver.as_ref())
                    .and_then(|d| d.entries().iter().rev().find(|en| en.id == outcome.id));
                if let Some(entry) = entry {
                    out.push((job.clone(), Kind::TrialFinished(entry_to_pb(entry))));
                }
                job.clone()
            }
            Event::JobCreated { job, .. }
            | Event::SearchClosed { job }
            | Event::FinalizeQueued { job }
            | Event::JobFailed { job, .. }
            | Event::JobCancelled { job, .. }
            | Event::Leased { job, .. }
            | Event::Released { job, .. }
            | Event::Prepared { job, .. }
            | Event::Finalized { job, .. } => job.clone(),
            Event::WorkerRegistered { .. } => continue,
        };
        if !job.is_empty() && !touched.contains(&job) {
            touched.push(job);
        }
    }
    for job in touched {
        if let Some(j) = c.job(&job) {
            out.push((job, Kind::Job(job_info(j))));
        }
    }
    out
}

// ---- auth ----

/// Checks `authorization: Bearer <token>` in constant time; no token configured = open.
#[derive(Clone)]
pub struct Auth {
    token: Option<Arc<[u8]>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").field("enabled", &self.token.is_some()).finish()
    }
}

impl Auth {
    pub fn new(token: Option<&str>) -> Auth {
        Auth { token: token.filter(|t| !t.is_empty()).map(|t| Arc::from(t.as_bytes())) }
    }

    pub fn check(&self, req: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = &self.token else { return Ok(req) };
        let given = req
            .metadata()
            .get(quarry_proto::AUTH_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| Status::unauthenticated("this coordinator needs a token: pass --token SECRET"))?;
        if bool::from(given.as_bytes().ct_eq(expected)) {
            Ok(req)
        } else {
            Err(Status::unauthenticated("wrong token: --token does not match the coordinator's"))
        }
    }
}

// ---- QuarryService ----

#[tonic::async_trait]
impl pb::quarry_service_server::QuarryService for Server {
    async fn upload_dataset(
        &self,
        request: Request<Streaming<pb::Chunk>>,
    ) -> Result<Response<pb::DatasetRef>, Status> {
        let max = self.shared.max_upload.load(Ordering::Relaxed);
        let (hash, size) = self.receive_limited(request.into_inner(), max).await?;
        tracing::info!(%hash, size, "dataset uploaded");
        Ok(Response::new(pb::DatasetRef { hash, size }))
    }

    async fn create_job(&self, request: Request<pb::JobSpec>) -> Result<Response<pb::JobId>, Status> {
        let spec = spec_from_pb(request.into_inner());
        if !self.shared.blobs.contains(&spec.dataset_hash) {
            return Err(Status::not_found(format!(
                "dataset {:?} is not on the coordinator: upload it first",
                spec.dataset_hash
            )));
        }
        let id = self.mutate(|c, now| c.create_job(spec, now)).await?;
        tracing::info!(job = %id, "job created");
        Ok(Response::new(pb::JobId { id }))
    }

    async fn get_job(&self, request: Request<pb::JobId>) -> Result<Response<pb::JobInfo>, Status> {
        let id = request.into_inner().id;
        let c = self.lock();
        let j = c.job(&id).ok_or_else(|| Status::not_found(format!("unknown job {id}")))?;
        Ok(Response::new(job_info(j)))
    }

    async fn list_jobs(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let experiment = request.into_inner().experiment;
        let c = self.lock();
        let jobs = c
            .jobs()
            .filter(|j| experiment.is_empty() || j.spec.experiment == experiment)
            .map(job_info)
            .collect();
        Ok(Response::new(pb::ListJobsResponse { jobs }))
    }

    type WatchJobStream = JobEventStream;

    async fn watch_job(&self, request: Request<pb::JobId>) -> Result<Response<Self::WatchJobStream>, Status> {
        let id = request.into_inner().id;
        // Subscribe before the snapshot so nothing falls between them.
        let mut rx = self.shared.job_events.subscribe();
        let snapshot = {
            let c = self.lock();
            job_info(c.job(&id).ok_or_else(|| Status::not_found(format!("unknown job {id}")))?)
        };
        let server = self.clone();
        let (tx, out) = mpsc::channel::<Result<pb::JobEvent, Status>>(64);
        tokio::spawn(async move {
            let done = pb::JobState::try_from(snapshot.state).is_ok_and(|s| s.is_final());
            let seq = server.shared.event_seq.load(Ordering::Relaxed);
            if tx
                .send(Ok(pb::JobEvent { seq, kind: Some(pb::job_event::Kind::Job(snapshot)) }))
                .await
                .is_err()
                || done
            {
                return;
            }
            loop {
                match rx.recv().await {
                    Ok((job, event)) if job == id => {
                        let fin = matches!(&event.kind, Some(pb::job_event::Kind::Job(j))
                            if pb::JobState::try_from(j.state).is_ok_and(|s| s.is_final()));
                        if tx.send(Ok(event)).await.is_err() || fin {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // Too slow a reader: resend the job as it is now and go on.
                        let info = server.lock().job(&id).map(job_info);
                        if let Some(info) = info {
                            let fin = pb::JobState::try_from(info.state).is_ok_and(|s| s.is_final());
                            let seq = server.shared.event_seq.load(Ordering::Relaxed);
                            if tx
                                .send(Ok(pb::JobEvent { seq, kind: Some(pb::job_event::Kind::Job(info)) }))
                                .await
                                .is_err()
                                || fin
                            {
                                return;
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(out))))
    }

    async fn list_trials(&self, request: Request<pb::JobId>) -> Result<Response<pb::Leaderboard>, Status> {
        let id = request.into_inner().id;
        let c = self.lock();
        let j = c.job(&id).ok_or_else(|| Status::not_found(format!("unknown job {id}")))?;
        Ok(Response::new(leaderboard_pb(j)))
    }

    async fn cancel_job(
        &self,
        request: Request<pb::JobId>,
    ) -> Result<Response<pb::CancelJobResponse>, Status> {
        let id = request.into_inner().id;
        self.mutate(|c, now| c.cancel(&id, now)).await?;
        let c = self.lock();
        Ok(Response::new(pb::CancelJobResponse { job: c.job(&id).map(job_info) }))
    }

    type DownloadArtifactStream = ChunkStream;

    async fn download_artifact(
        &self,
        request: Request<pb::ArtifactRequest>,
    ) -> Result<Response<Self::DownloadArtifactStream>, Status> {
        let req = request.into_inner();
        let hash = {
            let c = self.lock();
            let j =
                c.job(&req.job_id).ok_or_else(|| Status::not_found(format!("unknown job {}", req.job_id)))?;
            j.final_artifacts.iter().find(|a| a.name == req.name).map(|a| a.hash.clone()).ok_or_else(
                || {
                    Status::not_found(format!(
                        "job {} has no artifact {:?} (see ListArtifacts)",
                        req.job_id, req.name
                    ))
                },
            )?
        };
        Ok(Response::new(self.stream_blob(&hash).await?))
    }

    async fn list_artifacts(
        &self,
        request: Request<pb::JobId>,
    ) -> Result<Response<pb::ArtifactList>, Status> {
        let id = request.into_inner().id;
        let c = self.lock();
        let j = c.job(&id).ok_or_else(|| Status::not_found(format!("unknown job {id}")))?;
        Ok(Response::new(pb::ArtifactList {
            artifacts: j.final_artifacts.iter().map(artifact_to_pb).collect(),
        }))
    }
}

// ---- WorkerService ----

fn task_to_pb(t: LeasedTask) -> pb::Task {
    use pb::task::Kind;
    let kind = match t.kind {
        LeasedKind::Prepare => Kind::Prepare(pb::PrepareTask {}),
        LeasedKind::Trial { spec, shape, deadline_ms } => Kind::Trial(pb::TrialTask {
            trial: Some(pb::TrialSpec::from(&spec)),
            shape: Some(shape_to_pb(&shape)),
            deadline_unix_ms: deadline_ms,
        }),
        LeasedKind::Finalize(f) => Kind::Finalize(pb::FinalizeTask {
            leaderboard: Some(pb::Leaderboard {
                metric: f.leaderboard.first().map(|e| e.metric.clone()).unwrap_or_default(),
                entries: f.leaderboard.iter().map(entry_to_pb).collect(),
            }),
            kept: f
                .kept
                .iter()
                .map(|(id, arts)| pb::TrialArtifacts {
                    trial_id: id.0,
                    artifacts: arts.iter().map(artifact_to_pb).collect(),
                })
                .collect(),
            prepare_artifacts: f.prepare_artifacts.iter().map(artifact_to_pb).collect(),
            shape: Some(shape_to_pb(&f.shape)),
            deadline_unix_ms: f.deadline_ms,
            elapsed_seconds: f.elapsed_seconds,
        }),
    };
    pb::Task {
        job_id: t.job,
        fencing_token: t.token,
        attempt: t.attempt,
        spec: Some(spec_to_pb(&t.spec)),
        kind: Some(kind),
    }
}

fn stale_answer(r: Result<Option<LeasedTask>, Status>) -> Result<Response<pb::CompleteResponse>, Status> {
    match r {
        Ok(next) => Ok(Response::new(pb::CompleteResponse {
            accepted: true,
            message: String::new(),
            next: next.map(task_to_pb),
        })),
        Err(s) if s.code() == tonic::Code::FailedPrecondition => Ok(Response::new(pb::CompleteResponse {
            accepted: false,
            message: s.message().to_string(),
            next: None,
        })),
        Err(s) => Err(s),
    }
}

#[tonic::async_trait]
impl pb::worker_service_server::WorkerService for Server {
    async fn register(
        &self,
        request: Request<pb::WorkerInfo>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let info = request.into_inner();
        if info.protocol_version != PROTOCOL_VERSION {
            return Err(Status::failed_precondition(format!(
                "protocol version mismatch: worker {:?} speaks quarry.v1 protocol {}, this coordinator speaks {}; \
                 run the same quarry release on both",
                info.name, info.protocol_version, PROTOCOL_VERSION
            )));
        }
        let slots = info.slots.max(1);
        let worker = self.mutate(|c, now| Ok(c.register(&info.name, info.gpus, slots, now))).await?;
        tracing::info!(%worker, name = %info.name, cores = info.cores, gpus = info.gpus, slots, "worker registered");
        let lease_ttl_ms = self.lock().lease_ttl_ms();
        Ok(Response::new(pb::RegisterResponse { worker_id: worker, lease_ttl_ms }))
    }

    async fn lease(&self, request: Request<pb::LeaseRequest>) -> Result<Response<pb::LeaseResponse>, Status> {
        let req = request.into_inner();
        if req.max_tasks == 0 {
            self.lock().heartbeat(&req.worker_id, Now::system()).map_err(status_of)?;
            return Ok(Response::new(pb::LeaseResponse { task: None }));
        }
        let wait = Duration::from_millis(req.wait_ms as u64).min(MAX_LEASE_WAIT);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Registered before the attempt, so a task appearing in between still wakes us.
            let notified = self.shared.tasks.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let worker = req.worker_id.clone();
            if let Some(task) = self.mutate(move |c, now| c.lease_task(&worker, now)).await? {
                return Ok(Response::new(pb::LeaseResponse { task: Some(task_to_pb(task)) }));
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(Response::new(pb::LeaseResponse { task: None }));
            }
        }
    }

    async fn report_progress(
        &self,
        request: Request<pb::ProgressRequest>,
    ) -> Result<Response<pb::ProgressResponse>, Status> {
        let r = request.into_inner();
        let mut c = self.lock();
        let now = Now::system();
        // Known workers also renew their other leases; an unknown one only this lease.
        let _ = c.heartbeat(&r.worker_id, now);
        let stop = c.progress(r.fencing_token, r.resource, r.loss, now);
        if let Some(l) = c.lease(r.fencing_token)
            && let crate::state::TaskKey::Trial(t) = l.task
        {
            self.shared.progress.record(&l.job, t, r.resource, r.loss);
        }
        Ok(Response::new(pb::ProgressResponse { stop }))
    }

    async fn complete(
        &self,
        request: Request<pb::CompleteRequest>,
    ) -> Result<Response<pb::CompleteResponse>, Status> {
        let r = request.into_inner();
        let result = match r.result {
            Some(pb::complete_request::Result::Prepare(p)) => TaskResult::Prepare(shape_from_pb(
                p.shape.ok_or_else(|| Status::invalid_argument("prepare result without shape"))?,
            )),
            Some(pb::complete_request::Result::Trial(o)) => TaskResult::Trial(
                quarry_search::TrialOutcome::try_from(o)
                    .map_err(|e| Status::invalid_argument(format!("trial outcome: {e}")))?,
            ),
            Some(pb::complete_request::Result::Finalize(_)) => TaskResult::Finalize,
            None => return Err(Status::invalid_argument("complete without a result")),
        };
        let artifacts: Vec<Artifact> = r.artifacts.into_iter().map(artifact_from_pb).collect();
        for a in &artifacts {
            if !self.shared.blobs.contains(&a.hash) {
                return Err(Status::failed_precondition(format!(
                    "artifact {:?} names blob {:?}, which was not uploaded (PutBlob it first)",
                    a.name, a.hash
                )));
            }
        }
        let token = r.fencing_token;
        let (worker, lease_next) = (r.worker_id, r.lease_next);
        let done = self.mutate(move |c, now| {
            c.complete(token, result, artifacts, now)?;
            // The result is in either way; no next task (unknown worker, nothing ready) is not an error.
            Ok(if lease_next { c.lease_task(&worker, now).ok().flatten() } else { None })
        });
        stale_answer(done.await)
    }

    async fn fail(
        &self,
        request: Request<pb::FailRequest>,
    ) -> Result<Response<pb::CompleteResponse>, Status> {
        let r = request.into_inner();
        tracing::warn!(worker = %r.worker_id, token = r.fencing_token, reason = %r.reason, "task failed on a worker");
        stale_answer(self.mutate(move |c, now| c.fail(r.fencing_token, &r.reason, now).map(|()| None)).await)
    }

    type FetchDatasetStream = ChunkStream;

    async fn fetch_dataset(
        &self,
        request: Request<pb::DatasetRef>,
    ) -> Result<Response<Self::FetchDatasetStream>, Status> {
        Ok(Response::new(self.stream_blob(&request.into_inner().hash).await?))
    }

    async fn put_blob(
        &self,
        request: Request<Streaming<pb::Chunk>>,
    ) -> Result<Response<pb::BlobRef>, Status> {
        let (hash, size) = self.receive_blob(request.into_inner()).await?;
        Ok(Response::new(pb::BlobRef { hash, size }))
    }

    type GetBlobStream = ChunkStream;

    async fn get_blob(&self, request: Request<pb::BlobRef>) -> Result<Response<Self::GetBlobStream>, Status> {
        Ok(Response::new(self.stream_blob(&request.into_inner().hash).await?))
    }
}

/// Serves both services on `listener` until `shutdown` resolves.
pub async fn serve(
    server: Server,
    auth: Auth,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    serve_tls(server, auth, listener, None, shutdown).await
}

/// [`serve`], over TLS when `tls` is given.
pub async fn serve_tls(
    server: Server,
    auth: Auth,
    listener: tokio::net::TcpListener,
    tls: Option<tonic::transport::ServerTlsConfig>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let a1 = auth.clone();
    let a2 = auth;
    // Limits set explicitly (tonic's default is 4 MiB): a finalize task carries the leaderboard.
    let max = quarry_proto::MAX_MESSAGE_BYTES;
    let quarry = tonic::service::interceptor::InterceptedService::new(
        pb::quarry_service_server::QuarryServiceServer::new(server.clone())
            .max_decoding_message_size(max)
            .max_encoding_message_size(max),
        move |r| a1.check(r),
    );
    let worker = tonic::service::interceptor::InterceptedService::new(
        pb::worker_service_server::WorkerServiceServer::new(server)
            .max_decoding_message_size(max)
            .max_encoding_message_size(max),
        move |r| a2.check(r),
    );
    // The builder's `tcp_nodelay` only reaches sockets tonic accepts itself; accepted from our own
    // listener they kept Nagle on, and every small reply waited for the client's delayed ACK
    // (~40 ms per round trip).
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    builder.add_service(quarry).add_service(worker).serve_with_incoming_shutdown(incoming, shutdown).await?;
    Ok(())
}
