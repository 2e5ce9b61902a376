//! Choosing and building the validation scheme: k-fold for small data, holdout for large.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::SearchError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fold {
    pub train: Vec<usize>,
    pub valid: Vec<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ValidationKind {
    KFold { k: usize },
    Holdout { valid_percent: usize },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidationPlan {
    pub kind: ValidationKind,
    pub stratified: bool,
    pub folds: Vec<Fold>,
}

/// Up to this many rows every row is validated once (k-fold); past it a holdout is cheaper
/// and already has enough rows for a stable score.
const KFOLD_MAX_ROWS: usize = 20_000;

impl ValidationPlan {
    /// Picks the scheme by size. `classes` (codes per row) makes the split stratified.
    pub fn choose(n_rows: usize, classes: Option<&[u32]>, seed: u64) -> Result<ValidationPlan, SearchError> {
        let kind = if n_rows <= 5_000 {
            ValidationKind::KFold { k: 5 }
        } else if n_rows <= KFOLD_MAX_ROWS {
            ValidationKind::KFold { k: 3 }
        } else {
            ValidationKind::Holdout { valid_percent: 20 }
        };
        ValidationPlan::build(kind, n_rows, classes, seed)
    }

    pub fn build(
        kind: ValidationKind,
        n_rows: usize,
        classes: Option<&[u32]>,
        seed: u64,
    ) -> Result<ValidationPlan, SearchError> {
        let n_parts = match kind {
            ValidationKind::KFold { k } => k,
            ValidationKind::Holdout { valid_percent } => {
                if valid_percent == 0 || valid_percent >= 100 {
                    return Err(SearchError::Validation("holdout percent must be in 1..99".into()));
                }
                (100 / valid_percent).max(2)
            }
        };
        if n_rows < n_parts.max(2) {
            return Err(SearchError::Validation(format!(
                "{n_rows} rows is too few to validate (need at least {})",
                n_parts.max(2)
            )));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        // Deal rows into parts; within each class separately when stratified, so every part
        // sees every class in proportion.
        let mut part_of = vec![0usize; n_rows];
        let groups: Vec<Vec<usize>> = match classes {
            Some(codes) => {
                let n_classes = codes.iter().map(|&c| c as usize + 1).max().unwrap_or(0);
                let mut g = vec![Vec::new(); n_classes];
                for (i, &c) in codes.iter().enumerate() {
                    g[c as usize].push(i);
                }
                g
            }
            None => vec![(0..n_rows).collect()],
        };
        let mut offset = 0;
        for mut g in groups {
            g.shuffle(&mut rng);
            for (j, &i) in g.iter().enumerate() {
                part_of[i] = (j + offset) % n_parts;
            }
            offset += g.len();
        }
        let folds: Vec<Fold> = match kind {
            ValidationKind::KFold { k } => (0..k).map(|f| split(&part_of, |p| p == f)).collect(),
            ValidationKind::Holdout { .. } => vec![split(&part_of, |p| p == 0)],
        };
        if folds.iter().any(|f| f.train.is_empty() || f.valid.is_empty()) {
            return Err(SearchError::Validation("a fold came out empty".into()));
        }
        Ok(ValidationPlan { kind, stratified: classes.is_some(), folds })
    }
}

fn split(part_of: &[usize], is_valid: impl Fn(usize) -> bool) -> Fold {
    let (mut train, mut valid) = (Vec::new(), Vec::new());
    for (i, &p) in part_of.iter().enumerate() {
        if is_valid(p) { valid.push(i) } else { train.push(i) }
    }
    Fold { train, valid }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn kfold_covers_every_row_once() {
        let plan = ValidationPlan::choose(103, None, 3).unwrap();
        assert_eq!(plan.kind, ValidationKind::KFold { k: 5 });
        let mut seen = vec![0; 103];
        for f in &plan.folds {
            assert_eq!(f.train.len() + f.valid.len(), 103);
            f.valid.iter().for_each(|&i| seen[i] += 1);
        }
        assert!(seen.iter().all(|&s| s == 1));
    }

    #[test]
    fn stratified_folds_keep_class_shares() {
        let codes: Vec<u32> = (0..1000).map(|i| u32::from(i % 10 == 0)).collect();
        let plan = ValidationPlan::choose(1000, Some(&codes), 1).unwrap();
        for f in &plan.folds {
            let pos = f.valid.iter().filter(|&&i| codes[i] == 1).count();
            assert_eq!(pos, 20, "each of 5 folds holds 1/5 of the 100 positives");
        }
    }

    #[test]
    fn large_data_uses_holdout() {
        let plan = ValidationPlan::choose(50_000, None, 1).unwrap();
        assert_eq!(plan.folds.len(), 1);
        assert_eq!(plan.folds[0].valid.len(), 10_000);
    }

    #[test]
    fn too_few_rows_is_an_error() {
        assert!(ValidationPlan::choose(3, None, 1).is_err());
    }
}
