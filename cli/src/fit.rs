//! `quarry fit`: the whole local run, with an in-process coordinator and worker.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use quarry_coordinator::{JobConfig, LeaderboardEntry, SearchEvent, run_search};
use quarry_learners::{Family, Pipeline};
use quarry_search::TrialStatus;
use quarry_worker::finalize::{RunFacts, refit_estimate, run_record, write_run_folder};
use quarry_worker::{FinalModel, Prepared, TrialData, TrialRunner};

use crate::args::FitArgs;
use crate::explain::{SummaryRows, write_run_explanations};
use crate::final_model::{LocalExecutor, final_members, finished};
use crate::output::{default_run_dir, print_leaderboard};
use crate::prepare::{prepare, thread_count};

const DEFAULT_BUDGET: Duration = Duration::from_secs(60);

pub fn run(args: FitArgs) -> Result<()> {
    if matches!(args.task, crate::args::TaskArg::Forecast) {
        return crate::forecast::fit(&args);
    }
    let start = Instant::now();
    let budget = match (args.budget, args.max_trials) {
        (Some(b), _) => Some(b),
        (None, Some(_)) => None,
        (None, None) => Some(DEFAULT_BUDGET),
    };
    let deadline = budget.map(|b| start + b);
    if args.max_trials == Some(0) {
        bail!("--max-trials must be at least 1");
    }
    let threads = thread_count(args.threads)?;

    let prepared = prepare(
        &args.data,
        &args.target,
        args.task,
        args.metric.as_deref(),
        &args.columns,
        args.group_column.as_deref(),
        args.memory_limit,
    )?;
    let dataset = prepared.dataset_record();
    let plan = prepared.validation_plan(args.seed)?;
    let shape = prepared.shape();
    let Prepared { encoder, metric, featurizer, x, y, guard, target_encodings, .. } = prepared;
    let task = encoder.task;
    let n_folds = plan.folds.len();
    let plan_kind = plan.kind;
    let grouped_by = args.group_column.clone().filter(|_| plan.grouped);
    let target_encodings = (!target_encodings.is_empty()).then_some(target_encodings);
    let mut runner = TrialRunner::new(TrialData { x, y, task, metric, plan, target_encodings }, threads)?;
    if let Some(limit) = args.memory_limit {
        runner.set_memory_budget(std::sync::Arc::new(quarry_worker::MemoryBudget::new(limit)));
    }

    let out_dir = match &args.out {
        Some(d) => d.clone(),
        None => default_run_dir(Path::new("runs"))?,
    };
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;

    let families: Vec<String> = Family::for_task(task).map(|f| f.name().to_string()).collect();
    let job = JobConfig {
        families,
        shape,
        metric,
        seed: args.seed,
        deadline,
        max_trials: args.max_trials,
        scheduler: args.scheduler.into(),
        searcher: args.searcher.into(),
    };
    // Time kept after the search: the refit of the current best, plus writing the run folder.
    let reserve = |best: Option<&LeaderboardEntry>| {
        let base = Duration::from_millis(600) + budget.map_or(Duration::ZERO, |b| b.mul_f64(0.015));
        // The run folder's explanations.json (SHAP and permutation importance) runs after this.
        let base = base + budget.map_or(Duration::ZERO, |b| b.mul_f64(crate::explain::BUDGET_SHARE));
        // Only a holdout run refits (k-fold runs bag their fold models), and only when the refit
        // still fits: time that cannot buy a refit is better spent searching.
        let left = deadline.map_or(Duration::MAX, |d| d.saturating_duration_since(Instant::now()));
        let refit = best
            .filter(|_| n_folds == 1)
            .map(|b| refit_estimate(b.fit_seconds, n_folds))
            .filter(|r| *r + base < left)
            .unwrap_or(Duration::ZERO);
        refit + base
    };

    let bar = progress_bar(budget, args.max_trials);
    let mut executor = LocalExecutor::new(&runner, metric);
    let board = run_search(&job, &mut executor, &reserve, &mut |event| match event {
        SearchEvent::TrialStarted { spec } => {
            bar.set_message(format!("trial {} ({})", spec.id, spec.family));
        }
        SearchEvent::TrialFinished { best, .. } => {
            match budget {
                Some(_) => bar.set_position(start.elapsed().as_millis() as u64),
                None => bar.inc(1),
            }
            if let Some(b) = best.and_then(|b| b.validation_score.map(|s| (b, s))) {
                bar.set_prefix(format!("best {metric} {:.4} ({})", b.1, b.0.family));
            }
        }
    })?;
    bar.finish_and_clear();

    let Some(best) = board.first().filter(|e| e.status == TrialStatus::Completed) else {
        let reasons: Vec<String> = board
            .iter()
            .filter_map(|e| e.failure_reason.as_ref().map(|r| format!("{}: {r}", e.family)))
            .collect();
        if board.is_empty() {
            bail!("no trial finished within the budget; give it a larger --budget");
        }
        bail!("every trial failed ({})", reasons.join("; "));
    };

    let (final_model, members) = final_members(executor, &board, deadline, args.seed)?;
    let pipeline = Pipeline::new(task, metric, featurizer, encoder, members);
    let onnx = crate::export::write_run_onnx(
        &out_dir,
        &pipeline,
        dataset["content_hash"].as_str().unwrap_or_default(),
    )?;
    let finished: Vec<_> = board.iter().map(finished).collect();
    let mut run_record = run_record(&RunFacts {
        dataset,
        target: &args.target,
        pipeline: &pipeline,
        n_features: shape.n_features,
        validation: plan_kind,
        grouped_by: grouped_by.as_deref(),
        seed: args.seed,
        budget_seconds: budget.map(|b| b.as_secs_f64()),
        max_trials: args.max_trials,
        threads,
        board: &finished,
        final_model: &final_model,
        elapsed_seconds: start.elapsed().as_secs_f64(),
    });
    if let Some(record) = run_record.as_object_mut() {
        record.insert("onnx".into(), onnx);
    }
    write_run_folder(&out_dir, &pipeline, &board, &guard, &run_record)?;
    let (summary_x, summary_y, description) =
        quarry_worker::run_files::search_summary_rows(runner.data(), args.seed);
    let summary = SummaryRows { x: &summary_x, y: &summary_y, description: description.into() };
    write_run_explanations(&out_dir, &pipeline, &runner.data().x, summary, deadline, args.seed)?;
    crate::report::write(&out_dir);

    print_leaderboard(&board, metric, 10);
    let final_score = match &final_model {
        FinalModel::Ensemble(e) => e.validation_score,
        _ => best.validation_score.unwrap_or(f64::NAN),
    };
    println!(
        "\nbest single: trial {} {} {metric} = {:.5}\nfinal model: {} (validation {metric} {final_score:.5}); {} trials in {:.1}s",
        best.id,
        best.family,
        best.validation_score.unwrap_or(f64::NAN),
        final_model.describe(),
        board.len(),
        start.elapsed().as_secs_f64()
    );
    println!("run folder: {}", out_dir.display());
    Ok(())
}

fn progress_bar(budget: Option<Duration>, max_trials: Option<usize>) -> ProgressBar {
    let (len, template) = match (budget, max_trials) {
        (Some(b), _) => (b.as_millis() as u64, "{spinner} [{elapsed_precise}] {wide_bar} {prefix} · {msg}"),
        (None, Some(n)) => {
            (n as u64, "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} trials {prefix} · {msg}")
        }
        (None, None) => (0, "{spinner} {msg}"),
    };
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}
