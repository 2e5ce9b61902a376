//! Distributed runs with real processes on 127.0.0.1: `quarry serve`, `quarry worker`s and the
//! client commands. Every wait polls with a deadline; every child is killed when a test ends.

use std::path::Path;
use std::time::Duration;

use quarry_tests::cluster::{
    LeaseCluster, Proc, cluster_dir, free_port, leaderboard, lease_cluster, read, redis_integer, redis_xlen,
    serve, serve_store, start_redis, submit, trial_ids, wait_completed, wait_for, worker,
};
use quarry_tests::{example, quarry, quarry_ok, read_json};
use serde_json::Value;

/// A leaderboard row without its timing; params as numbers where they are numbers (text
/// params cross the wire, so `1.0` may come back as `1`).
fn comparable(row: &Value) -> Value {
    let mut row = row.clone();
    let obj = row.as_object_mut().unwrap();
    obj.remove("fit_seconds");
    if let Some(Value::Object(params)) = obj.get_mut("params") {
        for v in params.values_mut() {
            if let Some(f) = v.as_f64() {
                *v = Value::from(f);
            }
        }
    }
    row
}

/// Every file under `dir`, as relative paths with `/`, sorted.
fn files_in(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_string_lossy().replace('\\', "/"));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn three_workers_match_quarry_fit() {
    let Some(tmp) = cluster_dir() else { return };
    let (_server, url) = serve_store(tmp.path(), &[]);
    let _workers: Vec<Proc> = (0..3).map(|n| worker(&url, tmp.path(), n, &[])).collect();
    let data = example("penguins/train.csv");
    let job = submit(&url, &data, "species", &["--max-trials", "40", "--seed", "7"]);
    wait_completed(&url, &job);
    let remote = tmp.path().join("remote");
    quarry_ok(&["download", "--coordinator", &url, &job, "--out", remote.to_str().unwrap()]);

    let local = tmp.path().join("local");
    quarry_ok(&[
        "fit",
        "--data",
        data.to_str().unwrap(),
        "--target",
        "species",
        "--max-trials",
        "40",
        "--seed",
        "7",
        "--out",
        local.to_str().unwrap(),
    ]);
    let (l, r) = (leaderboard(&local), leaderboard(&remote));
    assert_eq!(l.len(), 40);
    assert_eq!(trial_ids(&r), (1..=40).collect::<Vec<_>>());
    let strip = |b: &[Value]| b.iter().map(comparable).collect::<Vec<_>>();
    assert_eq!(strip(&l), strip(&r), "leaderboards differ (timings aside)");
    let (lr, rr) = (read_json(&local.join("run.json")), read_json(&remote.join("run.json")));
    assert_eq!(lr["final_model"], rr["final_model"]);
    assert_eq!(lr["best_trial"], rr["best_trial"]);
    assert_eq!(lr["best_validation_score"], rr["best_validation_score"]);
    // The same run folder: the same files (model bundle, background rows, model.onnx,
    // explanations.json, …), and the same members, weights and fitted trees: the bundle, the
    // explanation background and the ONNX graph are byte for byte the same.
    assert_eq!(files_in(&local), files_in(&remote), "the run folders hold different files");
    for name in files_in(&local).iter().filter(|n| n.starts_with("model/") || n.as_str() == "model.onnx") {
        let bytes = |dir: &Path| std::fs::read(dir.join(name)).unwrap();
        assert!(bytes(&local) == bytes(&remote), "{name} differs between quarry fit and the remote run");
    }
    assert!(files_in(&remote).contains(&"model.onnx".to_string()));
    // explanations.json: the same importance per column (only its timing may differ).
    let (le, re) =
        (read_json(&local.join("explanations.json")), read_json(&remote.join("explanations.json")));
    assert!(le["importance"].as_array().is_some_and(|a| !a.is_empty()), "{le}");
    for key in ["method", "output_space", "expected_value", "rows_explained", "importance"] {
        assert_eq!(le[key], re[key], "explanations.json {key} differs");
    }
    // The downloaded model predicts.
    let preds = tmp.path().join("preds.csv");
    quarry_ok(&[
        "predict",
        "--model",
        remote.to_str().unwrap(),
        "--data",
        example("penguins/test.csv").to_str().unwrap(),
        "--out",
        preds.to_str().unwrap(),
    ]);
    assert!(read(&preds).lines().count() > 10);
}

#[test]
fn killing_a_worker_mid_trial_loses_no_trial() {
    let Some(tmp) = cluster_dir() else { return };
    // A short lease TTL (2 s): the killed worker's trial is re-issued after 2 s, not 15.
    let LeaseCluster { server: _server, url, mut victim, survivor: _survivor, job } =
        lease_cluster(tmp.path());
    // Both workers have had trials by the time three finished; the victim is then mid-trial.
    wait_for(&url, &job, Duration::from_secs(300), |_, n| n >= 3);
    victim.kill();
    wait_completed(&url, &job);
    let run = tmp.path().join("run");
    quarry_ok(&["download", "--coordinator", &url, &job, "--out", run.to_str().unwrap()]);
    assert_eq!(trial_ids(&leaderboard(&run)), (1..=16).collect::<Vec<_>>());
}

