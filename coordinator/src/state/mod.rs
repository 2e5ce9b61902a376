//! The server's job state machine. Every change is an [`Event`]; [`Coordinator::apply`] is the
//! only code that changes state, and a restarted server rebuilds itself by applying the logged
//! events in order. Decisions (which task a worker gets, when a lease expires, when a search is
//! over) are taken by the live methods, which emit events and apply them at once; replay only
//! applies. No IO and no clock here: time is passed in as [`Now`].

mod apply;
mod live;
mod snapshot;
mod token;
mod types;

pub use snapshot::Snapshot;
pub use token::{EPOCH_SHIFT, epoch_of};

pub use types::{
    Artifact, Event, FinalizeInput, JobSpec, JobState, Lease, LeasedKind, LeasedTask, PreparedShape,
    StateError, TaskKey, TaskResult, WorkerRecord,
};

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quarry_featurize::Metric;
use quarry_search::DataShape;

use crate::driver::{DriverConfig, SearchDriver};
use crate::job::{LeaderboardEntry, SchedulerKind, SearcherKind};
use crate::keep::KeepSet;

/// A lease not renewed within this long expires and its task is re-queued.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(15);
/// Tries per task (the first included) before a trial is recorded failed / a job fails.
pub const MAX_ATTEMPTS: u32 = 3;
/// No lease of a budgeted job is renewed past the job's deadline + this: a worker that keeps
/// heartbeating a task it will never finish cannot hold its job open.
pub const LEASE_GRACE: Duration = Duration::from_secs(60);
/// A trial of a GPU family waits this long for a GPU worker while one is live; then a CPU
/// worker may take it (the MLP trains on the CPU too).
pub const GPU_FALLBACK_WAIT: Duration = Duration::from_secs(30);

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
    /// When the job passed `--retain-finished` and its trials' artifacts were let go.
    pub retired_ms: Option<u64>,
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

    /// When the job ended, for retirement (a job that failed at its prepare result has no
    /// `finished_ms`; its start or creation stands in).
    fn finish_key(&self) -> u64 {
        self.finished_ms.or(self.started_ms).unwrap_or(self.created_ms)
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
    /// GPU-family trials a CPU worker passed over, and when it first did (live-only): the
    /// start of their bounded wait for a GPU worker.
    gpu_waiting: HashMap<(String, u64), Instant>,
    tokens: token::TokenGen,
    lease_ttl_ms: u64,
    /// Applied but not yet handed to the log.
    pending: Vec<Event>,
    /// Blobs no longer referenced (evicted trial artifacts), for the store to delete.
    garbage: Vec<String>,
    /// How many references (a job's dataset, prepare, kept-trial and final artifacts) each
    /// blob has, so an eviction is checked in O(1) rather than by walking every job.
    blob_refs: HashMap<String, u32>,
    /// Indices (into `order`) of jobs that may not be final: leasing walks these, not every
    /// job ever submitted. Final ones are pruned as leasing meets them.
    active: BTreeSet<usize>,
    /// Finished, not yet retired jobs by when they finished: retirement pops the due ones.
    retire_queue: BTreeSet<(u64, String)>,
    /// The events of each job that is not final, in order: what a snapshot stores for it
    /// (its search driver is rebuilt by replaying them).
    history: HashMap<String, Vec<Arc<Event>>>,
    /// Each final job as its snapshot record, serialized once when it became final.
    frozen: HashMap<String, Arc<Vec<u8>>>,
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

/// Families that run faster on a GPU worker. They go only to GPU workers while one is live
/// (seen within the lease TTL), to any worker otherwise, and to any worker once they waited
/// [`GPU_FALLBACK_WAIT`] (the MLP trains on the CPU too): a cluster whose GPU worker left must
/// not strand them (the e2e restart test hung on an MLP trial nobody could take).
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
            gpu_waiting: HashMap::new(),
            tokens: token::TokenGen::new(),
            lease_ttl_ms: lease_ttl.as_millis() as u64,
            pending: Vec::new(),
            garbage: Vec::new(),
            blob_refs: HashMap::new(),
            active: BTreeSet::new(),
            retire_queue: BTreeSet::new(),
            history: HashMap::new(),
            frozen: HashMap::new(),
        }
    }

    /// Rebuilds the state from logged events. Leases still open get a fresh deadline from `now`
    /// so live workers can still complete them.
    pub fn replay(lease_ttl: Duration, events: impl IntoIterator<Item = Event>, now: Now) -> Coordinator {
        let mut c = Coordinator::new(lease_ttl);
        for e in events {
            c.apply(&e, now, true);
        }
        c.finish_replay(now);
        c
    }

    /// [`Coordinator::replay`] from a snapshot ([`Snapshot::encode`]) and the events logged
    /// after it; the same state as replaying every event.
    pub fn recover(
        lease_ttl: Duration,
        snapshot: &[u8],
        tail: impl IntoIterator<Item = Event>,
        now: Now,
    ) -> Result<Coordinator, String> {
        let mut c = Coordinator::restore(lease_ttl, snapshot, now)?;
        for e in tail {
            c.apply(&e, now, true);
        }
        c.finish_replay(now);
        Ok(c)
    }

    fn finish_replay(&mut self, now: Now) {
        let c = self;
        c.pending.clear();
        c.garbage.clear();
        // Past every logged token's epoch even before the server sets the persisted one.
        c.tokens.begin(1, 0);
        // A crash may have come between an event and its consequence; take the decisions again.
        let ids: Vec<String> = c.active.iter().filter_map(|&i| c.order.get(i).cloned()).collect();
        for id in ids {
            c.advance(&id, now);
        }
    }

    /// Starts this run's lease-token epoch: at least `floor` (the store's last epoch + 1) and
    /// past every logged token's; `seed` draws the tokens' low bits. Returns the epoch, which
    /// the caller persists before any lease is granted.
    pub fn begin_epoch(&mut self, floor: u64, seed: u64) -> u64 {
        self.tokens.begin(floor, seed)
    }

    pub fn epoch(&self) -> u64 {
        self.tokens.epoch()
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
        garbage.retain(|h| !self.is_referenced(h));
        garbage
    }

    /// Whether a job still names the blob (O(1): the reference counts).
    pub fn is_referenced(&self, hash: &str) -> bool {
        self.blob_refs.get(hash).is_some_and(|&n| n > 0)
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

    /// Whether a worker called within the lease TTL.
    pub fn is_live(&self, w: &WorkerRecord, now: Now) -> bool {
        now.instant.saturating_duration_since(w.last_seen) <= Duration::from_millis(self.lease_ttl_ms)
    }

    /// The latest a lease of `job` given at `now` may be renewed to: the job's deadline +
    /// [`LEASE_GRACE`], but at least one TTL (a retry given after the deadline still gets one).
    fn lease_ends_by(&self, job: &str, now: Now) -> Option<Instant> {
        let j = self.jobs.get(job)?;
        let cap = now.instant_at(j.deadline_ms()?) + LEASE_GRACE;
        Some(cap.max(now.instant + Duration::from_millis(self.lease_ttl_ms)))
    }

    /// Every artifact hash still referenced (blobs the store must keep). Walks every job: for
    /// tests and start-up only; the live paths ask [`Coordinator::is_referenced`].
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
}

fn driver_for(spec: &JobSpec, shape: &PreparedShape) -> Result<SearchDriver, String> {
    SearchDriver::new(driver_config(spec, shape)?).map_err(|e| e.to_string())
}

fn driver_config(spec: &JobSpec, shape: &PreparedShape) -> Result<DriverConfig, String> {
    let metric = Metric::parse(&shape.metric)
        .map_err(|e| format!("prepare reported metric {:?}: {e}", shape.metric))?;
    let scheduler = scheduler_kind(&spec.scheduler)?;
    let searcher = SearcherKind::parse(&spec.searcher)?;
    if shape.families.is_empty() {
        return Err("prepare reported no model families".into());
    }
    Ok(DriverConfig {
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
}

#[cfg(test)]
mod tests;
