//! Leases and workers that go away (issue #23): a lease whose result its worker dropped expires
//! although the worker keeps heartbeating, and GPU-family trials do not wait for a GPU worker
//! that left. Real processes on 127.0.0.1 with a 2 s lease TTL; every wait polls under a deadline.

use std::path::Path;
use std::time::{Duration, Instant};

use quarry_tests::cluster::{
    Proc, cluster_dir, leaderboard, read, serve_store, submit, trial_ids, wait_for, worker, worker_with_env,
};
use quarry_tests::{example, quarry_ok};
use serde_json::Value;

fn download(url: &str, job: &str, out: &Path) -> Vec<Value> {
    quarry_ok(&["download", "--coordinator", url, job, "--out", out.to_str().unwrap()]);
    leaderboard(out)
}

fn row(board: &[Value], id: u64) -> Value {
    board.iter().find(|r| r["id"].as_u64() == Some(id)).cloned().unwrap_or_default()
}

/// The only worker finishes trial 2 and never sends its result, but keeps heartbeating (and
/// running the job's other trials). The lease of trial 2 is not named in its heartbeats, so it
/// expires, is retried (and dropped again) until the trial is given up on, and the job
/// completes with every trial on its leaderboard.
#[test]
fn a_dropped_result_does_not_stop_its_job() {
    let Some(tmp) = cluster_dir() else { return };
    let (_server, url) = serve_store(tmp.path(), &["--lease-ttl", "2s"]);
    let _worker = worker_with_env(&url, tmp.path(), 0, &[], &[("QUARRY_FAULT_INJECT", "drop@trial=2")]);
    let job =
        submit(&url, &example("cars/train.csv"), "Miles_per_Gallon", &["--max-trials", "4", "--seed", "3"]);
    wait_for(&url, &job, Duration::from_secs(300), |s, _| s == "completed");
    let board = download(&url, &job, &tmp.path().join("run"));
    assert_eq!(trial_ids(&board), (1..=4).collect::<Vec<_>>());
    let dropped = row(&board, 2);
    assert_eq!(dropped["status"].as_str().map(str::to_lowercase).as_deref(), Some("failed"), "{dropped}");
    let reason = dropped["failure_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("gave up after 3 attempts: lease expired"), "{dropped}");
    assert!(read(&tmp.path().join("worker0.log")).contains("dropping the result"));
}

/// A GPU worker registers and is killed; a budgeted job whose trials include MLPs (a GPU
/// family) then runs on a CPU worker alone and completes within its budget plus a grace: the
/// departed GPU worker is not live, so the MLP trials go to the CPU worker.
#[test]
fn gpu_trials_run_on_cpu_workers_once_the_gpu_worker_left() {
    let Some(tmp) = cluster_dir() else { return };
    let (_server, url) = serve_store(tmp.path(), &["--lease-ttl", "2s"]);
    // The GPU worker alone runs a one-trial job: it is registered for sure, then it dies.
    let mut gpu = worker(&url, tmp.path(), 0, &["--gpu"]);
    let first = submit(&url, &example("cars/train.csv"), "Miles_per_Gallon", &["--max-trials", "1"]);
    wait_for(&url, &first, Duration::from_secs(60), |s, _| s == "completed");
    gpu.kill();
    let _cpu: Vec<Proc> = (1..3).map(|n| worker(&url, tmp.path(), n, &[])).collect();
    let budget = Duration::from_secs(20);
    let grace = Duration::from_secs(40);
    let started = Instant::now();
    let job = submit(
        &url,
        &example("cars/train.csv"),
        "Miles_per_Gallon",
        &["--budget", "20s", "--max-trials", "8", "--searcher", "random", "--seed", "17"],
    );
    wait_for(&url, &job, budget + grace, |s, _| s == "completed");
    assert!(started.elapsed() <= budget + grace, "took {:?}", started.elapsed());
    let board = download(&url, &job, &tmp.path().join("run"));
    let mlp: Vec<&Value> = board.iter().filter(|r| r["family"].as_str() == Some("mlp")).collect();
    assert!(!mlp.is_empty(), "no MLP trial in this job (pick another seed): {board:?}");
    assert!(
        mlp.iter().all(|r| !r["failure_reason"].as_str().unwrap_or_default().contains("lease")),
        "{mlp:?}"
    );
}

/// A worker whose clock runs 30 s fast (a test-only offset on its wall clock) still runs a
/// budgeted job's trials: it is sent the time left, not a wall-clock deadline its clock would
/// read as long past.
#[test]
fn a_worker_with_a_fast_clock_does_not_cancel_every_trial() {
    let Some(tmp) = cluster_dir() else { return };
    let (_server, url) = serve_store(tmp.path(), &[]);
    let _worker = worker_with_env(&url, tmp.path(), 0, &[], &[("QUARRY_TEST_CLOCK_OFFSET_MS", "30000")]);
    let job = submit(
        &url,
        &example("cars/train.csv"),
        "Miles_per_Gallon",
        &["--budget", "25s", "--max-trials", "4", "--seed", "2"],
    );
    wait_for(&url, &job, Duration::from_secs(300), |s, _| s == "completed");
    let board = download(&url, &job, &tmp.path().join("run"));
    let completed =
        board.iter().filter(|r| r["status"].as_str().map(str::to_lowercase).as_deref() == Some("completed"));
    assert!(completed.count() >= 2, "{board:?}");
}
