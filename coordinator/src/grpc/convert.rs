//! Conversions between `pb` types and the state machine's.

use quarry_proto::pb;

use crate::job::LeaderboardEntry;
use crate::state::{
    Artifact, Coordinator, Event, Job, JobSpec, JobState, LeasedKind, LeasedTask, PreparedShape,
};

pub(super) fn spec_from_pb(s: pb::JobSpec) -> JobSpec {
    JobSpec {
        experiment: s.experiment,
        dataset_hash: s.dataset_hash,
        file_name: s.file_name,
        target: s.target,
        task: s.task,
        metric: s.metric,
        seed: s.seed,
        budget_ms: s.budget_ms,
        max_trials: s.max_trials,
        scheduler: s.scheduler,
        column_types: s.column_types,
        drop_columns: s.drop_columns,
        group_column: s.group_column,
        column_types_file: s.column_types_file,
        searcher: s.searcher,
    }
}

pub(super) fn spec_to_pb(s: &JobSpec) -> pb::JobSpec {
    pb::JobSpec {
        experiment: s.experiment.clone(),
        dataset_hash: s.dataset_hash.clone(),
        file_name: s.file_name.clone(),
        target: s.target.clone(),
        task: s.task.clone(),
        metric: s.metric.clone(),
        seed: s.seed,
        budget_ms: s.budget_ms,
        max_trials: s.max_trials,
        scheduler: s.scheduler.clone(),
        column_types: s.column_types.clone(),
        drop_columns: s.drop_columns.clone(),
        group_column: s.group_column.clone(),
        column_types_file: s.column_types_file.clone(),
        searcher: s.searcher.clone(),
    }
}

pub(super) fn shape_to_pb(s: &PreparedShape) -> pb::DataShapeInfo {
    pb::DataShapeInfo {
        n_rows: s.n_rows,
        n_features: s.n_features,
        n_classes: s.n_classes,
        task: s.task.clone(),
        metric: s.metric.clone(),
        n_folds: s.n_folds,
        families: s.families.clone(),
    }
}

pub(super) fn shape_from_pb(s: pb::DataShapeInfo) -> PreparedShape {
    PreparedShape {
        n_rows: s.n_rows,
        n_features: s.n_features,
        n_classes: s.n_classes,
        task: s.task,
        metric: s.metric,
        n_folds: s.n_folds,
        families: s.families,
    }
}

pub(super) fn artifact_to_pb(a: &Artifact) -> pb::ArtifactInfo {
    pb::ArtifactInfo { name: a.name.clone(), hash: a.hash.clone(), size: a.size }
}

pub(super) fn artifact_from_pb(a: pb::ArtifactInfo) -> Artifact {
    Artifact { name: a.name, hash: a.hash, size: a.size }
}

pub fn entry_to_pb(e: &LeaderboardEntry) -> pb::LeaderboardEntry {
    pb::LeaderboardEntry {
        trial_id: e.id.0,
        family: e.family.clone(),
        params: quarry_proto::convert::params_to_pb(&e.params),
        metric: e.metric.clone(),
        validation_score: e.validation_score,
        fit_seconds: e.fit_seconds,
        status: quarry_proto::convert::status_to_pb(e.status) as i32,
        failure_reason: e.failure_reason.clone(),
        rounds: e.rounds.map(|r| r as u64),
    }
}

pub(super) fn state_to_pb(s: JobState) -> pb::JobState {
    match s {
        JobState::Queued => pb::JobState::Queued,
        JobState::Running => pb::JobState::Running,
        JobState::Completed => pb::JobState::Completed,
        JobState::Failed => pb::JobState::Failed,
        JobState::Cancelled => pb::JobState::Cancelled,
    }
}

pub(super) fn job_info(j: &Job) -> pb::JobInfo {
    let best = j.best();
    pb::JobInfo {
        id: j.id.clone(),
        spec: Some(spec_to_pb(&j.spec)),
        state: state_to_pb(j.state) as i32,
        phase: j.phase().to_string(),
        trials_finished: j.trials_finished(),
        trials_started: j.trials_started(),
        best_score: best.and_then(|b| b.validation_score),
        best_family: best.map(|b| b.family.clone()),
        reason: j.reason.clone(),
        created_unix_ms: j.created_ms,
        finished_unix_ms: j.finished_ms,
        shape: j.shape.as_ref().map(shape_to_pb),
    }
}

