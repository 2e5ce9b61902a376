//! `quarry explain` (per-row Shapley values as CSV) and the run folder's `explanations.json`
//! (global importance per raw column, written by `fit` and `train`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use quarry_featurize::load_table;
use quarry_learners::explain::{BACKGROUND_ROWS, ExplainOptions, explain, load_background, sample_rows};
// `explanations.json` is written by the worker library, so remote runs get the same file.
pub use quarry_worker::run_files::{BUDGET_SHARE, SummaryRows, write_run_explanations};

use crate::args::ExplainArgs;
use crate::output::write_csv;
use crate::predict::load_pipeline;

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
