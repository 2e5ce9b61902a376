//! The saved forecast bundle (`model/forecast.json`) and where a run folder keeps it.

use super::*;

/// Everything `quarry predict` needs, saved as `model/forecast.json`.
#[derive(Serialize, Deserialize)]
pub(super) struct Bundle {
    pub(super) format_version: u32,
    pub(super) kind: String,
    pub(super) target: String,
    pub(super) time_column: String,
    pub(super) series_id_columns: Vec<String>,
    pub(super) frequency: Frequency,
    pub(super) seasonality: usize,
    pub(super) horizon: usize,
    pub(super) metric: ForecastMetric,
    /// The training history (models forecast from it).
    pub(super) series: Vec<SeriesData>,
    /// Covariate columns (the order of each series' `covariates`) and which are known ahead.
    #[serde(default)]
    pub(super) covariates: Vec<String>,
    #[serde(default)]
    pub(super) known_covariates: Vec<String>,
    pub(super) members: Vec<Member>,
    pub(super) quantiles: QuantileTable,
}

#[derive(Serialize, Deserialize)]
pub(super) struct Member {
    pub(super) name: String,
    pub(super) weight: f64,
    pub(super) model: FittedForecaster,
}

/// The forecast bundle of a run folder (or its `model/` folder), if it holds one.
pub fn bundle_path(dir: &Path) -> Option<PathBuf> {
    [dir.join("model/forecast.json"), dir.join("forecast.json")].into_iter().find(|p| p.exists())
}
