//! The registry of model families: names, parameter parsing, fit dispatch.

use quarry_featurize::{FeatureMatrix, Predictions, Target, Task};
use serde::{Deserialize, Serialize};
use std::fmt;

use crate::error::{Result, TrainError};
use crate::gbdt::{self, TreeEnsemble, TreeMode, TreeParams};
use crate::knn::{self, KnnModel, KnnParams};
use crate::linear::{self, LinearModel, LinearParams};
use crate::mlp::{self, MlpModel, MlpParams};
use crate::naive_bayes::{self, NaiveBayesModel, NaiveBayesParams};
use crate::params::{ParamMap, ParamReader};
use crate::svm::{self, SvmModel, SvmParams};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    Gbdt,
    RandomForest,
    ExtraTrees,
    Linear,
    Knn,
    NaiveBayes,
    Mlp,
    Svm,
}

impl Family {
    pub const ALL: [Family; 8] = [
        Family::Gbdt,
        Family::RandomForest,
        Family::ExtraTrees,
        Family::Linear,
        Family::Knn,
        Family::NaiveBayes,
        Family::Mlp,
        Family::Svm,
    ];

    /// The families that can fit `task` (naive Bayes predicts classes only), for the search.
    pub fn for_task(task: Task) -> impl Iterator<Item = Family> {
        Family::ALL.into_iter().filter(move |f| *f != Family::NaiveBayes || task.is_classification())
    }

    /// Does a fit check its cancel callback between steps (rounds, trees, epochs)? Linear
    /// models (linfa's solvers), kNN, naive Bayes and the SVM fit in one uninterruptible call,
    /// so a deadline is only noticed after they return.
    pub fn stops_between_steps(self) -> bool {
        matches!(self, Family::Gbdt | Family::RandomForest | Family::ExtraTrees | Family::Mlp)
    }

    pub fn name(self) -> &'static str {
        match self {
            Family::Gbdt => "gbdt",
            Family::RandomForest => "random_forest",
            Family::ExtraTrees => "extra_trees",
            Family::Linear => "linear",
            Family::Knn => "knn",
            Family::NaiveBayes => "naive_bayes",
            Family::Mlp => "mlp",
            Family::Svm => "svm",
        }
    }

    pub fn parse(name: &str) -> Result<Family> {
        Family::ALL
            .into_iter()
            .find(|f| f.name() == name)
            .ok_or_else(|| TrainError::UnknownFamily(name.to_string()))
    }

    /// Whether a validation set lets this family stop early (and so report a round count).
    pub fn uses_early_stopping(self) -> bool {
        self == Family::Gbdt
    }

    fn tree_mode(self) -> Option<TreeMode> {
        match self {
            Family::Gbdt => Some(TreeMode::Gbdt),
            Family::RandomForest => Some(TreeMode::RandomForest),
            Family::ExtraTrees => Some(TreeMode::ExtraTrees),
            Family::Linear | Family::Knn | Family::NaiveBayes | Family::Mlp | Family::Svm => None,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The defaults a family starts from, in LightGBM's scikit-learn names.
pub fn tree_defaults(mode: TreeMode) -> TreeParams {
    let mut p = TreeParams { mode, ..TreeParams::default() };
    if mode != TreeMode::Gbdt {
        // Forests grow deep, decorrelated trees; these follow scikit-learn's spirit.
        p.num_leaves = 4096;
        p.min_child_samples = 2;
        p.colsample_bytree = 0.6;
        p.subsample = 1.0;
        p.reg_lambda = 0.0;
    }
    p
}

fn tree_params(mode: TreeMode, r: &mut ParamReader<'_>) -> Result<TreeParams> {
    let d = tree_defaults(mode);
    let p = TreeParams {
        mode,
        n_estimators: r.usize("n_estimators", d.n_estimators)?,
        learning_rate: r.f64("learning_rate", d.learning_rate)?,
        num_leaves: r.usize("num_leaves", d.num_leaves)?,
        max_depth: r.i32("max_depth", d.max_depth)?,
        min_child_samples: r.usize("min_child_samples", d.min_child_samples)?,
        min_child_weight: r.f64("min_child_weight", d.min_child_weight)?,
        subsample: r.f64("subsample", d.subsample)?,
        colsample_bytree: r.f64("colsample_bytree", d.colsample_bytree)?,
        reg_alpha: r.f64("reg_alpha", d.reg_alpha)?,
        reg_lambda: r.f64("reg_lambda", d.reg_lambda)?,
        max_bin: r.usize("max_bin", d.max_bin)?,
        early_stopping_rounds: r.usize("early_stopping_rounds", d.early_stopping_rounds)?,
        min_split_gain: r.f64("min_split_gain", d.min_split_gain)?,
    };
    p.check()?;
    Ok(p)
}

/// A family and its hyperparameters, checked before any data is touched.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckedSpec {
    Trees(TreeParams),
    Linear(LinearParams),
    Knn(KnnParams),
    NaiveBayes(NaiveBayesParams),
    Mlp(MlpParams),
    Svm(SvmParams),
}

pub fn check_params(family: Family, params: &ParamMap) -> Result<CheckedSpec> {
    let mut reader = ParamReader::new(family.name(), params);
    let spec = match (family, family.tree_mode()) {
        (_, Some(mode)) => CheckedSpec::Trees(tree_params(mode, &mut reader)?),
        (Family::Knn, None) => CheckedSpec::Knn(KnnParams::from_map(&mut reader)?),
        (Family::NaiveBayes, None) => CheckedSpec::NaiveBayes(NaiveBayesParams::from_map(&mut reader)?),
        (Family::Mlp, None) => CheckedSpec::Mlp(MlpParams::from_map(&mut reader)?),
        (Family::Svm, None) => CheckedSpec::Svm(SvmParams::from_map(&mut reader)?),
        (_, None) => CheckedSpec::Linear(LinearParams::from_map(&mut reader)?),
    };
    reader.finish()?;
    Ok(spec)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "family_kind")]
