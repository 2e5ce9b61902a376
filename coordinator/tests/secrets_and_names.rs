//! No secrets in logs or errors (Redis passwords, tokens) and unsafe uploaded file names
//! refused when a job is created.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use quarry_coordinator::http::HttpConfig;
use quarry_coordinator::redis_log::{RedisLog, redact_url};
use quarry_coordinator::state::{Coordinator, JobSpec, Now, StateError};

#[test]
fn redis_passwords_are_redacted() {
    assert_eq!(redact_url("redis://:hunter2@db:6379/0"), "redis://:***@db:6379/0");
    assert_eq!(redact_url("rediss://alice:hunter2@db/1?x=1"), "rediss://alice:***@db/1?x=1");
    assert_eq!(redact_url("redis://db:6379"), "redis://db:6379");
    assert_eq!(redact_url("redis://alice@db"), "redis://alice@db");
    assert_eq!(redact_url("redis://:p@ss:w0rd@db"), "redis://:***@db");
    // A connection that fails: the error (what `quarry serve` prints) has no password.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let err = RedisLog::open(&format!("redis://:hunter2@127.0.0.1:{port}/0"), "t").err().unwrap();
    let text = format!("{err} {err:?}");
    assert!(!text.contains("hunter2") && text.contains("***"), "{text}");
}

#[test]
fn http_config_debug_hides_the_token() {
    let c = HttpConfig { token: Some("s3cret-token".into()), max_upload: 10, secure_cookie: false };
    let text = format!("{c:?}");
    assert!(!text.contains("s3cret-token") && text.contains("redacted"), "{text}");
}

#[test]
fn unsafe_file_names_are_refused_when_a_job_is_created() {
    let now = Now::system();
    let mut c = Coordinator::new(Duration::from_secs(10));
    let spec = |file_name: &str| JobSpec {
        dataset_hash: "abc".into(),
        file_name: file_name.into(),
        target: "y".into(),
        max_trials: Some(1),
        ..JobSpec::default()
    };
    let long = format!("{}.csv", "x".repeat(200));
    for bad in ["../../etc/cron.d/x.csv", "/abs.csv", "a\\b.csv", "a\0.csv", "..", long.as_str()] {
        match c.create_job(spec(bad), now) {
            Err(StateError::InvalidSpec(m)) => assert!(m.contains("file name"), "{m}"),
            other => panic!("{bad:?}: {other:?}"),
        }
    }
    assert!(c.create_job(spec("train.csv"), now).is_ok());
    assert!(c.create_job(spec("\"><script>.csv"), now).is_ok(), "odd but harmless names stay allowed");
}
