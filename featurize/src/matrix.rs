//! The in-memory form that learners consume: column-major `f32` features.

use serde::{Deserialize, Serialize};

/// How a learner should read one feature column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum FeatureKind {
    /// Ordered real values; `NaN` is missing.
    Numeric,
    /// Codes `0..n_levels` stored as `f32`; `NaN` is missing or unseen.
    Categorical { n_levels: u32 },
}

/// One engineered feature column.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureColumn {
    pub name: String,
    /// The raw input column this feature was derived from.
    pub source: String,
    pub kind: FeatureKind,
    pub values: Vec<f32>,
}

/// Column-major features: learners scan a column at a time (histograms, binning).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FeatureMatrix {
    pub n_rows: usize,
    pub columns: Vec<FeatureColumn>,
}

impl FeatureMatrix {
    pub fn n_features(&self) -> usize {
        self.columns.len()
    }

    /// The rows at `indices`, in that order (fold and bootstrap views).
    pub fn select_rows(&self, indices: &[usize]) -> FeatureMatrix {
        FeatureMatrix {
            n_rows: indices.len(),
            columns: self
                .columns
                .iter()
                .map(|c| FeatureColumn {
                    name: c.name.clone(),
                    source: c.source.clone(),
                    kind: c.kind,
                    values: indices.iter().map(|&i| c.values[i]).collect(),
                })
                .collect(),
        }
    }
}

/// The prediction target, already encoded.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// Class codes `0..classes.len()`; `classes[code]` is the label as the user wrote it.
    Classes {
        classes: Vec<String>,
        codes: Vec<u32>,
    },
    Values(Vec<f64>),
}

impl Target {
    pub fn len(&self) -> usize {
        match self {
            Target::Classes { codes, .. } => codes.len(),
            Target::Values(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn n_classes(&self) -> usize {
        match self {
            Target::Classes { classes, .. } => classes.len(),
            Target::Values(_) => 0,
        }
    }

    pub fn select_rows(&self, indices: &[usize]) -> Target {
        match self {
            Target::Classes { classes, codes } => Target::Classes {
                classes: classes.clone(),
                codes: indices.iter().map(|&i| codes[i]).collect(),
            },
            Target::Values(v) => Target::Values(indices.iter().map(|&i| v[i]).collect()),
        }
    }
}

/// Model output for a batch of rows.
#[derive(Debug, Clone, PartialEq)]
pub enum Predictions {
    /// Row-major probabilities, `n_rows × n_classes`.
    Probabilities {
        n_classes: usize,
        values: Vec<f64>,
    },
    Values(Vec<f64>),
}

impl Predictions {
    pub fn n_rows(&self) -> usize {
        match self {
            Predictions::Probabilities { n_classes, values } => values.len() / (*n_classes).max(1),
            Predictions::Values(v) => v.len(),
        }
    }

    /// The most probable class per row (classification only).
    pub fn class_codes(&self) -> Option<Vec<u32>> {
        match self {
            Predictions::Probabilities { n_classes, values } => Some(
                values
                    .chunks(*n_classes)
                    .map(|row| {
                        let mut best = 0;
                        for (k, p) in row.iter().enumerate() {
                            if *p > row[best] {
                                best = k;
                            }
                        }
                        best as u32
                    })
                    .collect(),
            ),
            Predictions::Values(_) => None,
        }
    }
}
