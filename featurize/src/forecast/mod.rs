//! Time-series preparation for forecasting: frequency detection, a regular grid per series
//! (gaps become missing targets, never invented values), and lag / rolling-window / calendar
//! features built strictly from the past.

pub mod features;
pub mod frequency;
pub mod metric;
pub mod panel;

pub use features::LagSpec;
pub use frequency::{Frequency, FrequencyKind, MonthAnchor};
pub use metric::{ForecastMetric, Scored, mase_scale, weighted_quantile_loss};
pub use panel::{Panel, SeriesData, build_panel};
