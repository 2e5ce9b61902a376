//! Loading tabular files, inferring column kinds, and fitted featurizers that turn raw
//! columns into the [`FeatureMatrix`] learners consume.

pub mod datetime;
pub mod encoding;
pub mod error;
pub mod featurizer;
pub mod forecast;
pub mod guardrails;
pub mod infer;
pub mod load;
pub mod matrix;
pub mod metric;
pub mod names;
pub mod overrides;
mod parquet_guard;
pub mod table;
pub mod target;
pub mod text;

pub use encoding::{LevelEncoding, TargetEncodings};
pub use error::{FeaturizeError, Result};
pub use featurizer::{ColumnTransform, Featurizer, FittedColumn};
pub use guardrails::{Check, Finding, Guardrails, Severity, guardrails};
pub use infer::{ColumnKind, ColumnProfile, profile_column};
pub use load::{LoadLimits, LoadedTable, MAX_ROWS, load_table, load_table_with};
pub use matrix::{FeatureColumn, FeatureKind, FeatureMatrix, Predictions, Target};
pub use metric::{Metric, Task};
pub use names::safe_name;
pub use overrides::ColumnOverrides;
pub use table::{RawColumn, RawValues, StrColumn, Table};
pub use target::TargetEncoder;
