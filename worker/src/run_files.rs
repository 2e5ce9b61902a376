//! The run folder's files beyond the model bundle, written the same way by `quarry fit`,
//! `quarry train` and a remote worker's finalize task: `model.onnx` (the pipeline as one ONNX
//! graph) and `explanations.json` (global importance per raw column), with the explanation
//! background rows saved beside the model.

use std::path::Path;
use std::time::{Duration, Instant};

use quarry_featurize::{FeatureMatrix, Target};
use quarry_learners::explain::{
    BACKGROUND_ROWS, ExplainOptions, Explanation, explain, output_space, permutation_importance, sample_rows,
    save_background,
};
use quarry_learners::{Pipeline, onnx};
use serde_json::{Value, json};

use crate::WorkerError;
use crate::finalize::write_json;
use crate::runner::TrialData;

pub const ONNX_FILE: &str = "model.onnx";

/// Share of `fit`'s budget kept back from the search for `explanations.json`.
pub const BUDGET_SHARE: f64 = 0.03;
/// Rows explained for `explanations.json` at most.
const MAX_GLOBAL_ROWS: usize = 1_000;
/// Rows explained at most when a member needs KernelSHAP: each row costs a model evaluation
/// per coalition and background row (10⁴–10⁵): all 300 rows of a small dataset took 2.5
/// minutes in a test build. Per-row explanations (`quarry explain`) are not affected.
const MAX_KERNEL_ROWS: usize = 100;
/// Rows per step when explaining against a deadline.
const CHUNK_ROWS: usize = 50;
/// Shuffles per column for permutation importance.
const PERMUTATION_REPEATS: usize = 2;
/// Permutation importance on fewer rows than this (when more were explained) is left out.
const MIN_PERMUTATION_ROWS: usize = 50;

/// Writes `model.onnx` into a run folder; returns what `run.json` records about it. A pipeline
/// that cannot be exported yet gets no file (never a wrong one); the reason is in the record.
pub fn write_run_onnx(out_dir: &Path, pipeline: &Pipeline, dataset_hash: &str) -> Result<Value, WorkerError> {
    let path = out_dir.join(ONNX_FILE);
    match onnx::export(pipeline, Some(dataset_hash)) {
        Ok(bytes) => {
            std::fs::write(&path, &bytes).map_err(|error| WorkerError::Io { path: path.clone(), error })?;
            Ok(json!({"file": ONNX_FILE, "bytes": bytes.len()}))
        }
        Err(e) => {
            tracing::warn!("no {ONNX_FILE} written: {e}");
            Ok(json!({"file": null, "reason": e.to_string()}))
        }
    }
}

/// The rows a search run's `explanations.json` summarises: a seeded sample of the holdout rows
/// (holdout validation) or of the training rows (k-fold).
pub fn search_summary_rows(data: &TrialData, seed: u64) -> (FeatureMatrix, Target, &'static str) {
    match data.plan.folds.as_slice() {
        [holdout] => {
            let rows = sample_rows(holdout.valid.len(), MAX_GLOBAL_ROWS, seed);
            let rows: Vec<usize> = rows.iter().map(|&i| holdout.valid[i]).collect();
            (data.x.select_rows(&rows), data.y.select_rows(&rows), "holdout validation rows (seeded sample)")
        }
        _ => {
            let rows = sample_rows(data.x.n_rows, MAX_GLOBAL_ROWS, seed);
            (data.x.select_rows(&rows), data.y.select_rows(&rows), "training rows (seeded sample)")
        }
    }
}

/// Rows for the global summary and where they came from.
pub struct SummaryRows<'a> {
    pub x: &'a FeatureMatrix,
    pub y: &'a Target,
    pub description: String,
}

