//! The server's job state machine. Every change is an [`Event`]; [`Coordinator::apply`] is the
//! only code that changes state, and a restarted server rebuilds itself by applying the logged
//! events in order. Decisions (which task a worker gets, when a lease expires, when a search is
//! over) are taken by the live methods, which emit events and apply them at once; replay only
//! applies. No IO and no clock here: time is passed in as [`Now`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use quarry_featurize::Metric;
use quarry_search::{DataShape, Decision, TrialId, TrialOutcome, TrialSpec, TrialStatus};
use serde::{Deserialize, Serialize};

use crate::driver::{DriverConfig, Next, SearchDriver};
use crate::job::{LeaderboardEntry, SchedulerKind, SearcherKind};
use crate::keep::KeepSet;

/// A lease not renewed within this long expires and its task is re-queued.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(15);
/// Tries per task (the first included) before a trial is recorded failed / a job fails.
pub const MAX_ATTEMPTS: u32 = 3;

/// The time, passed in: wall-clock milliseconds (logged, sent to workers) and a monotonic
/// instant (for the search driver).
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub unix_ms: u64,
    pub instant: Instant,
}

impl Now {
    pub fn system() -> Now {
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Now { unix_ms, instant: Instant::now() }
    }

    pub fn plus_ms(self, ms: u64) -> Now {
        Now { unix_ms: self.unix_ms + ms, instant: self.instant + Duration::from_millis(ms) }
    }

    /// The instant matching a wall-clock time (for deadlines given in unix ms).
    fn instant_at(self, unix_ms: u64) -> Instant {
        if unix_ms >= self.unix_ms {
            self.instant + Duration::from_millis(unix_ms - self.unix_ms)
        } else {
            self.instant.checked_sub(Duration::from_millis(self.unix_ms - unix_ms)).unwrap_or(self.instant)
        }
    }
}

/// What a client asked for; mirrors `quarry fit`'s options.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct JobSpec {
    pub experiment: String,
    pub dataset_hash: String,
    pub file_name: String,
    pub target: String,
    pub task: String,
    pub metric: String,
    pub seed: u64,
    pub budget_ms: Option<u64>,
    pub max_trials: Option<u64>,
    pub scheduler: String,
    pub column_types: Vec<String>,
    pub drop_columns: Vec<String>,
    pub group_column: Option<String>,
    pub column_types_file: Option<String>,
    /// "local", "tpe" or "random"; empty means local (logs written before it existed).
    #[serde(default)]
    pub searcher: String,
}

/// What the prepare task found out about the data.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PreparedShape {
    pub n_rows: u64,
    pub n_features: u64,
    pub n_classes: u64,
    pub task: String,
    pub metric: String,
    pub n_folds: u32,
    pub families: Vec<String>,
}

/// A named blob in the blob store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    pub name: String,
    pub hash: String,
    pub size: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKey {
    Prepare,
    Trial(u64),
    Finalize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl JobState {
    pub fn is_final(self) -> bool {
        matches!(self, JobState::Completed | JobState::Failed | JobState::Cancelled)
    }
}

/// One logged state change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    WorkerRegistered {
        worker: String,
        name: String,
        gpus: u32,
        slots: u32,
    },
    JobCreated {
        job: String,
        spec: JobSpec,
        at_ms: u64,
    },
    Leased {
        token: u64,
        job: String,
        task: TaskKey,
        worker: String,
        attempt: u32,
        /// When it was leased: a job's budget runs from its first lease. 0 in logs written
        /// before the field existed (the job's creation time is used then).
        #[serde(default)]
        at_ms: u64,
    },
    /// A lease ended without a result (expired, or the worker gave up): retry or give up.
    Released {
        token: u64,
        job: String,
        reason: String,
        at_ms: u64,
    },
    Prepared {
        token: u64,
        job: String,
        shape: PreparedShape,
        artifacts: Vec<Artifact>,
        at_ms: u64,
    },
    /// The driver suggested this trial (replay asks the driver again and gets the same one).
    TrialIssued {
        job: String,
        trial: u64,
    },
    TrialFinished {
        token: u64,
        job: String,
        outcome: TrialOutcome,
        artifacts: Vec<Artifact>,
    },
    /// No more trials start (deadline, trial limit, or the searcher ran dry).
    SearchClosed {
        job: String,
    },
    FinalizeQueued {
        job: String,
    },
    Finalized {
        token: u64,
        job: String,
        artifacts: Vec<Artifact>,
        at_ms: u64,
    },
    JobFailed {
        job: String,
        reason: String,
        at_ms: u64,
    },
    JobCancelled {
        job: String,
        at_ms: u64,
    },
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum StateError {
    #[error("unknown worker {0}: register again")]
    UnknownWorker(String),
    #[error("unknown job {0}")]
    UnknownJob(String),
    #[error("lease {0} is stale (expired and re-issued, or its job ended); the result was dropped")]
    StaleLease(u64),
    #[error("lease {token} is for a {expected} task, not a {got} result")]
    WrongResult { token: u64, expected: &'static str, got: &'static str },
    #[error("invalid job: {0}")]
    InvalidSpec(String),
    #[error("job {job}: {message}")]
    Job { job: String, message: String },
}

#[derive(Debug, Clone)]
pub struct Lease {
    pub token: u64,
    pub job: String,
    pub task: TaskKey,
    pub worker: String,
    pub attempt: u32,
    pub deadline_ms: u64,
}

#[derive(Debug, Clone)]
pub struct WorkerRecord {
    pub name: String,
    pub gpus: u32,
    pub slots: u32,
}

/// Everything a worker needs to run a leased task.
#[derive(Debug, Clone)]
pub struct LeasedTask {
    pub token: u64,
    pub job: String,
    pub attempt: u32,
    pub spec: JobSpec,
    pub kind: LeasedKind,
}

#[derive(Debug, Clone)]
pub enum LeasedKind {
    Prepare,
    Trial { spec: TrialSpec, shape: PreparedShape, deadline_ms: Option<u64> },
    Finalize(FinalizeInput),
}

