//! `report.html`: a run folder's leaderboard, charts, importance and guardrails as one
//! self-contained page (styles, script and data inlined; no network needed to view it). It
//! uses the dashboard's own script, so the report and the job page draw the same charts.

use serde_json::{Value, json};

use super::pages::{data_script, esc};

/// What a run folder holds, as read from its JSON files.
#[derive(Debug, Default)]
pub struct RunFiles {
    pub run: Option<Value>,
    pub leaderboard: Option<Value>,
    pub guardrails: Option<Value>,
    pub explanations: Option<Value>,
}

/// Leaderboard rows as the dashboard's script reads them (`score`, finish times unknown).
fn entries(board: &Value) -> Vec<Value> {
    let rows = board.as_array().or_else(|| board["entries"].as_array()).cloned().unwrap_or_default();
    rows.iter()
        .map(|e| {
            json!({
                "id": e["id"],
                "family": e["family"],
                "params": e["params"],
                "score": e.get("validation_score").or_else(|| e.get("score")).cloned().unwrap_or(Value::Null),
                "fit_seconds": e["fit_seconds"],
                "status": e.get("status").cloned().unwrap_or_else(|| json!("completed")),
                "failure_reason": e["failure_reason"],
                "finished_unix_ms": Value::Null,
            })
        })
        .collect()
}

fn metric_higher_is_better(metric: &str) -> Option<bool> {
    quarry_featurize::Metric::parse(metric).ok().map(|m| m.higher_is_better())
}

/// The report page for a run folder's files.
pub fn render(files: &RunFiles) -> String {
    let run = files.run.clone().unwrap_or(Value::Null);
    let rows = files.leaderboard.as_ref().map(entries).unwrap_or_default();
    // Finish order is trial order in a local run (trials are numbered as they start).
    let mut finish: Vec<Value> = rows.clone();
    finish.sort_by_key(|e| e["id"].as_u64().unwrap_or(0));
    let order: Vec<Value> = rows.iter().map(|e| e["id"].clone()).collect();
    let text = |v: &Value| v.as_str().map(str::to_string).unwrap_or_default();
    let metric = text(&run["metric"]);
    let dataset = text(&run["dataset"]["path"]).to_string();
    let dataset = if dataset.is_empty() { text(&run["dataset"]) } else { dataset };
    let task = text(&run["task"]);
    let target = text(&run["target"]);
    let best = rows.iter().find(|e| e["status"] == "completed");
    let job = json!({
        "id": "report",
        "state": "completed",
        "phase": "done",
        "dataset": dataset,
        "target": target,
        "task": task,
        "metric": metric,
        "higher_is_better": metric_higher_is_better(&metric),
        "best_score": best.map(|b| b["score"].clone()),
        "best_family": best.map(|b| b["family"].clone()),
        "trials_finished": rows.len(),
        "trials_started": rows.len(),
        "elapsed_seconds": run.get("elapsed_seconds").cloned().unwrap_or(Value::Null),
        "created_unix_ms": 0,
        "artifacts": [],
    });
    let data = json!({
        "snapshot": { "job": job, "entries": finish, "order": order },
        "guardrails": files.guardrails,
        "importance": files.explanations,
        "profile": files.run,
    });
    let body = format!(
        "<h1>quarry run report</h1>\
         <p class=\"meta\">dataset <b id=\"dataset\">{dataset}</b> · target <b id=\"target\">{target}</b> · \
         task <b id=\"task\">{task}</b> · metric <b id=\"metric\">{metric}</b> · <span id=\"progress\"></span></p>\
         <section class=\"downloads\"><h2>Files in this folder</h2><ul id=\"downloads\"></ul></section>\
         <section class=\"charts\"><div><h2>Best score over trials</h2><div id=\"best-chart\" class=\"chart\"></div></div>\
         <div><h2>Score by family</h2><div id=\"family-chart\" class=\"chart\"></div></div></section>\
         <h2>Leaderboard</h2><table id=\"leaderboard\"><thead><tr><th>#</th><th>trial</th><th>family</th><th>score</th>\
         <th>status</th><th>fit s</th><th>params</th></tr></thead><tbody></tbody></table>\
         <section><h2>Feature importance</h2><div id=\"importance\"></div></section>\
         <section><h2>Guardrails and data profile</h2><div id=\"guardrails\"></div></section>",
        dataset = esc(&dataset),
        target = esc(&target),
        task = esc(&task),
        metric = esc(&metric),
    );
    // `</` cannot appear in the embedded script or styles (they are ours), but guard anyway.
    let js = super::pages::APP_JS.replace("</", "<\\/");
    let css = super::pages::STYLE_CSS.replace("</", "");
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>quarry report · {title}</title><style>{css}</style></head>\
         <body data-page=\"report\"><main>{body}</main>{data}<script>{js}</script></body></html>",
        title = esc(&dataset),
        data = data_script(&data),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_inlines_everything_and_escapes_data() {
        let files = RunFiles {
            run: Some(
                json!({ "metric": "roc_auc", "task": "binary", "target": "<img src=x onerror=alert(1)>",
                "dataset": { "path": "\"><script>alert(1)</script>.csv" } }),
            ),
            leaderboard: Some(json!([{ "id": 2, "family": "gbdt", "params": {}, "validation_score": 0.9,
                "fit_seconds": 0.1, "status": "completed" }, { "id": 1, "family": "linear", "params": {},
                "validation_score": 0.8, "fit_seconds": 0.1, "status": "completed" }])),
            guardrails: None,
            explanations: None,
        };
        let html = render(&files);
        assert!(!html.contains("<img src=x"), "unescaped column name");
        assert!(!html.contains("\"><script>alert"), "unescaped file name");
        assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));
        assert!(!html.contains("<link") && !html.contains(" src=\""), "no external references");
        assert!(html.contains("\"order\":[2,1]"));
    }
}
