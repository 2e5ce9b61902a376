//! Memory admission (issue #12): a trial's heap is estimated before it starts
//! (`quarry_learners::memory`), and a worker with `--memory-limit` refuses or downsizes trials
//! that would not fit, and makes concurrent trials fit together (the sum of the running trials'
//! estimates plus the heap in use when none ran stays under the limit; a trial that would fit
//! alone waits for the others).
//!
//! The estimate can be wrong, so trials also check the live heap at every progress callback
//! (boosting round, fold) and stop with [`WorkerError::MemoryExceeded`] when it is over the
//! limit. This cooperative check is the defence: an allocation that fails aborts a Rust process
//! outright, so the limit must be enforced before the allocator runs dry. The live heap comes
//! from the binary's counting global allocator through [`set_heap_probe`]; without a probe
//! (library tests) only the estimates are checked.

use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Duration;

use quarry_learners::CheckedSpec;
use quarry_learners::memory::{MemoryShape, downsize, fit_bytes, model_bytes};

use crate::WorkerError;

static HEAP_PROBE: OnceLock<fn() -> usize> = OnceLock::new();

/// Installs the function that reads the live heap (bytes); the `quarry` binary passes its
/// counting allocator's. Only the first call counts.
pub fn set_heap_probe(probe: fn() -> usize) {
    let _ = HEAP_PROBE.set(probe);
}

/// Live heap bytes, when a probe is installed.
pub fn live_heap() -> Option<u64> {
    HEAP_PROBE.get().map(|probe| probe() as u64)
}

/// Parses a size as people write it: `512MiB`, `2GiB`, `1.5 GiB`, `800MB`, `4G`, or bytes.
/// Single letters (`K`, `M`, `G`, `T`) and `…iB` are powers of 1024, `KB`/`MB`/`GB`/`TB`
/// powers of 1000.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let bad = || format!("{text:?} is not a size (write e.g. 512MiB, 2GiB or a number of bytes)");
    let value: f64 = number.parse().map_err(|_| bad())?;
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1024.0 * 1024.0,
        "g" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tib" => 1024f64.powi(4),
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        _ => return Err(bad()),
    };
    let bytes = value * scale;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
        return Err(format!("{text:?}: a memory limit must be at least 1 byte"));
    }
    Ok(bytes.round() as u64)
}

/// What admission decided for one trial.
#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    /// Run `spec` (the trial's own, or a smaller one when `changes` is not empty).
    Run { spec: CheckedSpec, estimate: u64, changes: Vec<String> },
    /// Too big even after downsizing (`needs` is the trial's own estimate): the trial fails
    /// with [`WorkerError::MemoryRefused`].
    Refuse { needs: u64 },
}

/// A trial's heap: the fit of one fold (with its model and validation predictions), the other
/// folds' models that the trial keeps, and the out-of-fold predictions.
pub fn trial_bytes(spec: &CheckedSpec, shape: &MemoryShape, folds: usize, oof_bytes: u64) -> u64 {
    fit_bytes(spec, shape) + kept_bytes(spec, shape, folds, oof_bytes)
}

fn kept_bytes(spec: &CheckedSpec, shape: &MemoryShape, folds: usize, oof_bytes: u64) -> u64 {
    folds.saturating_sub(1) as u64 * model_bytes(spec, shape) + oof_bytes
}

/// The decision for a trial that may use `room` bytes: run as is, run downsized, or refuse.
/// Pure.
pub fn decide(spec: &CheckedSpec, shape: &MemoryShape, folds: usize, oof_bytes: u64, room: u64) -> Admission {
    let estimate = trial_bytes(spec, shape, folds, oof_bytes);
    if estimate <= room {
        return Admission::Run { spec: spec.clone(), estimate, changes: Vec::new() };
    }
    match downsize(spec, shape, room, &|s| kept_bytes(s, shape, folds, oof_bytes)) {
        Some((small, changes)) => {
            let estimate = trial_bytes(&small, shape, folds, oof_bytes);
            Admission::Run { spec: small, estimate, changes }
        }
        None => Admission::Refuse { needs: estimate },
    }
}

/// A worker's (or `quarry fit`'s) memory limit and the trials admitted under it.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: u64,
    state: Mutex<Ledger>,
    freed: Condvar,
}

#[derive(Debug, Default)]
struct Ledger {
    /// Sum of the running trials' estimates.
    reserved: u64,
    running: usize,
    /// The live heap when a trial was last admitted with none running: the job data and the
    /// process itself, which every trial's estimate comes on top of.
    base: u64,
}

/// Held while an admitted trial runs; gives its estimate back when dropped.
#[derive(Debug)]
pub struct Reservation<'a> {
    budget: &'a MemoryBudget,
    bytes: u64,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if let Ok(mut l) = self.budget.state.lock() {
            l.reserved = l.reserved.saturating_sub(self.bytes);
            l.running = l.running.saturating_sub(1);
        }
        self.budget.freed.notify_all();
    }
}

/// How often a trial waiting for room checks whether it was cancelled.
const WAIT_POLL: Duration = Duration::from_millis(100);

