//! Per-round validation losses that workers report for running trials (learning / rung
//! curves for the dashboard). Kept in memory only: they are a view, not state, so they are
//! not logged and a restarted coordinator shows curves only for trials run since. A retired job
//! (`--retain-finished`) loses its curves.

use std::collections::HashMap;
use std::sync::Mutex;

/// Points kept per trial; past this, every other point is dropped (the curve keeps its shape).
const MAX_POINTS: usize = 256;

/// `(resource, loss)` points per job and trial.
type Curves = HashMap<String, HashMap<u64, Vec<(u64, f64)>>>;

#[derive(Debug, Default)]
pub struct ProgressLog {
    curves: Mutex<Curves>,
}

impl ProgressLog {
    pub fn record(&self, job: &str, trial: u64, resource: u64, loss: f64) {
        if !loss.is_finite() {
            return;
        }
        let mut curves = self.curves.lock().unwrap_or_else(|p| p.into_inner());
        let curve = curves.entry(job.to_string()).or_default().entry(trial).or_default();
        if curve.last().is_some_and(|&(r, _)| r >= resource) {
            return;
        }
        if curve.len() >= MAX_POINTS {
            let mut i = 0;
            curve.retain(|_| {
                i += 1;
                i % 2 == 1
            });
        }
        curve.push((resource, loss));
    }

    /// `(resource, loss)` points of one trial, in resource order.
    pub fn curve(&self, job: &str, trial: u64) -> Vec<(u64, f64)> {
        let curves = self.curves.lock().unwrap_or_else(|p| p.into_inner());
        curves.get(job).and_then(|c| c.get(&trial)).cloned().unwrap_or_default()
    }

    /// Drops a job's curves (it was retired: `--retain-finished`).
    pub fn forget(&self, job: &str) {
        self.curves.lock().unwrap_or_else(|p| p.into_inner()).remove(job);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_increasing_resources_and_bounds_the_curve() {
        let log = ProgressLog::default();
        for r in 1..=1000 {
            log.record("j", 1, r, 1.0 / r as f64);
        }
        log.record("j", 1, 5, 0.0);
        log.record("j", 1, 2000, f64::NAN);
        let c = log.curve("j", 1);
        assert!(c.len() <= MAX_POINTS && c.len() > MAX_POINTS / 2, "{}", c.len());
        assert_eq!(c.first(), Some(&(1, 1.0)));
        assert_eq!(c.last().map(|p| p.0), Some(1000));
        assert!(c.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(log.curve("j", 2).is_empty());
        log.record("k", 1, 1, 0.5);
        log.forget("j");
        assert!(log.curve("j", 1).is_empty());
        assert_eq!(log.curve("k", 1), vec![(1, 0.5)]);
    }
}
