use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use quarry_featurize::{FeatureMatrix, Metric, Predictions, Target, TargetEncodings, Task};
use quarry_learners::memory::MemoryShape;
use quarry_learners::{CheckedSpec, Family, FittedModel, ParamMap, check_params, fit};
use quarry_search::{TrialOutcome, TrialSpec, TrialStatus, ValidationPlan};

use crate::WorkerError;
use crate::memory::MemoryBudget;

/// Boosting rounds a trial may use; early stopping on the fold's validation rows decides.
const MAX_BOOSTING_ROUNDS: usize = 3000;
const EARLY_STOPPING_ROUNDS: usize = 50;

/// Everything a trial reads: the featurized training rows and how to split them.
pub struct TrialData {
    /// Every training row; target-encoded features hold cross-fitted (out-of-fold) values,
    /// which is what a refit on all rows trains on.
    pub x: FeatureMatrix,
    pub y: Target,
    pub task: Task,
    pub metric: Metric,
    pub plan: ValidationPlan,
    /// The rows' levels of target-encoded columns: each validation fold refits those
    /// encodings on its own training rows, so no validation row's label reaches its features.
    /// `None` when the featurizer has no target encodings.
    pub target_encodings: Option<TargetEncodings>,
}

/// The fitted models of one trial's folds: averaged, they are a bagged model whose
/// out-of-fold predictions are exactly [`TrialArtifacts::oof`].
pub type FoldModels = Vec<FittedModel>;

/// What a completed trial leaves besides its score: kept by the caller for the best trials.
#[derive(Debug, Default)]
pub struct TrialArtifacts {
    pub fold_models: FoldModels,
    /// Predictions for [`TrialRunner::validated_rows`], each row by the fold model that did not see it.
    pub oof: Option<Predictions>,
}

pub struct TrialRunner {
    data: TrialData,
    pool: rayon::ThreadPool,
    fold_views: Vec<(FeatureMatrix, Target, FeatureMatrix, Target)>,
    /// Rows that some fold validates (all rows for k-fold, the holdout for holdout), ascending.
    validated: Vec<usize>,
    validated_target: Target,
    /// Row index → position in `validated`.
    position: Vec<usize>,
    /// The memory limit trials are admitted under (`--memory-limit`); `None`: no limit.
    memory: Option<Arc<MemoryBudget>>,
    /// The shape of one fold's fit, what trial memory estimates read.
    fold_shape: MemoryShape,
}

fn param_map(spec: &TrialSpec) -> ParamMap {
    spec.config.iter().map(|(k, v)| (k.clone(), v.to_string())).collect()
}

