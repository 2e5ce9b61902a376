//! RedisLog against a real redis-server on a free port (started and stopped here). Skipped,
//! with a notice, only when no redis-server binary exists (scripts/test.sh installs one).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use quarry_coordinator::EventLog;
use quarry_coordinator::redis_log::RedisLog;

struct RedisServer {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn redis_server_binary() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin".into(), "/usr/sbin".into(), "/usr/local/bin".into()])
        .map(|d| d.join("redis-server"))
        .find(|p| p.is_file())
}

fn start_redis() -> Option<RedisServer> {
    let Some(bin) = redis_server_binary() else {
        eprintln!("NOTICE: redis-server not found; skipping the RedisLog test (scripts/test.sh installs it)");
        return None;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(bin)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting redis-server");
    let server = RedisServer { child, url: format!("redis://127.0.0.1:{port}/"), _dir: dir };
    // Poll until it answers PING; no fixed sleep.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ok = redis::Client::open(server.url.as_str())
            .and_then(|c| c.get_connection())
            .and_then(|mut con| redis::cmd("PING").query::<String>(&mut con))
            .is_ok_and(|p| p == "PONG");
        if ok {
            return Some(server);
        }
        assert!(Instant::now() < deadline, "redis-server did not answer PING within 20 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn redis_log_appends_and_replays_in_order() {
    let Some(server) = start_redis() else { return };
    let mut log = RedisLog::open(&server.url, "test").unwrap();
    assert!(log.replay().unwrap().is_empty());
    assert_eq!(log.append(b"one").unwrap(), 1);
    let batch: Vec<Vec<u8>> = (0..25_000u32).map(|i| i.to_le_bytes().to_vec()).collect();
    assert_eq!(log.append_batch(&batch).unwrap(), 25_001);
    drop(log);
    // A new connection (as after a coordinator restart) sees everything, across XRANGE pages.
    let mut log = RedisLog::open(&server.url, "test").unwrap();
    let got = log.replay().unwrap();
    assert_eq!(got.len(), 25_001);
    assert_eq!(got[0], b"one");
    assert_eq!(got[1..], batch[..]);
    assert_eq!(log.append(&[0xff, 0x00]).unwrap(), 25_002);
    // Another coordinator name is another stream.
    let mut other = RedisLog::open(&server.url, "other").unwrap();
    assert!(other.replay().unwrap().is_empty());
}

#[test]
fn redis_log_reports_an_unreachable_server() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let err = RedisLog::open(&format!("redis://127.0.0.1:{port}/"), "x").unwrap_err();
    assert!(err.to_string().contains("cannot connect"), "{err}");
}
