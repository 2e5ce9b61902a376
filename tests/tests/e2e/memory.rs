//! Memory admission (issue #12) with real processes: a worker with a small `--memory-limit`
//! downsizes the trials whose estimate does not fit, and a trial that allocates past the limit
//! at run time (injected with `QUARRY_FAULT_INJECT=alloc@trial=N`) is stopped by the runtime
//! guard and recorded as failed with the reason; the job still completes with a leaderboard.

use std::time::Duration;

use quarry_tests::cluster::{cluster_dir, leaderboard, serve_store, submit, wait_for, worker_with_env};
use quarry_tests::{example, quarry, quarry_ok};

/// Above the worker's own heap with the cars job loaded (a few MiB), below what a forest of
/// 4096-leaf trees or a 3000-round booster is estimated to need on five folds.
const LIMIT: &str = "8MiB";

#[test]
fn a_small_memory_limit_downsizes_big_trials_and_stops_one_that_runs_over() {
    let Some(tmp) = cluster_dir() else { return };
    let (_server, url) = serve_store(tmp.path(), &[]);
    let mut worker = worker_with_env(
        &url,
        tmp.path(),
        0,
        &["--memory-limit", LIMIT],
        &[("QUARRY_FAULT_INJECT", "alloc@trial=2"), ("QUARRY_LOG", "quarry_worker::memory=debug")],
    );
    let job =
        submit(&url, &example("cars/train.csv"), "Miles_per_Gallon", &["--max-trials", "5", "--seed", "6"]);
    // The trials take seconds; the finalize task (ensemble, explanations) takes most of the
    // wait on a loaded debug build.
    wait_for(&url, &job, Duration::from_secs(300), |s, _| s == "completed");
    assert!(worker.child.try_wait().unwrap().is_none(), "the worker exited");
    let run = tmp.path().join("run");
    quarry_ok(&["download", "--coordinator", &url, &job, "--out", run.to_str().unwrap()]);
    let board = leaderboard(&run);
    let log = std::fs::read_to_string(tmp.path().join("worker0.log")).unwrap_or_default();
    let rows: Vec<String> = board
        .iter()
        .map(|r| format!("{} {} {} {}", r["id"], r["family"], r["status"], r["failure_reason"]))
        .collect();
    let context = format!("{}\n--- worker log ---\n{log}", rows.join("\n"));
    assert_eq!(board.len(), 5, "{context}");
    let reason = |r: &serde_json::Value| r["failure_reason"].as_str().unwrap_or_default().to_string();
    let status = |r: &serde_json::Value| r["status"].as_str().unwrap_or_default().to_lowercase();

    let over = board.iter().find(|r| r["id"].as_u64() == Some(2)).unwrap();
    assert_eq!(status(over), "failed", "{context}");
    assert!(
        reason(over).starts_with("memory: live heap ")
            && reason(over).ends_with(" exceeded --memory-limit 8 MiB"),
        "{context}"
    );
    let downsized: Vec<&serde_json::Value> =
        board.iter().filter(|r| reason(r).starts_with("memory: downsized to fit --memory-limit (")).collect();
    assert!(!downsized.is_empty(), "no trial was downsized\n{context}");
    for r in &downsized {
        assert_eq!(status(r), "completed", "{context}");
        assert!(reason(r).contains("num_leaves "), "{context}");
    }
    // The job went on after the stopped trial: its final model exists.
    assert!(run.join("model").exists() || run.join("leaderboard.json").exists(), "{context}");
    assert!(board.iter().filter(|r| status(r) == "completed").count() >= 3, "{context}");
}

#[test]
fn a_memory_limit_that_is_not_a_size_is_refused_with_exit_code_2() {
    let out = quarry(&["fit", "--data", "x.csv", "--target", "y", "--memory-limit", "lots"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("\"lots\" is not a size (write e.g. 512MiB, 2GiB"), "{err}");
}
