//! Schedulers decide whether a running trial goes on, from the validation loss it reports
//! at each unit of resource (boosting round, epoch). They only ever stop trials; the
//! searcher never hears of the decision except through the trial's final outcome.

use std::collections::BTreeMap;

use crate::trial::TrialId;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Continue,
    Stop,
}

pub trait Scheduler {
    /// `loss` is direction-normalised (lower is better) at `resource` units of training.
    fn on_trial_result(&mut self, trial: TrialId, resource: usize, loss: f64) -> Decision;
    fn on_trial_complete(&mut self, trial: TrialId);
}

/// Never stops anything.
#[derive(Debug, Default, Clone)]
pub struct FifoScheduler;

impl Scheduler for FifoScheduler {
    fn on_trial_result(&mut self, _: TrialId, _: usize, _: f64) -> Decision {
        Decision::Continue
    }
    fn on_trial_complete(&mut self, _: TrialId) {}
}

/// Asynchronous successive halving (Li et al., 2018): rungs at `grace_period · η^k`; a trial
/// reaching a rung goes on only if its loss is among the best `⌈n/η⌉` of the `n` trials that
/// reached that rung so far. Fewer than `η` results at a rung is no evidence: continue.
#[derive(Debug, Clone)]
pub struct Asha {
    grace_period: usize,
    reduction_factor: usize,
    max_resource: usize,
    /// rung index → trial → loss recorded when it reached the rung.
    rungs: Vec<BTreeMap<TrialId, f64>>,
}

impl Asha {
    pub fn new(grace_period: usize, reduction_factor: usize, max_resource: usize) -> Asha {
        let grace_period = grace_period.max(1);
        let reduction_factor = reduction_factor.max(2);
        let mut n_rungs = 0;
        let mut milestone = grace_period;
        while milestone < max_resource {
            n_rungs += 1;
            milestone *= reduction_factor;
        }
        Asha { grace_period, reduction_factor, max_resource, rungs: vec![BTreeMap::new(); n_rungs] }
    }

    pub fn milestones(&self) -> Vec<usize> {
        (0..self.rungs.len()).map(|k| self.grace_period * self.reduction_factor.pow(k as u32)).collect()
    }
}

impl Scheduler for Asha {
    fn on_trial_result(&mut self, trial: TrialId, resource: usize, loss: f64) -> Decision {
        if loss.is_nan() {
            return Decision::Stop;
        }
        if resource >= self.max_resource {
            return Decision::Continue;
        }
        let milestones = self.milestones();
        // The highest rung this result reaches that the trial has not been judged at yet.
        let Some(k) = (0..milestones.len()).rev().find(|&k| resource >= milestones[k]) else {
            return Decision::Continue;
        };
        if self.rungs[k].contains_key(&trial) {
            return Decision::Continue;
        }
        self.rungs[k].insert(trial, loss);
        let mut recorded: Vec<f64> = self.rungs[k].values().copied().collect();
        if recorded.len() < self.reduction_factor {
            return Decision::Continue;
        }
        recorded.sort_by(f64::total_cmp);
        let keep = recorded.len().div_ceil(self.reduction_factor);
        let cutoff = recorded[keep - 1];
        if loss <= cutoff { Decision::Continue } else { Decision::Stop }
    }

    fn on_trial_complete(&mut self, _: TrialId) {}
}

/// The median stopping rule (Golovin et al., 2017): stop a trial whose best loss so far is
/// worse than the median, over completed trials, of their best loss at the same resource.
#[derive(Debug, Clone)]
pub struct MedianStopping {
    grace_period: usize,
    min_samples: usize,
    running: BTreeMap<TrialId, Vec<(usize, f64)>>,
    completed: Vec<Vec<(usize, f64)>>,
}

impl MedianStopping {
    pub fn new(grace_period: usize, min_samples: usize) -> MedianStopping {
        MedianStopping {
            grace_period,
            min_samples: min_samples.max(1),
            running: BTreeMap::new(),
            completed: Vec::new(),
        }
    }
}

fn best_up_to(curve: &[(usize, f64)], resource: usize) -> Option<f64> {
    curve.iter().filter(|(r, _)| *r <= resource).map(|(_, l)| *l).min_by(f64::total_cmp)
}

