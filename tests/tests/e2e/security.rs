//! Hardening: names that would escape the store are refused (CLI and HTTP), `serve-model`'s
//! token and body limit, and `--max-upload` on gRPC dataset uploads.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use quarry_tests::cluster::{
    cluster_dir, free_port, have_serve, serve, serve_model, small_csv, train_small_linear,
};
use quarry_tests::{example, quarry, quarry_ok};
use serde_json::{Value, json};

/// One raw HTTP/1.1 request (no client library normalizes the path); (status, body).
fn raw(addr: &str, method: &str, path: &str, headers: &[&str], body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

/// Every entry under `dir`, recursively (relative paths).
fn entries(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else { return out };
    for e in rd.flatten() {
        let p = e.path();
        out.push(p.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
        if p.is_dir() {
            out.extend(entries(&p).into_iter().map(|c| format!("{}/{c}", e.file_name().to_string_lossy())));
        }
    }
    out
}

#[test]
fn names_that_would_escape_the_store_are_refused_by_the_cli_and_over_http() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let data = tmp.path().join("small.csv");
    small_csv(&data);
    let long = "n".repeat(200);
    let s = store.to_str().unwrap();
    for bad in ["../evil", "../../evil", "a/b", "/tmp/evil", "a\\b", "..", long.as_str()] {
        let out = quarry(&["data", "register", data.to_str().unwrap(), "--name", bad, "--store", s]);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(2), "data register --name {bad:?}: {err}");
        assert!(err.contains("name"), "{bad:?}: {err}");
        let out = quarry(&["models", "show", &format!("{bad}:1"), "--store", s]);
        assert_eq!(out.status.code(), Some(2), "models show {bad:?}");
    }
    // Nothing was written outside the store, and no registry entry inside it.
    let outside: Vec<String> = entries(tmp.path()).into_iter().filter(|e| e.contains("evil")).collect();
    assert!(outside.is_empty(), "{outside:?}");
    assert!(!store.join("registry").exists() || entries(&store.join("registry")).is_empty());
    assert!(!Path::new("/tmp/evil").exists());
    // --data NAME:VERSION with a traversal is not looked up in the registry.
    let out = quarry(&["fit", "--data", "../../etc/passwd:1", "--target", "y", "--store", s]);
    assert_eq!(out.status.code(), Some(2));
    // serve-model --name becomes a URL and registry path segment: refused too.
    // The same small.csv again, and a linear model of it in tmp/run.
    let run = train_small_linear(tmp.path());
    let out =
        quarry(&["serve-model", "--model", run.to_str().unwrap(), "--name", "../x", "--http", "127.0.0.1:0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("../x"));

    // Over HTTP: a registered model, then traversal attempts in every kind of path segment.
    quarry_ok(&["models", "register", run.to_str().unwrap(), "--name", "small", "--store", s]);
    if !have_serve() {
        return;
    }
    let http = format!("127.0.0.1:{}", free_port());
    let (_server, _url) =
        serve(&["--store", s], "127.0.0.1:0", &["--http", &http], &tmp.path().join("serve.log"));
    let (status, _) = raw(&http, "GET", "/v2/models/small/ready", &[], "");
    assert_eq!(status, 200, "the registered model is served");
    let infer = json!({"inputs": [{"name": "a", "shape": [1], "datatype": "FP64", "data": [1.0]},
                                  {"name": "b", "shape": [1], "datatype": "FP64", "data": [1.0]}]})
    .to_string();
    for path in [
        "/v2/models/..%2F..%2Fregistry/ready",
        "/v2/models/..%2Fsmall/infer",
        "/v2/models/small/versions/..%2F..%2F1/infer",
        "/api/jobs/..%2F..%2Fevents.log",
        "/api/jobs/job-1/artifacts/..%2F..%2Fevents.log",
        "/api/jobs/job-1/artifacts/../../events.log",
        "/jobs/..%2F..%2Fevents.log",
    ] {
        let method = if path.ends_with("/infer") { "POST" } else { "GET" };
        let (status, body) = raw(&http, method, path, &[], &infer);
        assert!((400..500).contains(&status), "{path}: {status} {body}");
        assert!(!body.contains("JobCreated") && !body.contains("\"kind\""), "{path} leaked a file: {body}");
    }
}

#[test]
fn serve_model_checks_its_token_and_body_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let run = train_small_linear(tmp.path());
    let (_server, addr) = serve_model(&[
        "--model",
        run.to_str().unwrap(),
        "--name",
        "small",
        "--token",
        "s3cret",
        "--max-request-body",
        "2000",
    ]);
    let body = json!({"inputs": [{"name": "a", "shape": [1], "datatype": "FP64", "data": [1.0]},
                                 {"name": "b", "shape": [1], "datatype": "FP64", "data": [2.0]}]})
    .to_string();
    let path = "/v2/models/small/infer";
    let (status, text) = raw(&addr, "POST", path, &[], &body);
    assert_eq!(status, 401, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert!(v["error"].as_str().unwrap().contains("token"), "{v}");
    assert_eq!(raw(&addr, "POST", path, &["Authorization: Bearer s3creT"], &body).0, 401);
    assert_eq!(raw(&addr, "POST", path, &["Authorization: Bearer s3cret"], &body).0, 200);
    // Over --max-request-body: 413 with a JSON error naming the limit, before the model sees it.
    let big = format!("{}{}", body, " ".repeat(3000));
    let (status, text) = raw(&addr, "POST", path, &["Authorization: Bearer s3cret"], &big);
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("--max-request-body") && text.contains("2000"), "{text}");
}

#[test]
fn a_dataset_over_max_upload_is_refused_over_grpc() {
    let Some(tmp) = cluster_dir() else { return };
    let store = tmp.path().join("store");
    let data = example("penguins/train.csv");
    let size = std::fs::metadata(&data).unwrap().len();
    let limit = (size / 2).to_string();
    let (_server, url) = serve(
        &["--store", store.to_str().unwrap()],
        "127.0.0.1:0",
        &["--max-upload", &limit],
        &tmp.path().join("serve.log"),
    );
    let out =
        quarry(&["submit", "--coordinator", &url, "--data", data.to_str().unwrap(), "--target", "species"]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--max-upload") && err.contains(&limit), "{err}");
    // The refused upload left no blob and no temporary file behind.
    let blobs: Vec<String> = entries(&store.join("blobs")).into_iter().filter(|e| e != "tmp").collect();
    assert!(blobs.is_empty(), "{blobs:?}");
    // Under the limit, the same file is taken.
    let small = tmp.path().join("small.csv");
    small_csv(&small);
    let out = quarry(&["submit", "--coordinator", &url, "--data", small.to_str().unwrap(), "--target", "y"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}
