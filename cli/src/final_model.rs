//! The in-process executor of `quarry fit`: runs trials with `quarry_worker::TrialRunner` and
//! keeps the best trials' artifacts for `quarry_worker::final_members`.

use std::time::Instant;

use anyhow::Result;
use quarry_coordinator::{LeaderboardEntry, TrialExecutor};
use quarry_featurize::Metric;
use quarry_learners::Member;
use quarry_search::{TrialOutcome, TrialSpec, TrialStatus};
use quarry_worker::{FinalModel, FinishedTrial, KeptTrials, TrialRunner};

/// Runs trials in this process and keeps the artifacts of the best.
pub struct LocalExecutor<'a> {
    pub runner: &'a TrialRunner,
    pub metric: Metric,
    kept: KeptTrials,
}

impl<'a> LocalExecutor<'a> {
    pub fn new(runner: &'a TrialRunner, metric: Metric) -> Self {
        LocalExecutor { runner, metric, kept: KeptTrials::default() }
    }
}

impl TrialExecutor for LocalExecutor<'_> {
    fn execute(
        &mut self,
        spec: &TrialSpec,
        deadline: Option<Instant>,
        report: &mut (dyn FnMut(usize, f64) -> bool + Send),
    ) -> TrialOutcome {
        let cancelled = move || deadline.is_some_and(|d| Instant::now() >= d);
        let (outcome, artifacts) = self.runner.run(spec, &cancelled, report);
        if let (TrialStatus::Completed, Some(score)) = (outcome.status, outcome.score) {
            self.kept.offer(spec.id, &spec.family, self.metric.to_loss(score), artifacts);
        }
        outcome
    }
}

pub fn finished(entry: &LeaderboardEntry) -> FinishedTrial {
    FinishedTrial {
        id: entry.id,
        family: entry.family.clone(),
        params: entry.params.clone(),
        metric: entry.metric.clone(),
        validation_score: entry.validation_score,
        fit_seconds: entry.fit_seconds,
        status: entry.status,
        failure_reason: entry.failure_reason.clone(),
        rounds: entry.rounds,
    }
}

pub fn final_members(
    executor: LocalExecutor<'_>,
    board: &[LeaderboardEntry],
    deadline: Option<Instant>,
    job_seed: u64,
) -> Result<(FinalModel, Vec<Member>)> {
    let board: Vec<FinishedTrial> = board.iter().map(finished).collect();
    Ok(quarry_worker::final_members(
        executor.runner,
        executor.metric,
        executor.kept,
        &board,
        deadline,
        job_seed,
    )?)
}