#[derive(Debug, Clone)]
pub struct FinalizeInput {
    pub leaderboard: Vec<LeaderboardEntry>,
    pub kept: Vec<(TrialId, Vec<Artifact>)>,
    pub prepare_artifacts: Vec<Artifact>,
    pub shape: PreparedShape,
    pub deadline_ms: Option<u64>,
    pub elapsed_seconds: f64,
}

/// A completed task's result.
#[derive(Debug, Clone)]
pub enum TaskResult {
    Prepare(PreparedShape),
    Trial(TrialOutcome),
    Finalize,
}

pub struct Job {
    pub id: String,
    pub spec: JobSpec,
    pub state: JobState,
    pub created_ms: u64,
    /// When its first task was leased: the budget runs from here, not from the submission,
    /// so time spent queued behind other jobs is not taken from it.
    pub started_ms: Option<u64>,
    pub finished_ms: Option<u64>,
    pub reason: Option<String>,
    pub shape: Option<PreparedShape>,
    pub prepare_artifacts: Vec<Artifact>,
    pub driver: Option<SearchDriver>,
    /// Tasks ready to lease, with their attempt number.
    queue: VecDeque<(TaskKey, u32)>,
    keep: KeepSet,
    pub final_artifacts: Vec<Artifact>,
    finalize_queued: bool,
}

impl Job {
    pub fn phase(&self) -> &'static str {
        if self.state.is_final() {
            "done"
        } else if self.finalize_queued {
            "finalize"
        } else if self.driver.is_some() {
            "search"
        } else {
            "prepare"
        }
    }

    pub fn leaderboard(&self) -> Vec<LeaderboardEntry> {
        self.driver.as_ref().map(SearchDriver::leaderboard).unwrap_or_default()
    }

    pub fn trials_started(&self) -> u64 {
        self.driver.as_ref().map_or(0, SearchDriver::issued)
    }

    pub fn trials_finished(&self) -> u64 {
        self.driver.as_ref().map_or(0, |d| d.entries().len() as u64)
    }

    pub fn best(&self) -> Option<&LeaderboardEntry> {
        self.driver.as_ref().and_then(SearchDriver::best)
    }

    fn deadline_ms(&self) -> Option<u64> {
        self.spec.budget_ms.map(|b| self.started_ms.unwrap_or(self.created_ms) + b)
    }

    /// The time kept for finalize after the search, as `quarry fit` keeps it.
    fn reserve_ms(&self) -> u64 {
        600 + self.spec.budget_ms.map_or(0, |b| b * 15 / 1000)
    }
}

/// All jobs, leases and workers.
pub struct Coordinator {
    jobs: BTreeMap<String, Job>,
    /// Job ids in creation order (round-robin over running jobs follows it).
    order: Vec<String>,
    rr: usize,
    leases: HashMap<u64, Lease>,
    workers: HashMap<String, WorkerRecord>,
    next_token: u64,
    lease_ttl_ms: u64,
    /// Applied but not yet handed to the log.
    pending: Vec<Event>,
    /// Blobs no longer referenced (evicted trial artifacts), for the store to delete.
    garbage: Vec<String>,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("jobs", &self.jobs.len())
            .field("leases", &self.leases.len())
            .field("workers", &self.workers.len())
            .finish()
    }
}

/// Families that run faster on a GPU worker. They go only to GPU workers while one is
/// registered, and to any worker otherwise (the MLP trains on the CPU too): a cluster of CPU
/// workers must not strand them (the e2e restart test hung on an MLP trial nobody could take).
fn wants_gpu(family: &str) -> bool {
    family == "mlp"
}

fn scheduler_kind(name: &str) -> Result<SchedulerKind, String> {
    match name {
        "" | "fifo" => Ok(SchedulerKind::Fifo),
        "median" => Ok(SchedulerKind::Median),
        "asha" => Ok(SchedulerKind::Asha),
        other => Err(format!("unknown scheduler {other:?} (fifo, median or asha)")),
    }
}

impl Coordinator {
    pub fn new(lease_ttl: Duration) -> Coordinator {
        Coordinator {
            jobs: BTreeMap::new(),
            order: Vec::new(),
            rr: 0,
            leases: HashMap::new(),
            workers: HashMap::new(),
            next_token: 1,
            lease_ttl_ms: lease_ttl.as_millis() as u64,
            pending: Vec::new(),
            garbage: Vec::new(),
        }
    }

    /// Rebuilds the state from logged events. Leases still open get a fresh deadline from `now`
    /// so live workers can still complete them.
    pub fn replay(lease_ttl: Duration, events: impl IntoIterator<Item = Event>, now: Now) -> Coordinator {
        let mut c = Coordinator::new(lease_ttl);
        for e in events {
            c.apply(&e, now, true);
        }
        c.pending.clear();
        c.garbage.clear();
        // A crash may have come between an event and its consequence; take the decisions again.
        let ids: Vec<String> = c.order.clone();
        for id in ids {
            c.advance(&id, now);
        }
        c
    }

    pub fn lease_ttl_ms(&self) -> u64 {
        self.lease_ttl_ms
    }

