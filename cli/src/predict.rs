//! `quarry predict` and the model-directory lookup shared with `evaluate`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use quarry_featurize::{Predictions, load_table};
use quarry_learners::Pipeline;

use crate::args::PredictArgs;
use crate::output::write_csv;

/// Accepts a run folder or its `model/` subfolder.
pub fn load_pipeline(dir: &Path) -> Result<Pipeline> {
    let inner: PathBuf = dir.join("model");
    let dir = if inner.join("pipeline.json").exists() { inner.as_path() } else { dir };
    Ok(Pipeline::load(dir)?)
}

pub fn run(args: PredictArgs) -> Result<()> {
    if let Some(bundle) = crate::forecast::bundle_path(&args.model) {
        return crate::forecast::predict(&args, &bundle);
    }
    let data = args.data.as_deref().context("--data is required")?;
    let pipeline = load_pipeline(&args.model)?;
    let loaded = load_table(data)?;
    let predictions = pipeline.predict(&loaded.table).with_context(|| data.display().to_string())?;
    let classes = &pipeline.target.classes;
    let mut header = vec!["prediction".to_string()];
    header.extend(classes.iter().map(|c| format!("proba_{c}")));
    match &predictions {
        Predictions::Probabilities { n_classes, values } => {
            let codes = predictions.class_codes().unwrap_or_default();
            let rows = values.chunks(*n_classes).zip(codes).map(|(row, code)| {
                let mut out = vec![classes.get(code as usize).cloned().unwrap_or_default()];
                out.extend(row.iter().map(|p| p.to_string()));
                out
            });
            write_csv(&args.out, &header, rows)?;
        }
        Predictions::Values(v) => {
            write_csv(&args.out, &header, v.iter().map(|p| vec![p.to_string()]))?;
        }
    }
    eprintln!("wrote {} predictions to {}", predictions.n_rows(), args.out.display());
    Ok(())
}
