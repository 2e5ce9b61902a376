//! Searchers propose the next trial; they learn only from completed trials' losses and costs.

use std::collections::BTreeMap;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::error::SearchError;
use crate::space::{Config, DataShape, Space, portfolio, space_for};

#[derive(Debug, Clone, PartialEq)]
pub enum Suggestion {
    Trial {
        family: String,
        config: Config,
    },
    /// Nothing left to try (every family exhausted its portfolio and the space is fixed).
    Finished,
}

/// A finished trial as the searcher sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct TrialRecord {
    pub family: String,
    pub config: Config,
    /// Direction-normalised (lower is better); `None` when the trial failed.
    pub loss: Option<f64>,
    /// Seconds the trial took (the searcher's only notion of time, given to it).
    pub cost: f64,
}

pub trait Searcher {
    fn suggest(&mut self) -> Suggestion;
    fn on_trial_complete(&mut self, record: &TrialRecord);
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct FamilyStats {
    pub n_trials: usize,
    pub n_failed: usize,
    pub total_cost: f64,
    pub best: Option<(f64, Config)>,
    /// The family's cumulative cost when it found its best, and when it found the best before.
    pub cost_at_best: f64,
    pub cost_at_prev_best: f64,
    /// The best loss before the current best.
    pub prev_best: Option<f64>,
}

impl FamilyStats {
    /// Estimated cost for improvement (FLAML's ECI, Wang et al. 2021): how much more of its own
    /// cost this family needs to beat its best (as long as it has gone without improving, or as
    /// long as its last improvement took) and, when it is not the leader, to reach the leader's
    /// loss `leader` at the speed it has been improving.
    pub fn eci(&self, leader: f64) -> f64 {
        let mean = self.total_cost / self.n_trials.max(1) as f64;
        let own =
            (self.total_cost - self.cost_at_best).max(self.cost_at_best - self.cost_at_prev_best).max(mean);
        let Some((best, _)) = &self.best else {
            // Never succeeded (some trials may still be running): as costly as what it spent.
            return own.max(self.total_cost);
        };
        let gap = best - leader;
        if gap <= 0.0 {
            return own;
        }
        let catch_up = match self.prev_best {
            Some(prev) if prev > *best && self.cost_at_best > self.cost_at_prev_best => {
                gap / ((prev - best) / (self.cost_at_best - self.cost_at_prev_best))
            }
            // One success only: no speed to go by, so it waits twice as long as on its own.
            _ => 2.0 * own,
        };
        own.max(catch_up)
    }
}

/// The spaces of the families that suit data of this shape; an error when none does.
fn family_spaces(families: &[&str], shape: DataShape) -> Result<Vec<(String, Space)>, SearchError> {
    let spaces: Vec<(String, Space)> =
        families.iter().filter_map(|f| space_for(f, shape).map(|s| (f.to_string(), s))).collect();
    if spaces.is_empty() {
        return Err(SearchError::NoFamilies);
    }
    Ok(spaces)
}

/// The part every model-based searcher shares: the zero-shot portfolio, tried first, then the
/// family picked by how good and how cheap it has been, from per-family statistics.
pub(crate) struct FamilyBoard {
    pub(crate) spaces: Vec<(String, Space)>,
    queue: Vec<(String, Config)>,
    pub(crate) stats: BTreeMap<String, FamilyStats>,
}

impl FamilyBoard {
    pub(crate) fn new(families: &[&str], shape: DataShape) -> Result<FamilyBoard, SearchError> {
        let spaces = family_spaces(families, shape)?;
        // Portfolio round-robin: each family's first (cheapest, safest) config, then the seconds.
        let portfolios: Vec<Vec<Config>> = spaces.iter().map(|(f, _)| portfolio(f, shape)).collect();
        let depth = portfolios.iter().map(Vec::len).max().unwrap_or(0);
        let mut queue = Vec::new();
        for d in 0..depth {
            for ((f, _), p) in spaces.iter().zip(&portfolios) {
                if let Some(c) = p.get(d) {
                    queue.push((f.clone(), c.clone()));
                }
            }
        }
        // The cheapest family leads: under a short budget on expensive data (a 10-class
        // boosted model on five folds on a loaded machine) the run still ends with a model.
        if let Some(at) = queue.iter().position(|(f, _)| f == "linear") {
            let first = queue.remove(at);
            queue.insert(0, first);
        }
        queue.reverse();
        Ok(FamilyBoard { spaces, queue, stats: BTreeMap::new() })
    }

