//! A cluster on 127.0.0.1 for the end-to-end tests: `quarry serve`, `quarry worker`s,
//! `redis-server`, and the client commands, with every wait polling under a deadline.

// Test helpers: a failed step is a failed test, so they panic with the reason.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{quarry, quarry_bin, quarry_ok, read_json};

/// A child process killed (SIGKILL) and reaped when dropped, so a failing test leaves nothing.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit by itself; its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
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
pub fn have_serve() -> bool {
    let ok = quarry(&["serve", "--help"]).status.success();
    if !ok {
        eprintln!("skipped: this quarry has no `serve` command");
    }
    ok
}

/// A scratch folder for a cluster test, or `None` (skip the test) when this build has no
/// `quarry serve`.
pub fn cluster_dir() -> Option<tempfile::TempDir> {
    have_serve().then(|| tempfile::tempdir().unwrap())
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts `quarry serve` and waits for its `listening grpc=ADDR` line; returns the URL.
pub fn serve(store_args: &[&str], grpc: &str, extra: &[&str], log: &Path) -> (Proc, String) {
    let mut cmd = Command::new(quarry_bin());
    cmd.args(["serve", "--grpc", grpc]).args(store_args).args(extra);
    let stderr = std::fs::File::create(log).unwrap();
    let mut child = cmd.stdout(Stdio::piped()).stderr(stderr).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            for w in line.split_whitespace() {
                for key in ["grpc=", "http="] {
                    if let Some(addr) = w.strip_prefix(key) {
                        let _ = tx.send((key, addr.to_string()));
                    }
                }
            }
        }
    });
    let proc = Proc { child, name: "quarry serve".into() };
    // With --http, the HTTP listener is bound after the gRPC one: wait for both lines, so a
    // test's first HTTP request does not race the bind.
    let want_http = extra.contains(&"--http");
    let (mut grpc_addr, mut http_seen) = (None, !want_http);
    while grpc_addr.is_none() || !http_seen {
        let (key, addr) = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("quarry serve printed no `listening grpc=ADDR`; log:\n{}", read(log)));
        if key == "grpc=" { grpc_addr = Some(addr) } else { http_seen = true }
    }
    (proc, format!("http://{}", grpc_addr.unwrap_or_default()))
}

/// [`serve`] with a file store at `dir/store`, on a free port, logging to `dir/serve.log`.
pub fn serve_store(dir: &Path, extra: &[&str]) -> (Proc, String) {
    let store = dir.join("store");
    serve(&["--store", store.to_str().unwrap()], "127.0.0.1:0", extra, &dir.join("serve.log"))
}

/// `quarry serve-model` on a free port; its `listening http=ADDR`.
pub fn serve_model(args: &[&str]) -> (Proc, String) {
    let mut child = Command::new(quarry_bin())
        .arg("serve-model")
        .args(args)
        .args(["--http", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("listening http=") {
                let _ = tx.send(addr.to_string());
            }
        }
    });
    let addr =
        rx.recv_timeout(Duration::from_secs(60)).expect("serve-model printed no `listening http=ADDR`");
    (Proc { child, name: "serve-model".into() }, addr)
}

/// A tiny regression file: y = 2a + b.
pub fn small_csv(path: &Path) {
    let mut s = String::from("a,b,y\n");
    for i in 0..80 {
        let (a, b) = (f64::from(i % 10), f64::from((i * 7) % 5));
        s.push_str(&format!("{a},{b},{}\n", 2.0 * a + b));
    }
    std::fs::write(path, s).unwrap();
}

