//! The dashboard of `quarry serve --http`: the JSON API, escaping, the token and the upload
//! limit over plain HTTP, then a real job watched in headless Chromium (Debian's `chromium` +
//! `chromium-driver`, driven over the W3C WebDriver protocol). Screenshots are saved under
//! the target dir (`dashboard-screenshots/`, printed by the test).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use quarry_tests::{cluster, example, quarry_bin};
use serde_json::{Value, json};

const XSS_COLUMN: &str = "<img src=x onerror=alert(1)>";
const XSS_FILE: &str = "\"><script>.csv";

/// A child process killed and reaped when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `quarry serve` on free ports; returns (process, grpc URL, http base URL).
fn serve(dir: &Path, extra: &[&str]) -> (cluster::Proc, String, String) {
    let http = format!("127.0.0.1:{}", cluster::free_port());
    let mut args = extra.to_vec();
    args.extend(["--http", http.as_str()]);
    let (proc, grpc) = cluster::serve_store(dir, &args);
    (proc, grpc, format!("http://{http}"))
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// (status, body, headers as "name: value" lines lowercased names)
fn get(url: &str, headers: &[(&str, &str)]) -> (u16, String, Vec<(String, String)>) {
    let mut req = agent().get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut resp = req.call().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status().as_u16();
    let hs =
        resp.headers().iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string())).collect();
    (status, resp.body_mut().read_to_string().unwrap_or_default(), hs)
}

fn post(url: &str, headers: &[(&str, &str)], content_type: &str, body: &[u8]) -> (u16, String) {
    let (status, text, _) = post_with_headers(url, headers, content_type, body);
    (status, text)
}

fn post_with_headers(
    url: &str,
    headers: &[(&str, &str)],
    content_type: &str,
    body: &[u8],
) -> (u16, String, Vec<(String, String)>) {
    let mut req = agent().post(url).header("Content-Type", content_type);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut resp = req.send(body).unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let hs =
        resp.headers().iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string())).collect();
    (resp.status().as_u16(), resp.body_mut().read_to_string().unwrap_or_default(), hs)
}

