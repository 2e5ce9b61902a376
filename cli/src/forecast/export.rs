//! `model.onnx` for a forecast run: the one-step global model with its lag features.

use super::*;

pub(super) struct ExportInput<'a> {
    pub(super) out_dir: &'a Path,
    pub(super) members: &'a [Member],
    pub(super) ok: &'a [&'a Candidate],
    pub(super) views: &'a [SeriesView<'a>],
    pub(super) freq: &'a Frequency,
    pub(super) m: usize,
    pub(super) seed: u64,
    pub(super) target: &'a str,
    pub(super) hash: &'a str,
}

pub(super) const LOCAL_NOT_EXPORTED: &str = "local models (naive, seasonal naive, ETS, ARIMA, Theta) keep per-series state and are not exported: each needs its own series' history and its own recursion, which a fixed ONNX graph over feature rows cannot express";

/// Writes `model.onnx`: the one-step global model (the heaviest global member of the ensemble,
/// else the best-validated global candidate refitted on all the history) with its lag features
/// as inputs, plus `onnx_check.json` (each series' next-point features, scale and quarry's
/// one-step forecast) so a runtime can be checked against quarry. Returns run.json's `onnx`.
pub(super) fn export_onnx(inp: &ExportInput) -> serde_json::Value {
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
