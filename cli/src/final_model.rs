//! After the search: keep the best trials' artifacts, choose between the best single trial
//! and a greedy ensemble, and assemble the final pipeline members.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use quarry_coordinator::{Ensemble, LeaderboardEntry, TrialExecutor, select_ensemble};
use quarry_featurize::Metric;
use quarry_learners::{Family, Member, ParamMap};
use quarry_search::{TrialId, TrialOutcome, TrialSpec, TrialStatus};
use quarry_worker::{TrialArtifacts, TrialRunner};
use serde::Serialize;

/// Below this much time left a holdout run does not try a refit at all.
const MIN_REFIT_TIME: Duration = Duration::from_millis(500);

/// Trials whose fold models and out-of-fold predictions are kept as ensemble candidates.
const KEEP_TOP: usize = 20;
/// Each family's best few are kept whatever their rank: a blend gains most from members that
/// err differently, and the top 20 overall are often near-copies of one family's best.
const KEEP_PER_FAMILY: usize = 3;

/// Runs trials in this process and keeps the artifacts of the best [`KEEP_TOP`].
pub struct LocalExecutor<'a> {
    pub runner: &'a TrialRunner,
    pub metric: Metric,
    kept: BTreeMap<TrialId, Kept>,
}

struct Kept {
    loss: f64,
    family: String,
    artifacts: TrialArtifacts,
}

/// The candidate to drop: the worst that is not among its family's best [`KEEP_PER_FAMILY`]
/// (or the worst overall when every candidate is).
fn eviction(kept: &BTreeMap<TrialId, Kept>) -> Option<TrialId> {
    let worse =
        |a: &(&TrialId, &Kept), b: &(&TrialId, &Kept)| a.1.loss.total_cmp(&b.1.loss).then(a.0.cmp(b.0));
    let protected = |id: &TrialId, k: &Kept| {
        let better_in_family = kept
            .iter()
            .filter(|(other_id, o)| o.family == k.family && worse(&(other_id, o), &(id, k)).is_lt())
            .count();
        better_in_family < KEEP_PER_FAMILY
    };
    kept.iter()
        .filter(|(id, k)| !protected(id, k))
        .max_by(worse)
        .or_else(|| kept.iter().max_by(worse))
        .map(|(id, _)| *id)
}

impl<'a> LocalExecutor<'a> {
    pub fn new(runner: &'a TrialRunner, metric: Metric) -> Self {
        LocalExecutor { runner, metric, kept: BTreeMap::new() }
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
            let kept = Kept { loss: self.metric.to_loss(score), family: spec.family.clone(), artifacts };
            self.kept.insert(spec.id, kept);
            if self.kept.len() > KEEP_TOP
                && let Some(id) = eviction(&self.kept)
            {
                self.kept.remove(&id);
            }
        }
        outcome
    }
}

/// How the final model was made, for the run record and the terminal.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum FinalModel {
    /// The best config refit on every training row.
    Refit { trial: TrialId },
    /// The best trial's fold models, averaged (a bagged model).
    FoldBag { trial: TrialId, n_models: usize },
    /// A weighted blend of several trials' bagged fold models.
    Ensemble(Ensemble),
}

impl FinalModel {
    pub fn describe(&self) -> String {
        match self {
            FinalModel::Refit { trial } => format!("trial {trial} refit on all rows"),
            FinalModel::FoldBag { trial, n_models } => {
                format!("trial {trial}, {n_models} fold models averaged")
            }
            FinalModel::Ensemble(e) => format!("ensemble of {} trials", e.members.len()),
        }
    }
}

fn params_of(entry: &LeaderboardEntry) -> ParamMap {
    entry.params.iter().map(|(k, v)| (k.clone(), v.to_string())).collect()
}

fn bag(entry: &LeaderboardEntry, artifacts: TrialArtifacts, weight: f64) -> Result<Vec<Member>> {
    let family = Family::parse(&entry.family)?;
    let params = params_of(entry);
    let k = artifacts.fold_models.len().max(1) as f64;
    Ok(artifacts
        .fold_models
        .into_iter()
        .map(|model| Member { weight: weight / k, family, params: params.clone(), model })
        .collect())
}

