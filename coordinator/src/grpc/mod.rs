//! The gRPC face of the server: `QuarryService` (clients) and `WorkerService` (workers) over the
//! [`Coordinator`] state machine. The only module of this crate that names `pb::` types.
//!
//! Durability: a handler changes the state under a short lock, hands the resulting events to
//! the log thread, and answers only once they are durable. The log thread writes whatever has
//! queued up in one batch with one fsync (group commit), so many workers share each fsync.

// tonic's `Status` is the error of every handler and of the auth interceptor; boxing it here
// would only be unboxed again at the service boundary.
#![allow(clippy::result_large_err)]

mod auth;
mod client_service;
mod convert;
mod worker_service;

pub use auth::Auth;
pub use convert::entry_to_pb;

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use quarry_proto::pb;
use tokio::io::AsyncReadExt;
use tokio::sync::{Notify, broadcast, mpsc, watch};
use tokio_stream::{Stream, StreamExt};
use tonic::{Status, Streaming};

use crate::blobs::{BlobError, BlobStore};
use crate::log::{EventLog, KEEP_ALIVE, LogError};
use crate::state::{Coordinator, Event, JobSpec, Now, Snapshot, StateError};
use convert::job_events;

/// The default `--max-blob`: the largest artifact (fold models, a run folder's file) a worker
/// may upload. A model of a dataset at the default `--max-upload` fits with room to spare.
pub const DEFAULT_MAX_BLOB: u64 = 2 << 30;

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

/// What the log thread is handed, in apply order.
enum LogMsg {
    Records(Vec<Vec<u8>>),
    /// The state after record `seq`, to store once that record is durable.
    Snapshot(u64, Snapshot),
}

/// The default `--snapshot-every`: events between two state snapshots.
pub const DEFAULT_SNAPSHOT_EVERY: u64 = 100_000;
/// The default `--retain-finished`: how long a finished job keeps its trials' artifacts and
/// progress curves.
pub const DEFAULT_RETAIN_FINISHED: Duration = Duration::from_secs(7 * 24 * 3600);

