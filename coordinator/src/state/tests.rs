#![allow(clippy::unwrap_used, clippy::panic)]

use quarry_search::{TrialId, TrialOutcome, TrialSpec, TrialStatus};

use super::*;

const TTL: Duration = Duration::from_secs(10);

fn spec(max_trials: u64) -> JobSpec {
    JobSpec {
        dataset_hash: "abc".into(),
        file_name: "d.csv".into(),
        target: "y".into(),
        seed: 5,
        max_trials: Some(max_trials),
        ..JobSpec::default()
    }
}

fn shape() -> PreparedShape {
    PreparedShape {
        n_rows: 200,
        n_features: 4,
        n_classes: 2,
        task: "binary".into(),
        metric: "roc_auc".into(),
        n_folds: 5,
        families: vec!["gbdt".into(), "linear".into()],
    }
}

fn outcome(spec: &TrialSpec) -> TrialOutcome {
    TrialOutcome {
        id: spec.id,
        status: TrialStatus::Completed,
        score: Some(0.6 + (spec.id.0 % 7) as f64 / 100.0),
        fit_seconds: 0.1,
        rounds: None,
        failure_reason: None,
    }
}

/// A coordinator with one job past its prepare task, and every event it logged.
fn prepared(max_trials: u64, now: Now) -> (Coordinator, String, String, Vec<Event>) {
    let mut c = Coordinator::new(TTL);
    let w = c.register("w", 0, 1, now);
    let job = c.create_job(spec(max_trials), now).unwrap();
    let t = c.lease_task(&w, now).unwrap().unwrap();
    assert!(matches!(t.kind, LeasedKind::Prepare));
    c.complete(t.token, TaskResult::Prepare(shape()), vec![], now).unwrap();
    let events = c.take_pending();
    (c, w, job, events)
}

fn trial_of(t: &LeasedTask) -> TrialSpec {
    match &t.kind {
        LeasedKind::Trial { spec, .. } => spec.clone(),
        other => panic!("expected a trial, got {other:?}"),
    }
}

#[test]
fn a_queued_job_waits_for_running_ones_and_its_budget_starts_at_its_first_lease() {
    let now = Now::system();
    let mut c = Coordinator::new(TTL);
    let w = c.register("w", 0, 1, now);
    let budget = |c: &mut Coordinator| {
        let s = JobSpec { budget_ms: Some(60_000), max_trials: None, ..spec(0) };
        c.create_job(s, now).unwrap()
    };
    let (first, second) = (budget(&mut c), budget(&mut c));
    let t = c.lease_task(&w, now).unwrap().unwrap();
    assert_eq!((t.job.as_str(), matches!(t.kind, LeasedKind::Prepare)), (first.as_str(), true));
    c.complete(t.token, TaskResult::Prepare(shape()), vec![], now).unwrap();
    // The first job always has another trial to give, so the second stays queued.
    for k in 0..3 {
        let t = c.lease_task(&w, now.plus_ms(k * 1000)).unwrap().unwrap();
        assert_eq!(t.job, first, "lease {k}");
    }
    assert_eq!(c.job(&second).unwrap().state, JobState::Queued);
    assert_eq!(c.job(&second).unwrap().started_ms, None);
    // Another worker with nothing left of the first job (a closed search) starts the second;
    // its budget counts from then, not from its submission.
    c.cancel(&first, now).unwrap();
    let later = now.plus_ms(50_000);
    let t = c.lease_task(&w, later).unwrap().unwrap();
    assert_eq!((t.job.as_str(), matches!(t.kind, LeasedKind::Prepare)), (second.as_str(), true));
    let j = c.job(&second).unwrap();
    assert_eq!((j.state, j.started_ms), (JobState::Running, Some(later.unix_ms)));
    assert_eq!(j.deadline_ms(), Some(later.unix_ms + 60_000));
    // Replaying the log gives the same start (the lease carries its time).
    let events = c.take_pending();
    let mut replayed = Coordinator::new(TTL);
    for e in &events {
        replayed.apply(e, Now::system(), true);
    }
    assert_eq!(replayed.job(&second).unwrap().started_ms, Some(later.unix_ms));
}

