//! `--token` and `--max-upload` as layers over any router.
//!
//! A request passes with `Authorization: Bearer TOKEN` or the `quarry_token` cookie, which the
//! login form (`POST /login`) sets (`Secure` when the server speaks TLS). The token never goes
//! in a URL, where it would stay in browser history, proxy logs and `Referer` headers. Without
//! it, API paths get 401 JSON and pages get 401 with the login form. `/login` and the static
//! assets stay open (they hold nothing secret); wrong tokens at `/login` are rate-limited.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::post;
use subtle::ConstantTimeEq;

use super::HttpConfig;
use super::pages::login_page;

const COOKIE: &str = "quarry_token";

/// Wraps `router` in the upload limit and (with a token) the token check.
pub fn protect(router: Router, config: &HttpConfig) -> Router {
    let max = config.max_upload;
    let limit = usize::try_from(max).unwrap_or(usize::MAX);
    let router = router
        .layer(middleware::from_fn(move |req: Request, next: Next| check_length(max, req, next)))
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn(check_same_origin));
    match config.token.as_deref().filter(|t| !t.is_empty()) {
        None => router,
        Some(token) => {
            let token: Arc<str> = Arc::from(token);
            let login_state = Arc::new(Login {
                token: token.clone(),
                secure: config.secure_cookie,
                limiter: Mutex::new(Limiter::new(LOGIN_BURST, LOGIN_REFILL)),
            });
            router
                .layer(middleware::from_fn(move |req: Request, next: Next| {
                    check_token(token.clone(), req, next)
                }))
                .merge(Router::new().route("/login", post(move |form| login(login_state.clone(), form))))
        }
    }
}

/// A request that changes something (any method but GET, HEAD, OPTIONS) sent by a page of
/// another site is refused (403): browsers say so in `Sec-Fetch-Site`, older ones in an
/// `Origin` that differs from `Host`. Without `--token` nothing else stops a page elsewhere from
/// posting a job or a cancel to this server through the user's browser (CSRF). Clients that
/// are not browsers send neither header and pass.
async fn check_same_origin(req: Request, next: Next) -> Response {
    if cross_site(req.method(), req.headers()) {
        return (
            StatusCode::FORBIDDEN,
            axum::Json(serde_json::json!({
                "error": "cross-site request refused: changes are accepted only from this server's own pages"
            })),
        )
            .into_response();
    }
    next.run(req).await
}

fn cross_site(method: &axum::http::Method, headers: &HeaderMap) -> bool {
    use axum::http::Method;
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return false;
    }
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = text("sec-fetch-site") {
        return !matches!(site, "same-origin" | "none");
    }
    match (text("origin"), text("host")) {
        (Some(origin), Some(host)) => {
            let authority = origin.split_once("://").map_or(origin, |(_, rest)| rest);
            !authority.eq_ignore_ascii_case(host)
        }
        // `Origin: null` (sandboxed frames, file pages) and an Origin without a Host.
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// A declared length over the limit is refused before reading; a chunked body is cut off at
/// the limit by `DefaultBodyLimit` (the upload handler answers 413 then too).
async fn check_length(max: u64, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        return too_large(max);
    }
    next.run(req).await
}

pub fn too_large(max: u64) -> Response {
    (
        StatusCode::PAYLOAD_TOO_LARGE,
        axum::Json(serde_json::json!({
            "error": format!("the request body is larger than this server's --max-upload ({max} bytes)")
        })),
    )
        .into_response()
}

fn matches(given: &str, token: &str) -> bool {
    bool::from(given.as_bytes().ct_eq(token.as_bytes()))
}

fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| kv.trim().strip_prefix(COOKIE).and_then(|r| r.strip_prefix('=')))
}

fn set_cookie(token: &str, secure: bool) -> HeaderValue {
    // Over TLS the browser must never send it over plain HTTP.
    let secure = if secure { "; Secure" } else { "" };
    // The token is the user's own string: anything a header cannot hold makes no cookie.
    HeaderValue::from_str(&format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict{secure}"))
        .unwrap_or_else(|_| HeaderValue::from_static("quarry_token=; Path=/"))
}

fn is_open(path: &str) -> bool {
    path == "/login" || path.starts_with("/assets/")
}

fn is_api(path: &str) -> bool {
    // `/v2/` is the inference protocol (served models): JSON clients, no login page.
    path.starts_with("/api/") || path.starts_with("/v2/") || path == "/v2" || path == "/openapi.json"
}

async fn check_token(token: Arc<str>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    if is_open(&path) {
        return next.run(req).await;
    }
    let headers = req.headers();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if bearer.is_some_and(|t| matches(t, &token)) || cookie_token(headers).is_some_and(|t| matches(t, &token))
    {
        return next.run(req).await;
    }
    if is_api(&path) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            axum::Json(serde_json::json!({
                "error": "this server needs a token: send Authorization: Bearer TOKEN"
            })),
        )
            .into_response();
    }
    (StatusCode::UNAUTHORIZED, Html(login_page(&path, None))).into_response()
}

#[derive(serde::Deserialize)]
struct LoginForm {
    token: String,
    #[serde(default)]
    next: String,
}