impl MemoryBudget {
    pub fn new(limit: u64) -> MemoryBudget {
        MemoryBudget { limit, state: Mutex::new(Ledger::default()), freed: Condvar::new() }
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The live heap, when it is over the limit.
    pub fn exceeded(&self) -> Option<WorkerError> {
        let live = live_heap()?;
        (live > self.limit).then_some(WorkerError::MemoryExceeded { live, limit: self.limit })
    }

    /// Admits a trial: decides against the room left once the base heap is counted, then
    /// waits (polling `cancelled`) until the running trials leave room for its estimate.
    /// `Ok(None)` means it was cancelled while waiting.
    pub fn admit(
        &self,
        spec: &CheckedSpec,
        shape: &MemoryShape,
        folds: usize,
        oof_bytes: u64,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Option<(Reservation<'_>, CheckedSpec, Vec<String>)>, WorkerError> {
        let lock_err = || WorkerError::Invalid("memory ledger poisoned".into());
        let mut ledger = self.state.lock().map_err(|_| lock_err())?;
        if ledger.running == 0 {
            ledger.base = live_heap().unwrap_or(0);
        }
        let room = self.limit.saturating_sub(ledger.base);
        let (spec, estimate, changes) = match decide(spec, shape, folds, oof_bytes, room) {
            Admission::Run { spec, estimate, changes } => (spec, estimate, changes),
            Admission::Refuse { needs } => {
                return Err(WorkerError::MemoryRefused { needs, limit: self.limit });
            }
        };
        while ledger.reserved + estimate > room {
            if cancelled() {
                return Ok(None);
            }
            ledger = self.freed.wait_timeout(ledger, WAIT_POLL).map_err(|_| lock_err())?.0;
        }
        ledger.reserved += estimate;
        ledger.running += 1;
        tracing::debug!(
            estimate,
            base = ledger.base,
            reserved = ledger.reserved,
            limit = self.limit,
            "trial admitted"
        );
        Ok(Some((Reservation { budget: self, bytes: estimate }, spec, changes)))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use quarry_learners::{Family, ParamMap, check_params};

    const MIB: u64 = 1 << 20;

    #[test]
    fn sizes_parse_as_written_and_bad_ones_say_why() {
        assert_eq!(parse_size("512MiB"), Ok(512 * MIB));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1.5 GiB"), Ok(3 << 29));
        assert_eq!(parse_size("4g"), Ok(4 << 30));
        assert_eq!(parse_size("800MB"), Ok(800_000_000));
        assert_eq!(parse_size("123456"), Ok(123_456));
        for bad in ["", "lots", "12 parsecs", "-1GiB", "0", "GiB", "1e3"] {
            let err = parse_size(bad).unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{bad}: {err}");
        }
    }

    fn spec(family: Family, pairs: &[(&str, &str)]) -> CheckedSpec {
        let map: ParamMap = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        check_params(family, &map).unwrap()
    }

    /// 10,000 rows, one numeric feature of 4 distinct values, regression, no validation rows.
    fn tiny() -> MemoryShape {
        MemoryShape {
            rows: 10_000,
            valid_rows: 0,
            numeric_levels: vec![4],
            categorical_levels: Vec::new(),
            classes: 0,
        }
    }

    #[test]
    fn a_linear_trial_is_admitted_or_refused_by_its_hand_computed_size() {
        let linear = spec(Family::Linear, &[]);
        let shape = tiny();
        // By hand: imputation buffers 16 n = 160,000; design matrix and the solver's copy
        // 2 · 8 · n · 1 = 160,000; per-class scores 2 · 8 · n · 1 = 160,000 (no validation
        // rows): 480,000. Kept: 2 more fold models of 8 · 2 · 1 · 3 + 64 = 112 bytes each,
        // plus 1,000 bytes of out-of-fold predictions: 481,224.
        assert_eq!(trial_bytes(&linear, &shape, 3, 1_000), 481_224);
        let run = decide(&linear, &shape, 3, 1_000, 481_224);
        assert_eq!(run, Admission::Run { spec: linear.clone(), estimate: 481_224, changes: vec![] });
        assert_eq!(decide(&linear, &shape, 3, 1_000, 481_223), Admission::Refuse { needs: 481_224 });
        let budget = MemoryBudget::new(400_000);
        let err = budget.admit(&linear, &shape, 3, 1_000, &|| false).unwrap_err();
        assert_eq!(err.to_string(), "memory: needs ~470 KiB, --memory-limit is 391 KiB");
    }

    #[test]
    fn a_forest_is_downsized_to_the_room_and_says_what_changed() {
        let forest = spec(Family::RandomForest, &[("n_estimators", "100")]);
        let shape = MemoryShape { rows: 100_000, numeric_levels: vec![4096; 20], ..tiny() };
        let full = trial_bytes(&forest, &shape, 5, 0);
        let room = full / 3;
        match decide(&forest, &shape, 5, 0, room) {
            Admission::Run { spec: CheckedSpec::Trees(p), estimate, changes } => {
                assert!(estimate <= room, "{estimate} > {room}");
                assert!(p.num_leaves < 4096, "{p:?}");
                assert_eq!(p.n_estimators, 100, "trees are the last resort");
                assert_eq!(changes, vec![format!("num_leaves 4096 → {}", p.num_leaves)]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn concurrent_trials_fit_together_or_wait() {
        let linear = spec(Family::Linear, &[]);
        let shape = tiny();
        let one = trial_bytes(&linear, &shape, 1, 0);
        let budget = MemoryBudget::new(one * 2 + one / 2);
        let never = || false;
        let (a, _, _) = budget.admit(&linear, &shape, 1, 0, &never).unwrap().unwrap();
        let (b, _, _) = budget.admit(&linear, &shape, 1, 0, &never).unwrap().unwrap();
        // A third does not fit beside the two: it waits, here until it is cancelled.
        let waited = std::time::Instant::now();
        let cancel_soon = || waited.elapsed() > Duration::from_millis(250);
        assert!(budget.admit(&linear, &shape, 1, 0, &cancel_soon).unwrap().is_none());
        drop(a);
        let (c, _, _) = budget.admit(&linear, &shape, 1, 0, &never).unwrap().unwrap();
        drop((b, c));
        assert_eq!(budget.state.lock().unwrap().reserved, 0);
    }
}
