//! Pure search logic: spaces, searchers, family selection and validation plans.
//!
//! Nothing here reads files, clocks or the network; randomness comes from an RNG the caller
//! seeds, so the same inputs always give the same suggestions.

pub mod ensemble;
pub mod error;
pub mod forecast;
pub mod keep;
pub mod scheduler;
pub mod searcher;
pub mod space;
pub mod tpe;
pub mod trial;
pub mod validation;

pub use ensemble::{EnsembleSelection, greedy_selection};
pub use error::SearchError;
pub use forecast::{ForecastWindow, rolling_origin_windows};
pub use keep::{KEEP_PER_FAMILY, KEEP_TOP, KeepSet, keep_set};
pub use scheduler::{Asha, Decision, FifoScheduler, MedianStopping, Scheduler};
pub use searcher::{FamilyStats, Searcher, Suggestion, TrialRecord};
pub use searcher::{LocalSearcher, RandomSearcher};
pub use space::{Config, DataShape, Domain, ParamValue, Space, portfolio, space_for};
pub use tpe::TpeSearcher;
pub use trial::{TrialId, TrialOutcome, TrialSpec, TrialStatus};
pub use validation::{Fold, ValidationKind, ValidationPlan};