struct Shared {
    state: Mutex<Coordinator>,
    log_tx: std::sync::mpsc::Sender<LogMsg>,
    /// Events between snapshots (0: none).
    snapshot_every: AtomicU64,
    /// The sequence number of the last snapshot taken (or recovered).
    last_snapshot: AtomicU64,
    /// How long a finished job keeps its trials' artifacts, in ms (`u64::MAX`: forever).
    retain_finished_ms: AtomicU64,
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
    /// This run's lease-token epoch.
    epoch: u64,
    /// The largest blob `PutBlob` takes (`quarry serve --max-blob`).
    max_blob: AtomicU64,
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
        StateError::InvalidSpec(_) | StateError::Invalid { .. } | StateError::WrongResult { .. } => {
            Status::invalid_argument(e.to_string())
        }
        StateError::StaleLease(_) => Status::failed_precondition(e.to_string()),
        StateError::NotLeaseOwner { .. } => Status::permission_denied(e.to_string()),
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
        log: Box<dyn EventLog>,
        blobs: BlobStore,
        lease_ttl: Duration,
    ) -> Result<Server, ServeError> {
        Server::start_at(log, blobs, lease_ttl, 0)
    }

    /// [`Server::start`] with this run's lease-token epoch at least `epoch_floor` (the store's
    /// last epoch + 1; `owner`). The epoch is written to the log's backend
    /// ([`EventLog::set_epoch`]) before anything is served; the caller records it in the store.
    pub fn start_at(
        mut log: Box<dyn EventLog>,
        blobs: BlobStore,
        lease_ttl: Duration,
        epoch_floor: u64,
    ) -> Result<Server, ServeError> {
        let started = std::time::Instant::now();
        let recovered = log.recover()?;
        let parse = |index: usize, r: &[u8]| {
            serde_json::from_slice::<Event>(r)
                .map_err(|e| ServeError::BadRecord { index, message: e.to_string() })
        };
        let covered = recovered.snapshot.as_ref().map_or(0, |s| s.0);
        let tail = recovered.records.iter().enumerate().map(|(i, r)| parse(covered as usize + i, r));
        let tail: Vec<Event> = tail.collect::<Result<_, _>>()?;
        let n = covered + tail.len() as u64;
        let tail_len = tail.len();
        let mut state = match &recovered.snapshot {
            Some((_, bytes)) => {
                Coordinator::recover(lease_ttl, bytes, tail, Now::system()).map_err(|message| {
                    ServeError::BadRecord { index: 0, message: format!("snapshot: {message}") }
                })?
            }
            None => Coordinator::replay(lease_ttl, tail, Now::system()),
        };
        drop(recovered);
        let epoch = state.begin_epoch(epoch_floor, rand::random());
        log.set_epoch(epoch)?;
        tracing::info!(
            events = n,
            snapshot = covered,
            replayed = tail_len,
            ms = started.elapsed().as_millis() as u64,
            jobs = state.jobs().count(),
            leases = state.leases().count(),
            epoch,
            "state replayed"
        );
        let (durable_tx, durable_rx) = watch::channel(n);
        let (log_tx, log_rx) = std::sync::mpsc::channel::<LogMsg>();
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
                snapshot_every: AtomicU64::new(0),
                last_snapshot: AtomicU64::new(covered),
                retain_finished_ms: AtomicU64::new(DEFAULT_RETAIN_FINISHED.as_millis() as u64),
                submitted: AtomicU64::new(submitted),
                durable: durable_rx,
                log_fault,
                tasks: Notify::new(),
                job_events,
                event_seq: AtomicU64::new(0),
                blobs,
                progress: crate::progress::ProgressLog::default(),
                max_upload: AtomicU64::new(u64::MAX),
                epoch,
                max_blob: AtomicU64::new(DEFAULT_MAX_BLOB),
            }),
        };
        let reaper = server.clone();
        let period = (lease_ttl / 4).max(Duration::from_millis(50));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                let retain = reaper.shared.retain_finished_ms.load(Ordering::Relaxed);
                let _ = reaper
                    .mutate(|c, now| {
                        let expired = c.expire(now);
                        if retain != u64::MAX {
                            c.retire(now, Duration::from_millis(retain));
                        }
                        Ok(expired)
                    })
                    .await;
            }
        });
        Ok(server)
    }

    /// This run's lease-token epoch (`state::epoch_of` of every token it grants).
    pub fn epoch(&self) -> u64 {
        self.shared.epoch
    }

    /// Resolves when the event log stopped for good (another coordinator took the store over,
    /// or the backend lost acknowledged writes); the reason. The process should exit: it can
    /// no longer change anything.
    pub async fn log_stopped(&self) -> String {
        let mut durable = self.shared.durable.clone();
        while durable.changed().await.is_ok() {}
        self.shared
            .log_fault
            .lock()
            .ok()
            .and_then(|f| f.clone())
            .unwrap_or_else(|| "the event log thread stopped".into())
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
            for e in &events {
                if let Event::JobRetired { job, .. } = e {
                    self.shared.progress.forget(job);
                }
            }
            let records: Vec<Vec<u8>> = events.iter().filter_map(|e| serde_json::to_vec(e).ok()).collect();
            let target = self.shared.submitted.fetch_add(records.len() as u64, Ordering::SeqCst)
                + records.len() as u64;
            if self.shared.log_tx.send(LogMsg::Records(records)).is_err() {
                return Err(Status::unavailable("the event log is closed; the coordinator is shutting down"));
            }
            self.maybe_snapshot(&c, target);
            if !garbage.is_empty() {
                // Deleted only once the eviction is durable: a crash before that replays a
                // state that still names these blobs. A task of its own, so a caller that
                // goes away meanwhile does not leave them behind.
                let server = self.clone();
                let mut durable = self.shared.durable.clone();
                tokio::spawn(async move {
                    if durable.wait_for(|d| *d >= target).await.is_ok() {
                        server.remove_unreferenced(garbage);
                    }
                });
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

    /// Deletes the blobs nothing references now. Checked again under the lock: the same
    /// bytes (same config, data and seed) may have been completed by another trial since they
    /// were evicted.
    fn remove_unreferenced(&self, garbage: Vec<String>) {
        // O(garbage) under the lock (reference counts); the deletions after it.
        let dead: Vec<String> = {
            let c = self.lock();
            garbage.into_iter().filter(|h| !c.is_referenced(h)).collect()
        };
        for hash in &dead {
            self.shared.blobs.remove(hash);
        }
    }

    /// Hands the log thread a snapshot once `--snapshot-every` events passed since the last.
    /// Called under the state lock right after the records up to `seq` were queued, so the
    /// snapshot is the state after exactly those; taking it copies pointers (final jobs are
    /// serialized when they end) and the log thread encodes and writes it.
    fn maybe_snapshot(&self, c: &Coordinator, seq: u64) {
        let every = self.shared.snapshot_every.load(Ordering::Relaxed);
        if every == 0 || seq < self.shared.last_snapshot.load(Ordering::Relaxed).saturating_add(every) {
            return;
        }
        let Some(snapshot) = c.snapshot() else { return };
        self.shared.last_snapshot.store(seq, Ordering::Relaxed);
        let _ = self.shared.log_tx.send(LogMsg::Snapshot(seq, snapshot));
    }

    /// Takes a state snapshot every `events` events (0: never), and one now when that many
    /// were replayed at start.
    pub fn set_snapshot_every(&self, events: u64) {
        self.shared.snapshot_every.store(events, Ordering::Relaxed);
        let c = self.lock();
        let seq = self.shared.submitted.load(Ordering::SeqCst);
        self.maybe_snapshot(&c, seq);
    }

    /// How long a finished job keeps its trials' artifacts and progress curves (`None`:
    /// forever).
    pub fn set_retain_finished(&self, retain: Option<Duration>) {
        let ms = retain.map_or(u64::MAX, |d| d.as_millis().min(u64::MAX as u128 - 1) as u64);
        self.shared.retain_finished_ms.store(ms, Ordering::Relaxed);
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

    /// A worker's `PutBlob`, refused past `--max-blob`.
    async fn receive_blob(&self, stream: Streaming<pb::Chunk>) -> Result<(String, u64), Status> {
        let max = self.shared.max_blob.load(Ordering::Relaxed);
        self.receive_limited(stream, max, "--max-blob").await
    }

    /// Refuses the stream (`ResourceExhausted` naming `flag`) once it passes `max`. However
    /// the upload ends early (refused, a failed write, the caller gone), dropping the writer
    /// deletes its partial file.
    async fn receive_limited(
        &self,
        mut stream: Streaming<pb::Chunk>,
        max: u64,
        flag: &str,
    ) -> Result<(String, u64), Status> {
        let mut w = self.shared.blobs.writer().await.map_err(blob_status)?;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            if w.size().saturating_add(chunk.data.len() as u64) > max {
                return Err(Status::resource_exhausted(format!(
                    "the upload is larger than this coordinator's {flag} ({max} bytes)"
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

    /// The largest blob a worker's `PutBlob` may store (default [`DEFAULT_MAX_BLOB`]).
    pub fn set_max_blob(&self, bytes: u64) {
        self.shared.max_blob.store(bytes, Ordering::Relaxed);
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
        // Before anything quotes a field back (a 70 MB target must not become a 70 MB error).
        crate::limits::check_spec(&spec).map_err(status_of)?;
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
/// thread, so every waiter gets an error. No request can cause one: a request's fields are
/// capped (`crate::limits`) and the events that carry them size-checked against
/// `limits::MAX_EVENT_BYTES`, far under the log's record limit, before they are applied, so
/// only that request is refused; what is left (a Redis stream that lost acknowledged writes)
/// is the store's fault, not a caller's.
fn log_thread(
    mut log: Box<dyn EventLog>,
    rx: std::sync::mpsc::Receiver<LogMsg>,
    durable: watch::Sender<u64>,
    fault: &Mutex<Option<String>>,
) {
    let set_fault = |why: Option<String>| {
        if let Ok(mut f) = fault.lock() {
            *f = why;
        }
    };
    let mut alive_at = std::time::Instant::now();
    // A snapshot met while gathering a batch: written once the batch before it is durable.
    let mut held: Option<LogMsg> = None;
    loop {
        let first = match held.take() {
            Some(m) => Some(m),
            None => match rx.recv_timeout(KEEP_ALIVE) {
                Ok(m) => Some(m),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
            },
        };
        if alive_at.elapsed() >= KEEP_ALIVE {
            alive_at = std::time::Instant::now();
            match log.keep_alive() {
                Ok(()) => {}
                // Redis down: the appends report it; the claim is taken back when it returns.
                Err(e) if e.is_transient() => tracing::debug!(error = %e, "event log keep-alive failed"),
                Err(e) => {
                    tracing::error!(error = %e, "the event log is no longer this coordinator's; stopping");
                    set_fault(Some(e.to_string()));
                    return;
                }
            }
        }
        let mut batch = match first {
            None => continue,
            Some(LogMsg::Snapshot(seq, snapshot)) => {
                write_snapshot(&mut *log, seq, &snapshot);
                continue;
            }
            Some(LogMsg::Records(records)) => records,
        };
        while let Ok(more) = rx.try_recv() {
            match more {
                LogMsg::Records(records) => batch.extend(records),
                snapshot @ LogMsg::Snapshot(..) => {
                    held = Some(snapshot);
                    break;
                }
            }
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

/// Encodes and stores a snapshot. A failure only postpones rotation (the log still holds
/// every record), so it is logged and the next snapshot tries again.
fn write_snapshot(log: &mut dyn EventLog, seq: u64, snapshot: &Snapshot) {
    let started = std::time::Instant::now();
    let state = snapshot.encode();
    match log.write_snapshot(seq, &state) {
        Ok(()) => tracing::info!(
            seq,
            bytes = state.len(),
            ms = started.elapsed().as_millis() as u64,
            "state snapshot written; the log before it let go"
        ),
        Err(e) => {
            tracing::warn!(seq, error = %e, "state snapshot failed; the log keeps growing until one succeeds")
        }
    }
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<pb::Chunk, Status>> + Send>>;
type JobEventStream = Pin<Box<dyn Stream<Item = Result<pb::JobEvent, Status>> + Send>>;

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
    let limits = crate::conn::ConnLimits::default();
    serve_limited(server, auth.clone(), auth, listener, tls, limits, shutdown).await
}

/// Requests one connection may run at once.
const STREAMS_PER_CONNECTION: u32 = 256;

/// [`serve_tls`] under `limits`: at most `max_connections` connections, each closed when idle
/// (no byte either way, HTTP/2 pings included) for `idle_timeout`; HTTP/2 keep-alive pings
/// find dead peers, and one connection runs at most 256 requests at once.
///
/// `auth` guards the client service, `worker_auth` the worker service (the same check unless
/// workers have their own token).
pub async fn serve_limited(
    server: Server,
    auth: Auth,
    worker_auth: Auth,
    listener: tokio::net::TcpListener,
    tls: Option<tonic::transport::ServerTlsConfig>,
    limits: crate::conn::ConnLimits,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let a1 = auth;
    let a2 = worker_auth;
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
    // Sockets from our own listener: `limited_incoming` turns Nagle off on each (the builder's
    // `tcp_nodelay` only reaches sockets tonic accepts itself; with Nagle on every small reply
    // waited for the client's delayed ACK, ~40 ms per round trip).
    let incoming = crate::conn::limited_incoming(listener, limits);
    // Pings at a third of the idle time keep a live peer's quiet connection open (they move
    // bytes) and find a dead one.
    let ping = (limits.idle_timeout / 3).max(Duration::from_secs(1));
    let mut builder = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(ping))
        .http2_keepalive_timeout(Some(ping))
        .max_concurrent_streams(Some(STREAMS_PER_CONNECTION))
        .concurrency_limit_per_connection(STREAMS_PER_CONNECTION as usize);
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    builder.add_service(quarry).add_service(worker).serve_with_incoming_shutdown(incoming, shutdown).await?;
    Ok(())
}