/// Saves the background rows beside the model and writes `explanations.json`. Never fails the
/// run: an error is recorded in the file instead. `deadline` bounds the time spent.
pub fn write_run_explanations(
    out_dir: &Path,
    pipeline: &Pipeline,
    train_x: &FeatureMatrix,
    rows: SummaryRows<'_>,
    deadline: Option<Instant>,
    seed: u64,
) -> Result<(), WorkerError> {
    let start = Instant::now();
    let background = train_x.select_rows(&sample_rows(train_x.n_rows, BACKGROUND_ROWS, seed));
    save_background(&out_dir.join("model"), &background)?;
    let record = match global_summary(pipeline, &background, rows, deadline, seed) {
        Ok(mut v) => {
            v["seconds"] = json!(start.elapsed().as_secs_f64());
            v
        }
        Err(e) => {
            tracing::warn!("explanations: {e}");
            json!({ "error": e.to_string(), "output_space": output_space(pipeline).name() })
        }
    };
    write_json(&out_dir.join("explanations.json"), &record)
}

fn time_left(deadline: Option<Instant>) -> Duration {
    deadline.map_or(Duration::MAX, |d| d.saturating_duration_since(Instant::now()))
}

fn any_kernel_shap(pipeline: &Pipeline) -> bool {
    pipeline.members.iter().any(|m| quarry_learners::explain::uses_kernel_shap(&m.model))
}

/// Seconds one explained row is expected to take; 0 without a deadline (not needed then).
/// Tree and linear SHAP are cheap; KernelSHAP evaluates the model on every sampled coalition
/// times every background row, so one timed evaluation of the background scales to a row.
fn estimated_seconds_per_row(
    pipeline: &Pipeline,
    background: &FeatureMatrix,
    opts: &ExplainOptions,
    deadline: Option<Instant>,
) -> Result<f64, WorkerError> {
    if deadline.is_none() || !any_kernel_shap(pipeline) {
        return Ok(0.0);
    }
    let rows = background.n_rows.min(opts.kernel_background).max(1);
    let probe = background.select_rows(&(0..rows.min(background.n_rows)).collect::<Vec<_>>());
    let start = Instant::now();
    pipeline.predict_features(&probe)?;
    let per_eval = start.elapsed().as_secs_f64() * opts.kernel_background as f64 / rows as f64;
    Ok(per_eval * opts.kernel_coalitions as f64)
}

/// How many of the first `rows` rows permutation importance can use before the deadline (0:
/// skip it). It scores the rows once per column and repeat, so one timed scoring of them
/// prices the whole.
fn permutation_rows(
    pipeline: &Pipeline,
    xs: &FeatureMatrix,
    rows: usize,
    deadline: Option<Instant>,
) -> Result<usize, WorkerError> {
    if deadline.is_none() || rows == 0 {
        return Ok(rows);
    }
    if time_left(deadline) < Duration::from_millis(200) {
        return Ok(0);
    }
    let start = Instant::now();
    pipeline.predict_features(&xs.select_rows(&(0..rows).collect::<Vec<_>>()))?;
    let one_pass = start.elapsed().as_secs_f64();
    let passes = (pipeline.featurizer.used_columns().count() * PERMUTATION_REPEATS + 1) as f64;
    let affordable = time_left(deadline).as_secs_f64() * 0.8 / (one_pass * passes).max(1e-9);
    let n = ((rows as f64) * affordable.min(1.0)).floor() as usize;
    // Too few rows make the importances noise.
    Ok(if n < rows.min(MIN_PERMUTATION_ROWS) { 0 } else { n })
}