    /// The next portfolio config, while any is left.
    pub(crate) fn next_portfolio(&mut self) -> Option<(String, Config)> {
        self.queue.pop()
    }

    /// The family of the next trial, drawn with probability inversely proportional to its
    /// estimated cost for improvement ([`FamilyStats::eci`]): the leader while it keeps
    /// improving cheaply, a challenger that is close behind or improving fast, and now and
    /// then anything else. A family not heard from yet is drawn as if as cheap as the
    /// cheapest one; a family whose every trial failed is not drawn again.
    pub(crate) fn pick_family(&self, rng: &mut ChaCha8Rng) -> Option<usize> {
        let usable: Vec<usize> = (0..self.spaces.len())
            .filter(|&k| {
                let s = self.stats.get(&self.spaces[k].0);
                s.is_none_or(|s| s.n_failed < s.n_trials || s.n_trials == 0)
            })
            .collect();
        if usable.is_empty() {
            return None;
        }
        let leader =
            self.stats.values().filter_map(|s| s.best.as_ref().map(|b| b.0)).fold(f64::INFINITY, f64::min);
        let ecis: Vec<Option<f64>> = usable
            .iter()
            .map(|&k| {
                let s = self.stats.get(&self.spaces[k].0).filter(|s| s.n_trials > 0)?;
                Some(s.eci(leader).max(1e-9))
            })
            .collect();
        let cheapest = ecis.iter().flatten().copied().fold(f64::INFINITY, f64::min);
        let cheapest = if cheapest.is_finite() { cheapest } else { 1.0 };
        let weights: Vec<f64> = ecis.iter().map(|e| 1.0 / e.unwrap_or(cheapest)).collect();
        let total: f64 = weights.iter().sum();
        let mut x = rng.random_range(0.0..total);
        for (k, w) in usable.iter().zip(&weights) {
            if x < *w {
                return Some(*k);
            }
            x -= w;
        }
        usable.last().copied()
    }

    /// A local move: near the family's best config (steps shrink as the family accumulates
    /// trials: explore early, refine later), or a fresh sample.
    pub(crate) fn local_move(&self, k: usize, rng: &mut ChaCha8Rng) -> Config {
        let (family, space) = &self.spaces[k];
        let stats = self.stats.get(family).cloned().unwrap_or_default();
        match &stats.best {
            Some((_, best)) if rng.random_bool(0.75) => {
                let radius = 0.35 / (1.0 + stats.n_trials as f64 / 4.0).sqrt();
                space.perturb(best, radius, rng)
            }
            _ => space.sample(rng),
        }
    }

    pub(crate) fn record(&mut self, record: &TrialRecord) {
        let s = self.stats.entry(record.family.clone()).or_default();
        s.n_trials += 1;
        s.total_cost += record.cost;
        match record.loss {
            Some(loss) if loss.is_finite() => {
                if s.best.as_ref().is_none_or(|(b, _)| loss < *b) {
                    s.prev_best = s.best.as_ref().map(|(b, _)| *b);
                    s.cost_at_prev_best = s.cost_at_best;
                    s.cost_at_best = s.total_cost;
                    s.best = Some((loss, record.config.clone()));
                }
            }
            _ => s.n_failed += 1,
        }
    }
}

/// Zero-shot portfolio first, then local moves around each family's best config (cost-frugal
/// local search in the spirit of FLAML's CFO), with the family picked by how good and how
/// cheap it has been.
pub struct LocalSearcher {
    board: FamilyBoard,
    rng: ChaCha8Rng,
}

impl LocalSearcher {
    pub fn new(families: &[&str], shape: DataShape, rng: ChaCha8Rng) -> Result<LocalSearcher, SearchError> {
        Ok(LocalSearcher { board: FamilyBoard::new(families, shape)?, rng })
    }

    pub fn stats(&self) -> &BTreeMap<String, FamilyStats> {
        &self.board.stats
    }
}

impl Searcher for LocalSearcher {
    fn suggest(&mut self) -> Suggestion {
        if let Some((family, config)) = self.board.next_portfolio() {
            return Suggestion::Trial { family, config };
        }
        let Some(k) = self.board.pick_family(&mut self.rng) else { return Suggestion::Finished };
        let config = self.board.local_move(k, &mut self.rng);
        Suggestion::Trial { family: self.board.spaces[k].0.clone(), config }
    }

