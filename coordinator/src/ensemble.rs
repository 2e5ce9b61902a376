//! Picking an ensemble of finished trials from their out-of-fold predictions.

use quarry_featurize::{Metric, Predictions, Target};
use quarry_search::{TrialId, greedy_selection};
use serde::{Deserialize, Serialize};

/// Selection rounds: enough for weights in steps of 1/25, few enough to stay fast.
const ENSEMBLE_ROUNDS: usize = 25;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnsembleMember {
    pub trial: TrialId,
    pub weight: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ensemble {
    pub members: Vec<EnsembleMember>,
    /// The blend's out-of-fold score, in the metric's own direction.
    pub validation_score: f64,
}

/// Greedy selection over `candidates` (trial, out-of-fold predictions on the rows of `truth`).
/// Returns `None` when there is nothing to blend.
pub fn select_ensemble(
    candidates: &[(TrialId, &Predictions)],
    truth: &Target,
    metric: Metric,
) -> Option<Ensemble> {
    let rows: Vec<&[f64]> = candidates
        .iter()
        .map(|(_, p)| match p {
            Predictions::Probabilities { values, .. } | Predictions::Values(values) => values.as_slice(),
        })
        .collect();
    let width = match candidates.first()?.1 {
        Predictions::Probabilities { n_classes, .. } => Some(*n_classes),
        Predictions::Values(_) => None,
    };
    let loss = |blend: &[f64]| {
        let pred = match width {
            Some(n_classes) => Predictions::Probabilities { n_classes, values: blend.to_vec() },
            None => Predictions::Values(blend.to_vec()),
        };
        metric.to_loss(metric.score(truth, &pred))
    };
    let selection = greedy_selection(&rows, ENSEMBLE_ROUNDS, &loss)?;
    let members = candidates
        .iter()
        .zip(selection.weights())
        .filter(|(_, w)| *w > 0.0)
        .map(|((trial, _), weight)| EnsembleMember { trial: *trial, weight })
        .collect();
    let validation_score = if metric.higher_is_better() { -selection.loss } else { selection.loss };
    Some(Ensemble { members, validation_score })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn blends_two_complementary_classifiers() {
        let truth = Target::Classes { classes: vec!["a".into(), "b".into()], codes: vec![0, 1, 0, 1] };
        // Each is wrong on a different row; together they rank every row right.
        let p1 =
            Predictions::Probabilities { n_classes: 2, values: vec![0.9, 0.1, 0.2, 0.8, 0.3, 0.7, 0.4, 0.6] };
        let p2 =
            Predictions::Probabilities { n_classes: 2, values: vec![0.4, 0.6, 0.1, 0.9, 0.9, 0.1, 0.5, 0.5] };
        let e = select_ensemble(&[(TrialId(1), &p1), (TrialId(2), &p2)], &truth, Metric::RocAuc).unwrap();
        assert_eq!(e.members.len(), 2);
        assert!((e.validation_score - 1.0).abs() < 1e-12, "{}", e.validation_score);
        assert!(Metric::RocAuc.score(&truth, &p1) < 1.0 && Metric::RocAuc.score(&truth, &p2) < 1.0);
    }
}
