//! The bearer-token check in front of both services.

use std::sync::Arc;

use subtle::ConstantTimeEq;
use tonic::{Request, Status};

/// Checks `authorization: Bearer <token>` in constant time; no token configured = open.
#[derive(Clone)]
pub struct Auth {
    token: Option<Arc<[u8]>>,
    /// How the caller passes the expected token, for the refusal message.
    how: &'static str,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").field("enabled", &self.token.is_some()).finish()
    }
}

impl Auth {
    pub fn new(token: Option<&str>) -> Auth {
        Auth {
            token: token.filter(|t| !t.is_empty()).map(|t| Arc::from(t.as_bytes())),
            how: "pass --token SECRET",
        }
    }

    /// The worker service's check when workers have their own token (`quarry serve
    /// --worker-token`): a client's token does not open it.
    pub fn for_workers(token: Option<&str>) -> Auth {
        Auth { how: "workers pass the coordinator's --worker-token as their --token", ..Auth::new(token) }
    }

    pub fn check(&self, req: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = &self.token else { return Ok(req) };
        let given = req
            .metadata()
            .get(quarry_proto::AUTH_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                Status::unauthenticated(format!("this coordinator needs a token: {}", self.how))
            })?;
        if bool::from(given.as_bytes().ct_eq(expected)) {
            Ok(req)
        } else {
            Err(Status::unauthenticated(format!("wrong token ({})", self.how)))
        }
    }
}
