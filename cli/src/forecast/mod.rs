//! `quarry fit --task forecast` and `quarry predict` on a forecast run folder.
//!
//! Fit: the long table becomes a panel on a regular grid; every candidate forecaster (naive,
//! seasonal naive, ETS, ARIMA, global ridge / tree models on lag features, on raw or log values) is
//! scored on rolling-origin windows of `horizon` points; a greedy ensemble over their window
//! forecasts is refitted on all the history; quantiles come from the ensemble's window
//! residuals (split conformal, per horizon step).

mod bundle;
mod candidates;
mod ensemble;
mod export;
mod predict;

pub use bundle::bundle_path;
use bundle::*;
use candidates::*;
use ensemble::*;
use export::*;
pub use predict::predict;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use quarry_featurize::datetime::civil_from_unix;
use quarry_featurize::forecast::panel::{parse_number, parse_time, series_key};
use quarry_featurize::forecast::{
    ForecastMetric, Frequency, FrequencyKind, Scored, SeriesData, build_panel, mase_scale,
    weighted_quantile_loss,
};
use quarry_featurize::load_table;
use quarry_learners::forecast::{
    Covariates, FittedForecaster, ForecasterSpec, GlobalLearner, SeriesView, Transform, fit as fit_forecaster,
};
use quarry_learners::gbdt::TreeParams;
use quarry_search::{ForecastWindow, rolling_origin_windows};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::args::{FitArgs, PredictArgs};
use crate::output::{default_run_dir, write_csv, write_json};

pub const BUNDLE_FORMAT_VERSION: u32 = 1;
const DEFAULT_BUDGET: Duration = Duration::from_secs(60);
const QUANTILES: [f64; 3] = [0.1, 0.5, 0.9];
const DEFAULT_WINDOWS: usize = 4;
const ENSEMBLE_ROUNDS: usize = 20;
const INIT_CLASSES: usize = 3;
const INIT_WITHIN: f64 = 1.15;

/// Forecasting options of `quarry fit` (used with `--task forecast`).
#[derive(Args, Clone, Default)]
pub struct ForecastArgs {
    /// Forecasting: the timestamp column.
    #[arg(long)]
    pub time_column: Option<String>,
    /// Forecasting: how many future points to forecast (and validate on).
    #[arg(long)]
    pub horizon: Option<usize>,
    /// Forecasting: column(s) identifying a series (repeatable; none = one series).
    #[arg(long = "series-id", value_name = "COL")]
    pub series_id: Vec<String>,
    /// Forecasting: auto, or a pandas-style alias (min, H, D, W, MS, M, QS, Q, YS, Y, 15min, …).
    #[arg(long, default_value = "auto")]
    pub frequency: String,
    /// Forecasting: the seasonal period in grid steps (default from the frequency: 7 for D, 12 for MS, …).
    #[arg(long)]
    pub seasonality: Option<usize>,
    /// Forecasting: a numeric column whose future values will be given to `predict --data`
    /// (repeatable); global models read its value at the forecast point. Other numeric
    /// columns are past-only covariates (read a horizon back).
    #[arg(long = "known-covariate", value_name = "COL")]
    pub known_covariate: Vec<String>,
    /// Forecasting: rolling-origin validation windows of `horizon` points before the end of the
    /// data (default 4; fewer when the history is short).
    #[arg(long, value_name = "N")]
    pub windows: Option<usize>,
    /// Forecasting: try only these candidates (names as in the leaderboard, e.g. theta,ets_log,gbdt15x300_lags).
    #[arg(long, value_delimiter = ',', value_name = "NAME,...")]
    pub forecasters: Vec<String>,
}

