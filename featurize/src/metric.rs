//! Tasks and metrics. They live here, in the root crate, because every other crate
//! (learners for early stopping, the coordinator for ranking, the CLI for `evaluate`) needs them.

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::error::FeaturizeError;
use crate::matrix::{Predictions, Target};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    Binary,
    Multiclass,
    Regression,
}

impl Task {
    pub fn is_classification(self) -> bool {
        matches!(self, Task::Binary | Task::Multiclass)
    }

    pub fn default_metric(self) -> Metric {
        match self {
            Task::Binary => Metric::RocAuc,
            Task::Multiclass => Metric::LogLoss,
            Task::Regression => Metric::Rmse,
        }
    }

    /// Metrics reported beside the primary one.
    pub fn report_metrics(self) -> &'static [Metric] {
        match self {
            Task::Binary => &[Metric::RocAuc, Metric::LogLoss, Metric::Accuracy],
            Task::Multiclass => &[Metric::LogLoss, Metric::Accuracy],
            Task::Regression => &[Metric::Rmse, Metric::R2, Metric::Mae],
        }
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Task::Binary => "binary",
            Task::Multiclass => "multiclass",
            Task::Regression => "regression",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    RocAuc,
    LogLoss,
    Accuracy,
    Rmse,
    R2,
    Mae,
}

impl Metric {
    pub const ALL: [Metric; 6] =
        [Metric::RocAuc, Metric::LogLoss, Metric::Accuracy, Metric::Rmse, Metric::R2, Metric::Mae];