/// A multipart/form-data body: text fields, then the file.
fn multipart(fields: &[(&str, &str)], file_name: &str, file: &[u8]) -> (String, Vec<u8>) {
    let boundary = "quarry-test-boundary-7d1f";
    let mut body = Vec::new();
    for (k, v) in fields {
        body.extend(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n").as_bytes(),
        );
    }
    // RFC 7578: a quote in a file name is sent as %22.
    let quoted = file_name.replace('"', "%22");
    body.extend(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{quoted}\"\r\nContent-Type: text/csv\r\n\r\n")
            .as_bytes(),
    );
    body.extend(file);
    body.extend(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// A small binary dataset whose feature column is named like an HTML tag.
fn xss_csv() -> Vec<u8> {
    let mut s = format!("\"{XSS_COLUMN}\",other,y\n");
    for i in 0..120u32 {
        let x = (i * 37 % 100) as f64 / 100.0;
        let other = (i * 11 % 7) as f64;
        let y = if x + if i % 9 == 0 { 0.4 } else { 0.0 } > 0.5 { "yes" } else { "no" };
        s.push_str(&format!("{x},{other},{y}\n"));
    }
    s.into_bytes()
}

#[test]
fn api_escaping_token_and_upload_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (_serve, _grpc, http) = serve(dir.path(), &["--token", "s3cret", "--max-upload", "20000"]);
    let auth = [("Authorization", "Bearer s3cret")];

    // Without the token: API 401 (JSON), pages 401 with the login form; wrong token too.
    let (s, body, _) = get(&format!("{http}/api/jobs"), &[]);
    assert_eq!(s, 401, "{body}");
    assert!(body.contains("token"), "{body}");
    assert_eq!(get(&format!("{http}/api/jobs"), &[("Authorization", "Bearer nope")]).0, 401);
    assert_eq!(get(&format!("{http}/openapi.json"), &[]).0, 401);
    let (s, body, _) = get(&format!("{http}/"), &[]);
    assert_eq!(s, 401);
    assert!(body.contains("name=\"token\""), "login form expected: {body}");
    // With it: bearer header, or the cookie the login form sets. A token in the URL is not
    // taken (it would stay in history and logs).
    let (s, body, _) = get(&format!("{http}/api/jobs"), &auth);
    assert_eq!((s, serde_json::from_str::<Value>(&body).unwrap()), (200, json!({ "jobs": [] })));
    let (s, _, headers) = get(&format!("{http}/?token=s3cret"), &[]);
    assert_eq!(s, 401);
    assert!(!headers.iter().any(|(k, _)| k == "set-cookie"), "{headers:?}");
    let form = "application/x-www-form-urlencoded";
    let (s, _, headers) =
        post_with_headers(&format!("{http}/login"), &[], form, b"token=s3cret&next=%2Fsubmit");
    assert_eq!(s, 303);
    let cookie = headers.iter().find(|(k, _)| k == "set-cookie").map(|(_, v)| v.clone()).unwrap();
    assert_eq!(cookie, "quarry_token=s3cret; Path=/; HttpOnly; SameSite=Strict");
    assert_eq!(headers.iter().find(|(k, _)| k == "location").map(|(_, v)| v.as_str()), Some("/submit"));
    assert_eq!(get(&format!("{http}/"), &[("Cookie", "quarry_token=s3cret")]).0, 200);
    assert_eq!(get(&format!("{http}/"), &[("Cookie", "quarry_token=wrong")]).0, 401);
    // Guessing: after a burst of 10 wrong tokens, /login answers 429 (with Retry-After) without
    // checking, even the right one; the bearer header still works. The bucket refills one try
    // a second, so a stalled machine may let a few more through: count, do not time.
    let login = |token: &str| {
        post_with_headers(&format!("{http}/login"), &[], form, format!("token={token}").as_bytes())
    };
    let wrong: Vec<u16> = (0..100).map(|i| login(&format!("guess{i}")).0).take_while(|s| *s != 429).collect();
    assert!(wrong.len() >= 10 && wrong.len() < 100 && wrong.iter().all(|s| *s == 401), "{wrong:?}");
    let (s, _, headers) = login("s3cret");
    assert!(s == 429 || s == 303, "{s}");
    if s == 429 {
        assert!(headers.iter().any(|(k, _)| k == "retry-after"), "{headers:?}");
    }
    assert_eq!(get(&format!("{http}/api/jobs"), &auth).0, 200);

    // Uploads over --max-upload: 413, and no job is created.
    let big = vec![b'1'; 30_000];
    let (ct, body) = multipart(&[("target", "y")], "big.csv", &big);
    let (s, text) = post(&format!("{http}/api/jobs"), &auth, &ct, &body);
    assert_eq!(s, 413, "{text}");
    // Bad form: no target → 400 naming the field.
    let (ct, body) = multipart(&[], "a.csv", b"a,b\n1,2\n");
    let (s, text) = post(&format!("{http}/api/jobs"), &auth, &ct, &body);
    assert_eq!(s, 400, "{text}");
    assert!(text.contains("target"), "{text}");

    // A job whose target column and file name are HTML: rendered as text everywhere.
    let (ct, body) =
        multipart(&[("target", XSS_COLUMN), ("task", "binary"), ("budget", "30s")], XSS_FILE, &xss_csv());
    let (s, text) = post(&format!("{http}/api/jobs"), &auth, &ct, &body);
    assert_eq!(s, 201, "{text}");
    let id = serde_json::from_str::<Value>(&text).unwrap()["id"].as_str().unwrap().to_string();
    let (s, text, _) = get(&format!("{http}/api/jobs/{id}"), &auth);
    assert_eq!(s, 200);
    let job: Value = serde_json::from_str(&text).unwrap();
    assert_eq!((job["dataset"].as_str(), job["target"].as_str()), (Some(XSS_FILE), Some(XSS_COLUMN)));
    assert_eq!(job["task"], "binary");
    assert_eq!(job["budget_ms"], 30_000);
    for page in [format!("{http}/jobs/{id}"), format!("{http}/")] {
        let (s, html, _) = get(&page, &auth);
        assert_eq!(s, 200);
        assert!(!html.contains("<img"), "{page}: raw <img> in\n{html}");
        assert!(!html.contains("\"><script>"), "{page}: raw file name in\n{html}");
        assert_eq!(html.matches("<script").count(), 2, "{page}: only the data block and app.js");
    }
    let (_, html, _) = get(&format!("{http}/jobs/{id}"), &auth);
    assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"), "escaped target expected");
    assert!(html.contains("&quot;&gt;&lt;script&gt;.csv"), "escaped file name expected");

    // Leaderboard JSON and CSV of a job with no trials yet; cancel.
    let (s, text, _) = get(&format!("{http}/api/jobs/{id}/leaderboard"), &auth);
    assert_eq!(s, 200);
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap()["entries"], json!([]));
    let (s, text, _) = get(&format!("{http}/api/jobs/{id}/leaderboard.csv"), &auth);
    assert_eq!(
        (s, text.lines().next()),
        (200, Some("rank,trial_id,family,status,metric,validation_score,fit_seconds,params,failure_reason"))
    );
    assert_eq!(get(&format!("{http}/api/jobs/job-404"), &auth).0, 404);
    assert_eq!(get(&format!("{http}/api/jobs/{id}/run.tar"), &auth).0, 404);
    let (s, text) = post(&format!("{http}/api/jobs/{id}/cancel"), &auth, "application/json", b"");
    assert_eq!(s, 200, "{text}");
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap()["state"], "cancelled");

    // OpenAPI: a valid 3.x document listing every route the API serves.
    let (s, text, _) = get(&format!("{http}/openapi.json"), &auth);
    assert_eq!(s, 200);
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/api/jobs",
        "/api/jobs/{id}",
        "/api/jobs/{id}/cancel",
        "/api/jobs/{id}/leaderboard",
        "/api/jobs/{id}/leaderboard.csv",
        "/api/jobs/{id}/events",
        "/api/jobs/{id}/trials/{trial}",
        "/api/jobs/{id}/guardrails",
        "/api/jobs/{id}/profile",
        "/api/jobs/{id}/importance",
        "/api/jobs/{id}/artifacts",
        "/api/jobs/{id}/artifacts/{name}",
        "/api/jobs/{id}/run.tar",
        "/openapi.json",
    ] {
        assert!(paths.contains_key(p), "openapi.json lacks {p}");
    }
    // ...and nothing it lists is a dead route (GETs answer something other than 404/405 on a real job).
    let gets = paths.iter().filter(|(_, item)| item.get("get").is_some()).map(|(p, _)| p);
    for p in gets.filter(|p| !p.contains("{trial}") && !p.contains("{name}") && !p.ends_with("/events")) {
        let url = format!("{http}{}", p.replace("{id}", &id));
        let (s, _, _) = get(&url, &auth);
        assert!(s != 405, "{p}: {s}");
    }
}