impl TrialRunner {
    pub fn new(data: TrialData, threads: usize) -> Result<TrialRunner, WorkerError> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("quarry-trial-{i}"))
            .build()
            .map_err(|e| WorkerError::Pool { threads, message: e.to_string() })?;
        // Materialise fold views once: every trial reuses them.
        let fold_views: Vec<(FeatureMatrix, Target, FeatureMatrix, Target)> = data
            .plan
            .folds
            .iter()
            .map(|f| {
                let mut xt = data.x.select_rows(&f.train);
                let mut xv = data.x.select_rows(&f.valid);
                // Only the target-encoded columns differ per fold; they are overwritten in the
                // fold's own copies, so a fold costs no more memory than before.
                if let Some(enc) = &data.target_encodings {
                    enc.apply_fold(&data.y, &f.train, &f.valid, &mut xt, &mut xv);
                }
                (xt, data.y.select_rows(&f.train), xv, data.y.select_rows(&f.valid))
            })
            .collect();
        let mut validated: Vec<usize> =
            data.plan.folds.iter().flat_map(|f| f.valid.iter().copied()).collect();
        validated.sort_unstable();
        validated.dedup();
        let mut position = vec![usize::MAX; data.x.n_rows];
        for (p, &row) in validated.iter().enumerate() {
            position[row] = p;
        }
        let validated_target = data.y.select_rows(&validated);
        let classes = match &data.y {
            Target::Classes { classes, .. } => classes.len(),
            Target::Values(_) => 0,
        };
        let fold_shape = match fold_views.first() {
            Some((xt, _, xv, _)) => MemoryShape::of(xt, xv.n_rows, data.task, classes),
            None => MemoryShape::of(&data.x, 0, data.task, classes),
        };
        Ok(TrialRunner {
            data,
            pool,
            fold_views,
            validated,
            validated_target,
            position,
            memory: None,
            fold_shape,
        })
    }

    /// Admits every later trial and refit under `budget` (see [`crate::memory`]).
    pub fn set_memory_budget(&mut self, budget: Arc<MemoryBudget>) {
        self.memory = Some(budget);
    }

    /// Bytes of the out-of-fold predictions a trial keeps.
    fn oof_bytes(&self) -> u64 {
        (self.validated.len() * self.fold_shape.classes.max(1) * 8) as u64
    }

    pub fn data(&self) -> &TrialData {
        &self.data
    }

    pub fn validated_rows(&self) -> &[usize] {
        &self.validated
    }

    /// The true target of [`Self::validated_rows`], what out-of-fold predictions are scored on.
    pub fn validated_target(&self) -> &Target {
        &self.validated_target
    }

    /// Fits the trial on every fold and scores it. `cancelled` is polled between boosting
    /// rounds and folds; once it returns true the trial stops and is reported as cancelled.
    /// `report(round, loss)` hears the first fold's validation loss after every boosting round
    /// (a scheduler's input); returning false prunes the trial.
    pub fn run(
        &self,
        spec: &TrialSpec,
        cancelled: &(dyn Fn() -> bool + Sync),
        report: &mut (dyn FnMut(usize, f64) -> bool + Send),
    ) -> (TrialOutcome, TrialArtifacts) {
        let start = Instant::now();
        let result = self.pool.install(|| {
            std::panic::catch_unwind(AssertUnwindSafe(|| -> Result<FoldsResult, WorkerError> {
                let (family, checked) = trial_spec(spec)?;
                // Admission happens before the trial allocates anything; the reservation is
                // held until its models and predictions are handed back.
                let (_reservation, checked, note) = match &self.memory {
                    Some(budget) => {
                        match budget.admit(
                            &checked,
                            &self.fold_shape,
                            self.fold_views.len(),
                            self.oof_bytes(),
                            cancelled,
                        )? {
                            Some((r, checked, changes)) => (Some(r), checked, downsized_note(&changes)),
                            None => return Ok(FoldsResult::Cancelled),
                        }
                    }
                    None => (None, checked, None),
                };
                let _fault = crate::fault::at_trial_start(spec.id.0, self.memory.as_deref());
                let mut result = self.run_folds(spec, family, &checked, cancelled, report)?;
                if let FoldsResult::Done { note: n, .. } = &mut result {
                    *n = note;
                }
                Ok(result)
            }))
        });
        let fit_seconds = start.elapsed().as_secs_f64();
        let failed = |reason: String| TrialOutcome {
            id: spec.id,
            status: TrialStatus::Failed,
            score: None,
            fit_seconds,
            rounds: None,
            failure_reason: Some(reason),
        };
        match result {
            Ok(Ok(FoldsResult::Done { score, rounds, artifacts, note })) => (
                TrialOutcome {
                    id: spec.id,
                    status: TrialStatus::Completed,
                    score: Some(score),
                    fit_seconds,
                    rounds,
                    // A completed trial's reason says what admission changed, if anything.
                    failure_reason: note,
                },
                artifacts,
            ),
            Ok(Ok(FoldsResult::Cancelled)) => (
                TrialOutcome {
                    id: spec.id,
                    status: TrialStatus::Cancelled,
                    score: None,
                    fit_seconds,
                    rounds: None,
                    failure_reason: Some("stopped at the time budget".into()),
                },
                TrialArtifacts::default(),
            ),
            Ok(Ok(FoldsResult::Pruned { round })) => (
                TrialOutcome {
                    id: spec.id,
                    status: TrialStatus::Pruned,
                    score: None,
                    fit_seconds,
                    rounds: None,
                    failure_reason: Some(format!("stopped by the scheduler at round {round}")),
                },
                TrialArtifacts::default(),
            ),
            Ok(Err(e)) => (failed(e.to_string()), TrialArtifacts::default()),
            Err(panic) => {
                let what = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into());
                tracing::error!(trial = %spec.id, "trial panicked: {what}");
                (failed(format!("panicked: {what}")), TrialArtifacts::default())
            }
        }
    }

    fn run_folds(
        &self,
        spec: &TrialSpec,
        family: Family,
        checked: &CheckedSpec,
        cancelled: &(dyn Fn() -> bool + Sync),
        report: &mut (dyn FnMut(usize, f64) -> bool + Send),
    ) -> Result<FoldsResult, WorkerError> {
        let mut rounds = Vec::new();
        let mut models = Vec::new();
        let mut oof: Option<(usize, Vec<f64>)> = None;
        for (fold_idx, (xt, yt, xv, yv)) in self.fold_views.iter().enumerate() {
            if cancelled() {
                return Ok(FoldsResult::Cancelled);
            }
            self.check_heap()?;
            let mut pruned_at = None;
            let mut over_memory = None;
            let mut stop = |round: usize, loss: f64| {
                if cancelled() {
                    return false;
                }
                if let Some(e) = self.memory.as_ref().and_then(|b| b.exceeded()) {
                    over_memory = Some(e);
                    return false;
                }
                if fold_idx == 0 && !loss.is_nan() && !report(round + 1, loss) {
                    pruned_at = Some(round + 1);
                    return false;
                }
                true
            };
            let model = fit(
                checked,
                xt,
                yt,
                self.data.task,
                Some((xv, yv)),
                spec.seed.wrapping_add(fold_idx as u64),
                &mut stop,
            )?;
            if let Some(e) = over_memory {
                return Err(e);
            }
            if let Some(round) = pruned_at {
                return Ok(FoldsResult::Pruned { round });
            }
            // A booster cut off by the deadline on a single holdout is still a valid model with
            // fewer rounds; on large data that first trial may be all the budget allows.
            let usable_when_cut = family.uses_early_stopping() && self.fold_views.len() == 1;
            if cancelled() && !usable_when_cut {
                return Ok(FoldsResult::Cancelled);
            }
            // Families without per-round callbacks are checked once their fit is done.
            self.check_heap()?;
            let pred = model.predict(xv);
            let (width, values) = match &pred {
                Predictions::Probabilities { n_classes, values } => (*n_classes, values),
                Predictions::Values(v) => (1, v),
            };
            let (_, acc) = oof.get_or_insert_with(|| (width, vec![f64::NAN; self.validated.len() * width]));
            for (k, &row) in self.data.plan.folds[fold_idx].valid.iter().enumerate() {
                let p = self.position[row];
                acc[p * width..(p + 1) * width].copy_from_slice(&values[k * width..(k + 1) * width]);
            }
            rounds.extend(model.rounds());
            models.push(model);
        }
        let oof = match oof {
            Some((width, values)) if self.data.task.is_classification() => {
                Predictions::Probabilities { n_classes: width, values }
            }
            Some((_, values)) => Predictions::Values(values),
            None => return Ok(FoldsResult::Cancelled),
        };
        // One score over every validated row (pooled out-of-fold), the same yardstick the
        // ensemble is judged by.
        let score = self.data.metric.score(&self.validated_target, &oof);
        if !score.is_finite() {
            return Err(WorkerError::Train(quarry_learners::TrainError::Fit {
                family: spec.family.clone(),
                message: format!("validation {} is not finite", self.data.metric),
            }));
        }
        let rounds = (!rounds.is_empty()).then(|| rounds.iter().sum::<usize>() / rounds.len());
        let artifacts = TrialArtifacts { fold_models: models, oof: Some(oof) };
        Ok(FoldsResult::Done { score, rounds, artifacts, note: None })
    }

    /// The runtime guard: an error when the live heap is over the limit.
    fn check_heap(&self) -> Result<(), WorkerError> {
        match self.memory.as_ref().and_then(|b| b.exceeded()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Fits the trial's config on all training rows. Boosted families use `rounds`
    /// (what validation chose), scaled up a little for the larger training set.
    pub fn refit(
        &self,
        spec: &TrialSpec,
        rounds: Option<usize>,
        cancelled: &(dyn Fn() -> bool + Sync),
    ) -> Result<Option<FittedModel>, WorkerError> {
        let family = Family::parse(&spec.family)?;
        let mut params = param_map(spec);
        if let (true, Some(r)) = (family.uses_early_stopping(), rounds) {
            let scaled = ((r.max(1) as f64) * 1.1).ceil() as usize;
            params.insert("n_estimators".into(), scaled.to_string());
        }
        let checked = check_params(family, &params)?;
        // A refit on all rows is admitted like a trial (it may be downsized the same way).
        let (_reservation, checked) = match &self.memory {
            Some(budget) => {
                let mut shape = self.fold_shape.with_rows(self.data.x.n_rows);
                shape.valid_rows = 0;
                match budget.admit(&checked, &shape, 1, 0, cancelled)? {
                    Some((r, checked, changes)) => {
                        if let Some(note) = downsized_note(&changes) {
                            tracing::warn!(trial = %spec.id, "refit {note}");
                        }
                        (Some(r), checked)
                    }
                    None => return Ok(None),
                }
            }
            None => (None, checked),
        };
        let mut was_cancelled = false;
        let model = self.pool.install(|| {
            let mut stop = |_round: usize, _loss: f64| {
                was_cancelled = cancelled();
                !was_cancelled
            };
            fit(&checked, &self.data.x, &self.data.y, self.data.task, None, spec.seed, &mut stop)
        })?;
        Ok((!was_cancelled).then_some(model))
    }
}

/// The family and checked parameters a trial fits: its config, plus the boosting round cap and
/// early stopping the runner adds.
fn trial_spec(spec: &TrialSpec) -> Result<(Family, CheckedSpec), WorkerError> {
    let family = Family::parse(&spec.family)?;
    let mut params = param_map(spec);
    if family.uses_early_stopping() {
        params.entry("n_estimators".into()).or_insert_with(|| MAX_BOOSTING_ROUNDS.to_string());
        params.entry("early_stopping_rounds".into()).or_insert_with(|| EARLY_STOPPING_ROUNDS.to_string());
    }
    Ok((family, check_params(family, &params)?))
}

/// What a completed trial's record says when admission shrank it.
fn downsized_note(changes: &[String]) -> Option<String> {
    (!changes.is_empty()).then(|| format!("memory: downsized to fit --memory-limit ({})", changes.join(", ")))
}

enum FoldsResult {
    Done { score: f64, rounds: Option<usize>, artifacts: TrialArtifacts, note: Option<String> },
    Cancelled,
    Pruned { round: usize },
}
