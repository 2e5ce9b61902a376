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
    /// Rows of one group (`--group-column`) never sit on both sides of a fold.
    #[serde(default)]
    pub grouped: bool,
    pub folds: Vec<Fold>,
}

/// Up to this many rows every row is validated once (k-fold); past it a holdout is cheaper
/// and already has enough rows for a stable score.
const KFOLD_MAX_ROWS: usize = 20_000;

impl ValidationPlan {
    /// Picks the scheme by size. `classes` (codes per row) makes the split stratified.
    pub fn choose(n_rows: usize, classes: Option<&[u32]>, seed: u64) -> Result<ValidationPlan, SearchError> {
        ValidationPlan::build(ValidationPlan::size_rule(n_rows), n_rows, classes, seed)
    }

    pub fn build(
        kind: ValidationKind,
        n_rows: usize,
        classes: Option<&[u32]>,
        seed: u64,
    ) -> Result<ValidationPlan, SearchError> {
        let n_parts = kind.n_parts()?;
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
        Ok(ValidationPlan { kind, stratified: classes.is_some(), grouped: false, folds })
    }

    /// Like [`ValidationPlan::choose`], but whole groups go to one part: `groups[row]` is the
    /// row's group id. Groups are dealt, largest first (ties in seeded random order), to the
    /// part holding the fewest rows so far, so parts stay near equal in size.
    pub fn choose_grouped(groups: &[u32], seed: u64) -> Result<ValidationPlan, SearchError> {
        let n_rows = groups.len();
        let kind = ValidationPlan::size_rule(n_rows);
        let n_parts = kind.n_parts()?;
        let n_groups = groups.iter().map(|&g| g as usize + 1).max().unwrap_or(0);
        let mut sizes = vec![0usize; n_groups];
        for &g in groups {
            sizes[g as usize] += 1;
        }
        let mut order: Vec<usize> = (0..n_groups).filter(|&g| sizes[g] > 0).collect();
        if order.len() < n_parts.max(2) {
            return Err(SearchError::Validation(format!(
                "{} groups is too few to validate by group (need at least {})",
                order.len(),
                n_parts.max(2)
            )));
        }
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        order.sort_by(|a, b| sizes[*b].cmp(&sizes[*a]));
        let mut part_rows = vec![0usize; n_parts];
        let mut part_of_group = vec![0usize; n_groups];
        for g in order {
            let p = (0..n_parts).min_by_key(|&p| (part_rows[p], p)).unwrap_or(0);
            part_of_group[g] = p;
            part_rows[p] += sizes[g];
        }
        let part_of: Vec<usize> = groups.iter().map(|&g| part_of_group[g as usize]).collect();
        let folds: Vec<Fold> = match kind {
            ValidationKind::KFold { k } => (0..k).map(|f| split(&part_of, |p| p == f)).collect(),
            ValidationKind::Holdout { .. } => vec![split(&part_of, |p| p == 0)],
        };
        Ok(ValidationPlan { kind, stratified: false, grouped: true, folds })
    }

    fn size_rule(n_rows: usize) -> ValidationKind {
        if n_rows <= 5_000 {
            ValidationKind::KFold { k: 5 }
        } else if n_rows <= KFOLD_MAX_ROWS {
            ValidationKind::KFold { k: 3 }
        } else {
            ValidationKind::Holdout { valid_percent: 20 }
        }
    }
}

impl ValidationKind {
    fn n_parts(self) -> Result<usize, SearchError> {
        match self {
            ValidationKind::KFold { k } => Ok(k),
            ValidationKind::Holdout { valid_percent } => {
                if valid_percent == 0 || valid_percent >= 100 {
                    return Err(SearchError::Validation("holdout percent must be in 1..99".into()));
                }
                Ok((100 / valid_percent).max(2))
            }
        }
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
    fn groups_never_straddle_a_fold() {
        // 40 groups of varied size; every group's rows land in one validation part only.
        let groups: Vec<u32> = (0..600u32).map(|i| (i * 7 + i / 13) % 40).collect();
        let plan = ValidationPlan::choose_grouped(&groups, 3).unwrap();
        assert!(plan.grouped);
        assert_eq!(plan.folds.len(), 5);
        for f in &plan.folds {
            let valid: std::collections::BTreeSet<u32> = f.valid.iter().map(|&i| groups[i]).collect();
            assert!(f.train.iter().all(|&i| !valid.contains(&groups[i])), "a group is on both sides");
            // Balanced: each part within a group's size of 600 / 5.
            assert!((100..=140).contains(&f.valid.len()), "{}", f.valid.len());
        }
        let mut seen = vec![0; 600];
        plan.folds.iter().for_each(|f| f.valid.iter().for_each(|&i| seen[i] += 1));
        assert!(seen.iter().all(|&s| s == 1));
        assert!(ValidationPlan::choose_grouped(&[0, 0, 1, 1], 1).is_err(), "2 groups < 5 folds");
    }

    #[test]
    fn too_few_rows_is_an_error() {
        assert!(ValidationPlan::choose(3, None, 1).is_err());
    }
}
