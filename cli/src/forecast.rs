//! `quarry fit --task forecast` and `quarry predict` on a forecast run folder.
//!
//! Fit: the long table becomes a panel on a regular grid; every candidate forecaster (naive,
//! seasonal naive, ETS, ARIMA, global ridge / tree models on lag features, on raw or log values) is
//! scored on rolling-origin windows of `horizon` points; a greedy ensemble over their window
//! forecasts is refitted on all the history; quantiles come from the ensemble's window
//! residuals (split conformal, per horizon step).

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

/// Everything `quarry predict` needs, saved as `model/forecast.json`.
#[derive(Serialize, Deserialize)]
struct Bundle {
    format_version: u32,
    kind: String,
    target: String,
    time_column: String,
    series_id_columns: Vec<String>,
    frequency: Frequency,
    seasonality: usize,
    horizon: usize,
    metric: ForecastMetric,
    /// The training history (models forecast from it).
    series: Vec<SeriesData>,
    /// Covariate columns (the order of each series' `covariates`) and which are known ahead.
    #[serde(default)]
    covariates: Vec<String>,
    #[serde(default)]
    known_covariates: Vec<String>,
    members: Vec<Member>,
    quantiles: QuantileTable,
}

#[derive(Serialize, Deserialize)]
struct Member {
    name: String,
    weight: f64,
    model: FittedForecaster,
}

/// Offsets (in units of each series' scale) added to the point forecast for each quantile
/// level, per horizon step.
#[derive(Serialize, Deserialize, Clone)]
struct QuantileTable {
    levels: Vec<f64>,
    /// `offsets[h][q]`, h = 0 for one step ahead.
    offsets: Vec<Vec<f64>>,
}

impl QuantileTable {
    fn offset(&self, step: usize, q: usize) -> f64 {
        let h = self.offsets.len();
        if h == 0 {
            return 0.0;
        }
        if step < h {
            self.offsets[step][q]
        } else {
            // Past the validated horizon the spread keeps growing like a random walk.
            self.offsets[h - 1][q] * ((step + 1) as f64 / h as f64).sqrt()
        }
    }
}

struct Candidate {
    spec: ForecasterSpec,
    /// Per window, per series in the window: actual, forecast and MASE scale.
    windows: Vec<Vec<(usize, Scored)>>,
    score: f64,
    fit_seconds: f64,
    error: Option<String>,
}

fn views(series: &[SeriesData], cutoff: i64) -> Vec<(usize, SeriesView<'_>)> {
    series
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            let n = (cutoff - s.start).clamp(0, s.values.len() as i64) as usize;
            let v = &s.values[..n];
            // Covariates stay whole: known ones are read ahead, past-only ones never past `n`.
            (v.iter().any(|x| x.is_finite()))
                .then(|| (i, SeriesView::new(s.start, v).with_covariates(&s.covariates)))
        })
        .collect()
}

