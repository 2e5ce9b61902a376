//! `quarry export`, and the `model.onnx` every run folder gets.

use std::path::Path;

use anyhow::{Context, Result};
use quarry_learners::{Pipeline, onnx};
use serde_json::{Value, json};

use crate::args::ExportArgs;
use crate::predict::load_pipeline;

pub const ONNX_FILE: &str = "model.onnx";

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

/// Writes `model.onnx` into a run folder; returns what `run.json` records about it. A pipeline
/// that cannot be exported yet gets no file (never a wrong one) and a warning saying why.
pub fn write_run_onnx(out_dir: &Path, pipeline: &Pipeline, dataset_hash: &str) -> Result<Value> {
    let path = out_dir.join(ONNX_FILE);
    match onnx::export(pipeline, Some(dataset_hash)) {
        Ok(bytes) => {
            std::fs::write(&path, &bytes).with_context(|| path.display().to_string())?;
            Ok(json!({"file": ONNX_FILE, "bytes": bytes.len()}))
        }
        Err(e) => {
            eprintln!("warning: no {ONNX_FILE} written: {e}");
            Ok(json!({"file": null, "reason": e.to_string()}))
        }
    }
}
