//! RedisLog against a real redis-server on a free port (started and stopped here). Skipped,
//! with a notice, only when no redis-server binary exists (scripts/test.sh installs one).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use quarry_coordinator::EventLog;
use quarry_coordinator::owner::StoreLock;
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

fn raw(url: &str) -> redis::Connection {
    redis::Client::open(url).unwrap().get_connection().unwrap()
}

#[test]
fn durability_check_names_each_problem_and_passes_an_aof_server() {
    let Some(server) = start_redis() else { return };
    let mut log = RedisLog::open(&server.url, "test").unwrap();
    let err = log.check_durability(false).unwrap_err().to_string();
    assert!(err.contains("appendonly is no"), "{err}");
    assert!(err.contains("--redis-unsafe"), "{err}");
    let mut con = raw(&server.url);
    let () =
        redis::cmd("CONFIG").arg("SET").arg("maxmemory-policy").arg("allkeys-lru").query(&mut con).unwrap();
    let problems = log.check_durability(true).unwrap();
    // appendfsync everysec (the default) is a problem too where Redis has no WAITAOF (< 7.2).
    assert!(problems[0].starts_with("appendonly is no"), "{problems:?}");
    assert!(problems.last().unwrap().contains("maxmemory-policy is allkeys-lru"), "{problems:?}");
    for (k, v) in [("appendonly", "yes"), ("appendfsync", "always"), ("maxmemory-policy", "noeviction")] {
        let () = redis::cmd("CONFIG").arg("SET").arg(k).arg(v).query(&mut con).unwrap();
    }
    assert_eq!(log.check_durability(false).unwrap(), Vec::<String>::new());
}

/// Entry ids are sequence numbers: an entry another writer slipped in makes Redis refuse the
/// next append (not retried), and a replay names the entry.
#[test]
fn an_entry_from_another_writer_is_refused_on_append_and_on_replay() {
    let Some(server) = start_redis() else { return };
    let mut log = RedisLog::open(&server.url, "test").unwrap();
    log.replay().unwrap();
    log.append_batch(&[b"one".to_vec(), b"two".to_vec()]).unwrap();
    let mut con = raw(&server.url);
    let _: String =
        redis::cmd("XADD").arg("quarry:test:events").arg("*").arg("e").arg("x").query(&mut con).unwrap();
    let err = log.append(b"three").unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert!(err.to_string().contains("another writer"), "{err}");
    let err = RedisLog::open(&server.url, "test").unwrap().replay().unwrap_err().to_string();
    assert!(err.contains("stream entry 3 has id"), "{err}");
}

/// The stream emptied under a running log (Redis restarted without its data): the next append
/// after the reconnect refuses instead of writing ids past a gap.
#[test]
fn a_stream_that_lost_acknowledged_entries_is_detected_after_a_reconnect() {
    let Some(server) = start_redis() else { return };
    let mut log = RedisLog::open(&server.url, "test").unwrap();
    log.replay().unwrap();
    log.append_batch(&[b"one".to_vec(), b"two".to_vec()]).unwrap();
    let mut con = raw(&server.url);
    let _: i64 = redis::cmd("DEL").arg("quarry:test:events").query(&mut con).unwrap();
    // Drop every client connection, as a restart does.
    let _: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .arg("SKIPME")
        .arg("yes")
        .query(&mut con)
        .unwrap();
    let mut last = None;
    for _ in 0..3 {
        match log.append(b"three") {
            Err(e) if e.is_transient() => last = Some(e),
            other => {
                let err = other.unwrap_err().to_string();
                assert!(err.contains("Redis lost acknowledged writes"), "{err}");
                return;
            }
        }
    }
    panic!("the append kept failing transiently: {last:?}");
}

/// Takes a store lock just released. A child that a parallel test forks holds a copy of the
/// lock's descriptor until its `exec` closes it, so the lock can stay held for that moment.
fn reacquire(dir: &std::path::Path) -> StoreLock {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match StoreLock::acquire(dir) {
            Ok(lock) => return lock,
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(e) => panic!("the released store lock was never free again: {e}"),
        }
    }
}

