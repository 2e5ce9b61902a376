//! The JSON the API answers and the pages embed, built from the state under one short lock.

use quarry_featurize::Metric;
use quarry_search::TrialStatus;
use serde_json::{Value, json};

use super::ApiError;
use super::live::Live;
use crate::job::LeaderboardEntry;
use crate::state::{Artifact, Coordinator, Job, JobState};

pub fn state_name(s: JobState) -> &'static str {
    match s {
        JobState::Queued => "queued",
        JobState::Running => "running",
        JobState::Completed => "completed",
        JobState::Failed => "failed",
        JobState::Cancelled => "cancelled",
    }
}

fn status_name(s: TrialStatus) -> &'static str {
    match s {
        TrialStatus::Completed => "completed",
        TrialStatus::Failed => "failed",
        TrialStatus::Cancelled => "cancelled",
        TrialStatus::Pruned => "pruned",
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The job's metric: the prepared one, else the asked one; `None` before it is known.
fn metric_of(j: &Job) -> Option<Metric> {
    let name =
        j.shape.as_ref().map(|s| s.metric.as_str()).filter(|m| !m.is_empty()).unwrap_or(&j.spec.metric);
    Metric::parse(name).ok()
}

/// One row of the jobs list (also the header of a job's page).
pub fn job_summary(j: &Job) -> Value {
    let best = j.best();
    let end = j.finished_ms.unwrap_or_else(now_ms);
    let metric = metric_of(j);
    json!({
        "id": j.id,
        "state": state_name(j.state),
        "phase": j.phase(),
        "experiment": j.spec.experiment,
        "dataset": j.spec.file_name,
        "dataset_hash": j.spec.dataset_hash,
        "target": j.spec.target,
        "task": j.shape.as_ref().map(|s| s.task.clone()).filter(|t| !t.is_empty()).unwrap_or_else(|| {
            if j.spec.task.is_empty() { "auto".into() } else { j.spec.task.clone() }
        }),
        "metric": metric.map(|m| m.name()),
        "higher_is_better": metric.map(|m| m.higher_is_better()),
        "budget_ms": j.spec.budget_ms,
        "max_trials": j.spec.max_trials,
        "best_score": best.and_then(|b| b.validation_score),
        "best_family": best.map(|b| b.family.clone()),
        "trials_finished": j.trials_finished(),
        "trials_started": j.trials_started(),
        "created_unix_ms": j.created_ms,
        "started_unix_ms": j.started_ms,
        "finished_unix_ms": j.finished_ms,
        "elapsed_seconds": end.saturating_sub(j.created_ms) as f64 / 1000.0,
        "reason": j.reason,
        "n_rows": j.shape.as_ref().map(|s| s.n_rows),
        "n_features": j.shape.as_ref().map(|s| s.n_features),
        "artifacts": j.final_artifacts.iter().map(artifact_json).collect::<Vec<_>>(),
    })
}

pub fn artifact_json(a: &Artifact) -> Value {
    json!({ "name": a.name, "size": a.size, "sha256": a.hash })
}

pub fn entry_json(e: &LeaderboardEntry, finished_ms: Option<u64>) -> Value {
    json!({
        "id": e.id.0,
        "family": e.family,
        "params": e.params,
        "score": e.validation_score,
        "fit_seconds": e.fit_seconds,
        "status": status_name(e.status),
        "failure_reason": e.failure_reason,
        "rounds": e.rounds,
        "finished_unix_ms": finished_ms,
    })
}

pub fn job<'a>(c: &'a Coordinator, id: &str) -> Result<&'a Job, ApiError> {
    c.job(id).ok_or_else(|| ApiError::not_found(format!("unknown job {id:?}")))
}

/// Trials finished from index `from` on (finish order), and every finished trial's id in
/// leaderboard order: the live page appends the first and reorders by the second.
pub fn leaderboard_since(j: &Job, live: &Live, from: usize) -> Value {
    let entries = j.driver.as_ref().map(|d| d.entries()).unwrap_or_default();
    let times = live.finish_times(&j.id);
    let new: Vec<Value> = entries
        .iter()
        .enumerate()
        .skip(from)
        .map(|(i, e)| entry_json(e, times.get(i).copied().flatten()))
        .collect();
    let order: Vec<u64> = j.leaderboard().iter().map(|e| e.id.0).collect();
    json!({
        "job": job_summary(j),
        "from": from.min(entries.len()),
        "count": entries.len(),
        "entries": new,
        "order": order,
    })
}