#[test]
fn an_evicted_blob_that_another_trial_holds_is_not_garbage() {
    let now = Now::system();
    let (mut c, w, _job, _) = prepared(60, now);
    let artifact = |hash: &str| Artifact { name: "oof.bin".into(), hash: hash.into(), size: 1 };
    let mut garbage = Vec::new();
    for n in 1..=60u64 {
        let t = c.lease_task(&w, now).unwrap().unwrap();
        let spec = trial_of(&t);
        // Trial 1 scores worst and trial 2 best, with the same bytes; the rest in between.
        let (score, hash) = match n {
            1 => (0.01, "shared".to_string()),
            2 => (0.99, "shared".to_string()),
            _ => (0.5 + n as f64 / 1000.0, format!("h{n}")),
        };
        let outcome = TrialOutcome { score: Some(score), ..outcome(&spec) };
        c.complete(t.token, TaskResult::Trial(outcome), vec![artifact(&hash)], now).unwrap();
        garbage.extend(c.take_garbage());
    }
    assert!(!garbage.is_empty(), "nothing was evicted; the test needs more trials");
    assert!(!garbage.contains(&"shared".to_string()), "{garbage:?}");
    assert!(c.referenced_blobs().any(|h| h == "shared"));
    assert!(garbage.iter().all(|h| !c.referenced_blobs().any(|r| r == h)));
}

#[test]
fn gpu_trials_go_to_gpu_workers_when_there_are_any_and_to_cpu_workers_otherwise() {
    let now = Now::system();
    let mut c = Coordinator::new(TTL);
    let cpu = c.register("cpu", 0, 1, now);
    let job = c.create_job(spec(40), now).unwrap();
    let t = c.lease_task(&cpu, now).unwrap().unwrap();
    let mlp_shape = PreparedShape { families: vec!["mlp".into()], ..shape() };
    c.complete(t.token, TaskResult::Prepare(mlp_shape), vec![], now).unwrap();
    // Only CPU workers: the MLP trial is theirs.
    let t = c.lease_task(&cpu, now).unwrap().unwrap();
    assert_eq!(trial_of(&t).family, "mlp");
    // With a GPU worker registered, CPU workers leave MLP trials to it.
    let gpu = c.register("gpu", 1, 1, now);
    assert!(c.lease_task(&cpu, now).unwrap().is_none());
    let t = c.lease_task(&gpu, now).unwrap().unwrap();
    assert_eq!((t.job.as_str(), trial_of(&t).family.as_str()), (job.as_str(), "mlp"));
}

#[test]
fn a_departed_gpu_worker_strands_no_gpu_trial_and_a_busy_one_only_for_a_bounded_wait() {
    let now = Now::system();
    let mut c = Coordinator::new(TTL);
    let cpu = c.register("cpu", 0, 1, now);
    let gpu = c.register("gpu", 1, 1, now);
    c.create_job(spec(40), now).unwrap();
    let t = c.lease_task(&cpu, now).unwrap().unwrap();
    let mlp_shape = PreparedShape { families: vec!["mlp".into()], ..shape() };
    c.complete(t.token, TaskResult::Prepare(mlp_shape), vec![], now).unwrap();
    // The GPU worker is live: the CPU worker leaves the MLP trial to it.
    assert!(c.lease_task(&cpu, now).unwrap().is_none());
    // The GPU worker stays live (it heartbeats) but takes nothing: after the bounded wait the
    // CPU worker takes the trial.
    let busy = now.plus_ms(GPU_FALLBACK_WAIT.as_millis() as u64 - 1);
    c.heartbeat(&gpu, &[], busy).unwrap();
    assert!(c.lease_task(&cpu, busy).unwrap().is_none());
    let waited = now.plus_ms(GPU_FALLBACK_WAIT.as_millis() as u64);
    c.heartbeat(&gpu, &[], waited).unwrap();
    assert_eq!(trial_of(&c.lease_task(&cpu, waited).unwrap().unwrap()).family, "mlp");
    // A new MLP trial waits for the live GPU worker again...
    assert!(c.lease_task(&cpu, waited).unwrap().is_none());
    // ...until the GPU worker is silent for a TTL: a departed worker counts for nothing.
    let gone = waited.plus_ms(TTL.as_millis() as u64 + 1);
    assert_eq!(trial_of(&c.lease_task(&cpu, gone).unwrap().unwrap()).family, "mlp");
}