/// A fold fit sees (k-1)/k of the rows; the refit sees them all, with no early-stopping tail.
pub fn refit_estimate(best: &LeaderboardEntry, n_folds: usize) -> Duration {
    Duration::from_secs_f64(best.fit_seconds / n_folds.max(1) as f64 * 1.4)
}

/// With k-fold validation the final model needs no refit: the bagged fold models are the
/// model the out-of-fold scores describe, and the ensemble is built from them. With a single
/// holdout, the best config is refit on all rows when the budget allows.
pub fn final_members(
    mut executor: LocalExecutor<'_>,
    board: &[LeaderboardEntry],
    deadline: Option<Instant>,
    n_folds: usize,
    job_seed: u64,
) -> Result<(FinalModel, Vec<Member>)> {
    let Some(best) = board.first().filter(|e| e.status == TrialStatus::Completed) else {
        bail!("no completed trial");
    };
    let by_id: BTreeMap<TrialId, &LeaderboardEntry> = board.iter().map(|e| (e.id, e)).collect();
    let metric = executor.metric;
    let candidates: Vec<(TrialId, &quarry_featurize::Predictions)> =
        executor.kept.iter().filter_map(|(id, k)| k.artifacts.oof.as_ref().map(|p| (*id, p))).collect();
    let ensemble = select_ensemble(&candidates, executor.runner.validated_target(), metric);
    if let (Some(e), Some(best_score)) = (ensemble, best.validation_score)
        && e.members.len() > 1
        && metric.to_loss(e.validation_score) < metric.to_loss(best_score)
    {
        let mut members = Vec::new();
        for m in &e.members {
            let (Some(entry), Some(Kept { artifacts, .. })) =
                (by_id.get(&m.trial), executor.kept.remove(&m.trial))
            else {
                bail!("ensemble member trial {} lost its models", m.trial);
            };
            members.extend(bag(entry, artifacts, m.weight)?);
        }
        return Ok((FinalModel::Ensemble(e), members));
    }
    if n_folds == 1 {
        // Try the refit whenever time is left, even if the estimate says it may not finish: it is
        // stopped at the deadline and the holdout model is used then, so trying costs nothing.
        let time_left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if time_left.is_none_or(|t| t > MIN_REFIT_TIME) {
            let spec = TrialSpec {
                id: best.id,
                family: best.family.clone(),
                config: best.params.clone(),
                seed: job_seed.wrapping_add(best.id.0),
            };
            let cancelled = move || deadline.is_some_and(|d| Instant::now() >= d);
            if let Some(model) = executor.runner.refit(&spec, best.rounds, &cancelled)? {
                let family = Family::parse(&best.family)?;
                return Ok((
                    FinalModel::Refit { trial: best.id },
                    vec![Member { weight: 1.0, family, params: params_of(best), model }],
                ));
            }
            tracing::warn!("refit hit the deadline; using the holdout model");
        }
    }
    match executor.kept.remove(&best.id) {
        Some(Kept { artifacts, .. }) if !artifacts.fold_models.is_empty() => {
            let n_models = artifacts.fold_models.len();
            Ok((FinalModel::FoldBag { trial: best.id, n_models }, bag(best, artifacts, 1.0)?))
        }
        _ => bail!("no time left to fit the final model; give it a larger --budget"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(entries: &[(u64, &str, f64)]) -> BTreeMap<TrialId, Kept> {
        entries
            .iter()
            .map(|&(id, family, loss)| {
                (TrialId(id), Kept { loss, family: family.to_string(), artifacts: TrialArtifacts::default() })
            })
            .collect()
    }

    #[test]
    fn eviction_spares_each_familys_best() {
        // Four boosters and one (much worse) linear model: the fourth booster goes, not the
        // linear model, which is its family's only candidate.
        let k = kept(&[
            (1, "gbdt", 0.1),
            (2, "gbdt", 0.2),
            (3, "gbdt", 0.3),
            (4, "gbdt", 0.4),
            (5, "linear", 0.9),
        ]);
        assert_eq!(eviction(&k), Some(TrialId(4)));
        // When every candidate is among its family's best, the worst overall goes.
        let k = kept(&[(1, "gbdt", 0.1), (2, "linear", 0.9), (3, "knn", 0.5)]);
        assert_eq!(eviction(&k), Some(TrialId(2)));
    }
}
