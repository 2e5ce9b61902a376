//! The connection to the coordinator: channel, token, error classes, retry backoff.

use std::time::Duration;

use quarry_proto::{AUTH_HEADER, WorkerServiceClient};
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request, Status};

use crate::WorkerError;

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct Auth(Option<AsciiMetadataValue>);

impl Auth {
    pub fn new(token: Option<&str>) -> Result<Auth, WorkerError> {
        let value = token
            .map(|t| {
                MetadataValue::try_from(format!("Bearer {t}"))
                    .map_err(|_| WorkerError::Invalid("--token must be printable ASCII".into()))
            })
            .transpose()?;
        Ok(Auth(value))
    }
}

impl Interceptor for Auth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            request.metadata_mut().insert(AUTH_HEADER, v.clone());
        }
        Ok(request)
    }
}

pub type Client = WorkerServiceClient<InterceptedService<Channel, Auth>>;

/// A channel that (re)connects on use, so a coordinator restart only costs retries.
pub fn channel(url: &str) -> Result<Channel, WorkerError> {
    channel_tls(url, None)
}

/// [`channel`] over TLS when `tls` is given.
pub fn channel_tls(url: &str, tls: Option<ClientTlsConfig>) -> Result<Channel, WorkerError> {
    let mut endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| WorkerError::Invalid(format!("coordinator address {url:?}: {e}")))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(20));
    if let Some(tls) = tls {
        endpoint =
            endpoint.tls_config(tls).map_err(|e| WorkerError::Invalid(format!("TLS for {url}: {e}")))?;
    }
    Ok(endpoint.connect_lazy())
}

pub(super) fn rpc(what: &str, status: Status) -> WorkerError {
    WorkerError::Rpc {
        call: what.to_string(),
        code: format!("{:?}", status.code()),
        message: status.message().to_string(),
    }
}

/// Whether a failed call is worth retrying (the coordinator is restarting or unreachable).
pub(super) fn transient(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded | Code::Aborted
    )
}

/// Answers to `Register` that no retry can fix (wrong token, protocol version): stop and say why.
pub(super) fn fatal(status: &Status) -> bool {
    matches!(status.code(), Code::Unauthenticated | Code::FailedPrecondition | Code::PermissionDenied)
}

/// A wrong token on any later call (the coordinator restarted with another one).
pub(super) fn unauthenticated(status: &Status) -> bool {
    status.code() == Code::Unauthenticated
}

pub(super) struct Backoff(Duration);

impl Backoff {
    pub(super) fn new() -> Backoff {
        Backoff(Duration::from_millis(50))
    }
    pub(super) async fn wait(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(Duration::from_secs(2));
    }
}