fn candidates(
    series: &[SeriesData],
    frequency: &Frequency,
    m: usize,
    horizon: usize,
    covariates: &Covariates,
) -> Vec<ForecasterSpec> {
    let positive = series.iter().all(|s| s.values.iter().all(|v| !v.is_finite() || *v > 0.0));
    let mut transforms = vec![Transform::Identity];
    if positive {
        transforms.insert(0, Transform::Log);
    }
    let extra_lags = match frequency.kind {
        FrequencyKind::Fixed { seconds: 86_400 } => vec![364],
        FrequencyKind::Fixed { seconds: 3600 } => vec![168],
        _ => Vec::new(),
    };
    let small = TreeParams {
        n_estimators: 150,
        learning_rate: 0.05,
        num_leaves: 5,
        min_child_samples: 30,
        colsample_bytree: 0.9,
        ..TreeParams::default()
    };
    let mut out = vec![ForecasterSpec::Naive];
    if m > 1 {
        out.push(ForecasterSpec::SeasonalNaive);
    }
    for &t in &transforms {
        out.push(ForecasterSpec::Ets { transform: t });
    }
    for &t in &transforms {
        out.push(ForecasterSpec::Theta { transform: t });
    }
    for &t in &transforms {
        out.push(ForecasterSpec::Arima { transform: t });
    }
    for &t in &transforms {
        out.push(ForecasterSpec::Global {
            transform: t,
            learner: GlobalLearner::Ridge { lambda: 1e-3 },
            extra_lags: extra_lags.clone(),
            covariates: covariates.clone(),
            direct: 0,
            seasonal_anchor: false,
        });
    }
    // Two tree sizes; the validation windows decide between them (and the ensemble may mix).
    let large = TreeParams { n_estimators: 300, num_leaves: 15, min_child_samples: 10, ..small.clone() };
    for params in [&small, &large] {
        for &t in &transforms {
            out.push(ForecasterSpec::Global {
                transform: t,
                learner: GlobalLearner::Trees { params: params.clone() },
                extra_lags: extra_lags.clone(),
                covariates: covariates.clone(),
                direct: 0,
                seasonal_anchor: false,
            });
        }
    }
    // Seasonally anchored variants (year-over-year change; see `LagSpec::seasonal_anchor`).
    if m > 1 {
        let learners = [
            GlobalLearner::Ridge { lambda: 1e-3 },
            GlobalLearner::Trees { params: small.clone() },
            GlobalLearner::Trees { params: large.clone() },
        ];
        for learner in learners {
            for &t in &transforms {
                out.push(ForecasterSpec::Global {
                    transform: t,
                    learner: learner.clone(),
                    extra_lags: extra_lags.clone(),
                    covariates: covariates.clone(),
                    direct: 0,
                    seasonal_anchor: true,
                });
            }
        }
    }
    // Direct models (no error fed back through the lags), on the first transform only: they
    // train on one row per origin and step, so they cost the most and come last.
    if horizon > 1 {
        let t = transforms[0];
        let learners = [
            GlobalLearner::Ridge { lambda: 1e-3 },
            GlobalLearner::Trees { params: small },
            GlobalLearner::Trees { params: large },
        ];
        for learner in learners {
            out.push(ForecasterSpec::Global {
                transform: t,
                learner,
                extra_lags: extra_lags.clone(),
                covariates: covariates.clone(),
                direct: horizon,
                seasonal_anchor: false,
            });
        }
    }
    out
}

/// Fits `spec` before the window's cutoff and forecasts the window.
fn evaluate_window(
    spec: &ForecasterSpec,
    series: &[SeriesData],
    freq: &Frequency,
    m: usize,
    w: ForecastWindow,
    seed: u64,
) -> Result<Vec<(usize, Scored)>> {
    let v = views(series, w.cutoff);
    let only: Vec<SeriesView> = v.iter().map(|p| p.1).collect();
    let fitted = fit_forecaster(spec, &only, freq, m, seed)?;
    let steps: Vec<usize> =
        only.iter().map(|s| (w.end - (s.start + s.values.len() as i64)) as usize).collect();
    let forecasts = fitted.forecast(&only, freq, &steps);
    let mut out = Vec::new();
    for ((i, view), f) in v.iter().zip(forecasts) {
        let s = &series[*i];
        let end = s.start + view.values.len() as i64;
        let (mut actual, mut forecast) = (Vec::new(), Vec::new());
        for g in w.cutoff..w.end {
            let k = (g - end) as usize;
            let a = s.values.get((g - s.start) as usize).copied().unwrap_or(f64::NAN);
            actual.push(a);
            forecast.push(f.get(k).copied().unwrap_or(f64::NAN));
        }
        if actual.iter().any(|a| a.is_finite()) {
            out.push((*i, Scored { actual, forecast, mase_scale: mase_scale(view.values, m) }));
        }
    }
    Ok(out)
}

