//! Background rows saved beside a model: a seeded sample of featurized training rows that
//! `quarry explain` uses for expectations (linear, kNN, naive Bayes) without the training file.

use std::path::Path;

use quarry_featurize::{FeatureColumn, FeatureKind, FeatureMatrix};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

pub const BACKGROUND_FILE: &str = "background.json";
/// Training rows kept as background.
pub const BACKGROUND_ROWS: usize = 100;

#[derive(Serialize, Deserialize)]
struct SavedColumn {
    name: String,
    source: String,
    kind: FeatureKind,
    /// `null` is a missing value (JSON has no NaN).
    values: Vec<Option<f32>>,
}

#[derive(Serialize, Deserialize)]
struct SavedBackground {
    n_rows: usize,
    columns: Vec<SavedColumn>,
}

/// At most `k` of `0..n`, seeded, ascending.
pub fn sample_rows(n: usize, k: usize, seed: u64) -> Vec<usize> {
    if n <= k {
        return (0..n).collect();
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut idx = rand::seq::index::sample(&mut rng, n, k).into_vec();
    idx.sort_unstable();
    idx
}

pub fn save_background(dir: &Path, x: &FeatureMatrix) -> Result<()> {
    let saved = SavedBackground {
        n_rows: x.n_rows,
        columns: x
            .columns
            .iter()
            .map(|c| SavedColumn {
                name: c.name.clone(),
                source: c.source.clone(),
                kind: c.kind,
                values: c.values.iter().map(|v| (!v.is_nan()).then_some(*v)).collect(),
            })
            .collect(),
    };
    let path = dir.join(BACKGROUND_FILE);
    let json = serde_json::to_vec(&saved).map_err(|e| TrainError::Bundle(e.to_string()))?;
    std::fs::write(&path, json).map_err(|e| TrainError::Bundle(format!("{}: {e}", path.display())))
}

/// The saved background, or `None` when the model directory has none (older runs).
pub fn load_background(dir: &Path) -> Result<Option<FeatureMatrix>> {
    let path = dir.join(BACKGROUND_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let bytes = std::fs::read(&path).map_err(|e| TrainError::Bundle(format!("{}: {e}", path.display())))?;
    let saved: SavedBackground =
        serde_json::from_slice(&bytes).map_err(|e| TrainError::Bundle(format!("{}: {e}", path.display())))?;
    if saved.columns.iter().any(|c| c.values.len() != saved.n_rows) {
        return Err(TrainError::Bundle(format!("{}: columns of different lengths", path.display())));
    }
    Ok(Some(FeatureMatrix {
        n_rows: saved.n_rows,
        columns: saved
            .columns
            .into_iter()
            .map(|c| FeatureColumn {
                name: c.name,
                source: c.source,
                kind: c.kind,
                values: c.values.into_iter().map(|v| v.unwrap_or(f32::NAN)).collect(),
            })
            .collect(),
    }))
}
