//! Running a leased task (prepare, trial, finalize) and reporting its result.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use quarry_learners::Pipeline;
use quarry_proto::convert::{params_from_pb, status_from_pb};
use quarry_proto::pb;
use quarry_search::{TrialId, TrialOutcome, TrialSpec, TrialStatus, keep_set};

use super::blobs::{decode_artifacts, encode_artifacts, get_blob, put_blob_retry};
use super::job_data::{JobData, job_data, shape_info};
use super::{HANG_GRACE, REPORT_EVERY, Shared, deadline_of, retry_result};
use crate::finalize::{FinishedTrial, RunFacts, run_record, write_run_folder};
use crate::run_files::{SummaryRows, search_summary_rows, write_run_explanations, write_run_onnx};
use crate::{KeptTrials, TrialArtifacts, WorkerError, final_members};

pub(super) async fn run_task(shared: &Arc<Shared>, task: pb::Task) -> Result<(), WorkerError> {
    let token = task.fencing_token;
    let data = job_data(shared, &task).await?;
    let (result, artifacts) = match task.kind.clone() {
        None => {
            return Err(WorkerError::Invalid(
                "task of an unknown kind (is this worker older than the coordinator?)".into(),
            ));
        }
        Some(pb::task::Kind::Prepare(_)) => {
            let guard = serde_json::to_vec_pretty(&data.guard)?;
            let artifact = put_blob_retry(shared, "guardrails.json", guard).await?;
            (
                pb::complete_request::Result::Prepare(pb::PrepareResult { shape: Some(shape_info(&data)) }),
                vec![artifact],
            )
        }
        Some(pb::task::Kind::Trial(t)) => {
            let trial = t.trial.as_ref().map_or(0, |s| s.trial_id);
            let done = run_trial(shared, &data, &task.job_id, token, t).await?;
            if crate::fault::drops_result(trial) {
                // A worker that gave up on sending the result: it keeps running, its lease does not.
                tracing::warn!(trial, token, "injected fault: dropping the result");
                return Ok(());
            }
            done
        }
        Some(pb::task::Kind::Finalize(f)) => run_finalize(shared, &data, &task, f).await?,
    };
    let ack = retry_result(shared, |c, worker_id| {
        let req = pb::CompleteRequest {
            worker_id,
            fencing_token: token,
            result: Some(result.clone()),
            artifacts: artifacts.clone(),
            // Slots lease with a long poll of their own.
            lease_next: false,
        };
        async move { c.clone().complete(req).await.map(|r| r.into_inner()) }
    })
    .await?;
    // The fault campaign (bench/chaos.py) checks every acknowledged result against the log.
    tracing::info!(job = %task.job_id, token, accepted = ack.accepted, "result acknowledged");
    Ok(())
}