fn score_windows(metric: ForecastMetric, windows: &[Vec<(usize, Scored)>]) -> f64 {
    let scores: Vec<f64> = windows
        .iter()
        .map(|w| metric.score(&w.iter().map(|p| p.1.clone()).collect::<Vec<_>>()))
        .filter(|s| s.is_finite())
        .collect();
    if scores.is_empty() { f64::NAN } else { scores.iter().sum::<f64>() / scores.len() as f64 }
}

/// Weighted average of the members' window forecasts (all members share the window layout).
fn blend(cands: &[&Candidate], weights: &[f64]) -> Vec<Vec<(usize, Scored)>> {
    let total: f64 = weights.iter().sum();
    let mut out = cands[0].windows.clone();
    for (wi, window) in out.iter_mut().enumerate() {
        for (si, (_, scored)) in window.iter_mut().enumerate() {
            for (k, f) in scored.forecast.iter_mut().enumerate() {
                *f = cands
                    .iter()
                    .zip(weights)
                    .filter(|(_, w)| **w > 0.0)
                    .map(|(c, w)| c.windows[wi][si].1.forecast[k] * w)
                    .sum::<f64>()
                    / total;
            }
        }
    }
    out
}

/// Model class of a candidate: the sorted initialisation takes at most one member per class.
fn class_of(spec: &ForecasterSpec) -> &'static str {
    match spec {
        ForecasterSpec::Naive | ForecasterSpec::SeasonalNaive => "naive",
        ForecasterSpec::Ets { .. } => "ets",
        ForecasterSpec::Theta { .. } => "theta",
        ForecasterSpec::Arima { .. } => "arima",
        ForecasterSpec::Global { learner: GlobalLearner::Ridge { .. }, .. } => "ridge",
        ForecasterSpec::Global { learner: GlobalLearner::Trees { .. }, .. } => "trees",
    }
}

/// Greedy ensemble selection with replacement (Caruana et al. 2004) on the window forecasts,
/// with their sorted initialisation: the ensemble starts from the best candidate of each of the
/// best `INIT_CLASSES` model classes (those within `INIT_WITHIN` of the best score), because a
/// handful of validation windows is a small sample and greedy selection alone overfits it:
/// on txhousing it put 75 % on a global booster that validated best and then trailed Theta
/// by 0.09 MASE on the test year, where an equal mix of classes beat both.
fn select_ensemble(cands: &[&Candidate], metric: ForecastMetric) -> (Vec<f64>, f64) {
    let mut counts = vec![0.0; cands.len()];
    let mut order: Vec<usize> = (0..cands.len()).collect();
    order.sort_by(|a, b| cands[*a].score.total_cmp(&cands[*b].score));
    let best = order.first().map_or(f64::NAN, |i| cands[*i].score);
    let mut classes: Vec<&str> = Vec::new();
    for &i in &order {
        let class = class_of(&cands[i].spec);
        if classes.len() < INIT_CLASSES && !classes.contains(&class) && cands[i].score <= best * INIT_WITHIN {
            classes.push(class);
            counts[i] = 1.0;
        }
    }
    let mut best_score = if counts.iter().sum::<f64>() > 0.0 {
        score_windows(metric, &blend(cands, &counts))
    } else {
        f64::INFINITY
    };
    for _ in 0..ENSEMBLE_ROUNDS {
        let mut round_best: Option<(usize, f64)> = None;
        for j in 0..cands.len() {
            let mut trial = counts.clone();
            trial[j] += 1.0;
            let s = score_windows(metric, &blend(cands, &trial));
            if s.is_finite() && round_best.is_none_or(|b| s < b.1) {
                round_best = Some((j, s));
            }
        }
        let Some((j, s)) = round_best else { break };
        if s > best_score + 1e-12 && counts.iter().sum::<f64>() > 0.0 {
            break;
        }
        counts[j] += 1.0;
        best_score = best_score.min(s);
    }
    (counts, best_score)
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// Residual quantiles per horizon step from the given windows (scaled by each series' scale).
fn quantile_table(windows: &[&Vec<(usize, Scored)>], scales: &[f64], horizon: usize) -> QuantileTable {
    let mut per_step: Vec<Vec<f64>> = vec![Vec::new(); horizon];
    for w in windows {
        for (i, s) in w.iter() {
            for (k, (a, f)) in s.actual.iter().zip(&s.forecast).enumerate() {
                if a.is_finite() && f.is_finite() && k < horizon {
                    per_step[k].push((a - f) / scales[*i]);
                }
            }
        }
    }
    let mut pooled: Vec<f64> = per_step.iter().flatten().copied().collect();
    pooled.sort_by(f64::total_cmp);
    let offsets = per_step
        .iter_mut()
        .map(|r| {
            r.sort_by(f64::total_cmp);
            let src: &[f64] = if r.len() >= 10 { r } else { &pooled };
            QUANTILES.iter().map(|q| quantile(src, *q)).collect()
        })
        .collect();
    QuantileTable { levels: QUANTILES.to_vec(), offsets }
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

struct ExportInput<'a> {
    out_dir: &'a Path,
    members: &'a [Member],
    ok: &'a [&'a Candidate],
    views: &'a [SeriesView<'a>],
    freq: &'a Frequency,
    m: usize,
    seed: u64,
    target: &'a str,
    hash: &'a str,
}

