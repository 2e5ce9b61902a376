//! Serving fitted pipelines: a batching scorer over a run folder, the Open Inference Protocol
//! v2 (KServe / Triton REST) router, the file-based dataset and model registry, and drift
//! detection (per-column PSI, Kolmogorov–Smirnov and chi-square).

pub mod batcher;
pub mod drift;
pub mod error;
pub mod model;
pub mod oip;
pub mod registry;
pub mod tensor;

pub use batcher::{BatchConfig, Batcher};
pub use drift::{ColumnDrift, DriftReport, Reference, Thresholds, compare};
pub use error::ServingError;
pub use model::ServedModel;
pub use oip::{Limits, ModelSource, RegistrySource, SingleModel, registry_router, router};
pub use registry::{DatasetRecord, ModelRecord, Registry};
