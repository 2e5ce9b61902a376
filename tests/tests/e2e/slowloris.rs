//! Slow and idle clients (issue #23): connections that send half a request and then nothing
//! must not hold the coordinator's listeners. Raw TCP connections against the real binary.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use quarry_tests::cluster::{cluster_dir, serve_store};
use quarry_tests::quarry;

/// `n` connections to `addr`, each sending `half` and then nothing.
fn half_requests(addr: &str, n: usize, half: &[u8]) -> Vec<TcpStream> {
    (0..n)
        .map(|_| {
            let mut c = TcpStream::connect(addr).unwrap();
            c.write_all(half).unwrap();
            c
        })
        .collect()
}

/// Whether the server closed `c` (EOF or reset) within `within`.
fn closed_within(c: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 512];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        c.set_read_timeout(Some(left)).unwrap();
        match c.read(&mut buf) {
            Ok(0) => return true,
            // An answer (408 and the like) before the close is fine.
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return false;
            }
            Err(_) => return true,
        }
    }
}

/// The status line of a plain `GET path` answered on a fresh connection.
fn get_status(addr: &str, path: &str) -> String {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(c, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    let _ = c.read_to_string(&mut text);
    text.lines().next().unwrap_or_default().to_string()
}

/// 300 HTTP connections that send half a header: a normal request is still answered at once,
/// and each of the 300 is closed by the header timeout (default 10 s).
#[test]
fn half_sent_http_headers_are_cut_off_and_others_are_served() {
    let Some(tmp) = cluster_dir() else { return };
    let http = format!("127.0.0.1:{}", quarry_tests::cluster::free_port());
    let (_server, _url) = serve_store(tmp.path(), &["--http", &http]);
    let mut slow = half_requests(&http, 300, b"GET /api/jobs HTTP/1.1\r\nHost: x\r\nX-Slow: ");
    assert_eq!(get_status(&http, "/api/jobs"), "HTTP/1.1 200 OK");
    for (i, c) in slow.iter_mut().enumerate() {
        assert!(closed_within(c, Duration::from_secs(20)), "slow connection {i} still open after 20 s");
    }
    assert_eq!(get_status(&http, "/api/jobs"), "HTTP/1.1 200 OK");
}

/// 100 gRPC connections that send half the HTTP/2 preface and then nothing are closed once
/// idle (`--idle-timeout 2s`); a client call meanwhile is answered.
#[test]
fn idle_grpc_connections_are_closed_and_others_are_served() {
    let Some(tmp) = cluster_dir() else { return };
    let (_server, url) = serve_store(tmp.path(), &["--idle-timeout", "2s"]);
    let addr = url.trim_start_matches("http://").to_string();
    let mut slow = half_requests(&addr, 100, b"PRI * HTTP/2.0\r\n");
    let out = quarry(&["jobs", "--coordinator", &url]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for (i, c) in slow.iter_mut().enumerate() {
        assert!(closed_within(c, Duration::from_secs(15)), "idle connection {i} still open after 15 s");
    }
}