const LOCAL_NOT_EXPORTED: &str = "local models (naive, seasonal naive, ETS, ARIMA, Theta) keep per-series state and are not exported: each needs its own series' history and its own recursion, which a fixed ONNX graph over feature rows cannot express";

/// Writes `model.onnx`: the one-step global model (the heaviest global member of the ensemble,
/// else the best-validated global candidate refitted on all the history) with its lag features
/// as inputs, plus `onnx_check.json` (each series' next-point features, scale and quarry's
/// one-step forecast) so a runtime can be checked against quarry. Returns run.json's `onnx`.
fn export_onnx(inp: &ExportInput) -> serde_json::Value {
    let is_global = |m: &FittedForecaster| matches!(m, FittedForecaster::Global { .. });
    let local: Vec<&str> =
        inp.members.iter().filter(|m| !is_global(&m.model)).map(|m| m.name.as_str()).collect();
    let from_ensemble = inp
        .members
        .iter()
        .filter(|m| is_global(&m.model))
        .max_by(|a, b| a.weight.total_cmp(&b.weight))
        .map(|m| (m.name.clone(), m.model.clone(), m.weight));
    let chosen = from_ensemble.or_else(|| {
        let best = inp
            .ok
            .iter()
            .filter(|c| matches!(c.spec, ForecasterSpec::Global { .. }))
            .min_by(|a, b| a.score.total_cmp(&b.score))?;
        let model = fit_forecaster(&best.spec, inp.views, inp.freq, inp.m, inp.seed).ok()?;
        Some((best.spec.name(), model, 0.0))
    });
    let Some((name, FittedForecaster::Global { model }, weight)) = chosen else {
        return json!({"exported": false, "reason": format!("no global model could be fitted; {LOCAL_NOT_EXPORTED}")});
    };
    let names = model.feature_names().to_vec();
    let meta = vec![
        ("quarry_version".to_string(), env!("CARGO_PKG_VERSION").to_string()),
        ("task".to_string(), "forecast".to_string()),
        ("target".to_string(), inp.target.to_string()),
        ("model".to_string(), name.clone()),
        ("strategy".to_string(), if model.is_direct() {
            "direct global model: one row per forecast step, all built from the same origin's history, with `step` (1..=horizon) as a feature".to_string()
        } else {
            "one-step global model; forecast recursively: append each prediction to the history and rebuild the lag features".to_string()
        }),
        ("inputs".to_string(), json!({
            "features": names,
            "scale": "the series' mean absolute observed value (1 when 0); values are divided by it (then logged for a log model)",
            "feature_units": "lags and rolling means are relative to `level` (the mean of the last season); calendar parts and the series code as in model/forecast.json",
        }).to_string()),
        ("ensemble_weight".to_string(), weight.to_string()),
        ("not_exported".to_string(), json!({"members": local, "reason": LOCAL_NOT_EXPORTED}).to_string()),
        ("dataset_hash".to_string(), inp.hash.to_string()),
    ];
    let bytes = match quarry_learners::onnx::export_global_forecast(&model, &meta) {
        Ok(b) => b,
        Err(e) => return json!({"exported": false, "reason": format!("{e}")}),
    };
    let path = inp.out_dir.join("model.onnx");
    if let Err(e) = std::fs::write(&path, bytes) {
        return json!({"exported": false, "reason": format!("writing {}: {e}", path.display())});
    }
    let rows = model.next_features(inp.views, inp.freq);
    let one = model.forecast(inp.views, inp.freq, &vec![1; inp.views.len()]);
    let check: Vec<serde_json::Value> = rows
        .iter()
        .zip(inp.views)
        .zip(&one)
        .filter_map(|((r, v), f)| {
            let r = r.as_ref()?;
            Some(json!({
                "features": r.iter().map(|x| x.is_finite().then_some(*x)).collect::<Vec<_>>(),
                "scale": v.scale,
                "expected": f.first().copied(),
            }))
        })
        .collect();
    let _ = write_json(&inp.out_dir.join("onnx_check.json"), &check);
    json!({
        "exported": true,
        "model": name,
        "ensemble_weight": weight,
        "what": "the one-step global model with its lag features as inputs (see the model's metadata); predict's forecasts are the full ensemble",
        "not_exported": local,
        "reason": if local.is_empty() { serde_json::Value::Null } else { json!(LOCAL_NOT_EXPORTED) },
    })
}