// ---- WebDriver (W3C protocol over HTTP to chromedriver) ----

struct Browser {
    base: String,
    session: String,
    _driver: Proc,
    _profile: tempfile::TempDir,
    shots: PathBuf,
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    fn start(shots: PathBuf) -> Browser {
        let driver_bin = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("chromedriver not found: run scripts/test.sh (apt-get install chromium chromium-driver)");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = Proc(
            Command::new(driver_bin)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut r) = agent().get(&format!("{base}/status")).call()
                && r.body_mut().read_to_string().is_ok_and(|b| b.contains("\"ready\":true"))
            {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not become ready");
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = tempfile::tempdir().unwrap();
        let args = [
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            "--window-size=1280,1800".into(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let caps = json!({ "capabilities": { "alwaysMatch": { "browserName": "chrome",
            "goog:chromeOptions": { "binary": "/usr/bin/chromium", "args": args } } } });
        let mut b = Browser { base, session: String::new(), _driver: driver, _profile: profile, shots };
        let v = b.call("POST", "/session", Some(caps));
        b.session = v["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {v}")).to_string();
        b
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.try_call(method, path, body).unwrap_or_else(|e| panic!("webdriver {method} {path}: {e}"))
    }

    /// A WebDriver command; `Err` holds the driver's error object.
    fn try_call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, Value> {
        let url = if path == "/session" {
            format!("{}{path}", self.base)
        } else {
            format!("{}/session/{}{path}", self.base, self.session)
        };
        let a = agent();
        let mut resp = match method {
            "GET" => a.get(&url).call(),
            "DELETE" => a.delete(&url).call(),
            _ => a
                .post(&url)
                .header("Content-Type", "application/json")
                .send(body.unwrap_or(json!({})).to_string().as_bytes()),
        }
        .unwrap_or_else(|e| panic!("webdriver {method} {path}: {e}"));
        let text = resp.body_mut().with_config().limit(64 << 20).read_to_string().unwrap();
        let v: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("webdriver {path}: {e}: {text}"));
        if v["value"]["error"].is_string() {
            return Err(v["value"].clone());
        }
        Ok(v["value"].clone())
    }

    fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })));
    }

    fn url(&self) -> String {
        self.call("GET", "/url", None).as_str().unwrap_or_default().to_string()
    }

    fn js(&self, script: &str) -> Value {
        self.call("POST", "/execute/sync", Some(json!({ "script": script, "args": [] })))
    }

    fn find(&self, css: &str) -> String {
        let v = self.call("POST", "/element", Some(json!({ "using": "css selector", "value": css })));
        v[ELEMENT].as_str().unwrap_or_else(|| panic!("find {css}: {v}")).to_string()
    }

    fn text(&self, css: &str) -> String {
        let e = self.find(css);
        self.call("GET", &format!("/element/{e}/text"), None).as_str().unwrap_or_default().to_string()
    }

    /// Clicks the element `css` selects; live pages re-render (the leaderboard on every
    /// trial), so an element gone stale between find and click is looked up again.
    fn click(&self, css: &str) {
        for _ in 0..5 {
            let e = self.find(css);
            match self.try_call("POST", &format!("/element/{e}/click"), Some(json!({}))) {
                Ok(_) => return,
                Err(err) if err["error"] == "stale element reference" => continue,
                Err(err) => panic!("click {css}: {err}"),
            }
        }
        panic!("click {css}: the element went stale five times");
    }

    fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.call("POST", &format!("/element/{e}/clear"), Some(json!({})));
        self.call("POST", &format!("/element/{e}/value"), Some(json!({ "text": text })));
    }

    fn count(&self, css: &str) -> u64 {
        self.js(&format!("return document.querySelectorAll({}).length;", json!(css))).as_u64().unwrap_or(0)
    }

    /// Polls `check` until it is true (or panics with `what` after `within`).
    fn wait(&self, what: &str, within: Duration, check: impl Fn(&Browser) -> bool) {
        let deadline = Instant::now() + within;
        while !check(self) {
            if Instant::now() > deadline {
                self.screenshot(&format!("timeout-{}", what.replace(' ', "-")));
                panic!("timed out waiting for {what} (url {})", self.url());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn screenshot(&self, name: &str) {
        let b64 = self.call("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD.decode(b64.as_str().unwrap_or_default()).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "screenshot is not a PNG");
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        eprintln!("screenshot: {}", path.display());
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = agent().delete(&format!("{}/session/{}", self.base, self.session)).call();
        }
    }
}

#[test]
fn dashboard_in_headless_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let (_serve, grpc, http) = serve(dir.path(), &[]);
    let shots = quarry_bin().parent().unwrap().join("dashboard-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    eprintln!("screenshots go to {}", shots.display());
    let _worker = Proc(
        Command::new(quarry_bin())
            .args(["worker", "--coordinator", &grpc, "--threads", "1", "--cache-dir"])
            .arg(dir.path().join("cache"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("worker.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let data = example("penguins/train.csv");
    let out = Command::new(quarry_bin())
        .args([
            "submit",
            "--coordinator",
            &grpc,
            "--data",
            data.to_str().unwrap(),
            "--target",
            "species",
            "--budget",
            "40s",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "submit: {}", String::from_utf8_lossy(&out.stderr));
    let job = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().trim().to_string();

    let b = Browser::start(shots);
    // The jobs list shows the job.
    b.goto(&format!("{http}/"));
    b.wait("the job in the jobs list", Duration::from_secs(10), |b| b.count(&format!("#job-{job}")) == 1);
    assert!(b.text(&format!("#job-{job}")).contains("train.csv"));
    b.screenshot("1-jobs");

    // The job page: rows appear while the job runs, without a reload (a marker set on the
    // window survives only if the page was never reloaded).
    b.goto(&format!("{http}/jobs/{job}"));
    b.js("window.__noReload = true;");
    let first = b.count("#leaderboard tbody tr");
    b.wait("leaderboard rows to arrive live", Duration::from_secs(60), |b| {
        b.count("#leaderboard tbody tr") >= first + 3
    });
    assert_eq!(b.js("return window.__noReload === true;"), json!(true), "the page was reloaded");
    assert_eq!(b.text("#state"), "running");
    assert!(b.count("#best-chart svg path.series") == 1, "best-score chart drawn");
    assert!(b.count("#family-chart svg circle") >= 3, "score-by-family dots drawn");
    // Rows are ranked: scores in the table are sorted (log_loss: ascending).
    let scores = b.js("return Array.from(document.querySelectorAll('#leaderboard tbody tr.completed td:nth-child(4)')).map(td => parseFloat(td.textContent));");
    let scores: Vec<f64> = scores.as_array().unwrap().iter().filter_map(Value::as_f64).collect();
    assert!(scores.len() >= 2 && scores.windows(2).all(|w| w[0] <= w[1]), "unsorted: {scores:?}");
    b.screenshot("2-job-live");

    // A trial page opens from the leaderboard.
    // The live table re-renders while the job runs, so a found element can go stale before it
    // is read or clicked: read the trial and follow its link in one script.
    let trial = b
        .js("const a = document.querySelector('#leaderboard tbody tr:first-child td:nth-child(2) a'); \
         const t = a.textContent.trim(); a.click(); return t;");
    let trial = trial.as_str().unwrap_or_default().to_string();
    b.wait("the trial page", Duration::from_secs(10), |b| b.url().ends_with(&format!("/trials/{trial}")));
    assert_eq!(b.text("#trial-id"), trial);
    assert!(b.count("#params tbody tr") >= 1, "parameters listed");
    assert!(b.text("#trial-meta").contains("rank "), "{}", b.text("#trial-meta"));
    b.screenshot("3-trial");

    // Cancel the job from its page.
    b.goto(&format!("{http}/jobs/{job}"));
    b.click("#cancel");
    // The page navigates after the click: read #state only once the new page has it (a
    // WebDriver element lookup in between fails, and did in CI).
    b.wait("the job to be cancelled", Duration::from_secs(15), |b| {
        b.js("const e = document.querySelector('#state'); return e ? e.textContent.trim() : null;")
            == json!("cancelled")
    });

    // The submit form creates a job (file and column names that look like HTML stay text).
    let upload_dir = tempfile::tempdir().unwrap();
    let upload = upload_dir.path().join(XSS_FILE);
    std::fs::write(&upload, xss_csv()).unwrap();
    b.goto(&format!("{http}/submit"));
    let file = b.find("#file");
    b.call("POST", &format!("/element/{file}/value"), Some(json!({ "text": upload.to_str().unwrap() })));
    b.type_into("#target", "y");
    b.type_into("#budget", "20s");
    b.type_into("#max_trials", "3");
    b.screenshot("4-submit-form");
    b.click("#submit");
    b.wait("the new job's page", Duration::from_secs(15), |b| b.url().contains("/jobs/job-2"));
    assert_eq!(b.text("#dataset"), XSS_FILE);
    b.wait("the form's job to complete", Duration::from_secs(120), |b| b.text("#state") == "completed");
    // The schema (column names) arrives with the run record; it must show the name as text.
    b.wait("the inferred schema", Duration::from_secs(15), |b| b.count("#schema tbody tr") >= 2);
    assert!(b.text("#schema").contains(XSS_COLUMN), "{}", b.text("#schema"));
    assert_eq!(b.count("img"), 0, "an <img> was injected");
    assert!(b.count("#downloads a") >= 3, "downloads listed");
    assert!(b.count("#leaderboard tbody tr") >= 1);
    b.screenshot("5-submitted-job");

    // The run folder downloads as a tar holding the model.
    let mut resp = agent().get(&format!("{http}/api/jobs/job-2/run.tar")).call().unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let tar = resp.body_mut().with_config().limit(256 << 20).read_to_vec().unwrap();
    let tar = String::from_utf8_lossy(&tar);
    assert!(tar.contains("job-2/run.json") && tar.contains("job-2/leaderboard.json"), "run folder tar");
}

#[test]
fn fit_writes_a_self_contained_report() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let data = example("penguins/train.csv");
    quarry_tests::quarry_ok(&[
        "fit",
        "--data",
        data.to_str().unwrap(),
        "--target",
        "species",
        "--max-trials",
        "3",
        "--out",
        out.to_str().unwrap(),
    ]);
    let html = read(&out.join("report.html"));
    assert!(html.starts_with("<!doctype html>"), "report.html missing or empty");
    // Self-contained: no external script, style sheet or image.
    assert!(!html.contains("<link") && !html.contains(" src=\""), "external reference in report.html");
    // The leaderboard and importance are inlined as data.
    let start = html.find("<script type=\"application/json\" id=\"data\">").unwrap();
    let json_text = &html[start..].split_once('>').unwrap().1;
    let json_text = json_text.split_once("</script>").unwrap().0;
    let v: Value = serde_json::from_str(json_text).unwrap();
    assert_eq!(v["snapshot"]["entries"].as_array().unwrap().len(), 3);
    assert_eq!(v["snapshot"]["job"]["metric"], "log_loss");
    assert!(v["importance"]["importance"].as_array().is_some_and(|a| !a.is_empty()), "importance inlined");
    assert!(v["guardrails"]["n_rows"].as_u64().unwrap() > 0);
}
