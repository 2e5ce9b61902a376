//! Greedy ensemble selection with replacement (Caruana et al., 2004) over out-of-fold predictions.
//!
//! Pure: the caller supplies the loss of a blended prediction vector, so this knows nothing
//! of metrics or targets.

/// How many times each candidate was picked; weights are `counts[i] / sum(counts)`.
#[derive(Debug, Clone, PartialEq)]
pub struct EnsembleSelection {
    pub counts: Vec<usize>,
    pub loss: f64,
}

impl EnsembleSelection {
    pub fn weights(&self) -> Vec<f64> {
        let total: usize = self.counts.iter().sum();
        self.counts.iter().map(|&c| c as f64 / total.max(1) as f64).collect()
    }
}

/// Adds, `rounds` times, the candidate whose addition makes the average blend's loss lowest,
/// and returns the best blend seen (so extra rounds never make it worse). Ties go to the
/// lower index, so the result is deterministic. All candidates must have the same length.
pub fn greedy_selection(
    candidates: &[&[f64]],
    rounds: usize,
    loss: &dyn Fn(&[f64]) -> f64,
) -> Option<EnsembleSelection> {
    let len = candidates.first()?.len();
    if candidates.iter().any(|c| c.len() != len) || rounds == 0 {
        return None;
    }
    let mut sum = vec![0.0; len];
    let mut counts = vec![0usize; candidates.len()];
    let mut best: Option<EnsembleSelection> = None;
    let mut blend = vec![0.0; len];
    for round in 1..=rounds {
        let mut pick: Option<(usize, f64)> = None;
        for (k, c) in candidates.iter().enumerate() {
            for ((b, s), x) in blend.iter_mut().zip(&sum).zip(c.iter()) {
                *b = (s + x) / round as f64;
            }
            let l = loss(&blend);
            if l.is_finite() && pick.is_none_or(|(_, pl)| l < pl) {
                pick = Some((k, l));
            }
        }
        let Some((k, l)) = pick else { break };
        counts[k] += 1;
        for (s, x) in sum.iter_mut().zip(candidates[k].iter()) {
            *s += x;
        }
        if best.as_ref().is_none_or(|b| l < b.loss) {
            best = Some(EnsembleSelection { counts: counts.clone(), loss: l });
        }
    }
    best
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn mse(truth: &[f64]) -> impl Fn(&[f64]) -> f64 + '_ {
        move |p: &[f64]| truth.iter().zip(p).map(|(a, b)| (a - b).powi(2)).sum::<f64>() / truth.len() as f64
    }

    #[test]
    fn blends_complementary_models_and_skips_garbage() {
        let truth = [1.0, 2.0, 3.0, 4.0];
        // Errors of a and b cancel when averaged; c is far off.
        let a = [1.5, 1.5, 3.5, 3.5];
        let b = [0.5, 2.5, 2.5, 4.5];
        let c = [9.0, 9.0, 9.0, 9.0];
        let sel = greedy_selection(&[&a, &b, &c], 10, &mse(&truth)).unwrap();
        assert_eq!(sel.counts[2], 0);
        assert_eq!(sel.counts[0], sel.counts[1]);
        assert!(sel.loss < 1e-12, "{}", sel.loss);
        assert_eq!(sel.weights(), vec![0.5, 0.5, 0.0]);
    }

    #[test]
    fn never_worse_than_the_best_single_candidate() {
        let truth = [0.0, 1.0, 0.0, 1.0];
        let good = [0.1, 0.9, 0.1, 0.9];
        let bad = [0.9, 0.1, 0.9, 0.1];
        let sel = greedy_selection(&[&bad, &good], 5, &mse(&truth)).unwrap();
        assert_eq!(sel.counts, vec![0, 1]);
        assert!((sel.loss - 0.01).abs() < 1e-12);
    }

    #[test]
    fn rejects_ragged_candidates() {
        assert!(greedy_selection(&[&[1.0, 2.0], &[1.0]], 3, &|_| 0.0).is_none());
        assert!(greedy_selection(&[], 3, &|_| 0.0).is_none());
    }
}
