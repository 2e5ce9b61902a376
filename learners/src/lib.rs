//! Model families behind one interface, and the pipeline that joins a fitted featurizer to a model.

pub mod design;
pub mod error;
pub mod explain;
pub mod family;
pub mod forecast;
pub mod gbdt;
pub mod knn;
pub mod linear;
pub mod memory;
pub mod mlp;
pub mod naive_bayes;
pub mod onnx;
pub mod params;
pub mod pipeline;
pub mod svm;

pub use error::{Result, TrainError};
pub use family::{CheckedSpec, Family, FittedModel, RoundCallback, check_params, fit};
pub use params::ParamMap;
pub use pipeline::{BUNDLE_FORMAT_VERSION, Member, Pipeline};
