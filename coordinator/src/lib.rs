//! The coordinator: owns a job's search state, asks the searcher for trials, hands them to
//! an executor, keeps the leaderboard, and enforces the time budget and trial limit.
//!
//! It never depends on the worker crate: an executor is anything that turns a
//! [`TrialSpec`] into a [`TrialOutcome`] (in-process today; over `quarry.v1` gRPC later).

mod ensemble;
mod job;

pub use ensemble::{Ensemble, EnsembleMember, select_ensemble};

pub use job::rank;

pub use job::{JobConfig, JobError, LeaderboardEntry, SchedulerKind, SearchEvent, TrialExecutor, run_search};
pub use quarry_search::{TrialOutcome, TrialSpec};
