//! The worker side of a job: given training data and a validation plan, runs trials.
//!
//! Trials run on a dedicated rayon pool, never on the caller's threads, and a failing or
//! panicking fit becomes a failed [`TrialOutcome`] with its reason: the job goes on.

mod runner;

pub use runner::{FoldModels, TrialArtifacts, TrialData, TrialRunner, WorkerError};
