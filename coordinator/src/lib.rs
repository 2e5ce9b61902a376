//! The coordinator: owns a job's search state, asks the searcher for trials, hands them to
//! an executor, keeps the leaderboard, and enforces the time budget and trial limit.
//!
//! It never depends on the worker crate: an executor is anything that turns a
//! [`TrialSpec`] into a [`TrialOutcome`] (in-process today; over `quarry.v1` gRPC later).

pub mod blobs;
pub mod conn;
mod driver;
pub mod grpc;
pub mod http;
mod job;
mod keep;
pub mod limits;
pub mod log;
pub mod owner;
mod progress;
pub mod redis_log;
pub mod state;

pub use driver::{DETERMINISM_WINDOW, DriverConfig, Next, SearchDriver};
pub use keep::{KEEP_PER_FAMILY, KEEP_TOP, KeepSet};
pub use log::{EventLog, FileLog, LogError, MemoryLog, Recovered};

pub use job::rank;

pub use job::{
    JobConfig, JobError, LeaderboardEntry, SchedulerKind, SearchEvent, SearcherKind, TrialExecutor,
    run_search,
};
pub use quarry_search::{TrialOutcome, TrialSpec};