#[test]
fn a_heartbeat_renews_only_the_leases_it_names() {
    let now = Now::system();
    let (mut c, w, _, _) = prepared(4, now);
    let kept = c.lease_task(&w, now).unwrap().unwrap();
    let dropped = c.lease_task(&w, now).unwrap().unwrap();
    // Another worker's token named by this worker is ignored.
    let other = c.register("other", 0, 1, now);
    let theirs = c.lease_task(&other, now).unwrap().unwrap();
    let later = now.plus_ms(TTL.as_millis() as u64 - 1);
    c.heartbeat(&w, &[kept.token, theirs.token], later).unwrap();
    assert_eq!(c.expire(now.plus_ms(TTL.as_millis() as u64 + 5)), 2);
    assert!(c.lease(kept.token).is_some());
    assert!(c.lease(dropped.token).is_none() && c.lease(theirs.token).is_none());
}

#[test]
fn no_lease_is_renewed_past_its_jobs_deadline_plus_grace() {
    let now = Now::system();
    let mut c = Coordinator::new(TTL);
    let w = c.register("w", 0, 1, now);
    let budget = 20_000;
    c.create_job(JobSpec { budget_ms: Some(budget), max_trials: None, ..spec(0) }, now).unwrap();
    let t = c.lease_task(&w, now).unwrap().unwrap();
    c.complete(t.token, TaskResult::Prepare(shape()), vec![], now).unwrap();
    let task = c.lease_task(&w, now).unwrap().unwrap();
    // The worker names the lease in every heartbeat, for ever.
    let end = budget + LEASE_GRACE.as_millis() as u64;
    let mut at = 0;
    while at < end {
        at += 1_000;
        c.heartbeat(&w, &[task.token], now.plus_ms(at)).unwrap();
        c.expire(now.plus_ms(at));
    }
    assert!(c.lease(task.token).is_none(), "the lease outlived the job's deadline + grace");
    // Before the cap it held.
    let (mut c, w, _, _) = prepared(1, now);
    let task = c.lease_task(&w, now).unwrap().unwrap();
    c.heartbeat(&w, &[task.token], now.plus_ms(end)).unwrap();
    assert_eq!(c.expire(now.plus_ms(end + 1)), 0, "a job without a budget has no cap");
}

#[test]
fn expired_lease_is_retried_then_recorded_failed_after_the_limit() {
    let now = Now::system();
    let (mut c, w, job, _) = prepared(1, now);
    let mut t = now;
    for attempt in 1..=MAX_ATTEMPTS {
        let task = c.lease_task(&w, t).unwrap().unwrap();
        assert_eq!(task.attempt, attempt);
        assert_eq!(trial_of(&task).id, TrialId(1));
        // Silent past the deadline.
        t = t.plus_ms(TTL.as_millis() as u64 + 1);
        assert_eq!(c.expire(t), 1);
    }
    let j = c.job(&job).unwrap();
    let board = j.leaderboard();
    assert_eq!(board.len(), 1);
    assert_eq!(board[0].status, TrialStatus::Failed);
    assert!(board[0].failure_reason.as_deref().unwrap().contains("gave up after 3 attempts: lease expired"));
    // The only trial failed: nothing to finalize.
    assert_eq!(j.state, JobState::Failed);
    assert!(j.reason.as_deref().unwrap().starts_with("every trial failed"));
}