impl Scheduler for MedianStopping {
    fn on_trial_result(&mut self, trial: TrialId, resource: usize, loss: f64) -> Decision {
        if loss.is_nan() {
            return Decision::Stop;
        }
        let curve = self.running.entry(trial).or_default();
        curve.push((resource, loss));
        if resource < self.grace_period {
            return Decision::Continue;
        }
        let mine = best_up_to(curve, resource).unwrap_or(loss);
        let mut others: Vec<f64> = self.completed.iter().filter_map(|c| best_up_to(c, resource)).collect();
        if others.len() < self.min_samples {
            return Decision::Continue;
        }
        others.sort_by(f64::total_cmp);
        let n = others.len();
        let median = if n % 2 == 1 { others[n / 2] } else { (others[n / 2 - 1] + others[n / 2]) / 2.0 };
        if mine > median { Decision::Stop } else { Decision::Continue }
    }

    fn on_trial_complete(&mut self, trial: TrialId) {
        if let Some(curve) = self.running.remove(&trial) {
            self.completed.push(curve);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(i: u64) -> TrialId {
        TrialId(i)
    }

    #[test]
    fn asha_rungs_are_geometric() {
        assert_eq!(Asha::new(1, 2, 16).milestones(), vec![1, 2, 4, 8]);
        assert_eq!(Asha::new(10, 3, 100).milestones(), vec![10, 30, 90]);
    }

    #[test]
    fn asha_keeps_the_top_share_at_a_rung() {
        // η = 2: the first result is no evidence; then the best ⌈n/2⌉ of n go on.
        let mut a = Asha::new(1, 2, 16);
        assert_eq!(a.on_trial_result(t(1), 1, 0.1), Decision::Continue); // [0.1]
        assert_eq!(a.on_trial_result(t(2), 1, 0.4), Decision::Stop); // [0.1,0.4]: keep 1, cutoff 0.1
        assert_eq!(a.on_trial_result(t(3), 1, 0.2), Decision::Continue); // keep 2, cutoff 0.2
        assert_eq!(a.on_trial_result(t(4), 1, 0.3), Decision::Stop); // keep 2, cutoff 0.2
        // A trial is judged once per rung; later rounds below the next rung pass.
        assert_eq!(a.on_trial_result(t(3), 1, 0.9), Decision::Continue);
        // Rung 2 (resource 2) starts afresh.
        assert_eq!(a.on_trial_result(t(1), 2, 0.05), Decision::Continue);
        assert_eq!(a.on_trial_result(t(3), 3, 0.15), Decision::Stop); // [0.05,0.15]: cutoff 0.05
        // Past the last rung nothing is stopped; NaN always is.
        assert_eq!(a.on_trial_result(t(9), 16, 5.0), Decision::Continue);
        assert_eq!(a.on_trial_result(t(10), 1, f64::NAN), Decision::Stop);
    }

    #[test]
    fn median_rule_against_hand_computed_medians() {
        let mut m = MedianStopping::new(2, 3);
        let curves: [&[(usize, f64)]; 3] =
            [&[(1, 0.5), (2, 0.3), (3, 0.2)], &[(1, 0.6), (2, 0.5)], &[(1, 0.4), (2, 0.35)]];
        for (i, c) in curves.iter().enumerate() {
            for &(r, l) in *c {
                // Too few completed trials to judge: all continue.
                assert_eq!(m.on_trial_result(t(i as u64), r, l), Decision::Continue);
            }
            m.on_trial_complete(t(i as u64));
        }
        // At resource 2 the completed bests are 0.3, 0.5, 0.35: median 0.35.
        assert_eq!(m.on_trial_result(t(10), 1, 0.9), Decision::Continue, "inside the grace period");
        assert_eq!(m.on_trial_result(t(10), 2, 0.4), Decision::Stop);
        assert_eq!(m.on_trial_result(t(11), 2, 0.34), Decision::Continue);
        // At resource 3 the bests are 0.2, 0.5, 0.35 (curves that ended carry their best): median 0.35.
        assert_eq!(m.on_trial_result(t(11), 3, 0.36), Decision::Continue, "best so far is still 0.34");
        assert_eq!(m.on_trial_result(t(12), 3, 0.351), Decision::Stop);
    }

    #[test]
    fn fifo_never_stops() {
        let mut f = FifoScheduler;
        assert_eq!(f.on_trial_result(t(1), 1, 1e9), Decision::Continue);
    }
}