    fn on_trial_complete(&mut self, record: &TrialRecord) {
        self.board.record(record);
    }
}

/// Uniform over families and over each family's space: the baseline every other searcher
/// should beat.
pub struct RandomSearcher {
    spaces: Vec<(String, Space)>,
    rng: ChaCha8Rng,
}

impl RandomSearcher {
    pub fn new(families: &[&str], shape: DataShape, rng: ChaCha8Rng) -> Result<RandomSearcher, SearchError> {
        let spaces = family_spaces(families, shape)?;
        Ok(RandomSearcher { spaces, rng })
    }
}

impl Searcher for RandomSearcher {
    fn suggest(&mut self) -> Suggestion {
        let k = self.rng.random_range(0..self.spaces.len());
        let (family, space) = &self.spaces[k];
        Suggestion::Trial { family: family.clone(), config: space.sample(&mut self.rng) }
    }

    fn on_trial_complete(&mut self, _: &TrialRecord) {}
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn shape() -> DataShape {
        DataShape { n_rows: 1000, n_features: 5, n_classes: 2 }
    }

    fn run(seed: u64, n: usize) -> Vec<Suggestion> {
        let mut s =
            LocalSearcher::new(&["gbdt", "linear"], shape(), ChaCha8Rng::seed_from_u64(seed)).unwrap();
        (0..n)
            .map(|t| {
                let sug = s.suggest();
                if let Suggestion::Trial { family, config } = &sug {
                    let loss = if family == "gbdt" { 0.1 + t as f64 * 1e-3 } else { 0.5 };
                    s.on_trial_complete(&TrialRecord {
                        family: family.clone(),
                        config: config.clone(),
                        loss: Some(loss),
                        cost: 1.0,
                    });
                }
                sug
            })
            .collect()
    }

    fn stats_from(trials: &[(Option<f64>, f64)]) -> FamilyStats {
        let mut board = FamilyBoard::new(&["gbdt"], shape()).unwrap();
        for &(loss, cost) in trials {
            board.record(&TrialRecord { family: "gbdt".into(), config: Config::new(), loss, cost });
        }
        board.stats["gbdt"].clone()
    }

    #[test]
    fn eci_of_the_leader_is_its_own_time_to_improve() {
        // Improvements at cumulative cost 3 (0.5) and 5 (0.4), then 4 more without one.
        let s = stats_from(&[(Some(0.5), 1.0), (Some(0.6), 2.0), (Some(0.4), 2.0), (Some(0.45), 4.0)]);
        assert_eq!((s.cost_at_prev_best, s.cost_at_best, s.prev_best), (1.0, 5.0, Some(0.5)));
        // max(9 - 5, 5 - 1, mean 2.25) = 4
        assert_eq!(s.eci(0.4), 4.0);
    }

    #[test]
    fn eci_of_a_challenger_includes_catching_up_at_its_speed() {
        let s = stats_from(&[(Some(0.5), 1.0), (Some(0.4), 1.0)]);
        // own: max(2 - 2, 2 - 1, mean 1) = 1; speed 0.1 per unit: 0.3 behind takes 3.
        assert!((s.eci(0.1) - 3.0).abs() < 1e-12);
        // Close behind: its own time dominates.
        assert!((s.eci(0.39) - 1.0).abs() < 1e-12);
        // One success and no speed: twice its own time.
        let one = stats_from(&[(Some(0.5), 2.0)]);
        assert_eq!(one.eci(0.1), 4.0);
    }

