//! `SearchDriver`: the one place that decides which trial comes next, shared by `quarry fit`
//! (through [`crate::run_search`]) and the server. It is pure: no IO, no clock of its own
//! (the caller passes `now`), so its output depends only on the calls made to it.
//!
//! Determinism (`--max-trials` without a budget): trial `n` is suggested only once the results
//! of trials `1..=n-W` are known, and the searcher is told exactly those, in id order, before
//! it suggests `n`. Later results stay buffered. The suggestion sequence therefore does not
//! depend on how many trials run at once or in which order they finish.

use std::collections::BTreeMap;
use std::time::Instant;

use quarry_featurize::Metric;
use quarry_search::{
    DataShape, Decision, Scheduler, Searcher, Suggestion, TrialId, TrialOutcome, TrialRecord, TrialSpec,
    TrialStatus,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::job::{
    JobError, LeaderboardEntry, SchedulerKind, SearcherKind, make_scheduler, make_searcher, rank,
};

/// Trials that may be outstanding (suggested, result not yet told) in deterministic mode.
pub const DETERMINISM_WINDOW: u64 = 4;

/// Everything the driver needs to know about a job's search.
#[derive(Debug, Clone, PartialEq)]
pub struct DriverConfig {
    pub families: Vec<String>,
    pub shape: DataShape,
    pub metric: Metric,
    pub seed: u64,
    pub max_trials: Option<usize>,
    pub scheduler: SchedulerKind,
    pub searcher: SearcherKind,
    /// The fixed window above, and trial costs ignored by the searcher (they are timings).
    /// Without it results are told as they arrive and trials issued while workers ask.
    pub deterministic: bool,
}

/// A finished job's driver as plain data ([`SearchDriver::to_summary`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DriverSummary {
    issued: u64,
    closed: bool,
    told_upto: u64,
    in_flight: Vec<TrialSpec>,
    board: Vec<BoardEntry>,
    best_idx: Option<usize>,
}

/// A leaderboard entry with the field its own serialization skips.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct BoardEntry {
    entry: LeaderboardEntry,
    rounds: Option<usize>,
}

/// What the caller should do next.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    Trial(TrialSpec),
    /// Nothing can be suggested until more results arrive (the window is full).
    Wait,
    /// No more trials will be suggested; results of those in flight are still welcome.
    Done,
}

pub struct SearchDriver {
    config: DriverConfig,
    searcher: Box<dyn Searcher + Send>,
    scheduler: Box<dyn Scheduler + Send>,
    issued: u64,
    /// Specs of trials issued and not yet recorded.
    in_flight: BTreeMap<u64, TrialSpec>,
    /// Results known but not yet told to the searcher (deterministic mode); `None` for a trial
    /// that was cancelled (the searcher never hears of those).
    buffered: BTreeMap<u64, Option<TrialRecord>>,
    /// Every id up to this one has been told (or skipped).
    told_upto: u64,
    closed: bool,
    board: Vec<LeaderboardEntry>,
    best_idx: Option<usize>,
}

impl std::fmt::Debug for SearchDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchDriver")
            .field("issued", &self.issued)
            .field("in_flight", &self.in_flight.len())
            .field("told_upto", &self.told_upto)
            .field("closed", &self.closed)
            .field("finished", &self.board.len())
            .finish()
    }
}

impl SearchDriver {
    pub fn new(config: DriverConfig) -> Result<SearchDriver, JobError> {
        let families: Vec<&str> = config.families.iter().map(String::as_str).collect();
        // The searcher's RNG and each trial's seed derive from the job seed alone.
        let searcher =
            make_searcher(config.searcher, &families, config.shape, ChaCha8Rng::seed_from_u64(config.seed))?;
        let scheduler = make_scheduler(config.scheduler);
        Ok(SearchDriver {
            config,
            searcher,
            scheduler,
            issued: 0,
            in_flight: BTreeMap::new(),
            buffered: BTreeMap::new(),
            told_upto: 0,
            closed: false,
            board: Vec::new(),
            best_idx: None,
        })
    }

    pub fn config(&self) -> &DriverConfig {
        &self.config
    }

