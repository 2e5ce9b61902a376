//! The unit of work the coordinator hands to workers, and what comes back.

use serde::{Deserialize, Serialize};

use crate::space::Config;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TrialId(pub u64);

impl std::fmt::Display for TrialId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialSpec {
    pub id: TrialId,
    pub family: String,
    pub config: Config,
    pub seed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrialStatus {
    Completed,
    Failed,
    /// Stopped by the budget before it finished; not scored.
    Cancelled,
    /// Stopped by the scheduler (ASHA, median rule) as unpromising; not scored.
    Pruned,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialOutcome {
    pub id: TrialId,
    pub status: TrialStatus,
    /// Mean validation score over folds, in the metric's own direction.
    pub score: Option<f64>,
    pub fit_seconds: f64,
    /// Boosting rounds the folds settled on (mean), for the final refit.
    pub rounds: Option<usize>,
    pub failure_reason: Option<String>,
}
