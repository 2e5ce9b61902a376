//! The web face of `quarry serve --http`: a JSON API (`/api/...`, described by `/openapi.json`)
//! and a dashboard of server-rendered pages with a little embedded JavaScript (no CDN, no build
//! step). It reads and changes state only through [`Server`], the same object the gRPC layer
//! serves, so both see one state and every change is logged before it is answered.
//!
//! [`router`] has the routes only; [`protect`] wraps any router (this one merged with others)
//! in the token check and the upload limit, so more routers can be merged before it.

mod api;
mod auth;
mod data;
mod live;
mod openapi;
mod pages;
pub mod report;

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::grpc::Server;

pub use auth::protect;
pub use openapi::openapi;

/// The default `--max-upload`.
pub const DEFAULT_MAX_UPLOAD: u64 = 512 << 20;

/// What [`protect`] enforces. Its `Debug` hides the token.
#[derive(Clone)]
pub struct HttpConfig {
    /// Requests must carry it (`Authorization: Bearer`, or the cookie the login form sets).
    pub token: Option<String>,
    /// Larger request bodies are refused with 413.
    pub max_upload: u64,
    /// The login cookie says `Secure` (set when the server speaks TLS).
    pub secure_cookie: bool,
}

impl std::fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConfig")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("max_upload", &self.max_upload)
            .field("secure_cookie", &self.secure_cookie)
            .finish()
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig { token: None, max_upload: DEFAULT_MAX_UPLOAD, secure_cookie: false }
    }
}

#[derive(Clone)]
pub(crate) struct AppState {
    pub server: Server,
    pub live: Arc<live::Live>,
}

/// The dashboard's and the API's routes, without auth or limits (see [`protect`]).
/// Must be called inside a tokio runtime (it starts the live-update task).
pub fn router(server: Server) -> Router {
    let live = live::Live::start(&server);
    let state = AppState { server, live };
    Router::new().merge(api::routes()).merge(pages::routes()).with_state(state)
}

/// Serves `router` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    // Small JSON answers and SSE events must not wait for Nagle's algorithm.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await
}

/// An error answer: JSON `{"error": ...}` for the API, a short page for the dashboard.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into() }
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn from_status(s: tonic::Status) -> ApiError {
        let status = match s.code() {
            tonic::Code::NotFound => StatusCode::NOT_FOUND,
            tonic::Code::InvalidArgument => StatusCode::BAD_REQUEST,
            tonic::Code::FailedPrecondition => StatusCode::CONFLICT,
            tonic::Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, s.message())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(serde_json::json!({ "error": self.message }))).into_response()
    }
}
