//! One coordinator per store, and a Redis event log that is durable or says so (issue #23,
//! items 6 and 7): a second `quarry serve` on a held store or Redis stream exits 2 naming the
//! holder; a Redis that would lose acknowledged writes is refused at start; a Redis killed -9
//! without its append-only file makes the coordinator stop and the next one say what was lost,
//! and the lost run's workers never land a result on a new trial.

use std::time::Duration;

use quarry_tests::cluster::{
    Proc, cluster_dir, free_port, leaderboard, read, serve, serve_refused, serve_store, start_redis,
    start_redis_with, submit, trial_ids, wait_completed, wait_for, wait_for_text, worker,
};
use quarry_tests::{example, quarry_ok};

#[test]
fn a_second_coordinator_on_a_file_store_exits_2_naming_the_holder() {
    let Some(tmp) = cluster_dir() else { return };
    let (first, _url) = serve_store(tmp.path(), &[]);
    let store = tmp.path().join("store");
    let (code, stderr) = serve_refused(&["--store", store.to_str().unwrap()], &tmp.path().join("second.log"));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("is held by another coordinator"), "{stderr}");
    assert!(stderr.contains(&format!("pid {} on host", first.child.id())), "{stderr}");
}

#[test]
fn a_second_coordinator_on_a_redis_stream_exits_2_naming_the_holder() {
    let Some(tmp) = cluster_dir() else { return };
    let port = free_port();
    let Some(_redis) = start_redis(tmp.path(), port, true) else { return };
    let url = format!("redis://127.0.0.1:{port}/");
    let (store_a, store_b) = (tmp.path().join("a"), tmp.path().join("b"));
    let (first, _) = serve(
        &["--redis", &url, "--store", store_a.to_str().unwrap()],
        "127.0.0.1:0",
        &[],
        &tmp.path().join("a.log"),
    );
    // Another store (another host, as far as the store lock can tell): the Redis owner key refuses it.
    let (code, stderr) =
        serve_refused(&["--redis", &url, "--store", store_b.to_str().unwrap()], &tmp.path().join("b.log"));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("redis stream quarry:coordinator:events"), "{stderr}");
    assert!(stderr.contains(&format!("pid {} on host", first.child.id())), "{stderr}");
}

#[test]
fn a_redis_that_would_lose_acknowledged_writes_is_refused_at_start() {
    let Some(tmp) = cluster_dir() else { return };
    let port = free_port();
    let Some(_redis) = start_redis_with(tmp.path(), port, &[]) else { return };
    let url = format!("redis://127.0.0.1:{port}/");
    let store = tmp.path().join("store");
    let (code, stderr) =
        serve_refused(&["--redis", &url, "--store", store.to_str().unwrap()], &tmp.path().join("serve.log"));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("appendonly is no"), "{stderr}");
    assert!(stderr.contains("--redis-unsafe"), "{stderr}");
}

/// A default-config Redis (snapshots only) killed -9 mid-job forgets the job. The coordinator
/// notices at its next append and exits 2; a restarted one (with --redis-unsafe) says Redis
/// lost data and runs a new job with every trial exactly once, while the old workers' leases of
/// the lost run are refused by their epoch.
#[test]
fn redis_killed_without_its_aof_stops_the_coordinator_and_loses_no_trial_silently() {
    let Some(tmp) = cluster_dir() else { return };
    let port = free_port();
    let redis_dir = tmp.path().join("redis");
    std::fs::create_dir_all(&redis_dir).unwrap();
    let Some(mut redis) = start_redis_with(&redis_dir, port, &[]) else { return };
    let redis_url = format!("redis://127.0.0.1:{port}/");
    let store = tmp.path().join("store");
    let store_args = ["--redis", &redis_url, "--store", store.to_str().unwrap(), "--redis-unsafe"];
    let grpc = format!("127.0.0.1:{}", free_port());
    let serve_log = tmp.path().join("serve1.log");
    let (mut server, url) = serve(&store_args, &grpc, &[], &serve_log);
    assert!(read(&serve_log).contains("REDIS IS NOT DURABLE"), "{}", read(&serve_log));
    let _workers: Vec<Proc> = (0..2).map(|n| worker(&url, tmp.path(), n, &[])).collect();
    let data = example("cars/train.csv");
    let job = submit(&url, &data, "Miles_per_Gallon", &["--max-trials", "12", "--seed", "5"]);
    wait_for(&url, &job, Duration::from_secs(120), |_, n| n >= 2);

    redis.kill();
    let _redis = start_redis_with(&redis_dir, port, &[]).unwrap();
    // The next append finds the stream shorter than what was acknowledged: the coordinator stops.
    assert_eq!(server.wait_exit(Duration::from_secs(60)), Some(2), "{}", read(&serve_log));
    let text = read(&serve_log);
    assert!(text.contains("Redis lost acknowledged writes"), "{text}");

    let serve_log = tmp.path().join("serve2.log");
    let (_server, url) = serve(&store_args, &grpc, &[], &serve_log);
    let text = wait_for_text(&serve_log, "REDIS LOST DATA", Duration::from_secs(10));
    assert!(text.contains("this store recorded epoch 1"), "{text}");
    // The workers reconnect; whatever they still held belongs to the lost epoch and is refused,
    // so a new job gets every trial exactly once.
    let second = submit(&url, &data, "Miles_per_Gallon", &["--max-trials", "12", "--seed", "5"]);
    wait_completed(&url, &second);
    let run = tmp.path().join("run");
    quarry_ok(&["download", "--coordinator", &url, &second, "--out", run.to_str().unwrap()]);
    assert_eq!(trial_ids(&leaderboard(&run)), (1..=12).collect::<Vec<_>>());
}
