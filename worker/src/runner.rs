use std::panic::AssertUnwindSafe;
use std::time::Instant;

use quarry_featurize::{FeatureMatrix, Metric, Target, Task};
use quarry_learners::{Family, FittedModel, ParamMap, check_params, fit};
use quarry_search::{TrialOutcome, TrialSpec, TrialStatus, ValidationPlan};

/// Boosting rounds a trial may use; early stopping on the fold's validation rows decides.
const MAX_BOOSTING_ROUNDS: usize = 3000;
const EARLY_STOPPING_ROUNDS: usize = 50;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("could not start a pool of {threads} threads: {message}")]
    Pool { threads: usize, message: String },
    #[error("{0}")]
    Train(#[from] quarry_learners::TrainError),
}

/// Everything a trial reads: the featurized training rows and how to split them.
pub struct TrialData {
    pub x: FeatureMatrix,
    pub y: Target,
    pub task: Task,
    pub metric: Metric,
    pub plan: ValidationPlan,
}

/// The fitted models of one trial's folds (kept for the best trial as a fallback final model).
pub type FoldModels = Vec<FittedModel>;

pub struct TrialRunner {
    data: TrialData,
    pool: rayon::ThreadPool,
    fold_views: Vec<(FeatureMatrix, Target, FeatureMatrix, Target)>,
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
        let fold_views = data
            .plan
            .folds
            .iter()
            .map(|f| {
                (
                    data.x.select_rows(&f.train),
                    data.y.select_rows(&f.train),
                    data.x.select_rows(&f.valid),
                    data.y.select_rows(&f.valid),
                )
            })
            .collect();
        Ok(TrialRunner { data, pool, fold_views })
    }

    pub fn data(&self) -> &TrialData {
        &self.data
    }

    /// Fits the trial on every fold and scores it. `cancelled` is polled between boosting
    /// rounds and folds; once it returns true the trial stops and is reported as cancelled.
    pub fn run(&self, spec: &TrialSpec, cancelled: &(dyn Fn() -> bool + Sync)) -> (TrialOutcome, FoldModels) {
        let start = Instant::now();
        let result = self
            .pool
            .install(|| std::panic::catch_unwind(AssertUnwindSafe(|| self.run_folds(spec, cancelled))));
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
            Ok(Ok(FoldsResult::Done { score, rounds, models })) => (
                TrialOutcome {
                    id: spec.id,
                    status: TrialStatus::Completed,
                    score: Some(score),
                    fit_seconds,
                    rounds,
                    failure_reason: None,
                },
                models,
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
                Vec::new(),
            ),
            Ok(Err(e)) => (failed(e.to_string()), Vec::new()),
            Err(panic) => {
                let what = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into());
                tracing::error!(trial = %spec.id, "trial panicked: {what}");
                (failed(format!("panicked: {what}")), Vec::new())
            }
        }
    }

    fn run_folds(
        &self,
        spec: &TrialSpec,
        cancelled: &(dyn Fn() -> bool + Sync),
    ) -> Result<FoldsResult, WorkerError> {
        let family = Family::parse(&spec.family)?;
        let mut params = param_map(spec);
        if family.uses_early_stopping() {
            params.entry("n_estimators".into()).or_insert_with(|| MAX_BOOSTING_ROUNDS.to_string());
            params.entry("early_stopping_rounds".into()).or_insert_with(|| EARLY_STOPPING_ROUNDS.to_string());
        }
        let checked = check_params(family, &params)?;
        let mut scores = Vec::new();
        let mut rounds = Vec::new();
        let mut models = Vec::new();
        for (fold_idx, (xt, yt, xv, yv)) in self.fold_views.iter().enumerate() {
            if cancelled() {
                return Ok(FoldsResult::Cancelled);
            }
            let mut stop = |_round: usize, _loss: f64| !cancelled();
            let model = fit(
                &checked,
                xt,
                yt,
                self.data.task,
                Some((xv, yv)),
                spec.seed.wrapping_add(fold_idx as u64),
                &mut stop,
            )?;
            // A booster cut off by the deadline on a single holdout is still a valid model with
            // fewer rounds; on large data that first trial may be all the budget allows.
            let usable_when_cut = family.uses_early_stopping() && self.fold_views.len() == 1;
            if cancelled() && !usable_when_cut {
                return Ok(FoldsResult::Cancelled);
            }
            let pred = model.predict(xv);
            let score = self.data.metric.score(yv, &pred);
            if !score.is_finite() {
                return Err(WorkerError::Train(quarry_learners::TrainError::Fit {
                    family: spec.family.clone(),
                    message: format!("validation {} is not finite on fold {fold_idx}", self.data.metric),
                }));
            }
            scores.push(score);
            rounds.extend(model.rounds());
            models.push(model);
        }
        let score = scores.iter().sum::<f64>() / scores.len().max(1) as f64;
        let rounds = (!rounds.is_empty()).then(|| rounds.iter().sum::<usize>() / rounds.len());
        Ok(FoldsResult::Done { score, rounds, models })
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

enum FoldsResult {
    Done { score: f64, rounds: Option<usize>, models: FoldModels },
    Cancelled,
}
