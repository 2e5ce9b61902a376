use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;

/// A random history driven through the live API (jobs with and without budgets, leases
/// that complete, fail or expire, cancellations, retirements, blobs shared between
/// trials), returning every event and, at a random point, the live state's snapshot and
/// the number of events it covers.
/// The events a snapshot covers and the encoded snapshot.
type Taken = Option<(usize, Vec<u8>)>;

fn random_history(seed: u64) -> (Vec<Event>, Taken, Coordinator) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let start = Now::system();
    let mut c = Coordinator::new(TTL);
    let mut events = Vec::new();
    let mut snap = None;
    let snap_at = rng.random_range(0..300);
    let mut workers = vec![c.register("w", 0, 1, start)];
    let mut held: Vec<u64> = Vec::new();
    let mut jobs: Vec<String> = Vec::new();
    for step in 0..300u64 {
        let now = start.plus_ms(step * 1000);
        events.extend(c.take_pending());
        let _ = c.take_garbage();
        if step == snap_at {
            snap = c.snapshot().map(|s| (events.len(), s.encode()));
        }
        match rng.random_range(0..100) {
            0..3 => workers.push(c.register("w", rng.random_range(0..2), 1, now)),
            3..10 => {
                let budget = rng.random_bool(0.3).then_some(rng.random_range(20_000..90_000));
                let max_trials = if budget.is_some() { None } else { Some(rng.random_range(1..12)) };
                let s = JobSpec {
                    dataset_hash: format!("data{}", rng.random_range(0..3)),
                    budget_ms: budget,
                    max_trials,
                    seed: rng.random(),
                    searcher: ["", "tpe", "random"][rng.random_range(0..3)].into(),
                    scheduler: ["", "median", "asha"][rng.random_range(0..3)].into(),
                    ..spec(1)
                };
                jobs.push(c.create_job(s, now).unwrap());
            }
            10..45 => {
                let w = &workers[rng.random_range(0..workers.len())];
                if let Some(t) = c.lease_task(w, now).unwrap() {
                    held.push(t.token);
                }
            }
            45..85 if !held.is_empty() => {
                let token = held.swap_remove(rng.random_range(0..held.len()));
                let Some(lease) = c.lease(token).cloned() else { continue };
                let art = |rng: &mut ChaCha8Rng| {
                    (0..rng.random_range(0..3))
                        .map(|k| Artifact {
                            name: format!("a{k}"),
                            hash: format!("h{}", rng.random_range(0..40)),
                            size: 1,
                        })
                        .collect::<Vec<_>>()
                };
                if rng.random_bool(0.1) {
                    c.fail(token, "flaky", now).unwrap();
                    continue;
                }
                let result = match lease.task {
                    TaskKey::Prepare => TaskResult::Prepare(PreparedShape {
                        families: vec!["gbdt".into(), "linear".into(), "knn".into()],
                        ..shape()
                    }),
                    TaskKey::Trial(t) => TaskResult::Trial(TrialOutcome {
                        id: TrialId(t),
                        status: if rng.random_bool(0.1) {
                            TrialStatus::Failed
                        } else {
                            TrialStatus::Completed
                        },
                        score: Some(rng.random_range(0.5..0.9)),
                        fit_seconds: rng.random_range(0.1..3.0),
                        rounds: rng.random_bool(0.5).then_some(rng.random_range(1..100)),
                        failure_reason: None,
                    }),
                    TaskKey::Finalize => TaskResult::Finalize,
                };
                let a = art(&mut rng);
                c.complete(token, result, a, now).unwrap();
            }
            85..90 => {
                c.expire(start.plus_ms(step * 1000 + 3 * TTL.as_millis() as u64));
                held.retain(|t| c.lease(*t).is_some());
            }
            90..93 if !jobs.is_empty() => {
                let j = jobs[rng.random_range(0..jobs.len())].clone();
                c.cancel(&j, now).unwrap();
                held.retain(|t| c.lease(*t).is_some());
            }
            93..97 => {
                c.retire(now, Duration::from_secs(rng.random_range(0..60)));
            }
            _ => {}
        }
    }
    events.extend(c.take_pending());
    (events, snap, c)
}

#[test]
fn snapshot_plus_tail_rebuilds_the_state_of_a_full_replay() {
    let mut with_finished = 0;
    for seed in 0..60 {
        let (events, snap, live) = random_history(seed);
        let (at, bytes) = snap.expect("every job has its snapshot record");
        let now = Now::system();
        let full = Coordinator::replay(TTL, events.clone(), now);
        let recovered = Coordinator::recover(TTL, &bytes, events[at..].to_vec(), now).unwrap();
        assert_eq!(
            recovered.dump(),
            full.dump(),
            "seed {seed}, snapshot after {at} of {} events",
            events.len()
        );
        // And the replayed state is the live one.
        assert_eq!(full.dump(), live.dump(), "seed {seed}: replay differs from the live state");
        // The reference counts name exactly the blobs the jobs reference.
        let mut counted: Vec<&String> = recovered.blob_refs.keys().collect();
        counted.sort_unstable();
        let mut walked: Vec<&str> = recovered.referenced_blobs().collect();
        walked.sort_unstable();
        walked.dedup();
        assert_eq!(counted, walked, "seed {seed}");
        with_finished += usize::from(full.jobs().any(|j| j.state.is_final()));
    }
    // The histories exercised what snapshots treat specially.
    assert!(with_finished > 30, "{with_finished}");
}

#[test]
fn a_retired_job_lets_go_of_its_trial_artifacts_but_keeps_its_model() {
    let now = Now::system();
    let (mut c, w, job, _) = prepared(3, now);
    let art = |h: &str| vec![Artifact { name: "oof".into(), hash: h.into(), size: 1 }];
    for n in 0..3 {
        let t = c.lease_task(&w, now).unwrap().unwrap();
        let spec = trial_of(&t);
        c.complete(t.token, TaskResult::Trial(outcome(&spec)), art(&format!("trial{n}")), now).unwrap();
    }
    let t = c.lease_task(&w, now).unwrap().unwrap();
    assert!(matches!(t.kind, LeasedKind::Finalize(_)));
    // The model bundle happens to share bytes with a trial's artifact.
    let mut model = art("model");
    model.extend(art("trial0"));
    c.complete(t.token, TaskResult::Finalize, model, now.plus_ms(1000)).unwrap();
    let _ = (c.take_pending(), c.take_garbage());
    assert_eq!(c.job(&job).unwrap().state, JobState::Completed);
    // Not yet due: nothing happens.
    assert_eq!(c.retire(now.plus_ms(60_000), Duration::from_secs(3600)), 0);
    assert!(c.take_pending().is_empty());
    assert_eq!(c.retire(now.plus_ms(1000 + 3_600_000), Duration::from_secs(3600)), 1);
    let events = c.take_pending();
    assert!(matches!(&events[..], [Event::JobRetired { job: j, .. }] if *j == job), "{events:?}");
    let mut garbage = c.take_garbage();
    garbage.sort();
    assert_eq!(garbage, vec!["trial1".to_string(), "trial2".to_string()]);
    assert!(c.is_referenced("model") && c.is_referenced("trial0") && c.is_referenced("abc"));
    assert_eq!(c.job(&job).unwrap().leaderboard().len(), 3);
    // Once only.
    assert_eq!(c.retire(now.plus_ms(10_000_000), Duration::from_secs(3600)), 0);
}