/// The forecast bundle of a run folder (or its `model/` folder), if it holds one.
pub fn bundle_path(dir: &Path) -> Option<PathBuf> {
    [dir.join("model/forecast.json"), dir.join("forecast.json")].into_iter().find(|p| p.exists())
}

fn format_time(t: i64) -> String {
    let c = civil_from_unix(t);
    if t.rem_euclid(86_400) == 0 {
        format!("{:04}-{:02}-{:02}", c.year, c.month, c.day)
    } else {
        format!("{:04}-{:02}-{:02} {:02}:{:02}:{:02}", c.year, c.month, c.day, c.hour, c.minute, c.second)
    }
}

pub fn predict(args: &PredictArgs, path: &Path) -> Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let bundle: Bundle = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a valid forecast bundle", path.display()))?;
    if bundle.format_version != BUNDLE_FORMAT_VERSION {
        bail!(
            "{}: forecast bundle format {} but this quarry reads format {}",
            path.display(),
            bundle.format_version,
            BUNDLE_FORMAT_VERSION
        );
    }
    let freq = bundle.frequency;
    // Requested (series index, step from the series' end starting at 0, time text) per output row.
    let mut wanted: Vec<(usize, usize, String)> = Vec::new();
    // Known covariates' future values per requested row, in `bundle.known_covariates` order.
    let mut future_known: Vec<Vec<f64>> = Vec::new();
    match &args.data {
        Some(data) => {
            let loaded = load_table(data)?;
            let table = &loaded.table;
            for c in &bundle.known_covariates {
                if table.column(c).is_none() {
                    bail!(
                        "{}: column {c:?} is missing; the model reads this known covariate's future values",
                        data.display()
                    );
                }
            }
            let index: std::collections::HashMap<&str, usize> =
                bundle.series.iter().enumerate().map(|(i, s)| (s.key.as_str(), i)).collect();
            for row in 0..table.n_rows {
                let t = parse_time(table, &bundle.time_column, row)
                    .with_context(|| data.display().to_string())?;
                let key = series_key(table, &bundle.series_id_columns, row)
                    .with_context(|| data.display().to_string())?
                    .join("|");
                let &i = index.get(key.as_str()).with_context(|| {
                    format!(
                        "{}: row {}: series {key:?} was not in the training data",
                        data.display(),
                        row + 1
                    )
                })?;
                let s = &bundle.series[i];
                let g = freq.index(t).with_context(|| {
                    format!(
                        "{}: row {}: time {} is not on the {} grid",
                        data.display(),
                        row + 1,
                        format_time(t),
                        freq.code()
                    )
                })?;
                if g < s.end() {
                    bail!(
                        "{}: row {}: time {} of series {key:?} is not after the end of the training data ({})",
                        data.display(),
                        row + 1,
                        format_time(t),
                        format_time(freq.time_at(s.end() - 1))
                    );
                }
                wanted.push((i, (g - s.end()) as usize, format_time(t)));
                future_known.push(
                    bundle
                        .known_covariates
                        .iter()
                        .map(|c| parse_number(table, c, row, "known covariate"))
                        .collect::<quarry_featurize::Result<_>>()
                        .with_context(|| data.display().to_string())?,
                );
            }
        }
        None => {
            if !bundle.known_covariates.is_empty() {
                bail!(
                    "the model reads known covariates {:?}: pass --data with their future values",
                    bundle.known_covariates
                );
            }
            let h = args.horizon.unwrap_or(bundle.horizon);
            for (i, s) in bundle.series.iter().enumerate() {
                for k in 0..h {
                    wanted.push((i, k, format_time(freq.time_at(s.end() + k as i64))));
                }
            }
        }
    }
    let mut steps = vec![0usize; bundle.series.len()];
    for (i, k, _) in &wanted {
        steps[*i] = steps[*i].max(k + 1);
    }
    // Covariates over history + requested steps: known ones from the file, the rest unknown.
    let mut covariates: Vec<Vec<Vec<f64>>> = bundle
        .series
        .iter()
        .zip(&steps)
        .map(|(s, &n)| {
            s.covariates
                .iter()
                .map(|c| c.iter().copied().chain(std::iter::repeat_n(f64::NAN, n)).collect())
                .collect()
        })
        .collect();
    for ((i, k, _), values) in wanted.iter().zip(&future_known) {
        let at = bundle.series[*i].values.len() + k;
        for (name, v) in bundle.known_covariates.iter().zip(values) {
            if let Some(c) = bundle.covariates.iter().position(|n| n == name)
                && let Some(slot) = covariates[*i].get_mut(c).and_then(|col| col.get_mut(at))
            {
                *slot = *v;
            }
        }
    }
    let views: Vec<SeriesView> = bundle
        .series
        .iter()
        .zip(&covariates)
        .map(|(s, c)| SeriesView::new(s.start, &s.values).with_covariates(c))
        .collect();
    let mut point: Vec<Vec<f64>> = steps.iter().map(|&n| vec![0.0; n]).collect();
    for member in &bundle.members {
        let f = member.model.forecast(&views, &freq, &steps);
        for (acc, fi) in point.iter_mut().zip(f) {
            for (a, v) in acc.iter_mut().zip(fi) {
                *a += member.weight * v;
            }
        }
    }
    let mut header: Vec<String> = bundle.series_id_columns.clone();
    header.push(bundle.time_column.clone());
    header.push("prediction".into());
    header.extend(bundle.quantiles.levels.iter().map(|q| format!("q{:02}", (q * 100.0).round() as i64)));
    let rows = wanted.iter().map(|(i, k, time)| {
        let s = &bundle.series[*i];
        let p = point[*i][*k];
        let mut row = s.ids.clone();
        row.push(time.clone());
        row.push(p.to_string());
        for q in 0..bundle.quantiles.levels.len() {
            row.push((p + bundle.quantiles.offset(*k, q) * views[*i].scale).to_string());
        }
        row
    });
    write_csv(&args.out, &header, rows)?;
    eprintln!("wrote {} forecasts to {}", wanted.len(), args.out.display());
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
