//! After the search: keep the best trials' artifacts, choose between the best single trial and
//! a greedy ensemble, assemble the final pipeline members and write the run folder. `quarry fit`
//! and a remote worker's finalize task run exactly this.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use quarry_featurize::{Guardrails, Metric, Predictions, Target};
use quarry_learners::{Family, Member, ParamMap, Pipeline};
use quarry_search::{Config, KeepSet, TrialId, TrialSpec, TrialStatus, ValidationKind, greedy_selection};
use serde::{Deserialize, Serialize};

use crate::{TrialArtifacts, TrialRunner, WorkerError};

/// Below this much time left a holdout run does not try a refit at all.
const MIN_REFIT_TIME: Duration = Duration::from_millis(500);

/// Selection rounds: enough for weights in steps of 1/25, few enough to stay fast.
const ENSEMBLE_ROUNDS: usize = 25;

/// A leaderboard row as the worker sees it: what the final-model assembly needs, serialized
/// exactly like the coordinator's `LeaderboardEntry` (the two meet only in `leaderboard.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinishedTrial {
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

/// The ensemble candidates and their artifacts, chosen by the one keep rule
/// ([`quarry_search::keep`]: the best 20 completed trials plus each family's best 3).
#[derive(Default)]
pub struct KeptTrials {
    kept: KeepSet<TrialArtifacts>,
}

impl KeptTrials {
    /// Considers a completed trial; the worst candidate beyond the keep limits is dropped.
    pub fn offer(&mut self, id: TrialId, family: &str, loss: f64, artifacts: TrialArtifacts) {
        self.kept.offer(id, family, loss, artifacts);
    }

    /// Takes a trial's artifacts as they are, without the keep rule (a remote finalize receives
    /// exactly the kept set).
    pub fn insert(&mut self, id: TrialId, family: &str, loss: f64, artifacts: TrialArtifacts) {
        self.kept.insert(id, family, loss, artifacts);
    }

    pub fn ids(&self) -> Vec<TrialId> {
        self.kept.ids()
    }