pub(super) fn leaderboard_pb(j: &Job) -> pb::Leaderboard {
    let board = j.leaderboard();
    let metric = board.first().map(|e| e.metric.clone()).unwrap_or_default();
    pb::Leaderboard { metric, entries: board.iter().map(entry_to_pb).collect() }
}

/// What watchers of each job hear about a batch of events.
pub(super) fn job_events(c: &Coordinator, events: &[Event]) -> Vec<(String, pb::job_event::Kind)> {
    use pb::job_event::Kind;
    let mut out = Vec::new();
    let mut touched: Vec<String> = Vec::new();
    for e in events {
        let job = match e {
            Event::TrialIssued { job, trial } => {
                if let Some(spec) = c
                    .job(job)
                    .and_then(|j| j.driver.as_ref())
                    .and_then(|d| d.spec(quarry_search::TrialId(*trial)))
                {
                    out.push((job.clone(), Kind::TrialStarted(pb::TrialSpec::from(spec))));
                }
                continue;
            }
            Event::TrialFinished { job, outcome, .. } => {
                let entry = c
                    .job(job)
                    .and_then(|j| j.driver.as_ref())
                    .and_then(|d| d.entries().iter().rev().find(|en| en.id == outcome.id));
                if let Some(entry) = entry {
                    out.push((job.clone(), Kind::TrialFinished(entry_to_pb(entry))));
                }
                job.clone()
            }
            Event::JobCreated { job, .. }
            | Event::SearchClosed { job }
            | Event::FinalizeQueued { job }
            | Event::JobFailed { job, .. }
            | Event::JobCancelled { job, .. }
            | Event::JobRetired { job, .. }
            | Event::Leased { job, .. }
            | Event::Released { job, .. }
            | Event::Prepared { job, .. }
            | Event::Finalized { job, .. } => job.clone(),
            Event::WorkerRegistered { .. } => continue,
        };
        if !job.is_empty() && !touched.contains(&job) {
            touched.push(job);
        }
    }
    for job in touched {
        if let Some(j) = c.job(&job) {
            out.push((job, Kind::Job(job_info(j))));
        }
    }
    out
}

pub(super) fn task_to_pb(t: LeasedTask) -> pb::Task {
    use pb::task::Kind;
    let kind = match t.kind {
        LeasedKind::Prepare => Kind::Prepare(pb::PrepareTask {}),
        LeasedKind::Trial { spec, shape, deadline_ms, remaining_ms } => Kind::Trial(pb::TrialTask {
            trial: Some(pb::TrialSpec::from(&spec)),
            shape: Some(shape_to_pb(&shape)),
            deadline_unix_ms: deadline_ms,
            deadline_remaining_ms: remaining_ms,
        }),
        LeasedKind::Finalize(f) => Kind::Finalize(pb::FinalizeTask {
            leaderboard: Some(pb::Leaderboard {
                metric: f.leaderboard.first().map(|e| e.metric.clone()).unwrap_or_default(),
                entries: f.leaderboard.iter().map(entry_to_pb).collect(),
            }),
            kept: f
                .kept
                .iter()
                .map(|(id, arts)| pb::TrialArtifacts {
                    trial_id: id.0,
                    artifacts: arts.iter().map(artifact_to_pb).collect(),
                })
                .collect(),
            prepare_artifacts: f.prepare_artifacts.iter().map(artifact_to_pb).collect(),
            shape: Some(shape_to_pb(&f.shape)),
            deadline_unix_ms: f.deadline_ms,
            elapsed_seconds: f.elapsed_seconds,
            deadline_remaining_ms: f.remaining_ms,
        }),
    };
    pb::Task {
        job_id: t.job,
        fencing_token: t.token,
        attempt: t.attempt,
        spec: Some(spec_to_pb(&t.spec)),
        kind: Some(kind),
    }
}