#[test]
fn heartbeat_keeps_a_lease_alive() {
    let now = Now::system();
    let (mut c, w, _, _) = prepared(1, now);
    let task = c.lease_task(&w, now).unwrap().unwrap();
    let later = now.plus_ms(TTL.as_millis() as u64 - 1);
    c.heartbeat(&w, &[task.token], later).unwrap();
    assert_eq!(c.expire(now.plus_ms(TTL.as_millis() as u64 + 5)), 0);
    assert!(c.lease(task.token).is_some());
    assert_eq!(c.heartbeat("nobody", &[], now), Err(StateError::UnknownWorker("nobody".into())));
}

#[test]
fn stale_fencing_token_is_rejected() {
    let now = Now::system();
    let (mut c, w, job, _) = prepared(1, now);
    let first = c.lease_task(&w, now).unwrap().unwrap();
    let t = now.plus_ms(TTL.as_millis() as u64 + 1);
    c.expire(t);
    let second = c.lease_task(&w, t).unwrap().unwrap();
    assert_ne!(second.token, first.token);
    let spec = trial_of(&first);
    // The first holder finishes late: rejected, nothing recorded.
    assert_eq!(
        c.complete(first.token, TaskResult::Trial(outcome(&spec)), vec![], t),
        Err(StateError::StaleLease(first.token))
    );
    assert!(c.progress(first.token, 10, 0.5, t), "a stale lease is told to stop");
    assert_eq!(c.job(&job).unwrap().trials_finished(), 0);
    c.complete(second.token, TaskResult::Trial(outcome(&spec)), vec![], t).unwrap();
    assert_eq!(c.job(&job).unwrap().trials_finished(), 1);
    // A result of the wrong kind is refused too.
    let fin = c.lease_task(&w, t).unwrap().unwrap();
    assert!(matches!(fin.kind, LeasedKind::Finalize(_)));
    assert!(matches!(
        c.complete(fin.token, TaskResult::Prepare(shape()), vec![], t),
        Err(StateError::WrongResult { .. })
    ));
}

/// Runs `max_trials` trials with `workers` workers finishing in a rotating order; returns
/// the coordinator and the log.
fn run_job(workers: usize, max_trials: u64, stop_after: Option<usize>) -> (Coordinator, Vec<Event>, String) {
    let now = Now::system();
    let (mut c, _, job, mut log) = prepared(max_trials, now);
    let ws: Vec<String> = (0..workers).map(|i| c.register(&format!("w{i}"), 0, 1, now)).collect();
    let mut running: Vec<LeasedTask> = Vec::new();
    let mut steps = 0;
    loop {
        for w in &ws {
            if running.len() < workers
                && let Some(t) = c.lease_task(w, now).unwrap()
            {
                running.push(t);
            }
        }
        log.extend(c.take_pending());
        if running.is_empty() || stop_after.is_some_and(|s| steps >= s) {
            break;
        }
        let t = running.remove(steps % running.len());
        steps += 1;
        let result = match &t.kind {
            LeasedKind::Trial { spec, .. } => TaskResult::Trial(outcome(spec)),
            LeasedKind::Finalize(input) => {
                assert_eq!(input.leaderboard.len() as u64, max_trials);
                TaskResult::Finalize
            }
            LeasedKind::Prepare => panic!("prepared twice"),
        };
        let art = vec![Artifact { name: "oof".into(), hash: format!("{}", t.token), size: 1 }];
        c.complete(t.token, result, art, now).unwrap();
        log.extend(c.take_pending());
    }
    (c, log, job)
}

fn snapshot(c: &Coordinator, job: &str) -> (JobState, &'static str, Vec<LeaderboardEntry>, u64, Vec<u64>) {
    let j = c.job(job).unwrap();
    let mut tokens: Vec<u64> = c.leases().map(|l| l.token).collect();
    tokens.sort_unstable();
    (j.state, j.phase(), j.leaderboard(), j.trials_started(), tokens)
}

