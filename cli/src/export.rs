//! `quarry export`, and the `model.onnx` every run folder gets.

use std::path::Path;

use anyhow::{Context, Result};
use quarry_learners::{Pipeline, onnx};
use serde_json::Value;

use crate::args::ExportArgs;
use crate::predict::load_pipeline;

pub fn run(args: ExportArgs) -> Result<()> {
    let pipeline = load_pipeline(&args.model)?;
    let hash = dataset_hash(&args.model);
    let bytes = onnx::export(&pipeline, hash.as_deref())?;
    std::fs::write(&args.out, &bytes).with_context(|| args.out.display().to_string())?;
    eprintln!("wrote {} ({} bytes)", args.out.display(), bytes.len());
    Ok(())
}

/// The training file's hash from the run folder's `run.json`, when there is one.
fn dataset_hash(model: &Path) -> Option<String> {
    let dir =
        if model.join("run.json").exists() { model.to_path_buf() } else { model.parent()?.to_path_buf() };
    let run: Value = serde_json::from_slice(&std::fs::read(dir.join("run.json")).ok()?).ok()?;
    run["dataset"]["content_hash"].as_str().map(str::to_string)
}

/// Writes `model.onnx` into a run folder (`quarry_worker::run_files`, as remote runs do);
/// returns what `run.json` records about it, and warns when no file could be written.
pub fn write_run_onnx(out_dir: &Path, pipeline: &Pipeline, dataset_hash: &str) -> Result<Value> {
    let record = quarry_worker::run_files::write_run_onnx(out_dir, pipeline, dataset_hash)?;
    if let Some(reason) = record["reason"].as_str() {
        eprintln!("warning: no {} written: {reason}", quarry_worker::run_files::ONNX_FILE);
    }
    Ok(record)
}