pub fn fit(args: &FitArgs) -> Result<()> {
    let start = Instant::now();
    let budget = args.budget.unwrap_or(DEFAULT_BUDGET);
    let fa = &args.forecast;
    let time_column = fa.time_column.clone().context("--task forecast needs --time-column")?;
    let horizon = fa.horizon.context("--task forecast needs --horizon")?;
    if horizon == 0 {
        bail!("--horizon must be at least 1");
    }
    let metric = ForecastMetric::parse(args.metric.as_deref().unwrap_or("mase"))?;
    let freq_kind = FrequencyKind::parse(&fa.frequency)?;
    let loaded = load_table(&args.data)?;
    let table = &loaded.table;
    let names = table.column_names();
    for c in fa.known_covariate.iter().chain(&args.columns.drop) {
        if !names.contains(&c.as_str()) {
            bail!("{}: column {c:?} not found; columns are: {}", args.data.display(), names.join(", "));
        }
    }
    let structural: Vec<&str> = std::iter::once(time_column.as_str())
        .chain(std::iter::once(args.target.as_str()))
        .chain(fa.series_id.iter().map(String::as_str))
        .collect();
    if let Some(c) = fa.known_covariate.iter().find(|c| structural.contains(&c.as_str())) {
        bail!("--known-covariate {c:?} is the time, target or a series id column");
    }
    // Every other numeric column is a past-only covariate; text columns are left out.
    let (mut past_cols, mut ignored) = (Vec::new(), Vec::new());
    for c in names.iter().copied() {
        if structural.contains(&c) || fa.known_covariate.iter().any(|k| k == c) {
            continue;
        }
        if args.columns.drop.iter().any(|d| d == c) {
            ignored.push(c.to_string());
        } else if (0..table.n_rows).all(|r| parse_number(table, c, r, "covariate").is_ok()) {
            past_cols.push(c.to_string());
        } else {
            ignored.push(c.to_string());
        }
    }
    let cov_names: Vec<String> = fa.known_covariate.iter().chain(&past_cols).cloned().collect();
    let panel = build_panel(table, &time_column, &args.target, &fa.series_id, &cov_names, freq_kind)
        .with_context(|| args.data.display().to_string())?;
    let freq = panel.frequency;
    let m = fa.seasonality.unwrap_or_else(|| freq.default_seasonality()).max(1);
    let series = &panel.series;
    let first = series.iter().map(|s| s.start).min().unwrap_or(0);
    let last_end = series.iter().map(SeriesData::end).max().unwrap_or(0);
    let min_train = (2 * m + 2).max(horizon).max(8);
    let windows = rolling_origin_windows(
        first,
        last_end,
        horizon,
        fa.windows.unwrap_or(DEFAULT_WINDOWS).max(1),
        min_train,
    );
    if windows.is_empty() {
        bail!(
            "{}: too little history for horizon {horizon}: need at least {} points before the last {horizon}",
            args.data.display(),
            min_train
        );
    }
    let n_known = fa.known_covariate.len();
    let covariates = Covariates {
        names: cov_names.clone(),
        known: (0..n_known).collect(),
        past: (n_known..cov_names.len()).collect(),
        past_lag: horizon,
    };
    let short: Vec<String> =
        series.iter().filter(|s| s.n_observed() < 2 * m + horizon).map(|s| s.key.clone()).collect();
    if !short.is_empty() {
        eprintln!(
            "warning: {} series have fewer than 2×season + horizon = {} observed points; local seasonal models fall back to simpler ones for them",
            short.len(),
            2 * m + horizon
        );
    }
    if !ignored.is_empty() {
        eprintln!("warning: columns {ignored:?} are not used (dropped, or not numeric)");
    }
    if !past_cols.is_empty() {
        eprintln!(
            "note: {past_cols:?} are past-only covariates (read {horizon} points back); pass --known-covariate COL for a column whose future values predict will be given"
        );
    }

    // Candidates in order of cost; a candidate starts only while 70% of the budget is left
    // unused, the rest is for the final refit and writing the run folder.
    let search_until = start + budget.mul_f64(0.7);
    let mut specs = candidates(series, &freq, m, horizon, &covariates);
    if !fa.forecasters.is_empty() {
        let known: Vec<String> = specs.iter().map(ForecasterSpec::name).collect();
        if let Some(bad) = fa.forecasters.iter().find(|f| !known.contains(f)) {
            bail!("--forecasters: unknown candidate {bad:?}; candidates here are: {}", known.join(", "));
        }
        specs.retain(|s| fa.forecasters.contains(&s.name()));
    }
    let mut cands: Vec<Candidate> = Vec::new();
    for spec in specs {
        if Instant::now() > search_until {
            tracing::info!(candidate = spec.name(), "skipped: budget");
            continue;
        }
        let t0 = Instant::now();
        let result: Result<Vec<_>> =
            windows.iter().map(|w| evaluate_window(&spec, series, &freq, m, *w, args.seed)).collect();
        let fit_seconds = t0.elapsed().as_secs_f64();
        let cand = match result {
            Ok(w) => {
                let score = score_windows(metric, &w);
                Candidate { spec, windows: w, score, fit_seconds, error: None }
            }
            Err(e) => Candidate {
                spec,
                windows: Vec::new(),
                score: f64::NAN,
                fit_seconds,
                error: Some(format!("{e:#}")),
            },
        };
        eprintln!(
            "  {:<18} validation {} {:.4}  ({:.1}s){}",
            cand.spec.name(),
            metric.name(),
            cand.score,
            cand.fit_seconds,
            cand.error.as_deref().map(|e| format!("  failed: {e}")).unwrap_or_default()
        );
        cands.push(cand);
    }
    let ok: Vec<&Candidate> = cands.iter().filter(|c| c.error.is_none() && c.score.is_finite()).collect();
    if ok.is_empty() {
        bail!("no forecaster could be validated");
    }
    let (weights, ensemble_score) = select_ensemble(&ok, metric);
    let total: f64 = weights.iter().sum();

    // Final members refitted on the whole history.
    let all_views: Vec<SeriesView> =
        series.iter().map(|s| SeriesView::new(s.start, &s.values).with_covariates(&s.covariates)).collect();
    let scales: Vec<f64> = all_views.iter().map(|v| v.scale).collect();
    let mut members = Vec::new();
    for (c, w) in ok.iter().zip(&weights).filter(|(_, w)| **w > 0.0) {
        let model = fit_forecaster(&c.spec, &all_views, &freq, m, args.seed)
            .with_context(|| format!("refitting {}", c.spec.name()))?;
        members.push(Member { name: c.spec.name(), weight: w / total, model });
    }
    let blended = blend(&ok, &weights);
    let all: Vec<&Vec<(usize, Scored)>> = blended.iter().collect();
    let quantiles = quantile_table(&all, &scales, horizon);
    // Held-out check of the intervals: each window's quantiles come from the other windows.
    let wql = (blended.len() >= 2).then(|| {
        let mut losses = Vec::new();
        for (k, w) in blended.iter().enumerate() {
            let others: Vec<&Vec<(usize, Scored)>> =
                blended.iter().enumerate().filter(|(j, _)| *j != k).map(|p| p.1).collect();
            let table = quantile_table(&others, &scales, horizon);
            let (mut actual, mut qs) = (Vec::new(), vec![Vec::new(); QUANTILES.len()]);
            for (i, s) in w {
                for (h, (a, f)) in s.actual.iter().zip(&s.forecast).enumerate() {
                    actual.push(*a);
                    for (q, out) in qs.iter_mut().enumerate() {
                        out.push(f + table.offset(h, q) * scales[*i]);
                    }
                }
            }
            losses.push(weighted_quantile_loss(&QUANTILES, &actual, &qs));
        }
        losses.iter().sum::<f64>() / losses.len() as f64
    });

    let out_dir = match &args.out {
        Some(d) => d.clone(),
        None => default_run_dir(Path::new("runs"))?,
    };
    let model_dir = out_dir.join("model");
    std::fs::create_dir_all(&model_dir).with_context(|| format!("creating {}", model_dir.display()))?;
    let bundle = Bundle {
        format_version: BUNDLE_FORMAT_VERSION,
        kind: "forecast".into(),
        target: args.target.clone(),
        time_column: time_column.clone(),
        series_id_columns: fa.series_id.clone(),
        frequency: freq,
        seasonality: m,
        horizon,
        metric,
        series: series.clone(),
        covariates: cov_names.clone(),
        known_covariates: fa.known_covariate.clone(),
        members,
        quantiles,
    };
    let text = serde_json::to_string(&bundle)?;
    std::fs::write(model_dir.join("forecast.json"), text)
        .with_context(|| format!("writing {}", model_dir.join("forecast.json").display()))?;
    let onnx = export_onnx(&ExportInput {
        out_dir: &out_dir,
        members: &bundle.members,
        ok: &ok,
        views: &all_views,
        freq: &freq,
        m,
        seed: args.seed,
        target: &args.target,
        hash: &loaded.content_hash,
    });
    if onnx["exported"] != true {
        eprintln!("warning: no model.onnx: {}", onnx["reason"].as_str().unwrap_or(""));
    }

    let mut board: Vec<serde_json::Value> = cands
        .iter()
        .map(|c| {
            let weight = ok.iter().position(|o| std::ptr::eq(*o, c)).map_or(0.0, |j| weights[j] / total);
            json!({
                "family": c.spec.name(),
                "spec": c.spec,
                "validation_score": c.score.is_finite().then_some(c.score),
                "window_scores": c.windows.iter().map(|w| {
                    let s = metric.score(&w.iter().map(|p| p.1.clone()).collect::<Vec<_>>());
                    s.is_finite().then_some(s)
                }).collect::<Vec<_>>(),
                "fit_seconds": c.fit_seconds,
                "status": if c.error.is_some() { "failed" } else { "completed" },
                "failure_reason": c.error,
                "ensemble_weight": weight,
            })
        })
        .collect();
    board.sort_by(|a, b| {
        let s = |v: &serde_json::Value| v["validation_score"].as_f64().unwrap_or(f64::INFINITY);
        s(a).total_cmp(&s(b))
    });
    write_json(&out_dir.join("leaderboard.json"), &board)?;
    let guard = json!({
        "n_series": series.len(),
        "frequency": freq.code(),
        "gaps_filled_as_missing": panel.n_gaps,
        "missing_targets": panel.n_missing_targets,
        "short_series": short,
        "short_series_threshold": 2 * m + horizon,
        "ignored_columns": ignored,
        "known_covariates": fa.known_covariate,
        "past_only_covariates": past_cols,
        "findings": {
            "short_series": if short.is_empty() { "none" } else { "local seasonal models (ETS, seasonal naive) fall back to non-seasonal forms or the last value for these; global models still cover them" },
            "ignored_columns": "dropped with --drop, or not numeric: not used",
            "covariates": "global models read known covariates at the forecast point and past-only covariates one horizon back; local models (naive, ETS) use the target alone",
        },
    });
    write_json(&out_dir.join("guardrails.json"), &guard)?;
    let best = ok.iter().min_by(|a, b| a.score.total_cmp(&b.score)).map(|c| (c.spec.name(), c.score));
    let run_record = json!({
        "quarry_version": env!("CARGO_PKG_VERSION"),
        "dataset": {"path": loaded.path, "content_hash": loaded.content_hash, "rows": loaded.table.n_rows},
        "task": "forecast",
        "target": args.target,
        "time_column": time_column,
        "series_id_columns": fa.series_id,
        "frequency": freq.code(),
        "seasonality": m,
        "horizon": horizon,
        "metric": metric,
        "validation": {"kind": "rolling_origin", "windows": windows, "window_length": horizon},
        "seed": args.seed,
        "budget_seconds": budget.as_secs_f64(),
        "best_single": best.as_ref().map(|b| json!({"family": b.0, "validation_score": b.1})),
        "final_model": {
            "kind": "ensemble",
            "members": bundle.members.iter().map(|m| json!({"family": m.name, "weight": m.weight})).collect::<Vec<_>>(),
            "validation_score": ensemble_score,
        },
        "quantiles": {"levels": QUANTILES, "method": "split conformal on rolling-origin residuals, per horizon step", "validation_weighted_quantile_loss": wql},
        "model_format_version": BUNDLE_FORMAT_VERSION,
        "onnx": onnx,
        "elapsed_seconds": start.elapsed().as_secs_f64(),
    });
    write_json(&out_dir.join("run.json"), &run_record)?;
    let described: Vec<String> =
        bundle.members.iter().map(|m| format!("{} {:.2}", m.name, m.weight)).collect();
    println!(
        "best single: {} {} = {:.5}\nfinal model: ensemble [{}] (validation {} {:.5}); {} candidates in {:.1}s",
        best.as_ref().map_or("-", |b| b.0.as_str()),
        metric.name(),
        best.as_ref().map_or(f64::NAN, |b| b.1),
        described.join(", "),
        metric.name(),
        ensemble_score,
        cands.len(),
        start.elapsed().as_secs_f64()
    );
    println!("run folder: {}", out_dir.display());
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn panel(n: usize) -> Vec<SeriesData> {
        (0..2)
            .map(|k| {
                let values: Vec<f64> = (0..n)
                    .map(|t| 100.0 * (k + 1) as f64 + t as f64 + 20.0 * ((t % 12) as f64 / 2.0).sin())
                    .collect();
                let cov: Vec<f64> = (0..n).map(|t| ((t * 7 + k) % 5) as f64).collect();
                SeriesData {
                    key: format!("s{k}"),
                    ids: vec![format!("s{k}")],
                    start: 0,
                    values,
                    covariates: vec![cov],
                }
            })
            .collect()
    }

    /// No look-ahead, for every candidate: changing the targets and the past-only covariate
    /// at or after a window's cutoff leaves the window's forecasts unchanged.
    #[test]
    fn window_forecasts_never_see_past_the_cutoff() {
        let freq = Frequency::anchored(FrequencyKind::parse("MS").unwrap().unwrap(), 0);
        let h = 12;
        let cov = Covariates { names: vec!["c".into()], known: vec![], past: vec![0], past_lag: h };
        let base = panel(100);
        let mut changed = base.clone();
        let w = ForecastWindow { cutoff: 88, end: 100 };
        for s in &mut changed {
            for v in &mut s.values[88..] {
                *v = *v * 3.0 + 100.0;
            }
            for v in &mut s.covariates[0][88..] {
                *v = 1e6;
            }
        }
        for spec in candidates(&base, &freq, 12, h, &cov) {
            let a = evaluate_window(&spec, &base, &freq, 12, w, 1).unwrap();
            let b = evaluate_window(&spec, &changed, &freq, 12, w, 1).unwrap();
            assert_eq!(a.len(), 2);
            for ((_, x), (_, y)) in a.iter().zip(&b) {
                assert_eq!(x.forecast, y.forecast, "{} read values after the cutoff", spec.name());
                assert_ne!(x.actual, y.actual);
            }
        }
    }
}