fn global_summary(
    pipeline: &Pipeline,
    background: &FeatureMatrix,
    rows: SummaryRows<'_>,
    deadline: Option<Instant>,
    seed: u64,
) -> Result<Value, WorkerError> {
    let space = output_space(pipeline);
    if time_left(deadline) < Duration::from_millis(50) {
        return Ok(json!({
            "skipped": "no time left in the budget",
            "output_space": space.name(),
        }));
    }
    let max_rows = if any_kernel_shap(pipeline) { MAX_KERNEL_ROWS } else { MAX_GLOBAL_ROWS };
    let picked = sample_rows(rows.x.n_rows, max_rows, seed);
    let xs = rows.x.select_rows(&picked);
    let ys = rows.y.select_rows(&picked);
    let opts = ExplainOptions { seed, ..ExplainOptions::default() };
    // Chunks until the rows run out or the deadline comes. A chunk starts only when its
    // estimated cost fits in the time left: KernelSHAP members (kNN, naive Bayes) cost a
    // model evaluation per coalition and background row, which on wide data is seconds per
    // row, and a fixed first chunk once overran a 60 s budget by 15 minutes.
    let mut per_row = estimated_seconds_per_row(pipeline, background, &opts, deadline)?;
    let mut explained: Option<Explanation> = None;
    let mut done = 0;
    let mut chunk_rows = 1;
    while done < xs.n_rows {
        if deadline.is_some() {
            let affordable = (time_left(deadline).as_secs_f64() * 0.8 / per_row.max(1e-9)).floor();
            chunk_rows = chunk_rows.min(affordable as usize);
            if chunk_rows == 0 {
                break;
            }
        } else {
            chunk_rows = CHUNK_ROWS;
        }
        let end = (done + chunk_rows).min(xs.n_rows);
        let chunk = xs.select_rows(&(done..end).collect::<Vec<_>>());
        let chunk_start = Instant::now();
        let e = explain(pipeline, &chunk, background, &opts)?;
        // What rows really cost (a bag of many tree models is not free either) bounds the next
        // chunk, beside the up-front estimate.
        per_row = per_row.max(chunk_start.elapsed().as_secs_f64() / (end - done) as f64);
        match &mut explained {
            Some(acc) => acc.append(e),
            None => explained = Some(e),
        }
        done = end;
        // Start with one row, then grow: the estimate is only an estimate.
        chunk_rows = (chunk_rows * 2).min(CHUNK_ROWS);
        if time_left(deadline) < Duration::from_millis(100) {
            break;
        }
    }
    let Some(e) = explained else {
        let reason = if xs.n_rows == 0 { "no rows to explain" } else { "no time left in the budget" };
        return Ok(json!({ "skipped": reason, "output_space": space.name() }));
    };
    let mean_abs = e.mean_abs();
    let permutation_n = permutation_rows(pipeline, &xs, done, deadline)?;
    let permutation = if permutation_n == 0 {
        None
    } else {
        let xp = xs.select_rows(&(0..permutation_n).collect::<Vec<_>>());
        let yp = ys.select_rows(&(0..permutation_n).collect::<Vec<_>>());
        Some(permutation_importance(pipeline, &xp, &yp, PERMUTATION_REPEATS, seed)?)
    };
    let mut columns: Vec<Value> = e
        .columns
        .iter()
        .enumerate()
        .map(|(j, name)| {
            let total: f64 = mean_abs.iter().map(|o| o[j]).sum();
            let mut c = json!({ "column": name, "mean_abs_shap": total });
            if e.n_outputs() > 1 {
                c["mean_abs_shap_per_class"] =
                    e.outputs.iter().zip(&mean_abs).map(|(o, v)| (o.clone(), json!(v[j]))).collect();
            }
            if let Some((_, imp)) = &permutation {
                c["permutation_importance"] = json!(imp[j]);
            }
            c
        })
        .collect();
    columns.sort_by(|a, b| {
        b["mean_abs_shap"].as_f64().unwrap_or(0.0).total_cmp(&a["mean_abs_shap"].as_f64().unwrap_or(0.0))
    });
    let expected: serde_json::Map<String, Value> =
        e.outputs.iter().zip(&e.expected).map(|(o, v)| (o.clone(), json!(v))).collect();
    Ok(json!({
        "method": e.methods.join(" + "),
        "output_space": e.space.name(),
        "output_space_description": e.space.describe(),
        "expected_value": expected,
        "rows_explained": e.n_rows,
        "rows": rows.description,
        "seed": seed,
        "max_additivity_error": e.max_additivity_error(),
        "kernel_shap": e.kernel,
        "importance": columns,
        "permutation_importance": permutation.as_ref().map(|(base, _)| json!({
            "metric": pipeline.metric.name(),
            "baseline_score": base,
            "repeats": PERMUTATION_REPEATS,
            "rows": permutation_n,
            "meaning": "increase in metric loss when the column is shuffled",
        })),
    }))
}