#[test]
fn a_job_runs_to_completion_with_three_workers() {
    let (c, log, job) = run_job(3, 12, None);
    let j = c.job(&job).unwrap();
    assert_eq!(j.state, JobState::Completed);
    assert_eq!(j.trials_finished(), 12);
    let ids: std::collections::BTreeSet<u64> = j.leaderboard().iter().map(|e| e.id.0).collect();
    assert_eq!(ids, (1..=12).collect());
    // The event log is serialisable as the server writes it.
    for e in &log {
        let bytes = serde_json::to_vec(e).unwrap();
        assert_eq!(&serde_json::from_slice::<Event>(&bytes).unwrap(), e);
    }
}

#[test]
fn replay_after_restart_gives_the_same_state() {
    // Stop mid-job with trials in flight.
    let (c, log, job) = run_job(3, 12, Some(7));
    let later = Now::system().plus_ms(5_000);
    let mut r = Coordinator::replay(TTL, log.clone(), later);
    assert_eq!(snapshot(&r, &job), snapshot(&c, &job));
    // In-flight leases got a fresh deadline, and the next token is past every logged one.
    for l in r.leases() {
        assert_eq!(l.expires, later.instant + TTL);
    }
    let max_token = c.leases().map(|l| l.token).max().unwrap();
    assert!(r.is_worker("w1"));
    assert!(r.epoch() > epoch_of(max_token));
    // Finishing on the replayed state completes the job with every trial exactly once.
    let mut open: Vec<u64> = r.leases().map(|l| l.token).collect();
    open.sort_unstable();
    let mut guard = 0;
    while r.job(&job).unwrap().state != JobState::Completed {
        guard += 1;
        assert!(guard < 100);
        let token = match open.pop() {
            Some(t) => t,
            None => r.lease_task("w1", later).unwrap().unwrap().token,
        };
        let l = r.lease(token).unwrap().clone();
        let result = match l.task {
            TaskKey::Trial(t) => {
                let spec = r.job(&job).unwrap().driver.as_ref().unwrap().spec(TrialId(t)).unwrap().clone();
                TaskResult::Trial(outcome(&spec))
            }
            TaskKey::Finalize => TaskResult::Finalize,
            TaskKey::Prepare => panic!("prepared twice"),
        };
        r.complete(token, result, vec![], later).unwrap();
    }
    let ids: Vec<u64> = {
        let mut v: Vec<u64> = r.job(&job).unwrap().leaderboard().iter().map(|e| e.id.0).collect();
        v.sort_unstable();
        v
    };
    assert_eq!(ids, (1..=12).collect::<Vec<_>>());
}

#[test]
fn the_leaderboard_does_not_depend_on_the_number_of_workers() {
    let strip = |c: &Coordinator, job: &str| {
        c.job(job)
            .unwrap()
            .leaderboard()
            .into_iter()
            .map(|mut e| {
                e.fit_seconds = 0.0;
                e
            })
            .collect::<Vec<_>>()
    };
    let (one, _, j1) = run_job(1, 15, None);
    let (three, _, j3) = run_job(3, 15, None);
    assert_eq!(strip(&one, &j1), strip(&three, &j3));
}

#[test]
fn cancel_stops_the_job_and_its_leases() {
    let now = Now::system();
    let (mut c, w, job, _) = prepared(5, now);
    let t = c.lease_task(&w, now).unwrap().unwrap();
    c.cancel(&job, now).unwrap();
    assert_eq!(c.job(&job).unwrap().state, JobState::Cancelled);
    assert!(c.lease_task(&w, now).unwrap().is_none());
    assert_eq!(c.fail(t.token, "x", now), Err(StateError::StaleLease(t.token)));
}

#[test]
fn only_the_holder_of_a_lease_passes_the_owner_check() {
    let now = Now::system();
    let (mut c, w, _, _) = prepared(2, now);
    let other = c.register("other", 0, 1, now);
    let t = c.lease_task(&w, now).unwrap().unwrap();
    assert_eq!(c.check_owner(t.token, &w), Ok(()));
    assert_eq!(
        c.check_owner(t.token, &other),
        Err(StateError::NotLeaseOwner { token: t.token, worker: other.clone() })
    );
    // A lease that is gone is answered as stale by the call itself.
    assert_eq!(c.check_owner(9_999, &other), Ok(()));
}