    /// The next trial, if one may start now. `search_deadline` is when trials stop starting
    /// (the run's deadline minus the reserve); once `now` passes it the driver closes.
    pub fn next_trial(&mut self, now: Instant, search_deadline: Option<Instant>) -> Next {
        if self.closed {
            return Next::Done;
        }
        if self.config.max_trials.is_some_and(|m| self.issued >= m as u64)
            || search_deadline.is_some_and(|d| now >= d)
        {
            self.closed = true;
            return Next::Done;
        }
        let n = self.issued + 1;
        if self.config.deterministic {
            let must_know = n.saturating_sub(DETERMINISM_WINDOW);
            while self.told_upto < must_know {
                let Some(record) = self.buffered.remove(&(self.told_upto + 1)) else { return Next::Wait };
                if let Some(r) = record {
                    self.searcher.on_trial_complete(&r);
                }
                self.told_upto += 1;
            }
        }
        let Suggestion::Trial { family, config } = self.searcher.suggest() else {
            self.closed = true;
            return Next::Done;
        };
        self.issued = n;
        let spec = TrialSpec {
            id: TrialId(n),
            family,
            config,
            seed: self.config.seed.wrapping_mul(1_000_003).wrapping_add(n - 1),
        };
        self.in_flight.insert(n, spec.clone());
        if self.config.max_trials.is_some_and(|m| n >= m as u64) {
            // The last one: closing now lets the search finish as soon as it comes back.
            self.closed = true;
        }
        Next::Trial(spec)
    }

    /// An intermediate validation loss (lower is better) at `resource` units of training;
    /// the job's scheduler says whether the trial goes on. Unknown trials are told to stop.
    pub fn on_progress(&mut self, trial: TrialId, resource: usize, loss: f64) -> Decision {
        if !self.in_flight.contains_key(&trial.0) {
            return Decision::Stop;
        }
        self.scheduler.on_trial_result(trial, resource, loss)
    }

    /// Records a finished trial. Returns its leaderboard entry, or `None` for a cancelled trial
    /// (cut off by the budget: not data about its config, and no more trials start after it).
    pub fn record(&mut self, outcome: TrialOutcome) -> Result<Option<&LeaderboardEntry>, JobError> {
        let Some(spec) = self.in_flight.remove(&outcome.id.0) else {
            return Err(JobError::UnknownTrial(outcome.id));
        };
        self.scheduler.on_trial_complete(spec.id);
        if outcome.status == TrialStatus::Cancelled {
            self.closed = true;
            self.tell(spec.id.0, None);
            return Ok(None);
        }
        let loss = outcome.score.map(|s| self.config.metric.to_loss(s));
        // In deterministic mode the cost is a constant: timings differ between runs and machines.
        let cost = if self.config.deterministic { 1.0 } else { outcome.fit_seconds.max(1e-3) };
        let record = TrialRecord { family: spec.family.clone(), config: spec.config.clone(), loss, cost };
        self.tell(spec.id.0, Some(record));
        self.board.push(LeaderboardEntry {
            id: spec.id,
            family: spec.family,
            params: spec.config,
            metric: self.config.metric.name().to_string(),
            validation_score: outcome.score,
            fit_seconds: outcome.fit_seconds,
            status: outcome.status,
            failure_reason: outcome.failure_reason,
            rounds: outcome.rounds,
        });
        let idx = self.board.len() - 1;
        if let Some(l) = loss.filter(|l| l.is_finite()) {
            let metric = self.config.metric;
            let better = self.best_idx.is_none_or(|b| {
                let bl = self.board[b].validation_score.map(|s| metric.to_loss(s));
                // Ties go to the lower id, so the best does not depend on arrival order.
                bl.is_none_or(|bl| l < bl || (l == bl && self.board[idx].id < self.board[b].id))
            });
            if better {
                self.best_idx = Some(idx);
            }
        }
        Ok(Some(&self.board[idx]))
    }

    fn tell(&mut self, id: u64, record: Option<TrialRecord>) {
        if self.config.deterministic {
            self.buffered.insert(id, record);
        } else if let Some(r) = record {
            self.searcher.on_trial_complete(&r);
        }
    }