    /// Events applied since the last call, for the log.
    pub fn take_pending(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.pending)
    }

    /// Blobs evicted since the last call that nothing references any more. Blobs are
    /// content-addressed, so another trial or job may hold the same bytes (the same config on
    /// the same data): the soak test (bench/soak.py) found finalize failing on a blob that
    /// another job had evicted.
    pub fn take_garbage(&mut self) -> Vec<String> {
        let mut garbage = std::mem::take(&mut self.garbage);
        garbage.sort_unstable();
        garbage.dedup();
        garbage.retain(|h| !self.referenced_blobs().any(|r| r == h));
        garbage
    }

    pub fn job(&self, id: &str) -> Option<&Job> {
        self.jobs.get(id)
    }

    pub fn jobs(&self) -> impl Iterator<Item = &Job> {
        self.order.iter().filter_map(|id| self.jobs.get(id))
    }

    pub fn lease(&self, token: u64) -> Option<&Lease> {
        self.leases.get(&token)
    }

    pub fn leases(&self) -> impl Iterator<Item = &Lease> {
        self.leases.values()
    }

    pub fn is_worker(&self, id: &str) -> bool {
        self.workers.contains_key(id)
    }

    /// Every artifact hash still referenced (blobs the store must keep).
    pub fn referenced_blobs(&self) -> impl Iterator<Item = &str> {
        self.jobs.values().flat_map(|j| {
            std::iter::once(j.spec.dataset_hash.as_str())
                .chain(j.prepare_artifacts.iter().map(|a| a.hash.as_str()))
                .chain(j.keep.artifacts().map(|a| a.hash.as_str()))
                .chain(j.final_artifacts.iter().map(|a| a.hash.as_str()))
        })
    }

    fn emit(&mut self, e: Event, now: Now) {
        self.apply(&e, now, false);
        self.pending.push(e);
    }

    /// The only place state changes. `replaying`: the driver has not yet been asked for an
    /// issued trial (live, it already has).
    pub fn apply(&mut self, e: &Event, now: Now, replaying: bool) {
        match e {
            Event::WorkerRegistered { worker, name, gpus, slots } => {
                self.workers
                    .insert(worker.clone(), WorkerRecord { name: name.clone(), gpus: *gpus, slots: *slots });
            }
            Event::JobCreated { job, spec, at_ms } => {
                let mut queue = VecDeque::new();
                queue.push_back((TaskKey::Prepare, 1));
                self.jobs.insert(
                    job.clone(),
                    Job {
                        id: job.clone(),
                        spec: spec.clone(),
                        state: JobState::Queued,
                        created_ms: *at_ms,
                        started_ms: None,
                        finished_ms: None,
                        reason: None,
                        shape: None,
                        prepare_artifacts: Vec::new(),
                        driver: None,
                        queue,
                        keep: KeepSet::default(),
                        final_artifacts: Vec::new(),
                        finalize_queued: false,
                    },
                );
                self.order.push(job.clone());
            }
            Event::Leased { token, job, task, worker, attempt, at_ms } => {
                self.next_token = self.next_token.max(token + 1);
                if let Some(j) = self.jobs.get_mut(job) {
                    if j.started_ms.is_none() {
                        j.started_ms = Some(if *at_ms > 0 { *at_ms } else { j.created_ms });
                    }
                    if let Some(pos) = j.queue.iter().position(|(k, _)| k == task) {
                        j.queue.remove(pos);
                    }
                    if j.state == JobState::Queued {
                        j.state = JobState::Running;
                    }
                }
                self.leases.insert(
                    *token,
                    Lease {
                        token: *token,
                        job: job.clone(),
                        task: *task,
                        worker: worker.clone(),
                        attempt: *attempt,
                        deadline_ms: now.unix_ms + self.lease_ttl_ms,
                    },
                );
            }
            Event::Released { token, reason, at_ms, .. } => {
                let Some(lease) = self.leases.remove(token) else { return };
                let Some(j) = self.jobs.get_mut(&lease.job) else { return };
                if j.state.is_final() {
                    return;
                }
                if lease.attempt < MAX_ATTEMPTS {
                    // Retries go first: they hold up the determinism window.
                    j.queue.push_front((lease.task, lease.attempt + 1));
                    return;
                }
                let why = format!("gave up after {} attempts: {reason}", lease.attempt);
                match lease.task {
                    TaskKey::Trial(id) => {
                        let outcome = TrialOutcome {
                            id: TrialId(id),
                            status: TrialStatus::Failed,
                            score: None,
                            fit_seconds: 0.0,
                            rounds: None,
                            failure_reason: Some(why),
                        };
                        if let Some(d) = j.driver.as_mut()
                            && let Err(err) = d.record(outcome)
                        {
                            tracing::warn!(job = %j.id, %err, "event log: giving up on a trial");
                        }
                        j.keep.add(TrialId(id), String::new(), None, Vec::new());
                    }
                    TaskKey::Prepare | TaskKey::Finalize => {
                        let what = if lease.task == TaskKey::Prepare { "prepare" } else { "finalize" };
                        j.state = JobState::Failed;
                        j.reason = Some(format!("{what} {why}"));
                        j.finished_ms = Some(*at_ms);
                        j.queue.clear();
                    }
                }
            }
            Event::Prepared { token, shape, artifacts, .. } => {
                let Some(lease) = self.leases.remove(token) else { return };
                let Some(j) = self.jobs.get_mut(&lease.job) else { return };
                if j.state.is_final() {
                    return;
                }
                match driver_for(&j.spec, shape) {
                    Ok(d) => j.driver = Some(d),
                    Err(message) => {
                        j.state = JobState::Failed;
                        j.reason = Some(message);
                    }
                }
                j.shape = Some(shape.clone());
                j.prepare_artifacts = artifacts.clone();
            }
            Event::TrialIssued { job, trial } => {
                let Some(j) = self.jobs.get_mut(job) else { return };
                let Some(d) = j.driver.as_mut() else { return };
                if replaying {
                    match d.next_trial(now.instant, None) {
                        Next::Trial(s) if s.id.0 == *trial => {}
                        other => {
                            // Only a log written by different search code can get here.
                            tracing::error!(job = %job, trial, ?other, "event log: replay suggested a different trial");
                        }
                    }
                }
                j.queue.push_back((TaskKey::Trial(*trial), 1));
            }
            Event::TrialFinished { token, outcome, artifacts, .. } => {
                let Some(lease) = self.leases.remove(token) else { return };
                let Some(j) = self.jobs.get_mut(&lease.job) else { return };
                let Some(d) = j.driver.as_mut() else { return };
                let metric = d.config().metric;
                let family = d.spec(outcome.id).map(|s| s.family.clone()).unwrap_or_default();
                match d.record(outcome.clone()) {
                    Ok(_) => {
                        let loss = match (outcome.status, outcome.score) {
                            (TrialStatus::Completed, Some(s)) => Some(metric.to_loss(s)),
                            _ => None,
                        };
                        let evicted = j.keep.add(outcome.id, family, loss, artifacts.clone());
                        self.garbage.extend(evicted.into_iter().map(|a| a.hash));
                    }
                    Err(err) => tracing::warn!(job = %j.id, %err, "a result for a trial not in flight"),
                }
            }
            Event::SearchClosed { job } => {
                if let Some(d) = self.jobs.get_mut(job).and_then(|j| j.driver.as_mut()) {
                    d.close();
                }
            }
            Event::FinalizeQueued { job } => {
                if let Some(j) = self.jobs.get_mut(job) {
                    j.finalize_queued = true;
                    j.queue.push_back((TaskKey::Finalize, 1));
                }
            }
            Event::Finalized { token, artifacts, at_ms, .. } => {
                let Some(lease) = self.leases.remove(token) else { return };
                let Some(j) = self.jobs.get_mut(&lease.job) else { return };
                j.final_artifacts = artifacts.clone();
                j.state = JobState::Completed;
                j.finished_ms = Some(*at_ms);
            }
            Event::JobFailed { job, reason, at_ms } => {
                if let Some(j) = self.jobs.get_mut(job) {
                    j.state = JobState::Failed;
                    j.reason = Some(reason.clone());
                    j.finished_ms = Some(*at_ms);
                    j.queue.clear();
                }
                self.leases.retain(|_, l| l.job != *job);
            }
            Event::JobCancelled { job, at_ms } => {
                if let Some(j) = self.jobs.get_mut(job) {
                    j.state = JobState::Cancelled;
                    j.reason = Some("cancelled by a client".into());
                    j.finished_ms = Some(*at_ms);
                    j.queue.clear();
                    if let Some(d) = j.driver.as_mut() {
                        d.close();
                    }
                }
                self.leases.retain(|_, l| l.job != *job);
            }
        }
    }

    // ---- live operations: each checks, emits events and applies them ----

    pub fn register(&mut self, name: &str, gpus: u32, slots: u32, now: Now) -> String {
        let worker = format!("w{}", self.workers.len() + 1);
        self.emit(
            Event::WorkerRegistered { worker: worker.clone(), name: name.to_string(), gpus, slots },
            now,
        );
        worker
    }

    pub fn create_job(&mut self, mut spec: JobSpec, now: Now) -> Result<String, StateError> {
        if spec.dataset_hash.is_empty() {
            return Err(StateError::InvalidSpec("no dataset_hash: upload the dataset first".into()));
        }
        if spec.target.is_empty() {
            return Err(StateError::InvalidSpec("no target column".into()));
        }
        // Workers name their cached copy after it: it must stay one plain file name.
        if let Err(why) = quarry_featurize::safe_name(&spec.file_name)
            && !spec.file_name.is_empty()
        {
            return Err(StateError::InvalidSpec(format!("file name {:?}: {why}", spec.file_name)));
        }
        if spec.max_trials == Some(0) {
            return Err(StateError::InvalidSpec("max_trials must be at least 1".into()));
        }
        scheduler_kind(&spec.scheduler).map_err(StateError::InvalidSpec)?;
        SearcherKind::parse(&spec.searcher).map_err(StateError::InvalidSpec)?;
        if spec.budget_ms.is_none() && spec.max_trials.is_none() {
            // The same default as `quarry fit`.
            spec.budget_ms = Some(60_000);
        }
        if spec.experiment.is_empty() {
            spec.experiment = "default".into();
        }
        let job = format!("job-{}", self.order.len() + 1);
        self.emit(Event::JobCreated { job: job.clone(), spec, at_ms: now.unix_ms }, now);
        Ok(job)
    }

    /// Any call from a worker renews its leases.
    pub fn heartbeat(&mut self, worker: &str, now: Now) -> Result<(), StateError> {
        if !self.workers.contains_key(worker) {
            return Err(StateError::UnknownWorker(worker.to_string()));
        }
        let deadline = now.unix_ms + self.lease_ttl_ms;
        for l in self.leases.values_mut().filter(|l| l.worker == worker) {
            l.deadline_ms = deadline;
        }
        Ok(())
    }

    /// Re-queues (or gives up on) every task whose lease ran out. Returns how many expired.
    pub fn expire(&mut self, now: Now) -> usize {
        let mut expired: Vec<(u64, String)> = self
            .leases
            .values()
            .filter(|l| l.deadline_ms < now.unix_ms)
            .map(|l| (l.token, l.worker.clone()))
            .collect();
        expired.sort_unstable();
        for (token, worker) in &expired {
            let Some(job) = self.leases.get(token).map(|l| l.job.clone()) else { continue };
            let reason = format!("lease expired (worker {worker} silent for {} ms)", self.lease_ttl_ms);
            self.emit(Event::Released { token: *token, job: job.clone(), reason, at_ms: now.unix_ms }, now);
            self.advance(&job, now);
        }
        expired.len()
    }

    /// A task for this worker, if any job has one: round-robin over running jobs; a queued
    /// job starts (oldest first) only when no running job has work for this worker. Its
    /// budget starts then too, so twenty jobs submitted to four workers queue instead of
    /// each spending its budget waiting for a share of the workers.
    pub fn lease_task(&mut self, worker: &str, now: Now) -> Result<Option<LeasedTask>, StateError> {
        self.heartbeat(worker, now)?;
        // A CPU worker may take GPU-wanting trials when the cluster has no GPU worker at all.
        let gpu = self.workers.get(worker).is_some_and(|w| w.gpus > 0)
            || !self.workers.values().any(|w| w.gpus > 0);
        let n = self.order.len();
        let running = |c: &Coordinator, idx: usize| {
            c.jobs.get(&c.order[idx]).is_some_and(|j| j.state == JobState::Running)
        };
        let candidates: Vec<usize> =
            (0..n)
                .map(|k| (self.rr + k) % n)
                .filter(|&idx| running(self, idx))
                .chain((0..n).filter(|&idx| {
                    self.jobs.get(&self.order[idx]).is_some_and(|j| j.state == JobState::Queued)
                }))
                .collect();
        for idx in candidates {
            let id = self.order[idx].clone();
            if let Some(key) = self.next_task_of(&id, gpu, now) {
                self.rr = idx + 1;
                let token = self.next_token;
                let attempt = self
                    .jobs
                    .get(&id)
                    .and_then(|j| j.queue.iter().find(|(k, _)| *k == key))
                    .map_or(1, |q| q.1);
                self.emit(
                    Event::Leased {
                        token,
                        job: id.clone(),
                        task: key,
                        worker: worker.to_string(),
                        attempt,
                        at_ms: now.unix_ms,
                    },
                    now,
                );
                return Ok(self.describe(token, now));
            }
        }
        Ok(None)
    }

    /// The key of the next task of `job` this worker may run, issuing a trial when the queue
    /// is empty and the driver allows one.
    fn next_task_of(&mut self, id: &str, gpu: bool, now: Now) -> Option<TaskKey> {
        let j = self.jobs.get(id)?;
        if j.state.is_final() {
            return None;
        }
        let fits = |key: &TaskKey| match key {
            TaskKey::Trial(t) => {
                gpu || !j
                    .driver
                    .as_ref()
                    .and_then(|d| d.spec(TrialId(*t)))
                    .is_some_and(|s| wants_gpu(&s.family))
            }
            _ => true,
        };
        if let Some((key, _)) = j.queue.iter().find(|(k, _)| fits(k)) {
            return Some(*key);
        }
        let search_deadline = j.deadline_ms().map(|d| now.instant_at(d.saturating_sub(j.reserve_ms())));
        let d = self.jobs.get_mut(id)?.driver.as_mut()?;
        if d.is_closed() {
            return None;
        }
        match d.next_trial(now.instant, search_deadline) {
            Next::Trial(spec) => {
                let wants = wants_gpu(&spec.family);
                self.emit(Event::TrialIssued { job: id.to_string(), trial: spec.id.0 }, now);
                (gpu || !wants).then_some(TaskKey::Trial(spec.id.0))
            }
            Next::Wait => None,
            Next::Done => {
                self.emit(Event::SearchClosed { job: id.to_string() }, now);
                self.advance(id, now);
                // The finalize task may be ready now.
                let j = self.jobs.get(id)?;
                j.queue.front().map(|(k, _)| *k)
            }
        }
    }

    fn describe(&self, token: u64, now: Now) -> Option<LeasedTask> {
        let lease = self.leases.get(&token)?;
        let j = self.jobs.get(&lease.job)?;
        let kind = match lease.task {
            TaskKey::Prepare => LeasedKind::Prepare,
            TaskKey::Trial(t) => LeasedKind::Trial {
                spec: j.driver.as_ref()?.spec(TrialId(t))?.clone(),
                shape: j.shape.clone().unwrap_or_default(),
                deadline_ms: j.deadline_ms().map(|d| d.saturating_sub(j.reserve_ms())),
            },
            TaskKey::Finalize => LeasedKind::Finalize(FinalizeInput {
                leaderboard: j.leaderboard(),
                kept: j.keep.kept(),
                prepare_artifacts: j.prepare_artifacts.clone(),
                shape: j.shape.clone().unwrap_or_default(),
                deadline_ms: j.deadline_ms(),
                elapsed_seconds: now.unix_ms.saturating_sub(j.started_ms.unwrap_or(j.created_ms)) as f64
                    / 1000.0,
            }),
        };
        Some(LeasedTask { token, job: lease.job.clone(), attempt: lease.attempt, spec: j.spec.clone(), kind })
    }

    /// A running lease, renewed; `StaleLease` when it no longer exists.
    fn live_lease(&mut self, token: u64, now: Now) -> Result<Lease, StateError> {
        let ttl = self.lease_ttl_ms;
        let l = self.leases.get_mut(&token).ok_or(StateError::StaleLease(token))?;
        l.deadline_ms = now.unix_ms + ttl;
        Ok(l.clone())
    }

    /// Per-round progress of a trial: `true` means stop.
    pub fn progress(&mut self, token: u64, resource: u64, loss: f64, now: Now) -> bool {
        let Ok(lease) = self.live_lease(token, now) else { return true };
        let TaskKey::Trial(t) = lease.task else { return false };
        let Some(d) = self.jobs.get_mut(&lease.job).and_then(|j| j.driver.as_mut()) else { return true };
        d.on_progress(TrialId(t), resource as usize, loss) == Decision::Stop
    }

    pub fn complete(
        &mut self,
        token: u64,
        result: TaskResult,
        artifacts: Vec<Artifact>,
        now: Now,
    ) -> Result<(), StateError> {
        let lease = self.live_lease(token, now)?;
        let name = |k: TaskKey| match k {
            TaskKey::Prepare => "prepare",
            TaskKey::Trial(_) => "trial",
            TaskKey::Finalize => "finalize",
        };
        let event = match (lease.task, result) {
            (TaskKey::Prepare, TaskResult::Prepare(shape)) => {
                Event::Prepared { token, job: lease.job.clone(), shape, artifacts, at_ms: now.unix_ms }
            }
            (TaskKey::Trial(t), TaskResult::Trial(mut outcome)) => {
                // The lease names the trial; a worker cannot complete another one with it.
                outcome.id = TrialId(t);
                Event::TrialFinished { token, job: lease.job.clone(), outcome, artifacts }
            }
            (TaskKey::Finalize, TaskResult::Finalize) => {
                Event::Finalized { token, job: lease.job.clone(), artifacts, at_ms: now.unix_ms }
            }
            (k, r) => {
                let got = match r {
                    TaskResult::Prepare(_) => "prepare",
                    TaskResult::Trial(_) => "trial",
                    TaskResult::Finalize => "finalize",
                };
                return Err(StateError::WrongResult { token, expected: name(k), got });
            }
        };
        self.emit(event, now);
        self.advance(&lease.job, now);
        Ok(())
    }

    /// The worker could not run the task: retry it elsewhere (up to [`MAX_ATTEMPTS`]).
    pub fn fail(&mut self, token: u64, reason: &str, now: Now) -> Result<(), StateError> {
        let lease = self.live_lease(token, now)?;
        let job = lease.job.clone();
        self.emit(Event::Released { token, job, reason: reason.to_string(), at_ms: now.unix_ms }, now);
        self.advance(&lease.job, now);
        Ok(())
    }

    pub fn cancel(&mut self, job: &str, now: Now) -> Result<(), StateError> {
        let j = self.jobs.get(job).ok_or_else(|| StateError::UnknownJob(job.to_string()))?;
        if !j.state.is_final() {
            self.emit(Event::JobCancelled { job: job.to_string(), at_ms: now.unix_ms }, now);
        }
        Ok(())
    }

    /// Decisions that follow from the state alone: a finished search queues the finalize task,
    /// or fails the job when no trial succeeded.
    fn advance(&mut self, id: &str, now: Now) {
        let Some(j) = self.jobs.get(id) else { return };
        if j.state.is_final() || j.finalize_queued {
            return;
        }
        let Some(d) = j.driver.as_ref() else { return };
        if !d.is_finished() {
            return;
        }
        if d.entries().iter().any(|e| e.status == TrialStatus::Completed) {
            self.emit(Event::FinalizeQueued { job: id.to_string() }, now);
        } else {
            let reasons: Vec<String> = d
                .entries()
                .iter()
                .filter_map(|e| e.failure_reason.as_ref().map(|r| format!("{}: {r}", e.family)))
                .take(5)
                .collect();
            let reason = if d.entries().is_empty() {
                "no trial finished within the budget; give it a larger budget".to_string()
            } else {
                format!("every trial failed ({})", reasons.join("; "))
            };
            self.emit(Event::JobFailed { job: id.to_string(), reason, at_ms: now.unix_ms }, now);
        }
    }
}

