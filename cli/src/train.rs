//! `quarry train`: one family, fixed hyperparameters, the same run folder as `fit`.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use quarry_coordinator::LeaderboardEntry;
use quarry_featurize::load_table;
use quarry_learners::{Family, Member, ParamMap, Pipeline, check_params, fit};
use quarry_search::{Config, ParamValue, TrialId, TrialStatus};
use serde_json::{Map, Value, json};

use crate::args::TrainArgs;
use crate::explain::{SummaryRows, write_run_explanations};
use crate::output::{default_run_dir, print_leaderboard, write_json};
use crate::prepare::{prepare, thread_count};
use quarry_worker::Prepared;

fn parse_params(args: &[String]) -> Result<ParamMap> {
    let mut out = ParamMap::new();
    for a in args {
        let Some((k, v)) = a.split_once('=') else { bail!("--param {a:?}: expected KEY=VALUE") };
        out.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(out)
}

/// Text parameters as typed values for the leaderboard (integers, then floats, then text).
fn as_config(params: &ParamMap) -> Config {
    params
        .iter()
        .map(|(k, v)| {
            let value = v
                .parse::<i64>()
                .map(ParamValue::Int)
                .or_else(|_| v.parse::<f64>().map(ParamValue::Float))
                .unwrap_or_else(|_| ParamValue::Str(v.clone()));
            (k.clone(), value)
        })
        .collect()
}

pub fn run(args: TrainArgs) -> Result<()> {
    let start = Instant::now();
    let family = Family::parse(&args.family)?;
    let params = parse_params(&args.params)?;
    // Parameters are checked before any data is read.
    let spec = check_params(family, &params)?;
    let threads = thread_count(args.threads)?;
    let prepared =
        prepare(&args.data, &args.target, args.task, args.metric.as_deref(), &args.columns, None, None)?;
    let dataset = prepared.dataset_record();
    let Prepared { encoder, metric, featurizer, x, y, guard, .. } = prepared;
    let task = encoder.task;
    let valid = match &args.valid {
        Some(path) => {
            let table = load_table(path)?.table;
            let (yv, kept) = encoder.encode(&table).with_context(|| path.display().to_string())?;
            let table = if kept.len() < table.n_rows { table.select_rows(&kept) } else { table };
            let xv = featurizer.transform(&table).with_context(|| path.display().to_string())?;
            Some((xv, yv))
        }
        None => None,
    };
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build()?;
    let fit_start = Instant::now();
    let model = pool.install(|| {
        fit(&spec, &x, &y, task, valid.as_ref().map(|(a, b)| (a, b)), args.seed, &mut |_, _| true)
    })?;
    let fit_seconds = fit_start.elapsed().as_secs_f64();

    let mut valid_metrics = Map::new();
    let mut score = None;
    if let Some((xv, yv)) = &valid {
        let pred = model.predict(xv);
        for m in task.report_metrics().iter().chain(std::iter::once(&metric)) {
            let v = m.score(yv, &pred);
            valid_metrics.insert(m.name().to_string(), if v.is_finite() { json!(v) } else { Value::Null });
        }
        score = Some(metric.score(yv, &pred)).filter(|v| v.is_finite());
    }
    let entry = LeaderboardEntry {
        id: TrialId(1),
        family: family.name().to_string(),
        params: as_config(&params),
        metric: metric.name().to_string(),
        validation_score: score,
        fit_seconds,
        status: TrialStatus::Completed,
        failure_reason: None,
        rounds: model.rounds(),
    };
    let out_dir = match &args.out {
        Some(d) => d.clone(),
        None => default_run_dir(Path::new("runs"))?,
    };
    let pipeline =
        Pipeline::new(task, metric, featurizer, encoder, vec![Member { weight: 1.0, family, params, model }]);
    pipeline.save(&out_dir.join("model"))?;
    let onnx = crate::export::write_run_onnx(
        &out_dir,
        &pipeline,
        dataset["content_hash"].as_str().unwrap_or_default(),
    )?;
    let board = vec![entry];
    write_json(&out_dir.join("leaderboard.json"), &board)?;
    write_json(&out_dir.join("guardrails.json"), &guard)?;
    let record = json!({
        "quarry_version": env!("CARGO_PKG_VERSION"),
        "command": "train",
        "dataset": dataset,
        "target": args.target,
        "task": task,
        "metric": metric,
        "classes": pipeline.target.classes,
        "schema": pipeline.featurizer.columns,
        "n_features": x.n_features(),
        "validation": args.valid.as_ref().map(|p| json!({"kind": "file", "path": p.display().to_string()})),
        "validation_metrics": valid_metrics,
        "seed": args.seed,
        "threads": threads,
        "family": family,
        "rounds": board[0].rounds,
        "onnx": onnx,
        "elapsed_seconds": start.elapsed().as_secs_f64(),
    });
    write_json(&out_dir.join("run.json"), &record)?;
    let summary_rows = match &valid {
        Some((xv, yv)) => SummaryRows { x: xv, y: yv, description: "validation file (seeded sample)".into() },
        None => SummaryRows { x: &x, y: &y, description: "training rows (seeded sample)".into() },
    };
    // No budget here, but KernelSHAP on 1,000 rows can take minutes: stop adding rows after 20 s.
    let explain_deadline = Some(Instant::now() + std::time::Duration::from_secs(20));
    write_run_explanations(&out_dir, &pipeline, &x, summary_rows, explain_deadline, args.seed)?;
    print_leaderboard(&board, metric, 1);
    println!("run folder: {}", out_dir.display());
    Ok(())
}
