//! Entry points for the criterion micro-benchmarks in `learners/benches/gbdt.rs`: the engine's
//! internals (binning, histogram building, split search) behind a few opaque wrappers. Not a
//! stable API.

use quarry_featurize::matrix::FeatureMatrix;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::binning::BinnedData;
use super::histogram::{self, HistBin};
use super::split::{self, SplitConfig, Stats};

/// A binned training matrix.
pub struct Binned(BinnedData);

impl Binned {
    pub fn new(x: &FeatureMatrix, max_bin: usize) -> Binned {
        Binned(BinnedData::build(x, max_bin))
    }

    pub fn total_bins(&self) -> usize {
        self.0.total_bins()
    }
}

/// A node histogram over every feature.
pub struct Histogram {
    bins: Vec<HistBin>,
    total: Stats,
}

/// The histogram of `rows` (sorted ascending), gathering their gradients first as the grower does.
pub fn histogram(data: &Binned, rows: &[u32], grad: &[f64], hess: &[f64]) -> Histogram {
    let features: Vec<usize> = (0..data.0.mappers.len()).collect();
    let gh: Vec<(f64, f64)> = rows.iter().map(|&r| (grad[r as usize], hess[r as usize])).collect();
    let bins = histogram::build(&data.0, &features, rows, &gh);
    let mut total = Stats::default();
    for &(g, h) in &gh {
        total.g += g;
        total.h += h;
    }
    total.n = rows.len() as u32;
    Histogram { bins, total }
}

/// The best split of a node with histogram `hist` (LightGBM defaults: 20 rows per child),
/// as `(feature, gain)`.
pub fn best_split(data: &Binned, hist: &Histogram) -> Option<(usize, f64)> {
    let features: Vec<usize> = (0..data.0.mappers.len()).collect();
    let cfg = SplitConfig::lightgbm_defaults();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    split::best_split(&data.0, &hist.bins, hist.total, &features, &cfg, &mut rng).map(|s| (s.feature, s.gain))
}
