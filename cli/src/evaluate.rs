//! `quarry evaluate`: metrics of a fitted model on labelled data, as JSON on stdout.

use anyhow::{Context, Result};
use quarry_featurize::load_table;
use serde_json::{Map, Value, json};

use crate::args::EvaluateArgs;
use crate::predict::load_pipeline;

pub fn run(args: EvaluateArgs) -> Result<()> {
    let pipeline = load_pipeline(&args.model)?;
    let loaded = load_table(&args.data)?;
    let context = || args.data.display().to_string();
    let (truth, kept) = pipeline.target.encode(&loaded.table).with_context(context)?;
    let table = if kept.len() < loaded.table.n_rows { loaded.table.select_rows(&kept) } else { loaded.table };
    let predictions = pipeline.predict(&table).with_context(context)?;
    let mut metrics = Map::new();
    let mut names: Vec<_> = pipeline.task.report_metrics().to_vec();
    if !names.contains(&pipeline.metric) {
        names.insert(0, pipeline.metric);
    }
    for m in names {
        let v = m.score(&truth, &predictions);
        metrics.insert(m.name().to_string(), if v.is_finite() { json!(v) } else { Value::Null });
    }
    let out = json!({
        "task": pipeline.task,
        "metric": pipeline.metric,
        "n_rows": table.n_rows,
        "metrics": metrics,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
