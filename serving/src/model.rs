//! One served model: the native pipeline (the same code as `quarry predict`), its batching
//! scorer, and the drift reference and running summaries.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use quarry_featurize::{ColumnKind, Predictions, Table, Task, load_table};
use quarry_learners::Pipeline;

use crate::batcher::{Arrival, BatchConfig, Batcher};
use crate::drift::{DriftReport, Monitor, Reference, Thresholds, compare};
use crate::error::{Result, ServingError};

/// Values kept per numeric column for the endpoint's drift summary.
const MONITOR_CAPACITY: usize = 5_000;

/// One model input: a raw column the pipeline reads.
#[derive(Debug, Clone)]
pub struct InputSpec {
    pub name: String,
    pub kind: ColumnKind,
    /// The Open Inference Protocol datatype advertised in the metadata (any is accepted).
    pub datatype: &'static str,
}

pub struct ServedModel {
    pub name: String,
    pub version: String,
    pub pipeline: Arc<Pipeline>,
    pub inputs: Vec<InputSpec>,
    batcher: Batcher,
    reference: Option<Reference>,
    monitor: Option<Mutex<Monitor>>,
}

/// A run folder or its `model/` subfolder → the folder holding `pipeline.json`.
pub fn bundle_dir(dir: &Path) -> PathBuf {
    let inner = dir.join("model");
    if inner.join("pipeline.json").exists() { inner } else { dir.to_path_buf() }
}

pub fn load_pipeline(dir: &Path) -> Result<Pipeline> {
    if dir.join("model/forecast.json").exists() || dir.join("forecast.json").exists() {
        return Err(ServingError::Model(format!(
            "{}: forecast models cannot be served over the inference protocol yet",
            dir.display()
        )));
    }
    Pipeline::load(&bundle_dir(dir)).map_err(|e| ServingError::Model(e.to_string()))
}

/// The (raw column, kind) pairs a pipeline reads, for drift references.
pub fn input_kinds(pipeline: &Pipeline) -> Vec<(String, ColumnKind)> {
    pipeline.featurizer.used_columns().map(|c| (c.name.clone(), c.kind)).collect()
}

/// The run's training file, when `run.json` names one that still has the recorded content.
pub fn training_file(run_dir: &Path) -> Option<(PathBuf, String)> {
    let run: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run_dir.join("run.json")).ok()?).ok()?;
    let path = PathBuf::from(run["dataset"]["path"].as_str()?);
    let hash = run["dataset"]["content_hash"].as_str()?.to_string();
    let actual = quarry_featurize::load::hash_file(&path).ok()?;
    (actual == hash).then_some((path, hash))
}

/// A drift reference sampled from `file`, over the columns `pipeline` reads.
pub fn reference_from_file(pipeline: &Pipeline, file: &Path) -> Result<Reference> {
    let loaded = load_table(file).map_err(|e| ServingError::Data(e.to_string()))?;
    Ok(Reference::from_table(&loaded.table, Some(&input_kinds(pipeline)), &[], 0))
}

impl ServedModel {
    pub fn new(
        pipeline: Pipeline,
        name: &str,
        version: &str,
        reference: Option<Reference>,
        config: BatchConfig,
    ) -> Result<ServedModel> {
        let inputs = pipeline
            .featurizer
            .used_columns()
            .map(|c| InputSpec {
                name: c.name.clone(),
                kind: c.kind,
                datatype: if c.kind == ColumnKind::Numeric { "FP64" } else { "BYTES" },
            })
            .collect();
        let pipeline = Arc::new(pipeline);
        let batcher = Batcher::start(pipeline.clone(), config)?;
        let monitor = reference.as_ref().map(|r| Mutex::new(Monitor::new(r, MONITOR_CAPACITY, 0)));
        Ok(ServedModel {
            name: name.into(),
            version: version.into(),
            pipeline,
            inputs,
            batcher,
            reference,
            monitor,
        })
    }

    pub fn is_classifier(&self) -> bool {
        self.pipeline.task != Task::Regression
    }

    pub fn classes(&self) -> &[String] {
        &self.pipeline.target.classes
    }

    /// (name, datatype, shape) of each output; -1 is the batch dimension.
    pub fn outputs(&self) -> Vec<(&'static str, &'static str, Vec<i64>)> {
        if self.is_classifier() {
            vec![
                ("label", "BYTES", vec![-1]),
                ("probabilities", "FP64", vec![-1, self.classes().len() as i64]),
            ]
        } else {
            vec![("prediction", "FP64", vec![-1])]
        }
    }

    /// Call as soon as a request for this model arrives (see [`Batcher::arriving`]).
    pub fn arriving(&self) -> Arrival {
        self.batcher.arriving()
    }

    /// Scores `table` (columns exactly [`ServedModel::inputs`], in order, as text) in a batch,
    /// and adds its rows to the drift summary.
    pub async fn score(&self, arrival: Arrival, table: Table) -> Result<Predictions> {
        if let Some(m) = &self.monitor
            && let Ok(mut m) = m.lock()
        {
            m.observe(&table);
        }
        self.batcher.score(arrival, table).await
    }

    /// The scored rows so far against the reference.
    pub fn drift(&self, thresholds: &Thresholds) -> Result<DriftReport> {
        let (Some(reference), Some(monitor)) = (&self.reference, &self.monitor) else {
            return Err(ServingError::NoReference(format!(
                "model {:?} has no reference data to compare with (register it from a run whose training file \
                 is readable, or serve it with --reference FILE)",
                self.name
            )));
        };
        let current =
            monitor.lock().map_err(|_| ServingError::Model("drift summary poisoned".into()))?.snapshot();
        Ok(compare(reference, &current, thresholds))
    }
}
