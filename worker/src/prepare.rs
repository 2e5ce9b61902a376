//! Loading a training file up to the feature matrix and the validation plan: the one code path
//! `quarry fit`, `quarry train` and a remote worker's prepare task all run.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use quarry_featurize::{
    ColumnOverrides, FeatureMatrix, Featurizer, Guardrails, LoadLimits, LoadedTable, Metric, Target,
    TargetEncoder, TargetEncodings, Task, guardrails, load_table_with,
};
use quarry_search::{DataShape, ValidationPlan};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::WorkerError;

/// What a job says about its data: everything `prepare` needs besides the file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PrepareOptions {
    pub target: String,
    /// `None`: inferred from the target column.
    pub task: Option<Task>,
    /// A metric name (`roc_auc`, …); `None`: the task's default.
    pub metric: Option<String>,
    pub overrides: ColumnOverrides,
    /// Validate by group; the column is not a feature.
    pub group_column: Option<String>,
    /// `--memory-limit`: the loaded table must fit in it (checked before the rows are read,
    /// `featurize::LoadLimits`); the machine's memory when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit: Option<u64>,
}

pub struct Prepared {
    pub path: PathBuf,
    pub content_hash: String,
    pub encoder: TargetEncoder,
    pub metric: Metric,
    pub featurizer: Featurizer,
    /// Target-encoded features hold cross-fitted values (no row sees its own label); the
    /// featurizer holds the encodings fitted on every row, for predict time.
    pub x: FeatureMatrix,
    pub y: Target,
    /// For refitting target encodings inside each validation fold.
    pub target_encodings: TargetEncodings,
    pub guard: Guardrails,
    pub n_columns: usize,
    pub n_dropped: usize,
    /// Group id per training row, from the group column (not a feature).
    pub groups: Option<Vec<u32>>,
}

/// Load → target → featurizer fitted on the rows with a target → features; guardrails on the
/// table as loaded. The caller shows `guard.summary_lines()` where it wants them.
pub fn prepare(data: &Path, opts: &PrepareOptions) -> Result<Prepared, WorkerError> {
    let limits = LoadLimits::with_memory_limit(opts.memory_limit);
    let LoadedTable { table, content_hash, path } = load_table_with(data, &limits)?;
    let target = opts.target.as_str();
    let in_file = |error| WorkerError::Data { path: path.clone(), error };
    let encoder = TargetEncoder::fit(&table, target, opts.task).map_err(in_file)?;
    let metric = match &opts.metric {
        Some(m) => Metric::parse(m)?,
        None => encoder.task.default_metric(),
    };
    metric.check_task(encoder.task)?;
    let mut overrides = opts.overrides.clone();
    if let Some(g) = opts.group_column.as_deref() {
        if table.column(g).is_none() {
            return Err(WorkerError::Invalid(format!(
                "{}: --group-column {g:?} is not a column of the file",
                path.display()
            )));
        }
        if g == target {
            return Err(WorkerError::Invalid("--group-column cannot be the target column".into()));
        }
        // Groups decide the folds; as a feature they would only let models memorise groups.
        overrides.drop.insert(g.to_string());
    }
    let (y, kept) = encoder.encode(&table).map_err(in_file)?;
    let n_dropped = table.n_rows - kept.len();
    let filtered = (n_dropped > 0).then(|| table.select_rows(&kept));
    let mut featurizer = Featurizer::fit_with(filtered.as_ref().unwrap_or(&table), &[target], &overrides)?;
    let target_encodings = featurizer.fit_target(filtered.as_ref().unwrap_or(&table), &y)?;
    // Guardrails read the table as loaded, so rows without a target are counted too.
    let guard = guardrails(&table, &encoder, &featurizer);
    let n_columns = table.columns.len();
    let groups =
        opts.group_column.as_deref().and_then(|g| filtered.as_ref().unwrap_or(&table).column(g)).map(|c| {
            // Dense ids in order of first appearance; missing values form a group of their own.
            let mut ids: HashMap<Option<String>, u32> = HashMap::new();
            (0..c.values.len())
                .map(|i| {
                    let next = ids.len() as u32;
                    *ids.entry(c.values.text(i).map(|s| s.into_owned())).or_insert(next)
                })
                .collect::<Vec<u32>>()
        });
    // The raw table is consumed column by column: it and the features never peak together.
    let mut x = match filtered {
        Some(rows) => {
            drop(table);
            featurizer.transform_owned(rows)?
        }
        None => featurizer.transform_owned(table)?,
    };
    target_encodings.cross_fit_into(&mut x, &y);
    Ok(Prepared {
        path,
        content_hash,
        encoder,
        metric,
        featurizer,
        x,
        y,
        target_encodings,
        guard,
        n_columns,
        n_dropped,
        groups,
    })
}

impl Prepared {
    pub fn task(&self) -> Task {
        self.encoder.task
    }

    pub fn dataset_record(&self) -> serde_json::Value {
        json!({
            "path": self.path.display().to_string(),
            "content_hash": self.content_hash,
            "n_rows": self.x.n_rows,
            "n_columns": self.n_columns,
            "rows_dropped_missing_target": self.n_dropped,
        })
    }

    pub fn shape(&self) -> DataShape {
        DataShape { n_rows: self.x.n_rows, n_features: self.x.n_features(), n_classes: self.y.n_classes() }
    }

    /// k-fold or holdout, stratified for classes, grouped when a group column was given; a
    /// function of the data and the job seed only.
    pub fn validation_plan(&self, seed: u64) -> Result<ValidationPlan, WorkerError> {
        let codes = match &self.y {
            Target::Classes { codes, .. } => Some(codes.as_slice()),
            Target::Values(_) => None,
        };
        Ok(match &self.groups {
            Some(g) => ValidationPlan::choose_grouped(g, seed)?,
            None => ValidationPlan::choose(self.x.n_rows, codes, seed)?,
        })
    }
}