pub(super) async fn run_trial(
    shared: &Arc<Shared>,
    data: &Arc<JobData>,
    job_id: &str,
    token: u64,
    task: pb::TrialTask,
) -> Result<(pb::complete_request::Result, Vec<pb::ArtifactInfo>), WorkerError> {
    let spec =
        TrialSpec::try_from(task.trial.ok_or(WorkerError::Invalid("trial task without a trial".into()))?)
            .map_err(|e| WorkerError::Invalid(e.to_string()))?;
    let timeout = shared.config.trial_timeout.map(|t| Instant::now() + t);
    let deadline = match (deadline_of(task.deadline_unix_ms, task.deadline_remaining_ms), timeout) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let handle = tokio::runtime::Handle::current();
    let client = shared.client.clone();
    let worker_id = shared.worker_id.read().await.clone();
    let runner_data = data.clone();
    let trial_id = spec.id;
    let started = Instant::now();
    let join = tokio::task::spawn_blocking(move || {
        let cancelled = move || deadline.is_some_and(|d| Instant::now() >= d);
        let mut last: Option<Instant> = None;
        let mut stop = false;
        let mut report = |resource: usize, loss: f64| {
            if stop {
                return false;
            }
            if last.is_some_and(|t| t.elapsed() < REPORT_EVERY) {
                return true;
            }
            last = Some(Instant::now());
            let req = pb::ProgressRequest {
                worker_id: worker_id.clone(),
                fencing_token: token,
                resource: resource as u64,
                loss,
            };
            // A blocking thread may wait on the runtime; an unreachable coordinator means go on.
            if let Ok(r) = handle.block_on(client.clone().report_progress(req)) {
                stop = r.into_inner().stop;
            }
            !stop
        };
        runner_data.runner.run(&spec, &cancelled, &mut report)
    });
    let joined = match deadline {
        Some(d) => tokio::time::timeout_at((d + HANG_GRACE).into(), join).await.ok(),
        None => Some(join.await),
    };
    let (outcome, artifacts) = match joined {
        Some(r) => r.map_err(|e| WorkerError::Invalid(format!("trial thread: {e}")))?,
        None => {
            // A fit that ignores its deadline cannot be stopped from outside: leave its thread
            // behind and drop the job's runner, whose pool that thread holds, so the next task
            // of the job prepares a fresh one.
            tracing::error!(job = %job_id, trial = trial_id.0, "trial hung past its deadline; its thread is abandoned");
            if let Ok(mut jobs) = shared.jobs.lock() {
                jobs.retain(|(id, _)| id != job_id);
            }
            let outcome = TrialOutcome {
                id: trial_id,
                status: TrialStatus::Failed,
                score: None,
                fit_seconds: started.elapsed().as_secs_f64(),
                rounds: None,
                failure_reason: Some(format!(
                    "hung: still running {} s past its deadline; abandoned",
                    HANG_GRACE.as_secs()
                )),
            };
            (outcome, TrialArtifacts::default())
        }
    };
    let mut uploaded = Vec::new();
    if outcome.status == TrialStatus::Completed {
        for (name, bytes) in encode_artifacts(&artifacts)? {
            uploaded.push(put_blob_retry(shared, name, bytes).await?);
        }
    }
    Ok((pb::complete_request::Result::Trial(pb::TrialOutcome::from(&outcome)), uploaded))
}

pub(super) fn finished_of(e: pb::LeaderboardEntry) -> Result<FinishedTrial, WorkerError> {
    Ok(FinishedTrial {
        id: TrialId(e.trial_id),
        family: e.family,
        params: params_from_pb(e.params),
        metric: e.metric,
        validation_score: e.validation_score,
        fit_seconds: e.fit_seconds,
        status: status_from_pb(e.status).map_err(|e| WorkerError::Invalid(e.to_string()))?,
        failure_reason: e.failure_reason,
        rounds: e.rounds.map(|r| r as usize),
    })
}

