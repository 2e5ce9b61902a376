//! The state's data: what jobs, tasks, leases and events are made of.

use std::time::{Duration, Instant};

use quarry_search::{TrialId, TrialOutcome, TrialSpec};
use serde::{Deserialize, Serialize};

use crate::job::LeaderboardEntry;

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
    /// A finished job passed `--retain-finished`: its trials' artifacts (and the prepared
    /// data) are no longer kept; its leaderboard and final artifacts stay.
    JobRetired {
        job: String,
        at_ms: u64,
    },
}

impl Event {
    /// The job the event is about (`None` for a worker's registration).
    pub fn job(&self) -> Option<&str> {
        match self {
            Event::WorkerRegistered { .. } => None,
            Event::JobCreated { job, .. }
            | Event::Leased { job, .. }
            | Event::Released { job, .. }
            | Event::Prepared { job, .. }
            | Event::TrialIssued { job, .. }
            | Event::TrialFinished { job, .. }
            | Event::SearchClosed { job }
            | Event::FinalizeQueued { job }
            | Event::Finalized { job, .. }
            | Event::JobFailed { job, .. }
            | Event::JobCancelled { job, .. }
            | Event::JobRetired { job, .. } => Some(job),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum StateError {
    #[error("unknown worker {0}: register again")]
    UnknownWorker(String),
    #[error("unknown job {0}")]
    UnknownJob(String),
    #[error("lease {0} is stale (expired and re-issued, or its job ended); the result was dropped")]
    StaleLease(u64),
    #[error("lease {token} belongs to another worker, not {worker}")]
    NotLeaseOwner { token: u64, worker: String },
    #[error("lease {token} is for a {expected} task, not a {got} result")]
    WrongResult { token: u64, expected: &'static str, got: &'static str },
    #[error("invalid job: {0}")]
    InvalidSpec(String),
    /// A field of a request the log could not hold or read back (too long, not finite).
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("job {job}: {message}")]
    Job { job: String, message: String },
}

/// A running task. Its times are live-only (monotonic, never logged): replay gives every open
/// lease a fresh TTL from the replay's `now`.
#[derive(Debug, Clone)]
pub struct Lease {
    pub token: u64,
    pub job: String,
    pub task: TaskKey,
    pub worker: String,
    pub attempt: u32,
    /// Expires unless renewed before then (the worker names it in a heartbeat, reports
    /// progress on it or completes it).
    pub expires: Instant,
    /// No renewal goes past this: the job's deadline + [`super::LEASE_GRACE`] (at least one
    /// TTL after the lease was given); `None` for a job without a budget.
    pub ends_by: Option<Instant>,
}

impl Lease {
    /// The expiry a renewal at `now` gives.
    pub(super) fn renewed(&self, now: Instant, ttl: Duration) -> Instant {
        let wanted = now + ttl;
        self.ends_by.map_or(wanted, |end| wanted.min(end))
    }
}

#[derive(Debug, Clone)]
pub struct WorkerRecord {
    pub name: String,
    pub gpus: u32,
    pub slots: u32,
    /// When the worker last called (live-only, not logged: replay counts every worker as seen
    /// at the replay). Routing counts only workers seen within the lease TTL.
    pub last_seen: Instant,
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
    /// `deadline_ms`: wall-clock; `remaining_ms`: the same deadline as time left now (what a
    /// worker should use: its clock may differ from ours).
    Trial {
        spec: TrialSpec,
        shape: PreparedShape,
        deadline_ms: Option<u64>,
        remaining_ms: Option<u64>,
    },
    Finalize(FinalizeInput),
}

#[derive(Debug, Clone)]
pub struct FinalizeInput {
    pub leaderboard: Vec<LeaderboardEntry>,
    pub kept: Vec<(TrialId, Vec<Artifact>)>,
    pub prepare_artifacts: Vec<Artifact>,
    pub shape: PreparedShape,
    pub deadline_ms: Option<u64>,
    /// `deadline_ms` as milliseconds left now.
    pub remaining_ms: Option<u64>,
    pub elapsed_seconds: f64,
}

/// A completed task's result.
#[derive(Debug, Clone)]
pub enum TaskResult {
    Prepare(PreparedShape),
    Trial(TrialOutcome),
    Finalize,
}