    #[test]
    fn pick_family_draws_inversely_to_eci_and_skips_failed_families() {
        let mut board = FamilyBoard::new(&["gbdt", "linear", "knn"], shape()).unwrap();
        let rec = |f: &str, loss: Option<f64>, cost: f64| TrialRecord {
            family: f.into(),
            config: Config::new(),
            loss,
            cost,
        };
        // gbdt leads and just improved cheaply (ECI 1); linear lags with ECI 2 × 4 = 8.
        for r in [rec("gbdt", Some(0.3), 1.0), rec("gbdt", Some(0.2), 1.0), rec("linear", Some(0.5), 4.0)] {
            board.record(&r);
        }
        board.record(&rec("knn", None, 1.0));
        let names: Vec<&str> = board.spaces.iter().map(|(f, _)| f.as_str()).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut counts = BTreeMap::new();
        for _ in 0..9000 {
            let k = board.pick_family(&mut rng).unwrap();
            *counts.entry(names[k]).or_insert(0usize) += 1;
        }
        assert_eq!(counts.get("knn"), None, "a family whose every trial failed is not drawn");
        // Expected shares 1/1 : 1/8, i.e. 8000 : 1000.
        let gbdt = counts["gbdt"] as f64;
        assert!((gbdt - 8000.0).abs() < 300.0, "{counts:?}");
    }

    #[test]
    fn portfolio_comes_first_then_the_leader_dominates() {
        let sugs = run(1, 40);
        let fam = |s: &Suggestion| match s {
            Suggestion::Trial { family, .. } => family.clone(),
            Suggestion::Finished => String::new(),
        };
        // The cheapest family first, then the others' first configs in the order given.
        assert_eq!(fam(&sugs[0]), "linear");
        assert_eq!(fam(&sugs[1]), "gbdt");
        let gbdt_later = sugs[3..].iter().filter(|s| fam(s) == "gbdt").count();
        assert!(gbdt_later > 37 / 2, "leader should get most trials, got {gbdt_later}");
    }

    #[test]
    fn deterministic_for_a_seed() {
        assert_eq!(run(5, 30), run(5, 30));
        assert_ne!(run(5, 30), run(6, 30));
    }

    type Factory = fn(u64) -> Box<dyn Searcher>;

    fn every_searcher() -> Vec<(&'static str, Factory)> {
        vec![
            ("local", |seed| {
                Box::new(LocalSearcher::new(&FAMILIES, shape(), ChaCha8Rng::seed_from_u64(seed)).unwrap())
            }),
            ("random", |seed| {
                Box::new(RandomSearcher::new(&FAMILIES, shape(), ChaCha8Rng::seed_from_u64(seed)).unwrap())
            }),
            ("tpe", |seed| {
                Box::new(
                    crate::TpeSearcher::new(&FAMILIES, shape(), ChaCha8Rng::seed_from_u64(seed)).unwrap(),
                )
            }),
        ]
    }

    const FAMILIES: [&str; 6] = ["gbdt", "random_forest", "extra_trees", "linear", "knn", "naive_bayes"];

    /// One body, every searcher: suggestions lie in their family's space, the same seed
    /// replays the same sequence, and failures or NaN losses are taken in stride.
    #[test]
    fn searcher_conformance() {
        for (name, make) in every_searcher() {
            let mut runs = Vec::new();
            for _ in 0..2 {
                let mut s = make(11);
                let mut seen = Vec::new();
                for i in 0..200 {
                    let Suggestion::Trial { family, config } = s.suggest() else {
                        panic!("{name} finished early")
                    };
                    let space = space_for(&family, shape()).unwrap();
                    assert!(space.contains(&config), "{name}: {family} config outside its space: {config:?}");
                    let loss = match i % 7 {
                        0 => None,
                        1 => Some(f64::NAN),
                        _ => Some((i as f64 * 0.37).sin()),
                    };
                    s.on_trial_complete(&TrialRecord {
                        family: family.clone(),
                        config: config.clone(),
                        loss,
                        cost: 0.5,
                    });
                    seen.push((family, config));
                }
                let families: std::collections::BTreeSet<_> = seen.iter().map(|(f, _)| f.clone()).collect();
                assert!(families.len() >= 2, "{name} explored only {families:?}");
                runs.push(seen);
            }
            assert_eq!(runs[0], runs[1], "{name} is not deterministic for a seed");
        }
    }

    #[test]
    fn failing_family_is_abandoned() {
        let mut s = LocalSearcher::new(&["gbdt", "linear"], shape(), ChaCha8Rng::seed_from_u64(1)).unwrap();
        for _ in 0..30 {
            if let Suggestion::Trial { family, config } = s.suggest() {
                let loss = (family == "gbdt").then_some(0.2);
                s.on_trial_complete(&TrialRecord { family, config, loss, cost: 1.0 });
            }
        }
        assert_eq!(s.stats()["linear"].n_trials, 1, "linear failed once and is not retried");
    }
}