fn driver_for(spec: &JobSpec, shape: &PreparedShape) -> Result<SearchDriver, String> {
    let metric = Metric::parse(&shape.metric)
        .map_err(|e| format!("prepare reported metric {:?}: {e}", shape.metric))?;
    let scheduler = scheduler_kind(&spec.scheduler)?;
    let searcher = SearcherKind::parse(&spec.searcher)?;
    if shape.families.is_empty() {
        return Err("prepare reported no model families".into());
    }
    SearchDriver::new(DriverConfig {
        families: shape.families.clone(),
        shape: DataShape {
            n_rows: shape.n_rows as usize,
            n_features: shape.n_features as usize,
            n_classes: shape.n_classes as usize,
        },
        metric,
        seed: spec.seed,
        max_trials: spec.max_trials.map(|m| m as usize),
        scheduler,
        searcher,
        deterministic: spec.budget_ms.is_none(),
    })
    .map_err(|e| e.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(10);

    fn spec(max_trials: u64) -> JobSpec {
        JobSpec {
            dataset_hash: "abc".into(),
            file_name: "d.csv".into(),
            target: "y".into(),
            seed: 5,
            max_trials: Some(max_trials),
            ..JobSpec::default()
        }
    }

    fn shape() -> PreparedShape {
        PreparedShape {
            n_rows: 200,
            n_features: 4,
            n_classes: 2,
            task: "binary".into(),
            metric: "roc_auc".into(),
            n_folds: 5,
            families: vec!["gbdt".into(), "linear".into()],
        }
    }

    fn outcome(spec: &TrialSpec) -> TrialOutcome {
        TrialOutcome {
            id: spec.id,
            status: TrialStatus::Completed,
            score: Some(0.6 + (spec.id.0 % 7) as f64 / 100.0),
            fit_seconds: 0.1,
            rounds: None,
            failure_reason: None,
        }
    }

    /// A coordinator with one job past its prepare task, and every event it logged.
    fn prepared(max_trials: u64, now: Now) -> (Coordinator, String, String, Vec<Event>) {
        let mut c = Coordinator::new(TTL);
        let w = c.register("w", 0, 1, now);
        let job = c.create_job(spec(max_trials), now).unwrap();
        let t = c.lease_task(&w, now).unwrap().unwrap();
        assert!(matches!(t.kind, LeasedKind::Prepare));
        c.complete(t.token, TaskResult::Prepare(shape()), vec![], now).unwrap();
        let events = c.take_pending();
        (c, w, job, events)
    }

    fn trial_of(t: &LeasedTask) -> TrialSpec {
        match &t.kind {
            LeasedKind::Trial { spec, .. } => spec.clone(),
            other => panic!("expected a trial, got {other:?}"),
        }
    }

    #[test]
    fn a_queued_job_waits_for_running_ones_and_its_budget_starts_at_its_first_lease() {
        let now = Now::system();
        let mut c = Coordinator::new(TTL);
        let w = c.register("w", 0, 1, now);
        let budget = |c: &mut Coordinator| {
            let s = JobSpec { budget_ms: Some(60_000), max_trials: None, ..spec(0) };
            c.create_job(s, now).unwrap()
        };
        let (first, second) = (budget(&mut c), budget(&mut c));
        let t = c.lease_task(&w, now).unwrap().unwrap();
        assert_eq!((t.job.as_str(), matches!(t.kind, LeasedKind::Prepare)), (first.as_str(), true));
        c.complete(t.token, TaskResult::Prepare(shape()), vec![], now).unwrap();
        // The first job always has another trial to give, so the second stays queued.
        for k in 0..3 {
            let t = c.lease_task(&w, now.plus_ms(k * 1000)).unwrap().unwrap();
            assert_eq!(t.job, first, "lease {k}");
        }
        assert_eq!(c.job(&second).unwrap().state, JobState::Queued);
        assert_eq!(c.job(&second).unwrap().started_ms, None);
        // Another worker with nothing left of the first job (a closed search) starts the second;
        // its budget counts from then, not from its submission.
        c.cancel(&first, now).unwrap();
        let later = now.plus_ms(50_000);
        let t = c.lease_task(&w, later).unwrap().unwrap();
        assert_eq!((t.job.as_str(), matches!(t.kind, LeasedKind::Prepare)), (second.as_str(), true));
        let j = c.job(&second).unwrap();
        assert_eq!((j.state, j.started_ms), (JobState::Running, Some(later.unix_ms)));
        assert_eq!(j.deadline_ms(), Some(later.unix_ms + 60_000));
        // Replaying the log gives the same start (the lease carries its time).
        let events = c.take_pending();
        let mut replayed = Coordinator::new(TTL);
        for e in &events {
            replayed.apply(e, Now::system(), true);
        }
        assert_eq!(replayed.job(&second).unwrap().started_ms, Some(later.unix_ms));
    }

    #[test]
    fn an_evicted_blob_that_another_trial_holds_is_not_garbage() {
        let now = Now::system();
        let (mut c, w, _job, _) = prepared(60, now);
        let artifact = |hash: &str| Artifact { name: "oof.bin".into(), hash: hash.into(), size: 1 };
        let mut garbage = Vec::new();
        for n in 1..=60u64 {
            let t = c.lease_task(&w, now).unwrap().unwrap();
            let spec = trial_of(&t);
            // Trial 1 scores worst and trial 2 best, with the same bytes; the rest in between.
            let (score, hash) = match n {
                1 => (0.01, "shared".to_string()),
                2 => (0.99, "shared".to_string()),
                _ => (0.5 + n as f64 / 1000.0, format!("h{n}")),
            };
            let outcome = TrialOutcome { score: Some(score), ..outcome(&spec) };
            c.complete(t.token, TaskResult::Trial(outcome), vec![artifact(&hash)], now).unwrap();
            garbage.extend(c.take_garbage());
        }
        assert!(!garbage.is_empty(), "nothing was evicted; the test needs more trials");
        assert!(!garbage.contains(&"shared".to_string()), "{garbage:?}");
        assert!(c.referenced_blobs().any(|h| h == "shared"));
        assert!(garbage.iter().all(|h| !c.referenced_blobs().any(|r| r == h)));
    }

    #[test]
    fn gpu_trials_go_to_gpu_workers_when_there_are_any_and_to_cpu_workers_otherwise() {
        let now = Now::system();
        let mut c = Coordinator::new(TTL);
        let cpu = c.register("cpu", 0, 1, now);
        let job = c.create_job(spec(40), now).unwrap();
        let t = c.lease_task(&cpu, now).unwrap().unwrap();
        let mlp_shape = PreparedShape { families: vec!["mlp".into()], ..shape() };
        c.complete(t.token, TaskResult::Prepare(mlp_shape), vec![], now).unwrap();
        // Only CPU workers: the MLP trial is theirs.
        let t = c.lease_task(&cpu, now).unwrap().unwrap();
        assert_eq!(trial_of(&t).family, "mlp");
        // With a GPU worker registered, CPU workers leave MLP trials to it.
        let gpu = c.register("gpu", 1, 1, now);
        assert!(c.lease_task(&cpu, now).unwrap().is_none());
        let t = c.lease_task(&gpu, now).unwrap().unwrap();
        assert_eq!((t.job.as_str(), trial_of(&t).family.as_str()), (job.as_str(), "mlp"));
    }

    #[test]
    fn expired_lease_is_retried_then_recorded_failed_after_the_limit() {
        let now = Now::system();
        let (mut c, w, job, _) = prepared(1, now);
        let mut t = now;
        for attempt in 1..=MAX_ATTEMPTS {
            let task = c.lease_task(&w, t).unwrap().unwrap();
            assert_eq!(task.attempt, attempt);
            assert_eq!(trial_of(&task).id, TrialId(1));
            // Silent past the deadline.
            t = t.plus_ms(TTL.as_millis() as u64 + 1);
            assert_eq!(c.expire(t), 1);
        }
        let j = c.job(&job).unwrap();
        let board = j.leaderboard();
        assert_eq!(board.len(), 1);
        assert_eq!(board[0].status, TrialStatus::Failed);
        assert!(
            board[0].failure_reason.as_deref().unwrap().contains("gave up after 3 attempts: lease expired")
        );
        // The only trial failed: nothing to finalize.
        assert_eq!(j.state, JobState::Failed);
        assert!(j.reason.as_deref().unwrap().starts_with("every trial failed"));
    }

    #[test]
    fn heartbeat_keeps_a_lease_alive() {
        let now = Now::system();
        let (mut c, w, _, _) = prepared(1, now);
        let task = c.lease_task(&w, now).unwrap().unwrap();
        let later = now.plus_ms(TTL.as_millis() as u64 - 1);
        c.heartbeat(&w, later).unwrap();
        assert_eq!(c.expire(now.plus_ms(TTL.as_millis() as u64 + 5)), 0);
        assert!(c.lease(task.token).is_some());
        assert_eq!(c.heartbeat("nobody", now), Err(StateError::UnknownWorker("nobody".into())));
    }

    #[test]
    fn stale_fencing_token_is_rejected() {
        let now = Now::system();
        let (mut c, w, job, _) = prepared(1, now);
        let first = c.lease_task(&w, now).unwrap().unwrap();
        let t = now.plus_ms(TTL.as_millis() as u64 + 1);
        c.expire(t);
        let second = c.lease_task(&w, t).unwrap().unwrap();
        assert!(second.token > first.token);
        let spec = trial_of(&first);
        // The first holder finishes late: rejected, nothing recorded.
        assert_eq!(
            c.complete(first.token, TaskResult::Trial(outcome(&spec)), vec![], t),
            Err(StateError::StaleLease(first.token))
        );
        assert!(c.progress(first.token, 10, 0.5, t), "a stale lease is told to stop");
        assert_eq!(c.job(&job).unwrap().trials_finished(), 0);
        c.complete(second.token, TaskResult::Trial(outcome(&spec)), vec![], t).unwrap();
        assert_eq!(c.job(&job).unwrap().trials_finished(), 1);
        // A result of the wrong kind is refused too.
        let fin = c.lease_task(&w, t).unwrap().unwrap();
        assert!(matches!(fin.kind, LeasedKind::Finalize(_)));
        assert!(matches!(
            c.complete(fin.token, TaskResult::Prepare(shape()), vec![], t),
            Err(StateError::WrongResult { .. })
        ));
    }

    /// Runs `max_trials` trials with `workers` workers finishing in a rotating order; returns
    /// the coordinator and the log.
    fn run_job(
        workers: usize,
        max_trials: u64,
        stop_after: Option<usize>,
    ) -> (Coordinator, Vec<Event>, String) {
        let now = Now::system();
        let (mut c, _, job, mut log) = prepared(max_trials, now);
        let ws: Vec<String> = (0..workers).map(|i| c.register(&format!("w{i}"), 0, 1, now)).collect();
        let mut running: Vec<LeasedTask> = Vec::new();
        let mut steps = 0;
        loop {
            for w in &ws {
                if running.len() < workers
                    && let Some(t) = c.lease_task(w, now).unwrap()
                {
                    running.push(t);
                }
            }
            log.extend(c.take_pending());
            if running.is_empty() || stop_after.is_some_and(|s| steps >= s) {
                break;
            }
            let t = running.remove(steps % running.len());
            steps += 1;
            let result = match &t.kind {
                LeasedKind::Trial { spec, .. } => TaskResult::Trial(outcome(spec)),
                LeasedKind::Finalize(input) => {
                    assert_eq!(input.leaderboard.len() as u64, max_trials);
                    TaskResult::Finalize
                }
                LeasedKind::Prepare => panic!("prepared twice"),
            };
            let art = vec![Artifact { name: "oof".into(), hash: format!("{}", t.token), size: 1 }];
            c.complete(t.token, result, art, now).unwrap();
            log.extend(c.take_pending());
        }
        (c, log, job)
    }

    fn snapshot(
        c: &Coordinator,
        job: &str,
    ) -> (JobState, &'static str, Vec<LeaderboardEntry>, u64, Vec<u64>) {
        let j = c.job(job).unwrap();
        let mut tokens: Vec<u64> = c.leases().map(|l| l.token).collect();
        tokens.sort_unstable();
        (j.state, j.phase(), j.leaderboard(), j.trials_started(), tokens)
    }

    #[test]
    fn a_job_runs_to_completion_with_three_workers() {
        let (c, log, job) = run_job(3, 12, None);
        let j = c.job(&job).unwrap();
        assert_eq!(j.state, JobState::Completed);
        assert_eq!(j.trials_finished(), 12);
        let ids: std::collections::BTreeSet<u64> = j.leaderboard().iter().map(|e| e.id.0).collect();
        assert_eq!(ids, (1..=12).collect());
        // The event log is serialisable as the server writes it.
        for e in &log {
            let bytes = serde_json::to_vec(e).unwrap();
            assert_eq!(&serde_json::from_slice::<Event>(&bytes).unwrap(), e);
        }
    }

    #[test]
    fn replay_after_restart_gives_the_same_state() {
        // Stop mid-job with trials in flight.
        let (c, log, job) = run_job(3, 12, Some(7));
        let later = Now::system().plus_ms(5_000);
        let mut r = Coordinator::replay(TTL, log.clone(), later);
        assert_eq!(snapshot(&r, &job), snapshot(&c, &job));
        // In-flight leases got a fresh deadline, and the next token is past every logged one.
        for l in r.leases() {
            assert_eq!(l.deadline_ms, later.unix_ms + TTL.as_millis() as u64);
        }
        let max_token = c.leases().map(|l| l.token).max().unwrap();
        assert!(r.is_worker("w1"));
        assert!(r.next_token > max_token);
        // Finishing on the replayed state completes the job with every trial exactly once.
        let mut open: Vec<u64> = r.leases().map(|l| l.token).collect();
        open.sort_unstable();
        let mut guard = 0;
        while r.job(&job).unwrap().state != JobState::Completed {
            guard += 1;
            assert!(guard < 100);
            let token = match open.pop() {
                Some(t) => t,
                None => r.lease_task("w1", later).unwrap().unwrap().token,
            };
            let l = r.lease(token).unwrap().clone();
            let result = match l.task {
                TaskKey::Trial(t) => {
                    let spec =
                        r.job(&job).unwrap().driver.as_ref().unwrap().spec(TrialId(t)).unwrap().clone();
                    TaskResult::Trial(outcome(&spec))
                }
                TaskKey::Finalize => TaskResult::Finalize,
                TaskKey::Prepare => panic!("prepared twice"),
            };
            r.complete(token, result, vec![], later).unwrap();
        }
        let ids: Vec<u64> = {
            let mut v: Vec<u64> = r.job(&job).unwrap().leaderboard().iter().map(|e| e.id.0).collect();
            v.sort_unstable();
            v
        };
        assert_eq!(ids, (1..=12).collect::<Vec<_>>());
    }

    #[test]
    fn the_leaderboard_does_not_depend_on_the_number_of_workers() {
        let strip = |c: &Coordinator, job: &str| {
            c.job(job)
                .unwrap()
                .leaderboard()
                .into_iter()
                .map(|mut e| {
                    e.fit_seconds = 0.0;
                    e
                })
                .collect::<Vec<_>>()
        };
        let (one, _, j1) = run_job(1, 15, None);
        let (three, _, j3) = run_job(3, 15, None);
        assert_eq!(strip(&one, &j1), strip(&three, &j3));
    }

    #[test]
    fn cancel_stops_the_job_and_its_leases() {
        let now = Now::system();
        let (mut c, w, job, _) = prepared(5, now);
        let t = c.lease_task(&w, now).unwrap().unwrap();
        c.cancel(&job, now).unwrap();
        assert_eq!(c.job(&job).unwrap().state, JobState::Cancelled);
        assert!(c.lease_task(&w, now).unwrap().is_none());
        assert_eq!(c.fail(t.token, "x", now), Err(StateError::StaleLease(t.token)));
    }
}