/// The log loses its tail (a Redis without its append-only file restarted): the next run replays
/// only the head, and must not hand out a token the lost run gave a worker that may still hold it.
#[test]
fn a_shortened_log_never_reissues_a_token() {
    let (_, log, job) = run_job(3, 12, Some(7));
    let leased = |events: &[Event]| -> Vec<u64> {
        events
            .iter()
            .filter_map(|e| if let Event::Leased { token, .. } = e { Some(*token) } else { None })
            .collect()
    };
    let issued = leased(&log);
    assert!(issued.len() >= 8, "{issued:?}");
    // Keep everything up to the end of the job's prepare task.
    let head = log.iter().position(|e| matches!(e, Event::Prepared { .. })).unwrap() + 1;
    let now = Now::system();
    // Replay alone starts a new epoch past the logged tokens' (the server also passes the
    // store's, `begin_epoch`).
    let mut r = Coordinator::replay(TTL, log[..head].to_vec(), now);
    let mut new = Vec::new();
    for i in 0..issued.len() {
        let w = r.register(&format!("again{i}"), 0, 1, now);
        if let Some(t) = r.lease_task(&w, now).unwrap() {
            new.push(t.token);
        }
    }
    assert!(new.len() >= 3, "the replayed job leased only {new:?}");
    for token in &new {
        assert!(!issued.contains(token), "token {token} was issued before the log lost its tail: {issued:?}");
    }
    // A worker of the lost run finishing late is refused, whatever it ran.
    let result = TrialOutcome {
        id: TrialId(1),
        status: TrialStatus::Completed,
        score: Some(0.9),
        fit_seconds: 0.1,
        rounds: None,
        failure_reason: None,
    };
    for token in issued.iter().filter(|t| !new.contains(t)) {
        let late = r.complete(*token, TaskResult::Trial(result.clone()), vec![], now);
        assert_eq!(late, Err(StateError::StaleLease(*token)));
    }
    assert_eq!(r.job(&job).unwrap().trials_finished(), 0);
}

mod snapshots;

mod round_trip {
    use proptest::prelude::*;

    use super::*;

    /// Any text, control characters and non-ASCII included.
    fn text() -> impl Strategy<Value = String> {
        proptest::string::string_regex("(?s).{0,12}").unwrap()
    }

    /// Every finite `f64` (the wire refuses the rest), subnormals and -0.0 included.
    fn finite() -> impl Strategy<Value = f64> {
        proptest::num::f64::ANY.prop_filter("finite", |f| f.is_finite())
    }

    fn texts() -> impl Strategy<Value = Vec<String>> {
        proptest::collection::vec(text(), 0..3)
    }

    fn artifacts() -> impl Strategy<Value = Vec<Artifact>> {
        proptest::collection::vec(
            (text(), text(), any::<u64>()).prop_map(|(name, hash, size)| Artifact { name, hash, size }),
            0..3,
        )
    }

    fn job_spec() -> impl Strategy<Value = JobSpec> {
        (
            (text(), text(), text(), text(), text(), text(), any::<u64>()),
            (any::<Option<u64>>(), any::<Option<u64>>(), text(), texts(), texts()),
            (proptest::option::of(text()), proptest::option::of(text()), text()),
        )
            .prop_map(
                |(
                    (experiment, dataset_hash, file_name, target, task, metric, seed),
                    (budget_ms, max_trials, scheduler, column_types, drop_columns),
                    (group_column, column_types_file, searcher),
                )| JobSpec {
                    experiment,
                    dataset_hash,
                    file_name,
                    target,
                    task,
                    metric,
                    seed,
                    budget_ms,
                    max_trials,
                    scheduler,
                    column_types,
                    drop_columns,
                    group_column,
                    column_types_file,
                    searcher,
                },
            )
    }

