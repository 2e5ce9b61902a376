use std::time::{Duration, Instant};

use quarry_featurize::Metric;
use quarry_search::{
    Asha, Config, DataShape, Decision, FifoScheduler, LocalSearcher, MedianStopping, RandomSearcher,
    Scheduler, SearchError, Searcher, TpeSearcher, TrialId, TrialOutcome, TrialSpec, TrialStatus,
};
use rand_chacha::ChaCha8Rng;

use crate::driver::{DriverConfig, Next, SearchDriver};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("search: {0}")]
    Search(#[from] quarry_search::SearchError),
    #[error("trial {0} is not in flight")]
    UnknownTrial(TrialId),
}

/// Runs one trial to completion (or cancellation once `deadline` passes).
pub trait TrialExecutor {
    /// `report(resource, loss)` passes intermediate validation losses to the job's scheduler;
    /// when it returns false the executor should stop the trial and report it pruned.
    fn execute(
        &mut self,
        spec: &TrialSpec,
        deadline: Option<Instant>,
        report: &mut (dyn FnMut(usize, f64) -> bool + Send),
    ) -> TrialOutcome;
}

#[derive(Debug, Clone)]
pub struct JobConfig {
    pub families: Vec<String>,
    pub shape: DataShape,
    pub metric: Metric,
    pub seed: u64,
    /// The end of the whole run. Trials stop `reserve` before it, so the work after the
    /// search (refit, writing) still fits.
    pub deadline: Option<Instant>,
    pub max_trials: Option<usize>,
    pub scheduler: SchedulerKind,
    pub searcher: SearcherKind,
}

/// Which scheduler judges trials that report progress (boosted trees, per round).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SchedulerKind {
    /// Only in-trial early stopping on validation.
    #[default]
    Fifo,
    Median,
    Asha,
}

/// Which searcher proposes the trials after the zero-shot portfolio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SearcherKind {
    /// Cost-frugal local moves around each family's best config.
    #[default]
    Local,
    /// Tree-structured Parzen estimator per family.
    Tpe,
    /// Uniform sampling (a baseline).
    Random,
}

impl SearcherKind {
    pub fn parse(name: &str) -> Result<SearcherKind, String> {
        match name {
            "" | "local" => Ok(SearcherKind::Local),
            "tpe" => Ok(SearcherKind::Tpe),
            "random" => Ok(SearcherKind::Random),
            other => Err(format!("unknown searcher {other:?} (local, tpe or random)")),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SearcherKind::Local => "local",
            SearcherKind::Tpe => "tpe",
            SearcherKind::Random => "random",
        }
    }
}

pub(crate) fn make_searcher(
    kind: SearcherKind,
    families: &[&str],
    shape: DataShape,
    rng: ChaCha8Rng,
) -> Result<Box<dyn Searcher + Send>, SearchError> {
    Ok(match kind {
        SearcherKind::Local => Box::new(LocalSearcher::new(families, shape, rng)?),
        SearcherKind::Tpe => Box::new(TpeSearcher::new(families, shape, rng)?),
        SearcherKind::Random => Box::new(RandomSearcher::new(families, shape, rng)?),
    })
}

/// Rounds before the median rule or ASHA may judge a booster, and trials the median rule
/// needs completed before it stops anything.
const SCHEDULER_GRACE_ROUNDS: usize = 50;
const MEDIAN_MIN_SAMPLES: usize = 5;
const ASHA_REDUCTION_FACTOR: usize = 3;
const ASHA_MAX_ROUNDS: usize = 3000;