pub(super) async fn run_finalize(
    shared: &Arc<Shared>,
    data: &Arc<JobData>,
    task: &pb::Task,
    f: pb::FinalizeTask,
) -> Result<(pb::complete_request::Result, Vec<pb::ArtifactInfo>), WorkerError> {
    let spec = task.spec.clone().unwrap_or_default();
    let board: Vec<FinishedTrial> = f
        .leaderboard
        .map(|l| l.entries)
        .unwrap_or_default()
        .into_iter()
        .map(finished_of)
        .collect::<Result<_, _>>()?;
    let losses: HashMap<TrialId, (&str, f64)> = board
        .iter()
        .filter_map(|e| e.validation_score.map(|s| (e.id, (e.family.as_str(), data.metric.to_loss(s)))))
        .collect();
    // The same candidates `quarry fit` keeps: completed trials offered in id order.
    let mut completed: Vec<(TrialId, String, f64)> = board
        .iter()
        .filter(|e| e.status == TrialStatus::Completed)
        .filter_map(|e| losses.get(&e.id).map(|(f, l)| (e.id, f.to_string(), *l)))
        .collect();
    completed.sort_by_key(|c| c.0);
    let keep = keep_set(&completed);
    let mut kept = KeptTrials::default();
    for t in &f.kept {
        let id = TrialId(t.trial_id);
        if !keep.contains(&id) {
            continue;
        }
        let Some((family, loss)) = losses.get(&id) else { continue };
        let mut oof = None;
        let mut models = None;
        for a in &t.artifacts {
            let bytes = get_blob(shared.client.clone(), &a.hash).await?;
            match a.name.as_str() {
                "oof" => oof = Some(bytes),
                "fold_models" => models = Some(bytes),
                _ => {}
            }
        }
        let Some(models) = models else { continue };
        kept.insert(id, family, *loss, decode_artifacts(oof.as_deref(), &models)?);
    }
    let deadline = deadline_of(f.deadline_unix_ms, f.deadline_remaining_ms);
    quarry_featurize::safe_name(&task.job_id)
        .map_err(|why| WorkerError::Invalid(format!("job id {:?}: {why}", task.job_id)))?;
    let dir = shared.config.cache_dir.join(format!("run-{}-{}", task.job_id, task.fencing_token));
    let data2 = data.clone();
    let dir2 = dir.clone();
    let elapsed = f.elapsed_seconds;
    tokio::task::spawn_blocking(move || -> Result<(), WorkerError> {
        let data = data2;
        let (final_model, members) =
            final_members(&data.runner, data.metric, kept, &board, deadline, spec.seed)?;
        let pipeline =
            Pipeline::new(data.task, data.metric, data.featurizer.clone(), data.encoder.clone(), members);
        std::fs::create_dir_all(&dir2).map_err(|error| WorkerError::Io { path: dir2.clone(), error })?;
        let onnx =
            write_run_onnx(&dir2, &pipeline, data.dataset["content_hash"].as_str().unwrap_or_default())?;
        let mut record = run_record(&RunFacts {
            dataset: data.dataset.clone(),
            target: &spec.target,
            pipeline: &pipeline,
            n_features: data.shape.n_features,
            validation: data.validation,
            grouped_by: data.grouped_by.as_deref(),
            seed: spec.seed,
            budget_seconds: spec.budget_ms.map(|b| b as f64 / 1000.0),
            max_trials: spec.max_trials.map(|m| m as usize),
            threads: data.threads,
            board: &board,
            final_model: &final_model,
            elapsed_seconds: elapsed,
        });
        if let Some(r) = record.as_object_mut() {
            r.insert("onnx".into(), onnx);
        }
        write_run_folder(&dir2, &pipeline, &board, &data.guard, &record)?;
        // The same explanations.json as `quarry fit` (same rows, seed and code).
        let (sx, sy, description) = search_summary_rows(data.runner.data(), spec.seed);
        let rows = SummaryRows { x: &sx, y: &sy, description: description.into() };
        write_run_explanations(&dir2, &pipeline, &data.runner.data().x, rows, deadline, spec.seed)
    })
    .await
    .map_err(|e| WorkerError::Invalid(format!("finalize thread: {e}")))??;
    let mut uploaded = Vec::new();
    for file in files_under(&dir)? {
        let bytes = std::fs::read(&file).map_err(|error| WorkerError::Io { path: file.clone(), error })?;
        let name = file.strip_prefix(&dir).unwrap_or(&file).to_string_lossy().replace('\\', "/");
        uploaded.push(put_blob_retry(shared, &name, bytes).await?);
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok((pb::complete_request::Result::Finalize(pb::FinalizeResult {}), uploaded))
}

pub(super) fn files_under(dir: &Path) -> Result<Vec<PathBuf>, WorkerError> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|error| WorkerError::Io { path: d.clone(), error })?;
        for e in entries {
            let p = e.map_err(|error| WorkerError::Io { path: d.clone(), error })?.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}