    fn shape() -> impl Strategy<Value = PreparedShape> {
        (any::<u64>(), any::<u64>(), any::<u64>(), text(), text(), any::<u32>(), texts()).prop_map(
            |(n_rows, n_features, n_classes, task, metric, n_folds, families)| PreparedShape {
                n_rows,
                n_features,
                n_classes,
                task,
                metric,
                n_folds,
                families,
            },
        )
    }

    fn task_key() -> impl Strategy<Value = TaskKey> {
        prop_oneof![Just(TaskKey::Prepare), any::<u64>().prop_map(TaskKey::Trial), Just(TaskKey::Finalize)]
    }

    fn outcome() -> impl Strategy<Value = TrialOutcome> {
        let status = prop_oneof![
            Just(TrialStatus::Completed),
            Just(TrialStatus::Failed),
            Just(TrialStatus::Cancelled),
            Just(TrialStatus::Pruned)
        ];
        (
            any::<u64>(),
            status,
            proptest::option::of(finite()),
            finite(),
            any::<Option<usize>>(),
            proptest::option::of(text()),
        )
            .prop_map(|(id, status, score, fit_seconds, rounds, failure_reason)| TrialOutcome {
                id: TrialId(id),
                status,
                score,
                fit_seconds,
                rounds,
                failure_reason,
            })
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            (text(), text(), any::<u32>(), any::<u32>()).prop_map(|(worker, name, gpus, slots)| {
                Event::WorkerRegistered { worker, name, gpus, slots }
            }),
            (text(), job_spec(), any::<u64>()).prop_map(|(job, spec, at_ms)| Event::JobCreated {
                job,
                spec,
                at_ms
            }),
            (any::<u64>(), text(), task_key(), text(), any::<u32>(), any::<u64>()).prop_map(
                |(token, job, task, worker, attempt, at_ms)| Event::Leased {
                    token,
                    job,
                    task,
                    worker,
                    attempt,
                    at_ms
                }
            ),
            (any::<u64>(), text(), text(), any::<u64>())
                .prop_map(|(token, job, reason, at_ms)| Event::Released { token, job, reason, at_ms }),
            (any::<u64>(), text(), shape(), artifacts(), any::<u64>()).prop_map(
                |(token, job, shape, artifacts, at_ms)| Event::Prepared {
                    token,
                    job,
                    shape,
                    artifacts,
                    at_ms
                }
            ),
            (text(), any::<u64>()).prop_map(|(job, trial)| Event::TrialIssued { job, trial }),
            (any::<u64>(), text(), outcome(), artifacts()).prop_map(|(token, job, outcome, artifacts)| {
                Event::TrialFinished { token, job, outcome, artifacts }
            }),
            text().prop_map(|job| Event::SearchClosed { job }),
            text().prop_map(|job| Event::FinalizeQueued { job }),
            (any::<u64>(), text(), artifacts(), any::<u64>())
                .prop_map(|(token, job, artifacts, at_ms)| Event::Finalized { token, job, artifacts, at_ms }),
            (text(), text(), any::<u64>()).prop_map(|(job, reason, at_ms)| Event::JobFailed {
                job,
                reason,
                at_ms
            }),
            (text(), any::<u64>()).prop_map(|(job, at_ms)| Event::JobCancelled { job, at_ms }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, rng_seed: proptest::test_runner::RngSeed::Fixed(23), ..ProptestConfig::default() })]

        /// The log is the state: an event must read back exactly as it was applied, or a
        /// restart would rebuild a different state (or none: a record that does not parse).
        #[test]
        fn every_event_round_trips_through_its_log_record(e in event()) {
            let record = serde_json::to_vec(&e).unwrap();
            let back: Event = serde_json::from_slice(&record).unwrap();
            prop_assert_eq!(&back, &e);
            // Bit for bit: -0.0 == 0.0 would hide a lost sign.
            if let (Event::TrialFinished { outcome: a, .. }, Event::TrialFinished { outcome: b, .. }) = (&back, &e) {
                prop_assert_eq!(a.fit_seconds.to_bits(), b.fit_seconds.to_bits());
                prop_assert_eq!(a.score.map(f64::to_bits), b.score.map(f64::to_bits));
            }
        }
    }
}