/// Wrong tokens `/login` takes at once before it slows down, and how often one more is let in
/// after that: guessing a token by the login form is held to one try a second.
const LOGIN_BURST: u32 = 10;
const LOGIN_REFILL: Duration = Duration::from_secs(1);

struct Login {
    token: Arc<str>,
    /// The cookie says `Secure` (the server speaks TLS).
    secure: bool,
    limiter: Mutex<Limiter>,
}

/// A token bucket over wrong login attempts, for the whole server: per-client buckets would
/// let an attacker with many addresses guess faster, and a user locked out by someone else's
/// guessing still gets in with `Authorization: Bearer`.
#[derive(Debug)]
struct Limiter {
    burst: u32,
    refill: Duration,
    tokens: f64,
    at: Instant,
}

impl Limiter {
    fn new(burst: u32, refill: Duration) -> Limiter {
        Limiter { burst, refill, tokens: f64::from(burst), at: Instant::now() }
    }

    /// Takes one try; `Err(wait)` when none is left.
    fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.at);
        self.at = now;
        self.tokens =
            (self.tokens + elapsed.as_secs_f64() / self.refill.as_secs_f64()).min(f64::from(self.burst));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(self.refill.mul_f64(1.0 - self.tokens))
        }
    }
}

async fn login(state: Arc<Login>, axum::Form(form): axum::Form<LoginForm>) -> Response {
    // Every try takes from the bucket before the token is compared: a guess that is checked
    // is a guess spent, right or wrong.
    let taken = state.limiter.lock().map_or(Ok(()), |mut l| l.try_take(Instant::now()));
    if let Err(wait) = taken {
        let secs = wait.as_secs().max(1);
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, secs.to_string())],
            Html(login_page(&form.next, Some(&format!("too many tries; wait {secs} s")))),
        )
            .into_response();
    }
    if !matches(&form.token, &state.token) {
        return (StatusCode::UNAUTHORIZED, Html(login_page(&form.next, Some("wrong token")))).into_response();
    }
    // A right token gives its try back, so a user is never slowed by their own logins.
    if let Ok(mut l) = state.limiter.lock() {
        l.tokens = (l.tokens + 1.0).min(f64::from(l.burst));
    }
    // Only a local path: never redirect somewhere else.
    let next =
        if form.next.starts_with('/') && !form.next.starts_with("//") { form.next } else { "/".into() };
    let mut resp = Redirect::to(&next).into_response();
    resp.headers_mut().insert(header::SET_COOKIE, set_cookie(&state.token, state.secure));
    resp
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn reads_tokens_from_cookies() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; quarry_token=s3cret; b=2"));
        assert_eq!(cookie_token(&h), Some("s3cret"));
        assert!(matches("abc", "abc") && !matches("abd", "abc") && !matches("ab", "abc"));
    }

    #[test]
    fn changes_from_other_sites_are_refused() {
        use axum::http::Method;
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_static(v));
            }
            h
        };
        let host = ("host", "127.0.0.1:8080");
        assert!(cross_site(&Method::POST, &headers(&[host, ("sec-fetch-site", "cross-site")])));
        assert!(cross_site(&Method::POST, &headers(&[host, ("sec-fetch-site", "same-site")])));
        assert!(cross_site(&Method::DELETE, &headers(&[host, ("origin", "https://evil.example")])));
        assert!(cross_site(&Method::POST, &headers(&[host, ("origin", "null")])));
        assert!(!cross_site(&Method::POST, &headers(&[host, ("sec-fetch-site", "same-origin")])));
        assert!(!cross_site(&Method::POST, &headers(&[host, ("origin", "http://127.0.0.1:8080")])));
        // Not a browser (curl, the CLI), or only reading.
        assert!(!cross_site(&Method::POST, &headers(&[host])));
        assert!(!cross_site(&Method::GET, &headers(&[host, ("sec-fetch-site", "cross-site")])));
    }

    #[test]
    fn the_login_bucket_lets_a_burst_through_then_one_try_a_second() {
        let start = Instant::now();
        let mut l = Limiter::new(3, Duration::from_secs(1));
        assert!((0..3).all(|_| l.try_take(start).is_ok()));
        let wait = l.try_take(start).unwrap_err();
        assert_eq!(wait, Duration::from_secs(1));
        assert_eq!(l.try_take(start + Duration::from_millis(400)).unwrap_err(), Duration::from_millis(600));
        assert!(l.try_take(start + Duration::from_millis(1000)).is_ok());
        assert!(l.try_take(start + Duration::from_millis(1000)).is_err());
        // A long pause refills only up to the burst.
        let later = start + Duration::from_secs(3600);
        assert!((0..3).all(|_| l.try_take(later).is_ok()));
        assert!(l.try_take(later).is_err());
    }

    #[test]
    fn the_cookie_is_secure_only_under_tls() {
        let plain = set_cookie("t", false);
        let tls = set_cookie("t", true);
        assert_eq!(plain.to_str().unwrap(), "quarry_token=t; Path=/; HttpOnly; SameSite=Strict");
        assert_eq!(tls.to_str().unwrap(), "quarry_token=t; Path=/; HttpOnly; SameSite=Strict; Secure");
    }
}
