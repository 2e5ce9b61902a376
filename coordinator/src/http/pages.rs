//! The dashboard's HTML pages. Every piece of data reaches a page one of two ways, both
//! escaped: text through [`esc`], or JSON inlined by [`data_script`] (which escapes `<`, `>`
//! and `&`) that the embedded script renders with `textContent` only.

use axum::Router;
use axum::extract::{Multipart, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::{ApiError, AppState, api, data};

pub const APP_JS: &str = include_str!("assets/app.js");
pub const STYLE_CSS: &str = include_str!("assets/style.css");

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(jobs_page))
        .route("/submit", get(submit_page).post(submit))
        .route("/jobs/{id}", get(job_page))
        .route("/jobs/{id}/cancel", post(cancel))
        .route("/jobs/{id}/trials/{trial}", get(trial_page))
        .route("/login", get(|| async { Html(login_page("/", None)) }))
        .route(
            "/assets/app.js",
            get(|| async { ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], APP_JS) }),
        )
        .route(
            "/assets/style.css",
            get(|| async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE_CSS) }),
        )
}

/// HTML-escapes text for element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// JSON for a `<script type="application/json">` block: no `</script>` or `<!--` can close it.
pub fn data_script(v: &Value) -> String {
    let s = v.to_string().replace('<', "\\u003c").replace('>', "\\u003e").replace('&', "\\u0026");
    format!("<script type=\"application/json\" id=\"data\">{s}</script>")
}

/// A whole page; `body` must already be escaped HTML.
pub fn layout(title: &str, page: &str, body: &str, data: Option<&Value>) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · quarry</title><link rel=\"stylesheet\" href=\"/assets/style.css\"></head>\
         <body data-page=\"{page}\"><header><a class=\"brand\" href=\"/\">quarry</a>\
         <nav><a href=\"/\">jobs</a> <a href=\"/submit\">new job</a> <a href=\"/openapi.json\">API</a></nav></header>\
         <main>{body}</main>{data}<script src=\"/assets/app.js\"></script></body></html>",
        title = esc(title),
        page = esc(page),
        data = data.map(data_script).unwrap_or_default(),
    )
}

async fn jobs_page(State(s): State<AppState>) -> Html<String> {
    let jobs = api::jobs_json(&s);
    let body = "<h1>Jobs</h1><p><a class=\"button\" href=\"/submit\">Submit a job</a></p>\
        <table id=\"jobs\"><thead><tr><th>job</th><th>state</th><th>task</th><th>dataset</th><th>target</th>\
        <th>metric</th><th>best score</th><th>best family</th><th>trials</th><th>elapsed</th></tr></thead>\
        <tbody></tbody></table><p id=\"empty\" hidden>No jobs yet.</p>";
    Html(layout("Jobs", "jobs", body, Some(&json!({ "jobs": jobs }))))
}

async fn job_page(State(s): State<AppState>, Path(id): Path<String>) -> Result<Html<String>, Page> {
    let snapshot = s.server.read(|c| data::job(c, &id).map(|j| data::leaderboard_since(j, &s.live, 0)))?;
    let guardrails = api::read_json_artifact(&s, &id, "guardrails.json").await.ok();
    let importance = api::read_json_artifact(&s, &id, "explanations.json").await.ok();
    let profile = api::read_json_artifact(&s, &id, "run.json").await.ok();
    let job = &snapshot["job"];
    let text = |k: &str| esc(job[k].as_str().unwrap_or_default());
    let body = format!(
        "<h1>Job <span id=\"job-id\">{id}</span> <span class=\"state\" id=\"state\">{state}</span></h1>\
         <p class=\"meta\">dataset <b id=\"dataset\">{dataset}</b> · target <b id=\"target\">{target}</b> · \
         task <b id=\"task\">{task}</b> · metric <b id=\"metric\"></b> · <span id=\"progress\"></span></p>\
         <p id=\"reason\" class=\"reason\"></p>\
         <form method=\"post\" action=\"/jobs/{id}/cancel\" id=\"cancel-form\"><button id=\"cancel\" type=\"submit\">Cancel job</button></form>\
         <section class=\"downloads\"><h2>Downloads</h2><ul id=\"downloads\"></ul></section>\
         <section class=\"charts\"><div><h2>Best score over time</h2><div id=\"best-chart\" class=\"chart\"></div></div>\
         <div><h2>Score by family</h2><div id=\"family-chart\" class=\"chart\"></div></div></section>\
         <h2>Leaderboard</h2><table id=\"leaderboard\"><thead><tr><th>#</th><th>trial</th><th>family</th><th>score</th>\
         <th>status</th><th>fit s</th><th>params</th></tr></thead><tbody></tbody></table>\
         <section><h2>Feature importance</h2><div id=\"importance\"></div></section>\
         <section><h2>Guardrails and data profile</h2><div id=\"guardrails\"></div></section>",
        id = esc(&id),
        state = text("state"),
        dataset = text("dataset"),
        target = text("target"),
        task = text("task"),
    );
    let data = json!({ "snapshot": snapshot, "guardrails": guardrails, "importance": importance, "profile": profile });
    Ok(Html(layout(&format!("Job {id}"), "job", &body, Some(&data))))
}