/// `quarry train` of a linear regression on [`small_csv`] written to `dir/small.csv`; returns
/// the run folder, `dir/run`.
pub fn train_small_linear(dir: &Path) -> PathBuf {
    let data = dir.join("small.csv");
    small_csv(&data);
    let run = dir.join("run");
    quarry_ok(&[
        "train",
        "--data",
        data.to_str().unwrap(),
        "--target",
        "y",
        "--task",
        "regression",
        "--family",
        "linear",
        "--out",
        run.to_str().unwrap(),
    ]);
    run
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

pub fn worker(url: &str, dir: &Path, n: usize, extra: &[&str]) -> Proc {
    worker_with_env(url, dir, n, extra, &[])
}

/// A worker with extra environment variables (`QUARRY_FAULT_INJECT`, …); its log is
/// `dir/worker{n}.log`.
pub fn worker_with_env(url: &str, dir: &Path, n: usize, extra: &[&str], env: &[(&str, &str)]) -> Proc {
    let cache = dir.join(format!("worker{n}"));
    let log = std::fs::File::create(dir.join(format!("worker{n}.log"))).unwrap();
    let child = Command::new(quarry_bin())
        .args(["worker", "--coordinator", url, "--threads", "1", "--cache-dir"])
        .arg(&cache)
        .args(extra)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    Proc { child, name: format!("worker {n}") }
}

pub fn submit(url: &str, data: &Path, target: &str, extra: &[&str]) -> String {
    let mut args = vec!["submit", "--coordinator", url, "--data", data.to_str().unwrap(), "--target", target];
    args.extend_from_slice(extra);
    let out = quarry_ok(&args);
    let id = out.lines().last().unwrap_or_default().trim().to_string();
    assert!(!id.is_empty() && !id.contains(' '), "submit printed {out:?}");
    id
}

/// `quarry status` as (state word, trials finished).
pub fn status(url: &str, job: &str) -> Option<(String, u64)> {
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
pub fn wait_for(url: &str, job: &str, within: Duration, done: impl Fn(&str, u64) -> bool) -> (String, u64) {
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

pub fn wait_completed(url: &str, job: &str) {
    wait_for(url, job, Duration::from_secs(900), |s, _| s == "completed");
}

pub fn leaderboard(run: &Path) -> Vec<Value> {
    read_json(&run.join("leaderboard.json")).as_array().cloned().unwrap_or_default()
}

pub fn trial_ids(board: &[Value]) -> Vec<u64> {
    let mut ids: Vec<u64> = board.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    ids.sort_unstable();
    ids
}

/// `redis-server` on PATH or in the usual system folders (Debian puts it in /usr/bin).
pub fn redis_server_binary() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin".into(), "/usr/sbin".into(), "/usr/local/bin".into()])
        .map(|d| d.join("redis-server"))
        .find(|p| p.is_file())
}

/// The stream's length, by a raw RESP `XLEN` (no client library needed in this crate).
pub fn redis_xlen(port: u16, key: &str) -> i64 {
    redis_integer(port, &["XLEN", key])
}

/// A command with an integer answer (`XLEN`, `EXISTS`, …), sent as raw RESP.
pub fn redis_integer(port: u16, args: &[&str]) -> i64 {
    use std::io::{Read, Write};
    let mut con = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    con.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut request = format!("*{}\r\n", args.len());
    for a in args {
        request.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    con.write_all(request.as_bytes()).unwrap();
    let mut buf = [0u8; 64];
    let n = con.read(&mut buf).unwrap();
    let reply = String::from_utf8_lossy(&buf[..n]).into_owned();
    reply
        .trim()
        .strip_prefix(':')
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{} answered {reply:?}", args.first().copied().unwrap_or_default()))
}

/// Starts `redis-server` on `port` with its files in `dir` (append-only file on when `aof`,
/// fsynced on every write, as a deployment that wants the file log's guarantee runs it) and
/// waits until it accepts connections. `None` when it is not installed; under `CI` (where
/// scripts/test.sh installs it) that is a failure instead.
pub fn start_redis(dir: &Path, port: u16, aof: bool) -> Option<Proc> {
    let appendonly = if aof { "yes" } else { "no" };
    start_redis_with(dir, port, &["--save", "", "--appendonly", appendonly, "--appendfsync", "always"])
}

/// `redis-server` on `port` with its files in `dir` and `config` (none: Redis's defaults, RDB
/// snapshots only, as an operator who installs it and changes nothing runs it).
pub fn start_redis_with(dir: &Path, port: u16, config: &[&str]) -> Option<Proc> {
    let Some(redis_server) = redis_server_binary() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "redis-server is not installed; scripts/test.sh installs it"
        );
        eprintln!("skipped: needs redis-server (scripts/test.sh installs it)");
        return None;
    };
    let redis = Proc {
        child: Command::new(redis_server)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(config)
            .arg("--dir")
            .arg(dir)
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
    Some(redis)
}

/// Runs `quarry serve` with `args` and expects it to refuse to start: its exit code (within
/// 60 s; a server that starts instead fails the test there) and its stderr.
pub fn serve_refused(args: &[&str], log: &Path) -> (Option<i32>, String) {
    let stderr = std::fs::File::create(log).unwrap();
    let child = Command::new(quarry_bin())
        .args(["serve", "--grpc", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut proc = Proc { child, name: "a second quarry serve".into() };
    let code = proc.wait_exit(Duration::from_secs(60));
    (code, read(log))
}

/// Sends `signal` (`-STOP`, `-CONT`, `-TERM`, …) to a child with kill(1).
pub fn signal(proc: &Proc, signal: &str) {
    let ok = Command::new("kill").arg(signal).arg(proc.child.id().to_string()).status().unwrap().success();
    assert!(ok, "kill {signal} {} failed", proc.name);
}

/// Polls until `path` holds `needle`; its text.
pub fn wait_for_text(path: &Path, needle: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let text = read(path);
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{} did not get {needle:?} within {within:?}:\n{text}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A file-store coordinator with a 2 s lease TTL, two workers (0: the one a test harms, 1: the
/// survivor) and a 16-trial cars job: the set-up of the lease-expiry tests.
pub struct LeaseCluster {
    pub server: Proc,
    pub url: String,
    pub victim: Proc,
    pub survivor: Proc,
    pub job: String,
}

pub fn lease_cluster(dir: &Path) -> LeaseCluster {
    let store = dir.join("store");
    let (server, url) = serve(
        &["--store", store.to_str().unwrap_or_default()],
        "127.0.0.1:0",
        &["--lease-ttl", "2s"],
        &dir.join("serve.log"),
    );
    let victim = worker(&url, dir, 0, &[]);
    let survivor = worker(&url, dir, 1, &[]);
    let data = crate::example("cars/train.csv");
    let job = submit(&url, &data, "Miles_per_Gallon", &["--max-trials", "16", "--seed", "3"]);
    LeaseCluster { server, url, victim, survivor, job }
}
