//! Loading a training file up to the feature matrix: shared by `fit` and `train`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use quarry_featurize::{
    FeatureMatrix, Featurizer, Guardrails, LoadedTable, Metric, Target, TargetEncoder, TargetEncodings, Task,
    guardrails, load_table,
};
use serde_json::json;

use crate::args::{ColumnArgs, TaskArg};

/// `--threads`: at least one; all cores when not given.
pub fn thread_count(arg: Option<usize>) -> Result<usize> {
    match arg {
        Some(0) => anyhow::bail!("--threads must be at least 1"),
        Some(t) => Ok(t),
        None => Ok(std::thread::available_parallelism().map_or(1, |n| n.get())),
    }
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
    /// Group id per training row, from `--group-column` (not a feature).
    pub groups: Option<Vec<u32>>,
}

impl TaskArg {
    pub fn task(self) -> Option<Task> {
        match self {
            TaskArg::Auto => None,
            TaskArg::Binary => Some(Task::Binary),
            TaskArg::Multiclass => Some(Task::Multiclass),
            TaskArg::Regression => Some(Task::Regression),
            // `quarry fit` hands forecasting to `forecast::fit` before preparing anything.
            TaskArg::Forecast => None,
        }
    }
}

/// Load → target → featurizer fitted on the rows with a target → features; guardrails on the
/// table as loaded. Prints guardrail warnings to stderr.
pub fn prepare(
    data: &Path,
    target: &str,
    task: TaskArg,
    metric: Option<&str>,
    columns: &ColumnArgs,
    group_column: Option<&str>,
) -> Result<Prepared> {
    if matches!(task, TaskArg::Forecast) {
        anyhow::bail!("--task forecast works with `quarry fit` only");
    }
    let LoadedTable { table, content_hash, path } = load_table(data)?;
    let encoder =
        TargetEncoder::fit(&table, target, task.task()).with_context(|| path.display().to_string())?;
    let metric = match metric {
        Some(m) => Metric::parse(m)?,
        None => encoder.task.default_metric(),
    };
    metric.check_task(encoder.task)?;
    let mut overrides = columns.overrides()?;
    if let Some(g) = group_column {
        if table.column(g).is_none() {
            anyhow::bail!("{}: --group-column {g:?} is not a column of the file", path.display());
        }
        if g == target {
            anyhow::bail!("--group-column cannot be the target column");
        }
        // Groups decide the folds; as a feature they would only let models memorise groups.
        overrides.drop.insert(g.to_string());
    }
    let (y, kept) = encoder.encode(&table).with_context(|| path.display().to_string())?;
    let n_dropped = table.n_rows - kept.len();
    let filtered = (n_dropped > 0).then(|| table.select_rows(&kept));
    let mut featurizer = Featurizer::fit_with(filtered.as_ref().unwrap_or(&table), &[target], &overrides)?;
    let target_encodings = featurizer.fit_target(filtered.as_ref().unwrap_or(&table), &y)?;
    // Guardrails read the table as loaded, so rows without a target are counted too.
    let guard = guardrails(&table, &encoder, &featurizer);
    for line in guard.summary_lines() {
        eprintln!("{line}");
    }
    let n_columns = table.columns.len();
    let groups = group_column.and_then(|g| filtered.as_ref().unwrap_or(&table).column(g)).map(|c| {
        // Dense ids in order of first appearance; missing values form a group of their own.
        let mut ids: std::collections::HashMap<Option<String>, u32> = std::collections::HashMap::new();
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
    pub fn dataset_record(&self) -> serde_json::Value {
        json!({
            "path": self.path.display().to_string(),
            "content_hash": self.content_hash,
            "n_rows": self.x.n_rows,
            "n_columns": self.n_columns,
            "rows_dropped_missing_target": self.n_dropped,
        })
    }
}