pub(crate) fn make_scheduler(kind: SchedulerKind) -> Box<dyn Scheduler + Send> {
    match kind {
        SchedulerKind::Fifo => Box::new(FifoScheduler),
        SchedulerKind::Median => Box::new(MedianStopping::new(SCHEDULER_GRACE_ROUNDS, MEDIAN_MIN_SAMPLES)),
        SchedulerKind::Asha => {
            Box::new(Asha::new(SCHEDULER_GRACE_ROUNDS, ASHA_REDUCTION_FACTOR, ASHA_MAX_ROUNDS))
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaderboardEntry {
    pub id: TrialId,
    pub family: String,
    pub params: Config,
    pub metric: String,
    pub validation_score: Option<f64>,
    pub fit_seconds: f64,
    pub status: TrialStatus,
    pub failure_reason: Option<String>,
    #[serde(skip)]
    pub rounds: Option<usize>,
}

/// What the job reports as it goes (progress bars, logs, dashboards).
#[derive(Debug, Clone)]
pub enum SearchEvent<'a> {
    TrialStarted { spec: &'a TrialSpec },
    TrialFinished { entry: &'a LeaderboardEntry, best: Option<&'a LeaderboardEntry> },
}

/// Sorts best first: completed trials by score in the metric's direction, then the rest by id.
pub fn rank(entries: &mut [LeaderboardEntry], metric: Metric) {
    entries.sort_by(|a, b| {
        let la = a.validation_score.filter(|_| a.status == TrialStatus::Completed).map(|s| metric.to_loss(s));
        let lb = b.validation_score.filter(|_| b.status == TrialStatus::Completed).map(|s| metric.to_loss(s));
        match (la, lb) {
            (Some(x), Some(y)) => x.total_cmp(&y).then(a.id.cmp(&b.id)),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => a.id.cmp(&b.id),
        }
    });
}

/// Drives the search until the deadline, the trial limit, or the searcher runs dry, one trial
/// at a time, through the same [`SearchDriver`] the server uses (so a distributed run with the
/// same seed and `max_trials` suggests the same trials). Returns the leaderboard, best first.
/// `reserve(best)` is the time to keep after the search, given the best trial so far; it is
/// asked again before every trial since the best (and so the refit cost) changes.
pub fn run_search(
    config: &JobConfig,
    executor: &mut dyn TrialExecutor,
    reserve: &dyn Fn(Option<&LeaderboardEntry>) -> Duration,
    on_event: &mut dyn FnMut(SearchEvent<'_>),
) -> Result<Vec<LeaderboardEntry>, JobError> {
    let mut driver = SearchDriver::new(DriverConfig {
        families: config.families.clone(),
        shape: config.shape,
        metric: config.metric,
        seed: config.seed,
        max_trials: config.max_trials,
        scheduler: config.scheduler,
        searcher: config.searcher,
        deterministic: config.deadline.is_none(),
    })?;
    loop {
        let search_deadline = config.deadline.map(|d| d.checked_sub(reserve(driver.best())).unwrap_or(d));
        let spec = match driver.next_trial(Instant::now(), search_deadline) {
            Next::Trial(spec) => spec,
            // One trial at a time: the window is never full here, but stopping is the safe answer.
            Next::Wait | Next::Done => break,
        };
        on_event(SearchEvent::TrialStarted { spec: &spec });
        let trial_id = spec.id;
        let outcome = {
            let driver = &mut driver;
            let mut report = |resource: usize, loss: f64| {
                driver.on_progress(trial_id, resource, loss) == Decision::Continue
            };
            executor.execute(&spec, search_deadline, &mut report)
        };
        tracing::info!(trial = %spec.id, family = %spec.family, status = ?outcome.status, score = ?outcome.score, "trial finished");
        if let Some(entry) = driver.record(outcome)? {
            let entry = entry.clone();
            on_event(SearchEvent::TrialFinished { entry: &entry, best: driver.best() });
        }
    }
    Ok(driver.into_leaderboard())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Scores configs by a known function so the leaderboard order can be checked.
    struct FakeExecutor {
        calls: usize,
    }

    impl TrialExecutor for FakeExecutor {
        fn execute(
            &mut self,
            spec: &TrialSpec,
            _deadline: Option<Instant>,
            _report: &mut (dyn FnMut(usize, f64) -> bool + Send),
        ) -> TrialOutcome {
            self.calls += 1;
            let fail = spec.family == "linear";
            TrialOutcome {
                id: spec.id,
                status: if fail { TrialStatus::Failed } else { TrialStatus::Completed },
                score: (!fail).then(|| 0.5 + spec.id.0 as f64 / 100.0),
                fit_seconds: 0.01,
                rounds: None,
                failure_reason: fail.then(|| "boom".to_string()),
            }
        }
    }

    fn config(max_trials: usize) -> JobConfig {
        JobConfig {
            families: vec!["gbdt".into(), "linear".into()],
            shape: DataShape { n_rows: 100, n_features: 3, n_classes: 2 },
            metric: Metric::RocAuc,
            seed: 1,
            deadline: None,
            max_trials: Some(max_trials),
            scheduler: SchedulerKind::Fifo,
            searcher: SearcherKind::Local,
        }
    }

    #[test]
    fn max_trials_and_ranking() {
        let mut ex = FakeExecutor { calls: 0 };
        let board = run_search(&config(10), &mut ex, &|_| Duration::ZERO, &mut |_| {}).unwrap();
        assert_eq!(ex.calls, 10);
        assert_eq!(board.len(), 10);
        // Higher AUC first; failed trials last but still recorded with their reason.
        let scores: Vec<f64> = board.iter().filter_map(|e| e.validation_score).collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]));
        let last = board.last().unwrap();
        assert_eq!(last.status, TrialStatus::Failed);
        assert_eq!(last.failure_reason.as_deref(), Some("boom"));
    }

    #[test]
    fn past_deadline_runs_nothing() {
        let mut ex = FakeExecutor { calls: 0 };
        let mut c = config(10);
        c.deadline = Some(Instant::now() + Duration::from_secs(60));
        // A reserve longer than the time left: nothing may start.
        let board = run_search(&c, &mut ex, &|_| Duration::from_secs(61), &mut |_| {}).unwrap();
        assert!(board.is_empty());
        assert_eq!(ex.calls, 0);
    }
}
