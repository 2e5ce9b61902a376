//! The worker side of a job: prepares the training data, runs trials, assembles the final model.
//!
//! Trials run on a dedicated rayon pool, never on the caller's threads, and a failing or
//! panicking fit becomes a failed [`TrialOutcome`](quarry_search::TrialOutcome) with its
//! reason: the job goes on. `quarry fit` runs this in-process; `quarry worker` runs the same
//! code for tasks leased from a coordinator.

pub mod client;
mod error;
pub mod fault;
pub mod finalize;
pub mod memory;
pub mod prepare;
pub mod run_files;
mod runner;

pub use error::WorkerError;
pub use finalize::{FinalModel, FinishedTrial, KeptTrials, final_members};
pub use memory::MemoryBudget;
pub use prepare::{PrepareOptions, Prepared, prepare};
pub use runner::{FoldModels, TrialArtifacts, TrialData, TrialRunner};
