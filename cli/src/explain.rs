//! `quarry explain` (per-row Shapley values as CSV) and the run folder's `explanations.json`
//! (global importance per raw column, written by `fit` and `train`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use quarry_featurize::{FeatureMatrix, Target, load_table};
use quarry_learners::Pipeline;
use quarry_learners::explain::{
    BACKGROUND_ROWS, ExplainOptions, Explanation, explain, load_background, output_space,
    permutation_importance, sample_rows, save_background,
};
use serde_json::{Value, json};

use crate::args::ExplainArgs;
use crate::output::{write_csv, write_json};
use crate::predict::load_pipeline;

/// Share of `fit`'s budget kept back from the search for `explanations.json`.
pub const BUDGET_SHARE: f64 = 0.03;
/// Rows explained for `explanations.json` at most.
const MAX_GLOBAL_ROWS: usize = 1_000;
/// Rows per step when explaining against a deadline.
const CHUNK_ROWS: usize = 50;
/// Shuffles per column for permutation importance.
const PERMUTATION_REPEATS: usize = 2;

fn model_dir(dir: &Path) -> PathBuf {
    let inner = dir.join("model");
    if inner.join("pipeline.json").exists() { inner } else { dir.to_path_buf() }
}

pub fn run(args: ExplainArgs) -> Result<()> {
    let pipeline = load_pipeline(&args.model)?;
    let table = load_table(&args.data)?.table;
    let x = pipeline.featurizer.transform(&table).with_context(|| args.data.display().to_string())?;
    let background = match load_background(&model_dir(&args.model))? {
        Some(bg) => bg,
        None => {
            eprintln!(
                "warning: {} has no saved background rows (a run from an older quarry); using a sample of {}",
                args.model.display(),
                args.data.display()
            );
            x.select_rows(&sample_rows(x.n_rows, BACKGROUND_ROWS, 0))
        }
    };
    let e = explain(&pipeline, &x, &background, &ExplainOptions::default())?;
    let one = e.select(args.class.as_deref(), &pipeline.target.classes)?;
    let mut header = e.columns.clone();
    header.push("expected_value".into());
    header.push("output".into());
    let m = e.columns.len();
    let rows = (0..e.n_rows).map(|r| {
        let mut out: Vec<String> = one.phi[r * m..(r + 1) * m].iter().map(|v| v.to_string()).collect();
        out.push(one.expected.to_string());
        out.push(one.output[r].to_string());
        out
    });
    write_csv(&args.out, &header, rows)?;
    eprintln!(
        "explained {} rows ({}, {} of {}) with {} to {}",
        e.n_rows,
        e.space.name(),
        if e.space == quarry_learners::explain::OutputSpace::Value { "value" } else { "class" },
        one.name,
        e.methods.join(" + "),
        args.out.display()
    );
    if let Some(k) = &e.kernel
        && !k.exact
    {
        eprintln!("note: sampled KernelSHAP, estimated standard error {:.2e} per value", k.std_error);
    }
    Ok(())
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
) -> Result<()> {
    let start = Instant::now();
    let background = train_x.select_rows(&sample_rows(train_x.n_rows, BACKGROUND_ROWS, seed));
    save_background(&out_dir.join("model"), &background)?;
    let record = match global_summary(pipeline, &background, rows, deadline, seed) {
        Ok(mut v) => {
            v["seconds"] = json!(start.elapsed().as_secs_f64());
            v
        }
        Err(e) => {
            tracing::warn!("explanations: {e:#}");
            json!({ "error": format!("{e:#}"), "output_space": output_space(pipeline).name() })
        }
    };
    write_json(&out_dir.join("explanations.json"), &record)
}

fn time_left(deadline: Option<Instant>) -> Duration {
    deadline.map_or(Duration::MAX, |d| d.saturating_duration_since(Instant::now()))
}

fn global_summary(
    pipeline: &Pipeline,
    background: &FeatureMatrix,
    rows: SummaryRows<'_>,
    deadline: Option<Instant>,
    seed: u64,
) -> Result<Value> {
    let space = output_space(pipeline);
    if time_left(deadline) < Duration::from_millis(50) {
        return Ok(json!({
            "skipped": "no time left in the budget",
            "output_space": space.name(),
        }));
    }
    let picked = sample_rows(rows.x.n_rows, MAX_GLOBAL_ROWS, seed);
    let xs = rows.x.select_rows(&picked);
    let ys = rows.y.select_rows(&picked);
    let opts = ExplainOptions { seed, ..ExplainOptions::default() };
    // Chunks until the rows run out or the deadline comes; the first chunk always runs.
    let mut explained: Option<Explanation> = None;
    let mut done = 0;
    while done < xs.n_rows {
        let end = (done + CHUNK_ROWS).min(xs.n_rows);
        let chunk = xs.select_rows(&(done..end).collect::<Vec<_>>());
        let e = explain(pipeline, &chunk, background, &opts)?;
        match &mut explained {
            Some(acc) => acc.append(e),
            None => explained = Some(e),
        }
        done = end;
        if time_left(deadline) < Duration::from_millis(100) {
            break;
        }
    }
    let Some(e) = explained else {
        return Ok(json!({ "skipped": "no rows to explain", "output_space": space.name() }));
    };
    let mean_abs = e.mean_abs();
    let permutation = if time_left(deadline) > Duration::from_millis(200) {
        let xp = xs.select_rows(&(0..done).collect::<Vec<_>>());
        let yp = ys.select_rows(&(0..done).collect::<Vec<_>>());
        Some(permutation_importance(pipeline, &xp, &yp, PERMUTATION_REPEATS, seed)?)
    } else {
        None
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
            "rows": done,
            "meaning": "increase in metric loss when the column is shuffled",
        })),
    }))
}