    /// Stops suggesting (cancellation, or the budget ran out while waiting).
    pub fn close(&mut self) {
        self.closed = true;
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Closed and nothing in flight: the leaderboard is final.
    pub fn is_finished(&self) -> bool {
        self.closed && self.in_flight.is_empty()
    }

    pub fn issued(&self) -> u64 {
        self.issued
    }

    pub fn in_flight(&self) -> impl Iterator<Item = &TrialSpec> {
        self.in_flight.values()
    }

    pub fn spec(&self, id: TrialId) -> Option<&TrialSpec> {
        self.in_flight.get(&id.0)
    }

    pub fn best(&self) -> Option<&LeaderboardEntry> {
        self.best_idx.map(|b| &self.board[b])
    }

    /// Finished trials in the order they were recorded.
    pub fn entries(&self) -> &[LeaderboardEntry] {
        &self.board
    }

    /// The leaderboard, best first.
    pub fn leaderboard(&self) -> Vec<LeaderboardEntry> {
        let mut board = self.board.clone();
        rank(&mut board, self.config.metric);
        board
    }

    /// What a finished job's driver still answers (the board, issued and in-flight trials),
    /// as plain data for a state snapshot. The searcher's and scheduler's state are left out:
    /// a finished job never asks them again.
    pub fn to_summary(&self) -> DriverSummary {
        DriverSummary {
            issued: self.issued,
            closed: self.closed,
            told_upto: self.told_upto,
            in_flight: self.in_flight.values().cloned().collect(),
            board: self.board.iter().map(|e| BoardEntry { rounds: e.rounds, entry: e.clone() }).collect(),
            best_idx: self.best_idx,
        }
    }

    /// A driver that answers like the one `summary` was taken of, with a fresh searcher (for
    /// finished jobs only: its suggestions would not continue the old ones).
    pub fn from_summary(config: DriverConfig, summary: DriverSummary) -> Result<SearchDriver, JobError> {
        let mut d = SearchDriver::new(config)?;
        d.issued = summary.issued;
        d.closed = summary.closed;
        d.told_upto = summary.told_upto;
        d.in_flight = summary.in_flight.into_iter().map(|s| (s.id.0, s)).collect();
        d.board =
            summary.board.into_iter().map(|b| LeaderboardEntry { rounds: b.rounds, ..b.entry }).collect();
        d.best_idx = summary.best_idx.filter(|&b| b < d.board.len());
        Ok(d)
    }

    pub fn into_leaderboard(self) -> Vec<LeaderboardEntry> {
        let metric = self.config.metric;
        let mut board = self.board;
        rank(&mut board, metric);
        board
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn config(max_trials: usize) -> DriverConfig {
        DriverConfig {
            families: vec!["gbdt".into(), "linear".into(), "random_forest".into(), "knn".into()],
            shape: DataShape { n_rows: 500, n_features: 6, n_classes: 2 },
            metric: Metric::RocAuc,
            seed: 11,
            max_trials: Some(max_trials),
            scheduler: SchedulerKind::Fifo,
            searcher: SearcherKind::Local,
            deterministic: true,
        }
    }

    /// A score that depends on the config, so the searcher's choices depend on what it was told.
    fn outcome(spec: &TrialSpec, fit_seconds: f64) -> TrialOutcome {
        let h = format!("{}{:?}", spec.family, spec.config)
            .bytes()
            .fold(7u64, |a, b| a.wrapping_mul(31).wrapping_add(b as u64));
        let fail = h.is_multiple_of(9);
        TrialOutcome {
            id: spec.id,
            status: if fail { TrialStatus::Failed } else { TrialStatus::Completed },
            score: (!fail).then(|| 0.5 + (h % 1000) as f64 / 2000.0),
            fit_seconds,
            rounds: None,
            failure_reason: fail.then(|| "boom".into()),
        }
    }

    /// Runs the driver with `parallel` trials in flight; `pick(in_flight)` chooses which one
    /// finishes next. Returns every spec in issue order and the final leaderboard.
    fn simulate(
        parallel: usize,
        n: usize,
        pick: &mut dyn FnMut(&[TrialSpec]) -> usize,
    ) -> (Vec<TrialSpec>, Vec<LeaderboardEntry>) {
        let mut d = SearchDriver::new(config(n)).unwrap();
        let now = Instant::now();
        let mut issued = Vec::new();
        let mut running: Vec<TrialSpec> = Vec::new();
        let mut t = 0.0;
        loop {
            while running.len() < parallel {
                match d.next_trial(now, None) {
                    Next::Trial(s) => {
                        issued.push(s.clone());
                        running.push(s);
                    }
                    Next::Wait => {
                        assert!(!running.is_empty(), "window full with nothing running");
                        break;
                    }
                    Next::Done => break,
                }
            }
            if running.is_empty() {
                break;
            }
            let k = pick(&running);
            let s = running.remove(k);
            // Timings differ every run; the driver must not care.
            t += 0.37;
            d.record(outcome(&s, t)).unwrap();
        }
        assert!(d.is_finished());
        (issued, d.into_leaderboard())
    }

    fn strip_timings(board: &[LeaderboardEntry]) -> Vec<LeaderboardEntry> {
        board
            .iter()
            .cloned()
            .map(|mut e| {
                e.fit_seconds = 0.0;
                e
            })
            .collect()
    }

    #[test]
    fn suggestions_do_not_depend_on_arrival_order_or_parallelism() {
        let (reference, ref_board) = simulate(1, 40, &mut |_| 0);
        assert_eq!(reference.len(), 40);
        assert_eq!(ref_board.len(), 40);
        for parallel in 1..=3 {
            let in_order = simulate(parallel, 40, &mut |_| 0);
            let reversed = simulate(parallel, 40, &mut |r| r.len() - 1);
            let mut rng = ChaCha8Rng::seed_from_u64(parallel as u64);
            let shuffled = simulate(parallel, 40, &mut |r| rand::Rng::random_range(&mut rng, 0..r.len()));
            for (what, (specs, board)) in
                [("in order", in_order), ("reversed", reversed), ("interleaved", shuffled)]
            {
                assert_eq!(specs, reference, "{parallel} in flight, {what}");
                assert_eq!(strip_timings(&board), strip_timings(&ref_board), "{parallel} in flight, {what}");
            }
        }
    }

    #[test]
    fn window_blocks_the_fifth_trial_until_the_first_result() {
        let mut d = SearchDriver::new(config(10)).unwrap();
        let now = Instant::now();
        let specs: Vec<TrialSpec> = (0..4)
            .map(|_| match d.next_trial(now, None) {
                Next::Trial(s) => s,
                other => panic!("expected a trial, got {other:?}"),
            })
            .collect();
        assert_eq!(d.next_trial(now, None), Next::Wait);
        // Trial 2 finishing is not enough: trial 5 needs trial 1.
        d.record(outcome(&specs[1], 1.0)).unwrap();
        assert_eq!(d.next_trial(now, None), Next::Wait);
        d.record(outcome(&specs[0], 1.0)).unwrap();
        assert!(matches!(d.next_trial(now, None), Next::Trial(s) if s.id == TrialId(5)));
        assert!(matches!(d.next_trial(now, None), Next::Trial(s) if s.id == TrialId(6)));
        assert_eq!(d.next_trial(now, None), Next::Wait);
    }

    #[test]
    fn deadline_closes_and_cancelled_trials_stay_off_the_board() {
        let mut c = config(10);
        c.deterministic = false;
        let mut d = SearchDriver::new(c).unwrap();
        let now = Instant::now();
        let Next::Trial(a) = d.next_trial(now, None) else { panic!() };
        let Next::Trial(b) = d.next_trial(now, None) else { panic!() };
        d.record(outcome(&a, 1.0)).unwrap();
        let mut cancelled = outcome(&b, 1.0);
        cancelled.status = TrialStatus::Cancelled;
        assert!(d.record(cancelled).unwrap().is_none());
        assert_eq!(d.entries().len(), 1);
        assert_eq!(d.next_trial(now, None), Next::Done);
        assert!(d.is_finished());
        // A deadline in the past closes a fresh driver at once.
        let mut d = SearchDriver::new(config(10)).unwrap();
        assert_eq!(d.next_trial(now, Some(now)), Next::Done);
        assert!(matches!(d.record(outcome(&a, 1.0)), Err(JobError::UnknownTrial(TrialId(1)))));
    }
}
