//! Distributed runs with real processes on 127.0.0.1: `quarry serve`, `quarry worker`s and the
//! client commands. Every wait polls with a deadline; every child is killed when a test ends.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use quarry_tests::{example, quarry, quarry_bin, quarry_ok, read_json};
use serde_json::Value;

/// A child process killed (SIGKILL) and reaped when dropped, so a failing test leaves nothing.
struct Proc {
    child: Child,
    name: String,
}

impl Proc {
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit by itself; its exit code.
    fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{} did not exit within {within:?}", self.name);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether this build has the server side (`quarry serve`); without it these tests cannot run.
fn have_serve() -> bool {
    let ok = quarry(&["serve", "--help"]).status.success();
    if !ok {
        eprintln!("skipped: this quarry has no `serve` command");
    }
    ok
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts `quarry serve` and waits for its `listening grpc=ADDR` line; returns the URL.
fn serve(store_args: &[&str], grpc: &str, extra: &[&str], log: &Path) -> (Proc, String) {
    let mut cmd = Command::new(quarry_bin());
    cmd.args(["serve", "--grpc", grpc]).args(store_args).args(extra);
    let stderr = std::fs::File::create(log).unwrap();
    let mut child = cmd.stdout(Stdio::piped()).stderr(stderr).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.split_whitespace().find_map(|w| w.strip_prefix("grpc=")) {
                let _ = tx.send(addr.to_string());
            }
        }
    });
    let proc = Proc { child, name: "quarry serve".into() };
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("quarry serve printed no `listening grpc=ADDR`; log:\n{}", read(log)));
    (proc, format!("http://{addr}"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn worker(url: &str, dir: &Path, n: usize, extra: &[&str]) -> Proc {
    let cache = dir.join(format!("worker{n}"));
    let log = std::fs::File::create(dir.join(format!("worker{n}.log"))).unwrap();
    let child = Command::new(quarry_bin())
        .args(["worker", "--coordinator", url, "--threads", "1", "--cache-dir"])
        .arg(&cache)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    Proc { child, name: format!("worker {n}") }
}

fn submit(url: &str, data: &Path, target: &str, extra: &[&str]) -> String {
    let mut args = vec!["submit", "--coordinator", url, "--data", data.to_str().unwrap(), "--target", target];
    args.extend_from_slice(extra);
    let out = quarry_ok(&args);
    let id = out.lines().last().unwrap_or_default().trim().to_string();
    assert!(!id.is_empty() && !id.contains(' '), "submit printed {out:?}");
    id
}

/// `quarry status` as (state word, trials finished).
fn status(url: &str, job: &str) -> Option<(String, u64)> {
    let out = quarry(&["status", "--coordinator", url, job]);
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let state = text.lines().next()?.trim().to_string();
    let finished = text
        .lines()
        .find_map(|l| l.strip_prefix("trials: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    Some((state, finished))
}

/// Polls until `done(state, finished)` holds.
fn wait_for(url: &str, job: &str, within: Duration, done: impl Fn(&str, u64) -> bool) -> (String, u64) {
    let deadline = Instant::now() + within;
    let mut last = None;
    while Instant::now() < deadline {
        if let Some((state, n)) = status(url, job) {
            if done(&state, n) {
                return (state, n);
            }
            assert!(state != "failed" && state != "cancelled", "job {job} ended {state}");
            last = Some((state, n));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("job {job}: condition not reached within {within:?}; last status {last:?}");
}

fn wait_completed(url: &str, job: &str) {
    wait_for(url, job, Duration::from_secs(900), |s, _| s == "completed");
}

fn leaderboard(run: &Path) -> Vec<Value> {
    read_json(&run.join("leaderboard.json")).as_array().cloned().unwrap_or_default()
}

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

fn trial_ids(board: &[Value]) -> Vec<u64> {
    let mut ids: Vec<u64> = board.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    ids.sort_unstable();
    ids
}

#[test]
fn three_workers_match_quarry_fit() {
    if !have_serve() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let (_server, url) =
        serve(&["--store", store.to_str().unwrap()], "127.0.0.1:0", &[], &tmp.path().join("serve.log"));
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
    if !have_serve() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    // A short lease TTL: the killed worker's trial is re-issued after 2 s, not 15.
    let (_server, url) = serve(
        &["--store", store.to_str().unwrap()],
        "127.0.0.1:0",
        &["--lease-ttl", "2s"],
        &tmp.path().join("serve.log"),
    );
    let mut victim = worker(&url, tmp.path(), 0, &[]);
    let _survivor = worker(&url, tmp.path(), 1, &[]);
    let job =
        submit(&url, &example("cars/train.csv"), "Miles_per_Gallon", &["--max-trials", "16", "--seed", "3"]);
    // Both workers have had trials by the time three finished; the victim is then mid-trial.
    wait_for(&url, &job, Duration::from_secs(300), |_, n| n >= 3);
    victim.kill();
    wait_completed(&url, &job);
    let run = tmp.path().join("run");
    quarry_ok(&["download", "--coordinator", &url, &job, "--out", run.to_str().unwrap()]);
    assert_eq!(trial_ids(&leaderboard(&run)), (1..=16).collect::<Vec<_>>());
}

/// Kills the coordinator mid-job and restarts it on the same store and port.
fn coordinator_restart(store_args: &[&str], tmp: &Path) {
    let port = free_port();
    let grpc = format!("127.0.0.1:{port}");
    let (mut server, url) = serve(store_args, &grpc, &[], &tmp.join("serve1.log"));
    let _workers: Vec<Proc> = (0..2).map(|n| worker(&url, tmp, n, &[])).collect();
    let job =
        submit(&url, &example("cars/train.csv"), "Miles_per_Gallon", &["--max-trials", "16", "--seed", "5"]);
    wait_for(&url, &job, Duration::from_secs(300), |_, n| n >= 4);
    let before = quarry_ok(&["leaderboard", "--coordinator", &url, &job]);
    server.kill();
    let (_server, url) = serve(store_args, &grpc, &[], &tmp.join("serve2.log"));
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
    if !have_serve() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    coordinator_restart(&["--store", store.to_str().unwrap()], tmp.path());
}

/// `redis-server` on PATH or in the usual system folders (Debian puts it in /usr/bin).
fn redis_server_binary() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin".into(), "/usr/sbin".into(), "/usr/local/bin".into()])
        .map(|d| d.join("redis-server"))
        .find(|p| p.is_file())
}

/// The stream's length, by a raw RESP `XLEN` (no client library needed in this crate).
fn redis_xlen(port: u16, key: &str) -> i64 {
    use std::io::{Read, Write};
    let mut con = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    con.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(con, "*2\r\n$4\r\nXLEN\r\n${}\r\n{key}\r\n", key.len()).unwrap();
    let mut buf = [0u8; 64];
    let n = con.read(&mut buf).unwrap();
    let reply = String::from_utf8_lossy(&buf[..n]).into_owned();
    reply
        .trim()
        .strip_prefix(':')
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("XLEN answered {reply:?}"))
}

#[test]
fn coordinator_restart_on_redis_resumes_the_job() {
    if !have_serve() {
        return;
    }
    let Some(redis_server) = redis_server_binary() else {
        // CI installs it (scripts/test.sh): there, a missing server is a failure, not a skip.
        assert!(
            std::env::var_os("CI").is_none(),
            "redis-server is not installed; scripts/test.sh installs it"
        );
        eprintln!("skipped: needs redis-server (scripts/test.sh installs it)");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let redis = Proc {
        child: Command::new(redis_server)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(tmp.path())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
        name: "redis-server".into(),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let url = format!("redis://127.0.0.1:{port}/");
    let blobs = tmp.path().join("store");
    coordinator_restart(&["--redis", &url, "--store", blobs.to_str().unwrap()], tmp.path());
    // The job state really lived in Redis: the stream holds the events, and no file log exists.
    let events = redis_xlen(port, "quarry:coordinator:events");
    assert!(events > 16 * 2, "only {events} events in the Redis stream");
    assert!(!blobs.join("events.log").exists(), "--redis still wrote a file log");
    drop(redis);
}

#[test]
fn wrong_token_or_protocol_version_is_refused_clearly() {
    if !have_serve() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let (_server, url) = serve(
        &["--store", store.to_str().unwrap()],
        "127.0.0.1:0",
        &["--token", "s3cret"],
        &tmp.path().join("serve.log"),
    );
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