/// The leaderboard, best first.
pub fn leaderboard(j: &Job, live: &Live) -> Value {
    let entries = j.driver.as_ref().map(|d| d.entries()).unwrap_or_default();
    let times = live.finish_times(&j.id);
    let time_of =
        |id: u64| entries.iter().position(|e| e.id.0 == id).and_then(|i| times.get(i).copied().flatten());
    let metric = metric_of(j);
    let rows: Vec<Value> = j
        .leaderboard()
        .iter()
        .enumerate()
        .map(|(rank, e)| {
            let mut v = entry_json(e, time_of(e.id.0));
            v["rank"] = json!(rank + 1);
            v
        })
        .collect();
    json!({
        "job": j.id,
        "metric": metric.map(|m| m.name()),
        "higher_is_better": metric.map(|m| m.higher_is_better()),
        "entries": rows,
    })
}

/// A trial: its leaderboard entry once finished, its configuration while in flight, and the
/// per-round losses its worker reported.
pub fn trial(j: &Job, live: &Live, trial: u64, curve: Vec<(u64, f64)>) -> Result<Value, ApiError> {
    let driver = j.driver.as_ref();
    let entries = driver.map(|d| d.entries()).unwrap_or_default();
    let times = live.finish_times(&j.id);
    let finished = entries
        .iter()
        .position(|e| e.id.0 == trial)
        .map(|i| entry_json(&entries[i], times.get(i).copied().flatten()));
    let spec = driver.and_then(|d| d.spec(quarry_search::TrialId(trial)));
    if finished.is_none() && spec.is_none() {
        return Err(ApiError::not_found(format!("job {} has no trial {trial}", j.id)));
    }
    let rank = j.leaderboard().iter().position(|e| e.id.0 == trial).map(|r| r + 1);
    Ok(json!({
        "job": job_summary(j),
        "trial": trial,
        "rank": rank,
        "in_flight": finished.is_none(),
        "family": spec.map(|s| s.family.clone()).or_else(|| finished.as_ref().map(|f| f["family"].as_str().unwrap_or_default().to_string())),
        "params": spec.map(|s| json!(s.config)).or_else(|| finished.as_ref().map(|f| f["params"].clone())),
        "seed": spec.map(|s| s.seed),
        "entry": finished,
        "curve": curve.iter().map(|&(r, l)| json!([r, l])).collect::<Vec<_>>(),
    }))
}

/// Quotes a CSV field when it needs it (RFC 4180).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() }
}

pub fn leaderboard_csv(j: &Job) -> String {
    let mut out = String::from(
        "rank,trial_id,family,status,metric,validation_score,fit_seconds,params,failure_reason\n",
    );
    for (rank, e) in j.leaderboard().iter().enumerate() {
        let params = serde_json::to_string(&e.params).unwrap_or_default();
        let fields = [
            (rank + 1).to_string(),
            e.id.0.to_string(),
            e.family.clone(),
            status_name(e.status).to_string(),
            e.metric.clone(),
            e.validation_score.map(|s| s.to_string()).unwrap_or_default(),
            e.fit_seconds.to_string(),
            params,
            e.failure_reason.clone().unwrap_or_default(),
        ];
        let row: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        out.push_str(&row.join(","));
        out.push('\n');
    }
    out
}

/// The hash of a job artifact by name: a final one, else one from prepare (guardrails.json is
/// known before the search starts).
pub fn artifact_hash(j: &Job, name: &str) -> Option<String> {
    j.final_artifacts
        .iter()
        .chain(j.prepare_artifacts.iter())
        .find(|a| a.name == name)
        .map(|a| a.hash.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        assert_eq!(csv_field("gbdt"), "gbdt");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\"\n"), "\"say \"\"hi\"\"\n\"");
    }
}