async fn trial_page(
    State(s): State<AppState>,
    Path((id, trial)): Path<(String, u64)>,
) -> Result<Html<String>, Page> {
    let t = api::trial_json(&s, &id, trial)?;
    let body = format!(
        "<p><a href=\"/jobs/{id}\">← job {id}</a></p><h1>Trial <span id=\"trial-id\">{trial}</span> \
         <span id=\"family\">{family}</span></h1><p class=\"meta\" id=\"trial-meta\"></p>\
         <h2>Learning curve (validation loss per round)</h2><div id=\"curve\" class=\"chart\"></div>\
         <h2>Parameters</h2><table id=\"params\"><tbody></tbody></table>",
        id = esc(&id),
        family = esc(t["family"].as_str().unwrap_or_default()),
    );
    Ok(Html(layout(&format!("Trial {trial} of {id}"), "trial", &body, Some(&t))))
}

async fn submit_page() -> Html<String> {
    Html(layout("New job", "submit", &submit_form(None), None))
}

fn submit_form(error: Option<&str>) -> String {
    let error = error.map(|e| format!("<p class=\"error\" id=\"error\">{}</p>", esc(e))).unwrap_or_default();
    format!(
        "<h1>Submit a job</h1>{error}<form method=\"post\" action=\"/submit\" enctype=\"multipart/form-data\" id=\"submit-form\">\
         <label>CSV file <input type=\"file\" name=\"file\" id=\"file\" accept=\".csv,.tsv,.txt,.parquet\" required></label>\
         <label>Target column <input type=\"text\" name=\"target\" id=\"target\" required></label>\
         <label>Task <select name=\"task\" id=\"task\"><option>auto</option><option>binary</option>\
         <option>multiclass</option><option>regression</option></select></label>\
         <label>Budget <input type=\"text\" name=\"budget\" id=\"budget\" value=\"60s\"></label>\
         <label>Max trials (optional) <input type=\"number\" min=\"1\" name=\"max_trials\" id=\"max_trials\"></label>\
         <label>Experiment (optional) <input type=\"text\" name=\"experiment\" id=\"experiment\"></label>\
         <button type=\"submit\" id=\"submit\">Start</button></form>"
    )
}

async fn submit(State(s): State<AppState>, multipart: Multipart) -> Response {
    match api::create_from_form(&s, multipart).await {
        Ok(id) => Redirect::to(&format!("/jobs/{id}")).into_response(),
        Err(e) => (e.status, Html(layout("New job", "submit", &submit_form(Some(&e.message)), None)))
            .into_response(),
    }
}

async fn cancel(State(s): State<AppState>, Path(id): Path<String>) -> Result<Redirect, Page> {
    s.server.cancel_job(&id).await.map_err(ApiError::from_status)?;
    Ok(Redirect::to(&format!("/jobs/{id}")))
}

pub fn login_page(next: &str, error: Option<&str>) -> String {
    let error = error.map(|e| format!("<p class=\"error\">{}</p>", esc(e))).unwrap_or_default();
    let body = format!(
        "<h1>Sign in</h1>{error}<p>This coordinator needs its token (<code>quarry serve --token</code>).</p>\
         <form method=\"post\" action=\"/login\"><input type=\"hidden\" name=\"next\" value=\"{next}\">\
         <label>Token <input type=\"password\" name=\"token\" id=\"token\" autofocus></label>\
         <button type=\"submit\">Sign in</button></form>",
        next = esc(next),
    );
    layout("Sign in", "login", &body, None)
}

/// An error shown as a page.
pub struct Page(ApiError);

impl From<ApiError> for Page {
    fn from(e: ApiError) -> Page {
        Page(e)
    }
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        let body = format!("<h1>{}</h1><p class=\"error\">{}</p>", self.0.status, esc(&self.0.message));
        let status = if self.0.status.is_client_error() || self.0.status.is_server_error() {
            self.0.status
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        (status, Html(layout("Error", "error", &body, None))).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_text_and_inlined_json() {
        assert_eq!(esc("<img src=x onerror=alert(1)>"), "&lt;img src=x onerror=alert(1)&gt;");
        assert_eq!(esc("\"><script>'&"), "&quot;&gt;&lt;script&gt;&#39;&amp;");
        let s = data_script(&json!({ "name": "</script><script>alert(1)</script><!--" }));
        assert_eq!(s.matches("</script>").count(), 1, "{s}");
        assert!(!s.contains("<!--"));
    }
}
