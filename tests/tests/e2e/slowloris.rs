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

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend(stream.to_be_bytes());
    f.extend(payload);
    f
}

/// An HTTP/2 (cleartext) client on the HTTP port that starts a request's headers and sends one
/// CONTINUATION byte every 1.5 s, never ending them: bytes keep arriving, so the idle timeout
/// never fires, and hyper has no HTTP/2 header timeout (h2 cuts a header block off after 5
/// CONTINUATION frames, which a client can spread over minutes). The server's keep-alive ping
/// cannot be answered mid-header-block (any other frame is a protocol error), so the ping's
/// timeout ends it: `--header-timeout` after the ping, not hyper's default 20 s.
#[test]
fn an_http2_request_whose_headers_never_end_is_closed_by_the_header_timeout() {
    let Some(tmp) = cluster_dir() else { return };
    let http = format!("127.0.0.1:{}", quarry_tests::cluster::free_port());
    let (_server, _url) =
        serve_store(tmp.path(), &["--http", &http, "--idle-timeout", "3s", "--header-timeout", "2s"]);
    let mut c = TcpStream::connect(&http).unwrap();
    c.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    c.write_all(&frame(4, 0, 0, &[])).unwrap();
    // HEADERS on stream 1 (:method GET, :scheme http, :path /) without END_HEADERS.
    c.write_all(&frame(1, 0, 1, &[0x82, 0x86, 0x84])).unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    let mut next_write = start + Duration::from_millis(1500);
    let closed_after = loop {
        // Read (and ignore: settings, pings) until the next write is due; EOF means closed.
        let left = next_write.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        c.set_read_timeout(Some(left)).unwrap();
        match c.read(&mut buf) {
            Ok(0) => break start.elapsed(),
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => break start.elapsed(),
        }
        // One more indexed header field (accept-encoding: gzip, deflate) in a CONTINUATION,
        // still without END_HEADERS.
        if c.write_all(&frame(9, 0, 1, &[0x90])).is_err() {
            break start.elapsed();
        }
        next_write += Duration::from_millis(1500);
        assert!(start.elapsed() < Duration::from_secs(40), "still open after 40 s");
    };
    // Ping after 1 s (a third of the idle timeout), closed 2 s later; without the header
    // timeout on the ping, h2's CONTINUATION count closed it at the sixth frame (9 s), and a
    // client spacing its frames by the idle timeout held it for minutes.
    assert!(closed_after < Duration::from_secs(6), "closed only after {closed_after:?}");
    assert_eq!(get_status(&http, "/api/jobs"), "HTTP/1.1 200 OK");
}