    pub fn artifacts(&self, id: TrialId) -> Option<&TrialArtifacts> {
        self.kept.get(id)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnsembleMember {
    pub trial: TrialId,
    pub weight: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ensemble {
    pub members: Vec<EnsembleMember>,
    /// The blend's out-of-fold score, in the metric's own direction.
    pub validation_score: f64,
}

/// Greedy selection over `candidates` (trial, out-of-fold predictions on the rows of `truth`).
/// Returns `None` when there is nothing to blend.
pub fn select_ensemble(
    candidates: &[(TrialId, &Predictions)],
    truth: &Target,
    metric: Metric,
) -> Option<Ensemble> {
    let rows: Vec<&[f64]> = candidates
        .iter()
        .map(|(_, p)| match p {
            Predictions::Probabilities { values, .. } | Predictions::Values(values) => values.as_slice(),
        })
        .collect();
    let width = match candidates.first()?.1 {
        Predictions::Probabilities { n_classes, .. } => Some(*n_classes),
        Predictions::Values(_) => None,
    };
    let loss = |blend: &[f64]| {
        let pred = match width {
            Some(n_classes) => Predictions::Probabilities { n_classes, values: blend.to_vec() },
            None => Predictions::Values(blend.to_vec()),
        };
        metric.to_loss(metric.score(truth, &pred))
    };
    let selection = greedy_selection(&rows, ENSEMBLE_ROUNDS, &loss)?;
    let members = candidates
        .iter()
        .zip(selection.weights())
        .filter(|(_, w)| *w > 0.0)
        .map(|((trial, _), weight)| EnsembleMember { trial: *trial, weight })
        .collect();
    let validation_score = if metric.higher_is_better() { -selection.loss } else { selection.loss };
    Some(Ensemble { members, validation_score })
}

/// How the final model was made, for the run record and the terminal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

fn params_of(entry: &FinishedTrial) -> ParamMap {
    entry.params.iter().map(|(k, v)| (k.clone(), v.to_string())).collect()
}

fn bag(entry: &FinishedTrial, artifacts: TrialArtifacts, weight: f64) -> Result<Vec<Member>, WorkerError> {
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
pub fn refit_estimate(best_fit_seconds: f64, n_folds: usize) -> Duration {
    Duration::from_secs_f64(best_fit_seconds / n_folds.max(1) as f64 * 1.4)
}

/// With k-fold validation the final model needs no refit: the bagged fold models are the
/// model the out-of-fold scores describe, and the ensemble is built from them. With a single
/// holdout, the best config is refit on all rows when the budget allows.
/// `board` is the ranked leaderboard, best first.
pub fn final_members(
    runner: &TrialRunner,
    metric: Metric,
    mut kept: KeptTrials,
    board: &[FinishedTrial],
    deadline: Option<Instant>,
    job_seed: u64,
) -> Result<(FinalModel, Vec<Member>), WorkerError> {
    let Some(best) = board.first().filter(|e| e.status == TrialStatus::Completed) else {
        return Err(WorkerError::Final("no completed trial".into()));
    };
    let n_folds = runner.data().plan.folds.len();
    let by_id: BTreeMap<TrialId, &FinishedTrial> = board.iter().map(|e| (e.id, e)).collect();
    let candidates: Vec<(TrialId, &Predictions)> =
        kept.kept.iter().filter_map(|(id, a)| a.oof.as_ref().map(|p| (id, p))).collect();
    let ensemble = select_ensemble(&candidates, runner.validated_target(), metric);
    if let (Some(e), Some(best_score)) = (ensemble, best.validation_score)
        && e.members.len() > 1
        && metric.to_loss(e.validation_score) < metric.to_loss(best_score)
    {
        let mut members = Vec::new();
        for m in &e.members {
            let (Some(entry), Some(artifacts)) = (by_id.get(&m.trial), kept.kept.remove(m.trial)) else {
                return Err(WorkerError::Final(format!("ensemble member trial {} lost its models", m.trial)));
            };
            members.extend(bag(entry, artifacts, m.weight)?);
        }
        return Ok((FinalModel::Ensemble(e), members));
    }
    if n_folds == 1 {
        // A family that stops between steps tries the refit whenever time is left, even if the
        // estimate says it may not finish: it is stopped at the deadline and the holdout model
        // is used then. One that cannot be stopped refits only when the estimate fits: on
        // flights a 50k-row linear refit started with 5 s left ran 25 s past a 30 s budget.
        let family = Family::parse(&best.family)?;
        let time_left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let estimate = refit_estimate(best.fit_seconds, n_folds);
        if time_left.is_none_or(|t| t > MIN_REFIT_TIME && (family.stops_between_steps() || estimate <= t)) {
            let spec = TrialSpec {
                id: best.id,
                family: best.family.clone(),
                config: best.params.clone(),
                seed: job_seed.wrapping_add(best.id.0),
            };
            let cancelled = move || deadline.is_some_and(|d| Instant::now() >= d);
            if let Some(model) = runner.refit(&spec, best.rounds, &cancelled)? {
                return Ok((
                    FinalModel::Refit { trial: best.id },
                    vec![Member { weight: 1.0, family, params: params_of(best), model }],
                ));
            }
            tracing::warn!("refit hit the deadline; using the holdout model");
        }
    }
    match kept.kept.remove(best.id) {
        Some(artifacts) if !artifacts.fold_models.is_empty() => {
            let n_models = artifacts.fold_models.len();
            Ok((FinalModel::FoldBag { trial: best.id, n_models }, bag(best, artifacts, 1.0)?))
        }
        _ => Err(WorkerError::Final("no time left to fit the final model; give it a larger --budget".into())),
    }
}

pub fn write_json(path: &Path, value: &impl Serialize) -> Result<(), WorkerError> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text + "\n").map_err(|error| WorkerError::Io { path: path.to_path_buf(), error })
}

/// The run folder's files: `model/`, `leaderboard.json`, `guardrails.json`, `run.json`.
pub fn write_run_folder(
    dir: &Path,
    pipeline: &Pipeline,
    leaderboard: &impl Serialize,
    guard: &Guardrails,
    run_record: &serde_json::Value,
) -> Result<(), WorkerError> {
    std::fs::create_dir_all(dir).map_err(|error| WorkerError::Io { path: dir.to_path_buf(), error })?;
    pipeline.save(&dir.join("model"))?;
    write_json(&dir.join("leaderboard.json"), leaderboard)?;
    write_json(&dir.join("guardrails.json"), guard)?;
    write_json(&dir.join("run.json"), run_record)
}

/// The facts `run.json` records about a search run.
pub struct RunFacts<'a> {
    pub dataset: serde_json::Value,
    pub target: &'a str,
    pub pipeline: &'a Pipeline,
    pub n_features: usize,
    pub validation: ValidationKind,
    pub grouped_by: Option<&'a str>,
    pub seed: u64,
    pub budget_seconds: Option<f64>,
    pub max_trials: Option<usize>,
    pub threads: usize,
    pub board: &'a [FinishedTrial],
    pub final_model: &'a FinalModel,
    pub elapsed_seconds: f64,
}

/// `run.json` of a search run (`quarry fit` or a finalized remote job).
pub fn run_record(f: &RunFacts<'_>) -> serde_json::Value {
    let best = f.board.first();
    serde_json::json!({
        "quarry_version": env!("CARGO_PKG_VERSION"),
        "dataset": f.dataset,
        "target": f.target,
        "task": f.pipeline.task,
        "metric": f.pipeline.metric,
        "classes": f.pipeline.target.classes,
        "schema": f.pipeline.featurizer.columns,
        "n_features": f.n_features,
        "validation": f.validation,
        "validation_grouped_by": f.grouped_by,
        "seed": f.seed,
        "budget_seconds": f.budget_seconds,
        "max_trials": f.max_trials,
        "threads": f.threads,
        "n_trials": f.board.len(),
        "best_trial": best.map(|b| b.id),
        "best_family": best.map(|b| b.family.as_str()),
        "best_validation_score": best.and_then(|b| b.validation_score),
        "final_model": f.final_model,
        "elapsed_seconds": f.elapsed_seconds,
    })
}
