//! Authorization (issue #23): separate worker and client tokens (`quarry serve
//! --worker-token`), and dashboard changes refused when another site's page sends them.

use std::time::{Duration, Instant};

use std::io::{Read, Write};

use quarry_tests::cluster::{cluster_dir, free_port, read, serve_store, status, submit, worker};
use quarry_tests::{example, quarry};

#[test]
fn workers_and_clients_each_need_their_own_token() {
    let Some(tmp) = cluster_dir() else { return };
    let (_server, url) =
        serve_store(tmp.path(), &["--token", "client-secret", "--worker-token", "worker-secret"]);
    // A worker holding the client token is refused and exits, saying which token it needs.
    let mut wrong = worker(&url, tmp.path(), 0, &["--token", "client-secret"]);
    assert_ne!(wrong.wait_exit(Duration::from_secs(60)), Some(0));
    let log = read(&tmp.path().join("worker0.log"));
    assert!(log.contains("--worker-token"), "{log}");
    // A client holding the worker token is refused.
    let data = example("cars/train.csv");
    let args =
        ["submit", "--coordinator", &url, "--token", "worker-secret", "--data", data.to_str().unwrap()];
    let out = quarry(&[&args[..], &["--target", "Miles_per_Gallon", "--max-trials", "2"]].concat());
    assert!(!out.status.success(), "a client with the worker token submitted a job");
    // Each with its own token: the job runs.
    let _worker = worker(&url, tmp.path(), 1, &["--token", "worker-secret"]);
    let job = submit(&url, &data, "Miles_per_Gallon", &["--token", "client-secret", "--max-trials", "2"]);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let out = quarry(&["status", "--coordinator", &url, "--token", "client-secret", &job]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.lines().next().map(str::trim) == Some("completed") {
            break;
        }
        assert!(!text.starts_with("failed"), "{text}");
        assert!(Instant::now() < deadline, "job {job} not completed: {text}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `POST path` with `headers` on a fresh connection; the status line.
fn post_status(addr: &str, path: &str, headers: &str) -> String {
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        c,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    let _ = c.read_to_string(&mut text);
    text.lines().next().unwrap_or_default().to_string()
}

/// Without `--token`, a cancel posted by another site's page (as a browser sends it: with
/// `Sec-Fetch-Site` or `Origin`) is refused with 403 and changes nothing; the dashboard's own
/// page (same origin) and non-browser clients still may.
#[test]
fn cross_site_posts_to_the_dashboard_are_refused() {
    let Some(tmp) = cluster_dir() else { return };
    let http = format!("127.0.0.1:{}", free_port());
    let (_server, url) = serve_store(tmp.path(), &["--http", &http]);
    // No worker: the job stays queued.
    let job = submit(&url, &example("cars/train.csv"), "Miles_per_Gallon", &["--max-trials", "2"]);
    let cancel = format!("/api/jobs/{job}/cancel");
    assert_eq!(post_status(&http, &cancel, "Sec-Fetch-Site: cross-site\r\n"), "HTTP/1.1 403 Forbidden");
    assert_eq!(post_status(&http, &cancel, "Origin: https://evil.example\r\n"), "HTTP/1.1 403 Forbidden");
    assert_eq!(status(&url, &job).map(|s| s.0).as_deref(), Some("queued"));
    assert_eq!(post_status(&http, &cancel, "Sec-Fetch-Site: same-origin\r\n"), "HTTP/1.1 200 OK");
    assert_eq!(status(&url, &job).map(|s| s.0).as_deref(), Some("cancelled"));
}
