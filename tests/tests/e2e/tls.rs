//! TLS: `quarry serve --tls-cert --tls-key` (gRPC and HTTP) with a worker and the client
//! commands trusting a self-signed CA (`--tls-ca`) made at test time, plain-text clients refused
//! clearly, HTTPS for the dashboard API and for `quarry serve-model`, and bad PEM files.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quarry_tests::cluster::{
    cluster_dir, free_port, leaderboard, read, serve, serve_model, train_small_linear, worker,
};
use quarry_tests::{example, quarry, quarry_ok, read_json};
use serde_json::{Value, json};

/// PEM files of a throwaway CA and a server certificate it signed (for 127.0.0.1 and
/// localhost).
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn make_pki(dir: &Path) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "quarry test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, "quarry test server");
    let cert = params.signed_by(&key, &issuer).unwrap();
    let pki = Pki { ca: dir.join("ca.pem"), cert: dir.join("server.pem"), key: dir.join("server.key") };
    std::fs::write(&pki.ca, ca_cert.pem()).unwrap();
    std::fs::write(&pki.cert, cert.pem()).unwrap();
    std::fs::write(&pki.key, key.serialize_pem()).unwrap();
    pki
}

/// An HTTPS agent that trusts only `ca`.
fn agent(ca: &Path) -> ureq::Agent {
    use ureq::tls::{Certificate, RootCerts, TlsConfig};
    let pem = std::fs::read(ca).unwrap();
    let cert = Certificate::from_pem(&pem).unwrap().to_owned();
    ureq::Agent::config_builder()
        .tls_config(TlsConfig::builder().root_certs(RootCerts::Specific(Arc::new(vec![cert]))).build())
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// Whether `quarry status` over TLS without a token succeeds.
fn status_without_token(url: &str, ca: &str, job: &str) -> bool {
    quarry(&["status", "--coordinator", url, "--tls-ca", ca, job]).status.success()
}

#[test]
fn a_job_runs_over_tls_and_plain_clients_are_refused_clearly() {
    let Some(tmp) = cluster_dir() else { return };
    let pki = make_pki(tmp.path());
    let (cert, key, ca) = (pki.cert.to_str().unwrap(), pki.key.to_str().unwrap(), pki.ca.to_str().unwrap());
    let store = tmp.path().join("store");
    let http_addr = format!("127.0.0.1:{}", free_port());
    let (_server, plain_url) = serve(
        &["--store", store.to_str().unwrap()],
        "127.0.0.1:0",
        &["--tls-cert", cert, "--tls-key", key, "--http", &http_addr, "--token", "s3cret"],
        &tmp.path().join("serve.log"),
    );
    let url = plain_url.replace("http://", "https://");
    let _worker = worker(&url, tmp.path(), 0, &["--tls-ca", ca, "--token", "s3cret"]);
    let data = example("penguins/train.csv");
    let out = quarry_ok(&[
        "submit",
        "--coordinator",
        &url,
        "--tls-ca",
        ca,
        "--token",
        "s3cret",
        "--data",
        data.to_str().unwrap(),
        "--target",
        "species",
        "--max-trials",
        "3",
        "--seed",
        "3",
    ]);
    let job = out.lines().last().unwrap().trim().to_string();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let out = quarry(&["status", "--coordinator", &url, "--tls-ca", ca, "--token", "s3cret", &job]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if text.starts_with("completed") {
            break;
        }
        assert!(!text.starts_with("failed"), "job failed: {text}");
        assert!(
            Instant::now() < deadline,
            "job not completed over TLS; worker log:\n{}",
            read(&tmp.path().join("worker0.log"))
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The job's result came back over TLS: three trials and a final model that predicts.
    let run = tmp.path().join("run");
    quarry_ok(&[
        "download",
        "--coordinator",
        &url,
        "--tls-ca",
        ca,
        "--token",
        "s3cret",
        &job,
        "--out",
        run.to_str().unwrap(),
    ]);
    let board = leaderboard(&run);
    assert_eq!(board.len(), 3, "{board:?}");
    assert!(read_json(&run.join("run.json"))["best_validation_score"].as_f64().is_some());
    assert!(run.join("model").is_dir());

    // HTTPS: the dashboard's JSON API answers with the CA (and the token).
    let https = format!("https://{http_addr}");
    let mut resp = agent(&pki.ca)
        .get(format!("{https}/api/jobs/{job}"))
        .header("Authorization", "Bearer s3cret")
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let body: Value = serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(body["state"], "completed", "{body}");
    // The login form's cookie over HTTPS is `Secure`: the browser never sends it in clear.
    let resp = agent(&pki.ca)
        .post(format!("{https}/login"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .send(&b"token=s3cret"[..])
        .unwrap();
    assert_eq!(resp.status().as_u16(), 303);
    let cookie = resp.headers().get("set-cookie").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert!(cookie.starts_with("quarry_token=s3cret;") && cookie.ends_with("; Secure"), "{cookie}");
    // Plain HTTP to the HTTPS port gets no answer.
    let plain = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .new_agent()
        .get(format!("http://{http_addr}/api/jobs"))
        .call();
    assert!(plain.is_err(), "plain HTTP to the TLS port answered: {:?}", plain.map(|r| r.status()));

    // A plain-text gRPC client is refused, with a hint; so is TLS without trusting the CA.
    let out = quarry(&["jobs", "--coordinator", &plain_url, "--token", "s3cret"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(err.contains("https://") && err.contains("--tls-ca"), "{err}");
    let out = quarry(&["jobs", "--coordinator", &url, "--token", "s3cret"]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stdout));
    // --tls-ca and a plain-text address do not go together.
    let out = quarry(&["jobs", "--coordinator", &plain_url, "--tls-ca", ca]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("plain text"));
    assert!(!status_without_token(&url, ca, &job), "the token is still required over TLS");
}

#[test]
fn serve_model_answers_inference_over_https() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = make_pki(tmp.path());
    let run = train_small_linear(tmp.path());
    let (_server, addr) = serve_model(&[
        "--model",
        run.to_str().unwrap(),
        "--name",
        "small",
        "--tls-cert",
        pki.cert.to_str().unwrap(),
        "--tls-key",
        pki.key.to_str().unwrap(),
    ]);
    let body = json!({"inputs": [
        {"name": "a", "shape": [2], "datatype": "FP64", "data": [1.0, 3.0]},
        {"name": "b", "shape": [2], "datatype": "FP64", "data": [2.0, 0.0]}
    ]});
    let mut resp = agent(&pki.ca)
        .post(format!("https://{addr}/v2/models/small/infer"))
        .header("Content-Type", "application/json")
        .send(body.to_string().as_bytes())
        .unwrap();
    let text = resp.body_mut().read_to_string().unwrap();
    assert_eq!(resp.status().as_u16(), 200, "{text}");
    let got: Value = serde_json::from_str(&text).unwrap();
    let values: Vec<f64> = got["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["data"].as_array().is_some_and(|d| d.len() == 2 && d[0].is_f64()))
        .map(|o| o["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect())
        .unwrap_or_else(|| panic!("no 2-row numeric output in {got}"));
    // y = 2a + b exactly, so a linear model gets it to within rounding.
    assert!((values[0] - 4.0).abs() < 0.05 && (values[1] - 6.0).abs() < 0.05, "{values:?}");
}

#[test]
fn bad_pem_files_exit_2_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = make_pki(tmp.path());
    let junk = tmp.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let missing = tmp.path().join("missing.pem");
    let other = make_pki(&{
        let d = tmp.path().join("other");
        std::fs::create_dir_all(&d).unwrap();
        d
    });
    let store = tmp.path().join("store");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let cases: Vec<(Vec<String>, String)> = vec![
        (vec!["--tls-cert".into(), s(&junk), "--tls-key".into(), s(&pki.key)], s(&junk)),
        (vec!["--tls-cert".into(), s(&missing), "--tls-key".into(), s(&pki.key)], s(&missing)),
        (vec!["--tls-cert".into(), s(&pki.cert), "--tls-key".into(), s(&pki.cert)], s(&pki.cert)),
        // A key that is not the certificate's.
        (vec!["--tls-cert".into(), s(&pki.cert), "--tls-key".into(), s(&other.key)], s(&other.key)),
    ];
    for (tls, file) in cases {
        let mut args = vec!["serve", "--grpc", "127.0.0.1:0", "--store", store.to_str().unwrap()];
        args.extend(tls.iter().map(String::as_str));
        let out = quarry(&args);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(&file), "{args:?}: the error does not name {file}: {err}");
    }
    // --tls-cert alone is a usage error.
    let out = quarry(&["serve", "--grpc", "127.0.0.1:0", "--tls-cert", &s(&pki.cert)]);
    assert_eq!(out.status.code(), Some(2));
    // Client side: a missing or junk CA file.
    for ca in [&missing, &junk] {
        let out = quarry(&["jobs", "--coordinator", "https://127.0.0.1:1", "--tls-ca", &s(ca)]);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("--tls-ca") && err.contains(&s(ca)), "{err}");
        let mut w = worker("https://127.0.0.1:1", tmp.path(), 0, &["--tls-ca", &s(ca)]);
        assert_eq!(w.wait_exit(Duration::from_secs(60)), Some(2));
        assert!(read(&tmp.path().join("worker0.log")).contains(&s(ca)));
    }
}