/// Kills the coordinator mid-job and restarts it on the same store and port. It snapshots
/// every few events, so the restart loads a snapshot and replays only the log's tail.
fn coordinator_restart(store_args: &[&str], tmp: &Path) {
    let port = free_port();
    let grpc = format!("127.0.0.1:{port}");
    let snapshots = ["--snapshot-every", "7"];
    let (mut server, url) = serve(store_args, &grpc, &snapshots, &tmp.join("serve1.log"));
    let _workers: Vec<Proc> = (0..2).map(|n| worker(&url, tmp, n, &[])).collect();
    let job =
        submit(&url, &example("cars/train.csv"), "Miles_per_Gallon", &["--max-trials", "16", "--seed", "5"]);
    wait_for(&url, &job, Duration::from_secs(300), |_, n| n >= 4);
    let before = quarry_ok(&["leaderboard", "--coordinator", &url, &job]);
    server.kill();
    let (_server, url) = serve(store_args, &grpc, &snapshots, &tmp.join("serve2.log"));
    wait_completed(&url, &job);
    let run = tmp.join("run");
    quarry_ok(&["download", "--coordinator", &url, &job, "--out", run.to_str().unwrap()]);
    let board = leaderboard(&run);
    assert_eq!(trial_ids(&board), (1..=16).collect::<Vec<_>>(), "a trial was lost or repeated");
    // Every trial finished before the kill is in the final leaderboard with the same score.
    for line in before.lines().skip(1).filter(|l| !l.trim_start().starts_with('…')) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let (Some(id), Some(score)) = (cols.get(1).and_then(|c| c.parse::<u64>().ok()), cols.get(3)) else {
            continue;
        };
        let row = board.iter().find(|r| r["id"].as_u64() == Some(id)).unwrap();
        if let (Ok(s), Some(v)) = (score.parse::<f64>(), row["validation_score"].as_f64()) {
            assert!((s - v).abs() < 1e-5, "trial {id}: {s} before the restart, {v} after");
        }
    }
}

#[test]
fn coordinator_restart_on_a_file_store_resumes_the_job() {
    let Some(tmp) = cluster_dir() else { return };
    let store = tmp.path().join("store");
    coordinator_restart(&["--store", store.to_str().unwrap()], tmp.path());
    // The job went through snapshots and rotation: the first segment is gone.
    assert!(store.join("events.snapshot").is_file());
    assert!(!store.join("events.log").exists());
}

#[test]
fn coordinator_restart_on_redis_resumes_the_job() {
    let Some(tmp) = cluster_dir() else { return };
    let port = free_port();
    let Some(redis) = start_redis(tmp.path(), port, true) else { return };
    let url = format!("redis://127.0.0.1:{port}/");
    let blobs = tmp.path().join("store");
    coordinator_restart(&["--redis", &url, "--store", blobs.to_str().unwrap()], tmp.path());
    // The job state really lived in Redis: a snapshot, the stream trimmed to the events after
    // it, and no file log.
    assert_eq!(redis_integer(port, &["EXISTS", "quarry:coordinator:snapshot"]), 1);
    let events = redis_xlen(port, "quarry:coordinator:events");
    assert!(events < 16 * 2, "{events} events in the Redis stream after its snapshots");
    assert!(!blobs.join("events.log").exists(), "--redis still wrote a file log");
    drop(redis);
}

#[test]
fn wrong_token_or_protocol_version_is_refused_clearly() {
    let Some(tmp) = cluster_dir() else { return };
    let (_server, url) = serve_store(tmp.path(), &["--token", "s3cret"]);
    let mut bad_token = worker(&url, tmp.path(), 0, &["--token", "wrong"]);
    assert_eq!(bad_token.wait_exit(Duration::from_secs(60)), Some(2));
    let log = read(&tmp.path().join("worker0.log")).to_lowercase();
    assert!(log.contains("refused") && log.contains("token"), "worker log: {log}");

    let mut old = worker(&url, tmp.path(), 1, &["--token", "s3cret", "--protocol-version", "999"]);
    assert_eq!(old.wait_exit(Duration::from_secs(60)), Some(2));
    let log = read(&tmp.path().join("worker1.log")).to_lowercase();
    assert!(log.contains("refused") && log.contains("protocol") && log.contains("999"), "worker log: {log}");

    // A client without the token is refused too, naming the token.
    let out = quarry(&["jobs", "--coordinator", &url]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).to_lowercase().contains("token"));
}
