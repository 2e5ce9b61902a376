//! Command-line options to `quarry_worker::prepare` (the data preparation `fit`, `train` and a
//! remote worker share).

use std::path::Path;

use anyhow::Result;
use quarry_featurize::Task;
use quarry_worker::{PrepareOptions, Prepared};

use crate::args::{ColumnArgs, TaskArg};

/// `--threads`: at least one; all cores when not given.
pub fn thread_count(arg: Option<usize>) -> Result<usize> {
    match arg {
        Some(0) => anyhow::bail!("--threads must be at least 1"),
        Some(t) => Ok(t),
        None => Ok(std::thread::available_parallelism().map_or(1, |n| n.get())),
    }
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

pub fn prepare_options(
    target: &str,
    task: TaskArg,
    metric: Option<&str>,
    columns: &ColumnArgs,
    group_column: Option<&str>,
) -> Result<PrepareOptions> {
    Ok(PrepareOptions {
        target: target.to_string(),
        task: task.task(),
        metric: metric.map(str::to_string),
        overrides: columns.overrides()?,
        group_column: group_column.map(str::to_string),
        memory_limit: None,
    })
}

/// Prepares the data and prints the guardrail warnings to stderr.
pub fn prepare(
    data: &Path,
    target: &str,
    task: TaskArg,
    metric: Option<&str>,
    columns: &ColumnArgs,
    group_column: Option<&str>,
    memory_limit: Option<u64>,
) -> Result<Prepared> {
    if matches!(task, TaskArg::Forecast) {
        anyhow::bail!("--task forecast works with `quarry fit` only");
    }
    let opts =
        PrepareOptions { memory_limit, ..prepare_options(target, task, metric, columns, group_column)? };
    let prepared = quarry_worker::prepare(data, &opts)?;
    for line in prepared.guard.summary_lines() {
        eprintln!("{line}");
    }
    Ok(prepared)
}
