//! `--token` and `--max-upload` as layers over any router.
//!
//! A request passes with `Authorization: Bearer TOKEN` or the `quarry_token` cookie, which the
//! login form (`POST /login`) or a one-off `?token=TOKEN` on a page sets. Without it, API
//! paths get 401 JSON and pages get 401 with the login form. `/login` and the static assets
//! stay open (they hold nothing secret).

use std::sync::Arc;

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
            let t2 = token.clone();
            router
                .layer(middleware::from_fn(move |req: Request, next: Next| {
                    check_token(token.clone(), req, next)
                }))
                .merge(Router::new().route("/login", post(move |form| login(t2.clone(), form))))
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

fn query_token(query: Option<&str>) -> Option<String> {
    let query = query?;
    query.split('&').find_map(|kv| kv.strip_prefix("token=")).map(percent_decode)
}

fn percent_decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = match bytes[i] {
            b'%' if i + 2 < bytes.len() => hex(bytes[i + 1]).zip(hex(bytes[i + 2])).map(|(h, l)| h * 16 + l),
            _ => None,
        };
        match decoded {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn set_cookie(token: &str) -> HeaderValue {
    // The token is the user's own string: anything a header cannot hold makes no cookie.
    HeaderValue::from_str(&format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict"))
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
    if let Some(given) = query_token(req.uri().query())
        && matches(&given, &token)
    {
        // Once: keep it in a cookie and drop it from the address bar.
        let mut resp = Redirect::to(&path).into_response();
        resp.headers_mut().insert(header::SET_COOKIE, set_cookie(&token));
        return resp;
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

async fn login(token: Arc<str>, axum::Form(form): axum::Form<LoginForm>) -> Response {
    if !matches(&form.token, &token) {
        return (StatusCode::UNAUTHORIZED, Html(login_page(&form.next, Some("wrong token")))).into_response();
    }
    // Only a local path: never redirect somewhere else.
    let next =
        if form.next.starts_with('/') && !form.next.starts_with("//") { form.next } else { "/".into() };
    let mut resp = Redirect::to(&next).into_response();
    resp.headers_mut().insert(header::SET_COOKIE, set_cookie(&token));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_tokens_from_cookies_and_queries() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; quarry_token=s3cret; b=2"));
        assert_eq!(cookie_token(&h), Some("s3cret"));
        assert_eq!(query_token(Some("x=1&token=a%20b%2")).as_deref(), Some("a b%2"));
        assert_eq!(query_token(Some("x=1")), None);
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
}
