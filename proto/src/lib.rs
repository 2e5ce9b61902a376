//! Generated `quarry.v1` types (`pb`) and their conversions to and from domain types.

pub mod convert;

pub mod pb {
    #![allow(clippy::all, clippy::unwrap_used, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/quarry.v1.rs"));
}

pub use convert::ConversionError;

/// The wire protocol version (`pb::ProtocolVersion`); a worker registering with another one is
/// refused. Bump it (and add a `PROTOCOL_VERSION_n` enum value) on any incompatible change.
pub const PROTOCOL_VERSION: u32 = pb::ProtocolVersion::ProtocolVersion1 as u32;

/// Metadata key carrying `Bearer <token>` on every call when the coordinator has a token.
pub const AUTH_HEADER: &str = "authorization";

/// The largest gRPC message either side accepts (tonic's default is 4 MiB). A finalize task
/// carries the whole leaderboard: about 200 bytes a trial, so 20 MB for 100,000 trials; this
/// allows over a million. Both the coordinator and its clients set it explicitly.
pub const MAX_MESSAGE_BYTES: usize = 256 << 20;

pub use pb::quarry_service_client::QuarryServiceClient;
pub use pb::quarry_service_server::{QuarryService, QuarryServiceServer};
pub use pb::worker_service_client::WorkerServiceClient;
pub use pb::worker_service_server::{WorkerService, WorkerServiceServer};