pub enum FittedModel {
    Trees(TreeEnsemble),
    Linear(LinearModel),
    Knn(KnnModel),
    NaiveBayes(NaiveBayesModel),
    Mlp(MlpModel),
    Svm(SvmModel),
}

impl FittedModel {
    /// Checks a model read from a bundle against what prediction indexes (tree structure is
    /// checked while the trees are read).
    pub(crate) fn check_shape(&self) -> std::result::Result<(), String> {
        match self {
            FittedModel::Trees(m) => m.check_shape(),
            FittedModel::NaiveBayes(m) => m.check_shape(),
            FittedModel::Linear(m) => m.check_shape(),
            FittedModel::Knn(m) => m.check_shape(),
            FittedModel::Mlp(m) => m.check_shape(),
            FittedModel::Svm(m) => m.check_shape(),
        }
    }

    pub fn predict(&self, x: &FeatureMatrix) -> Predictions {
        match self {
            FittedModel::Trees(m) => m.predict(x),
            FittedModel::Linear(m) => m.predict(x),
            FittedModel::Knn(m) => m.predict(x),
            FittedModel::NaiveBayes(m) => m.predict(x),
            FittedModel::Mlp(m) => m.predict(x),
            FittedModel::Svm(m) => m.predict(x),
        }
    }

    /// Boosting rounds (or MLP epochs) kept after early stopping.
    pub fn rounds(&self) -> Option<usize> {
        match self {
            FittedModel::Trees(m) => Some(m.best_iteration()),
            FittedModel::Mlp(m) => Some(m.best_epoch()),
            FittedModel::Linear(_)
            | FittedModel::Knn(_)
            | FittedModel::NaiveBayes(_)
            | FittedModel::Svm(_) => None,
        }
    }
}

/// Per-round progress: `(round, validation loss)`; returning false stops the fit.
pub type RoundCallback<'a> = &'a mut dyn FnMut(usize, f64) -> bool;

pub fn fit(
    spec: &CheckedSpec,
    x: &FeatureMatrix,
    y: &Target,
    task: Task,
    valid: Option<(&FeatureMatrix, &Target)>,
    seed: u64,
    on_round: RoundCallback<'_>,
) -> Result<FittedModel> {
    if x.n_rows == 0 {
        return Err(TrainError::Data("no training rows".into()));
    }
    if x.n_rows != y.len() {
        return Err(TrainError::Data(format!("{} feature rows but {} targets", x.n_rows, y.len())));
    }
    match spec {
        CheckedSpec::Trees(p) => Ok(FittedModel::Trees(gbdt::fit(x, y, task, valid, p, seed, on_round)?)),
        CheckedSpec::Linear(p) => Ok(FittedModel::Linear(linear::fit(x, y, task, p)?)),
        CheckedSpec::Knn(p) => Ok(FittedModel::Knn(knn::fit(x, y, task, p, seed)?)),
        CheckedSpec::NaiveBayes(p) => Ok(FittedModel::NaiveBayes(naive_bayes::fit(x, y, task, p)?)),
        CheckedSpec::Svm(p) => Ok(FittedModel::Svm(svm::fit(x, y, task, p, seed)?)),
        CheckedSpec::Mlp(p) => Ok(FittedModel::Mlp(mlp::fit(x, y, task, valid, p, seed, on_round)?)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> ParamMap {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn every_family_parses_its_own_name() {
        for f in Family::ALL {
            assert_eq!(Family::parse(f.name()).unwrap(), f);
        }
        let err = Family::parse("svc").unwrap_err().to_string();
        assert!(err.contains("knn") && err.contains("naive_bayes"), "{err}");
    }

    #[test]
    fn knn_and_naive_bayes_params_are_checked() {
        let knn =
            check_params(Family::Knn, &params(&[("n_neighbors", "3"), ("weights", "distance")])).unwrap();
        assert_eq!(
            knn,
            CheckedSpec::Knn(KnnParams { n_neighbors: 3, weights: crate::knn::KnnWeights::Distance })
        );
        assert_eq!(
            check_params(Family::Knn, &ParamMap::new()).unwrap(),
            CheckedSpec::Knn(KnnParams::default())
        );
        for bad in [("n_neighbors", "0"), ("n_neighbors", "2.5"), ("weights", "gaussian")] {
            let err = check_params(Family::Knn, &params(&[bad])).unwrap_err();
            assert!(matches!(err, TrainError::InvalidParam { .. }), "{bad:?}: {err}");
        }
        let err = check_params(Family::Knn, &params(&[("k", "3")])).unwrap_err();
        assert!(matches!(err, TrainError::UnknownParam { .. }), "{err}");

        let nb = check_params(Family::NaiveBayes, &params(&[("var_smoothing", "1e-6")])).unwrap();
        assert_eq!(nb, CheckedSpec::NaiveBayes(NaiveBayesParams { var_smoothing: 1e-6 }));
        for bad in ["-1", "inf", "x"] {
            let err = check_params(Family::NaiveBayes, &params(&[("var_smoothing", bad)])).unwrap_err();
            assert!(matches!(err, TrainError::InvalidParam { .. }), "{bad}: {err}");
        }
        let err = check_params(Family::NaiveBayes, &params(&[("n_neighbors", "3")])).unwrap_err();
        assert!(matches!(err, TrainError::UnknownParam { .. }), "{err}");
    }
}
