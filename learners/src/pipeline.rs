//! A fitted pipeline: featurizer + target encoding + one model or a weighted ensemble,
//! saved as a versioned bundle directory.

use std::path::Path;

use quarry_featurize::{FeatureMatrix, Featurizer, Metric, Predictions, Table, TargetEncoder, Task};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::family::{Family, FittedModel};
use crate::params::ParamMap;

/// Bumped whenever the bundle layout changes incompatibly.
pub const BUNDLE_FORMAT_VERSION: u32 = 2;
const BUNDLE_FILE: &str = "pipeline.json";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub weight: f64,
    pub family: Family,
    pub params: ParamMap,
    pub model: FittedModel,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pipeline {
    pub format_version: u32,
    pub quarry_version: String,
    pub task: Task,
    pub metric: Metric,
    pub featurizer: Featurizer,
    pub target: TargetEncoder,
    /// Predictions are the weighted mean of the members' (probabilities or values).
    pub members: Vec<Member>,
}

impl Pipeline {
    /// A pipeline stamped with this build's bundle format and version.
    pub fn new(
        task: Task,
        metric: Metric,
        featurizer: Featurizer,
        target: TargetEncoder,
        members: Vec<Member>,
    ) -> Pipeline {
        Pipeline {
            format_version: BUNDLE_FORMAT_VERSION,
            quarry_version: env!("CARGO_PKG_VERSION").to_string(),
            task,
            metric,
            featurizer,
            target,
            members,
        }
    }

    pub fn predict(&self, table: &Table) -> Result<Predictions> {
        let x = self.featurizer.transform(table).map_err(|e| TrainError::Data(e.to_string()))?;
        self.predict_features(&x)
    }

    /// Predictions for rows already featurized by `self.featurizer`.
    pub fn predict_features(&self, x: &FeatureMatrix) -> Result<Predictions> {
        let total: f64 = self.members.iter().map(|m| m.weight).sum();
        let mut acc: Option<Predictions> = None;
        for m in &self.members {
            let p = m.model.predict(x);
            let w = m.weight / total;
            acc = Some(match (acc, p) {
                (None, Predictions::Values(v)) => Predictions::Values(v.iter().map(|x| x * w).collect()),
                (None, Predictions::Probabilities { n_classes, values }) => {
                    Predictions::Probabilities { n_classes, values: values.iter().map(|x| x * w).collect() }
                }
                (Some(Predictions::Values(mut a)), Predictions::Values(v)) => {
                    a.iter_mut().zip(v).for_each(|(a, v)| *a += v * w);
                    Predictions::Values(a)
                }
                (
                    Some(Predictions::Probabilities { n_classes, values: mut a }),
                    Predictions::Probabilities { values, .. },
                ) => {
                    a.iter_mut().zip(values).for_each(|(a, v)| *a += v * w);
                    Predictions::Probabilities { n_classes, values: a }
                }
                _ => return Err(TrainError::Bundle("ensemble members disagree on output kind".into())),
            });
        }
        acc.ok_or_else(|| TrainError::Bundle("pipeline has no models".into()))
    }

    pub fn save(&self, dir: &Path) -> Result<()> {
        let io = |e: std::io::Error| TrainError::Bundle(format!("{}: {e}", dir.display()));
        std::fs::create_dir_all(dir).map_err(io)?;
        let json = serde_json::to_vec(self).map_err(|e| TrainError::Bundle(e.to_string()))?;
        std::fs::write(dir.join(BUNDLE_FILE), json).map_err(io)
    }

    pub fn load(dir: &Path) -> Result<Pipeline> {
        let path = dir.join(BUNDLE_FILE);
        let bytes = std::fs::read(&path).map_err(|e| {
            TrainError::Bundle(format!("{}: {e} (is this a quarry model directory?)", path.display()))
        })?;
        #[derive(Deserialize)]
        struct Version {
            format_version: u32,
        }
        let v: Version = serde_json::from_slice(&bytes)
            .map_err(|e| TrainError::Bundle(format!("{}: {e}", path.display())))?;
        if v.format_version != BUNDLE_FORMAT_VERSION {
            return Err(TrainError::Bundle(format!(
                "{}: bundle format {} but this quarry reads format {BUNDLE_FORMAT_VERSION}",
                path.display(),
                v.format_version
            )));
        }
        let pipeline: Pipeline = serde_json::from_slice(&bytes)
            .map_err(|e| TrainError::Bundle(format!("{}: {e}", path.display())))?;
        for m in &pipeline.members {
            m.model.check_shape().map_err(|e| TrainError::Bundle(format!("{}: {e}", path.display())))?;
        }
        Ok(pipeline)
    }
}