#[test]
fn a_second_owner_is_refused_naming_the_first() {
    let Some(server) = start_redis() else { return };
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let lock_a = StoreLock::acquire(a.path()).unwrap();
    let lock_b = StoreLock::acquire(b.path()).unwrap();
    let mut first = RedisLog::open(&server.url, "test").unwrap();
    assert_eq!(first.claim(&lock_a, false).unwrap(), 0);
    let mut second = RedisLog::open(&server.url, "test").unwrap();
    let err = second.claim(&lock_b, false).unwrap_err().to_string();
    assert!(err.contains(&lock_a.owner().describe()), "{err}");
    first.keep_alive().unwrap();
    // The same store again (its lock was released, so its holder is gone): taken over at once.
    drop(lock_a);
    let lock_a = reacquire(a.path());
    let mut again = RedisLog::open(&server.url, "test").unwrap();
    again.claim(&lock_a, false).unwrap();
    // The old holder finds out at its next keep-alive.
    let err = first.keep_alive().unwrap_err();
    assert!(!err.is_transient(), "{err}");
}

fn recs(range: std::ops::RangeInclusive<u32>) -> Vec<Vec<u8>> {
    range.map(|i| format!("r{i}").into_bytes()).collect()
}

#[test]
fn a_snapshot_trims_the_stream_and_recovery_replays_only_the_tail() {
    let Some(server) = start_redis() else { return };
    let mut log = RedisLog::open(&server.url, "snap").unwrap();
    assert!(log.recover().unwrap().snapshot.is_none());
    log.append_batch(&recs(1..=5)).unwrap();
    log.write_snapshot(5, b"state at 5").unwrap();
    log.append_batch(&recs(6..=7)).unwrap();
    let mut con = redis::Client::open(server.url.as_str()).unwrap().get_connection().unwrap();
    let len: u64 = redis::cmd("XLEN").arg("quarry:snap:events").query(&mut con).unwrap();
    assert_eq!(len, 2);
    drop(log);
    let mut log = RedisLog::open(&server.url, "snap").unwrap();
    let got = log.recover().unwrap();
    assert_eq!(got.snapshot, Some((5, b"state at 5".to_vec())));
    assert_eq!(got.records, recs(6..=7));
    // Appends go on at 8, and a reconnect's XLEN check counts the trimmed entries.
    assert_eq!(log.append_batch(&recs(8..=8)).unwrap(), 8);
    let () = redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("normal").query(&mut con).unwrap_or(());
    let mut tries = 0;
    let seq = loop {
        match log.append_batch(&recs(9..=9)) {
            Ok(seq) => break seq,
            Err(e) if e.is_transient() && tries < 3 => tries += 1,
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(seq, 9);
}

#[test]
fn a_snapshot_whose_trim_never_happened_or_was_kept_gives_the_same_tail() {
    let Some(server) = start_redis() else { return };
    // --keep-rotated-log: the snapshot is written, the stream keeps every entry (the same
    // stream a crash between the two would leave, were they not one transaction).
    let mut log = RedisLog::open(&server.url, "kept").unwrap();
    log.keep_rotated(true);
    log.recover().unwrap();
    log.append_batch(&recs(1..=4)).unwrap();
    log.write_snapshot(3, b"state at 3").unwrap();
    log.append_batch(&recs(5..=5)).unwrap();
    drop(log);
    let mut log = RedisLog::open(&server.url, "kept").unwrap();
    let got = log.recover().unwrap();
    assert_eq!(got.snapshot, Some((3, b"state at 3".to_vec())));
    assert_eq!(got.records, recs(4..=5));
    assert_eq!(log.append_batch(&recs(6..=6)).unwrap(), 6);
}

#[test]
fn a_damaged_snapshot_is_refused_not_used() {
    let Some(server) = start_redis() else { return };
    let mut log = RedisLog::open(&server.url, "torn").unwrap();
    log.recover().unwrap();
    log.append_batch(&recs(1..=3)).unwrap();
    log.write_snapshot(3, b"the state").unwrap();
    drop(log);
    let mut con = redis::Client::open(server.url.as_str()).unwrap().get_connection().unwrap();
    let mut bytes: Vec<u8> = redis::cmd("GET").arg("quarry:torn:snapshot").query(&mut con).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    let () = redis::cmd("SET").arg("quarry:torn:snapshot").arg(bytes).query(&mut con).unwrap();
    let err = RedisLog::open(&server.url, "torn").unwrap().recover().unwrap_err();
    assert!(err.to_string().contains("checksum"), "{err}");
    assert!(!err.is_transient());
}