    pub fn name(self) -> &'static str {
        match self {
            Metric::RocAuc => "roc_auc",
            Metric::LogLoss => "log_loss",
            Metric::Accuracy => "accuracy",
            Metric::Rmse => "rmse",
            Metric::R2 => "r2",
            Metric::Mae => "mae",
        }
    }

    pub fn parse(name: &str) -> Result<Metric, FeaturizeError> {
        Metric::ALL
            .into_iter()
            .find(|m| m.name() == name)
            .ok_or_else(|| FeaturizeError::UnknownMetric(name.to_string()))
    }

    pub fn higher_is_better(self) -> bool {
        matches!(self, Metric::RocAuc | Metric::Accuracy | Metric::R2)
    }

    /// The score turned into a loss (lower is better), for ranking.
    pub fn to_loss(self, score: f64) -> f64 {
        if score.is_nan() {
            return f64::INFINITY;
        }
        if self.higher_is_better() { -score } else { score }
    }

    pub fn check_task(self, task: Task) -> Result<(), FeaturizeError> {
        let ok = match self {
            Metric::RocAuc => task == Task::Binary,
            Metric::LogLoss | Metric::Accuracy => task.is_classification(),
            Metric::Rmse | Metric::R2 | Metric::Mae => task == Task::Regression,
        };
        if ok {
            Ok(())
        } else {
            Err(FeaturizeError::MetricTaskMismatch {
                metric: self.name().to_string(),
                task: task.to_string(),
            })
        }
    }

    /// Scores `pred` against `truth`; `NaN` when the pair does not fit the metric.
    pub fn score(self, truth: &Target, pred: &Predictions) -> f64 {
        match (truth, pred) {
            (Target::Classes { codes, .. }, Predictions::Probabilities { n_classes, values }) => match self {
                Metric::RocAuc if *n_classes == 2 => {
                    let p1: Vec<f64> = values.chunks(2).map(|r| r[1]).collect();
                    roc_auc(codes, &p1)
                }
                Metric::LogLoss => log_loss(codes, *n_classes, values),
                Metric::Accuracy => {
                    let hits = pred
                        .class_codes()
                        .unwrap_or_default()
                        .iter()
                        .zip(codes)
                        .filter(|(a, b)| a == b)
                        .count();
                    hits as f64 / codes.len().max(1) as f64
                }
                _ => f64::NAN,
            },
            (Target::Values(y), Predictions::Values(p)) => match self {
                Metric::Rmse => (y.iter().zip(p).map(|(a, b)| (a - b).powi(2)).sum::<f64>()
                    / y.len().max(1) as f64)
                    .sqrt(),
                Metric::Mae => {
                    y.iter().zip(p).map(|(a, b)| (a - b).abs()).sum::<f64>() / y.len().max(1) as f64
                }
                Metric::R2 => {
                    let mean = y.iter().sum::<f64>() / y.len().max(1) as f64;
                    let ss_tot: f64 = y.iter().map(|a| (a - mean).powi(2)).sum();
                    let ss_res: f64 = y.iter().zip(p).map(|(a, b)| (a - b).powi(2)).sum();
                    if ss_tot == 0.0 { f64::NAN } else { 1.0 - ss_res / ss_tot }
                }
                _ => f64::NAN,
            },
            _ => f64::NAN,
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Probabilities are clipped as scikit-learn does so one confident miss is finite.
const LOG_LOSS_EPS: f64 = 1e-15;

pub fn log_loss(codes: &[u32], n_classes: usize, probabilities: &[f64]) -> f64 {
    let total: f64 = codes
        .iter()
        .zip(probabilities.chunks(n_classes))
        .map(|(&c, row)| {
            let sum: f64 = row.iter().sum();
            let p =
                (row[c as usize] / if sum > 0.0 { sum } else { 1.0 }).clamp(LOG_LOSS_EPS, 1.0 - LOG_LOSS_EPS);
            -p.ln()
        })
        .sum();
    total / codes.len().max(1) as f64
}

/// Area under the ROC curve, ties counted as half (Mann-Whitney U).
pub fn roc_auc(codes: &[u32], score_positive: &[f64]) -> f64 {
    let mut order: Vec<usize> = (0..codes.len()).collect();
    order.sort_by(|&a, &b| score_positive[a].total_cmp(&score_positive[b]));
    let n_pos = codes.iter().filter(|&&c| c == 1).count() as f64;
    let n_neg = codes.len() as f64 - n_pos;
    if n_pos == 0.0 || n_neg == 0.0 {
        return f64::NAN;
    }
    let mut rank_sum_pos = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && score_positive[order[j + 1]] == score_positive[order[i]] {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        for &idx in &order[i..=j] {
            if codes[idx] == 1 {
                rank_sum_pos += avg_rank;
            }
        }
        i = j + 1;
    }
    (rank_sum_pos - n_pos * (n_pos + 1.0) / 2.0) / (n_pos * n_neg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_matches_hand_count() {
        // pairs (pos,neg): (0.8,0.1) win, (0.8,0.4) win, (0.35,0.1) win, (0.35,0.4) loss -> 3/4
        let codes = [0, 0, 1, 1];
        let scores = [0.1, 0.4, 0.35, 0.8];
        assert!((roc_auc(&codes, &scores) - 0.75).abs() < 1e-12);
    }

    #[test]
    fn auc_counts_ties_as_half() {
        assert!((roc_auc(&[0, 1], &[0.5, 0.5]) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn log_loss_of_uniform_is_ln_k() {
        let probs = [1.0 / 3.0; 6];
        assert!((log_loss(&[0, 2], 3, &probs) - 3f64.ln()).abs() < 1e-12);
    }

    #[test]
    fn regression_metrics() {
        let truth = Target::Values(vec![1.0, 2.0, 3.0]);
        let pred = Predictions::Values(vec![1.0, 2.0, 5.0]);
        assert!((Metric::Rmse.score(&truth, &pred) - (4.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert!((Metric::Mae.score(&truth, &pred) - 2.0 / 3.0).abs() < 1e-12);
        assert!((Metric::R2.score(&truth, &pred) - (1.0 - 4.0 / 2.0)).abs() < 1e-12);
    }

    #[test]
    fn metric_names_round_trip() {
        for m in Metric::ALL {
            assert_eq!(Metric::parse(m.name()).ok(), Some(m));
        }
        assert!(Metric::parse("f1").is_err());
    }
}
