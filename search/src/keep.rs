//! Which finished trials stay ensemble candidates: the best [`KEEP_TOP`] plus each family's
//! best [`KEEP_PER_FAMILY`]. The one implementation of the rule: `quarry fit` keeps trial
//! artifacts with it (`worker::KeptTrials`), the coordinator keeps blobs with it, and a remote
//! finalize checks what it was sent with it; all three must agree trial for trial.
//!
//! Which trials stay depends on the order they are offered in (an evicted trial never comes
//! back); offering completed trials in id order makes the set a function of the leaderboard.

use std::collections::BTreeMap;

use crate::TrialId;

/// Trials whose fold models and out-of-fold predictions are kept as ensemble candidates.
pub const KEEP_TOP: usize = 20;
/// Each family's best few are kept whatever their rank: a blend gains most from members that
/// err differently, and the top 20 overall are often near-copies of one family's best.
pub const KEEP_PER_FAMILY: usize = 3;

#[derive(Debug, Clone)]
struct Candidate<T> {
    loss: f64,
    family: String,
    item: T,
}

/// The kept candidates, each with what the caller keeps for it (artifacts, blob names, …).
#[derive(Debug, Clone)]
pub struct KeepSet<T> {
    kept: BTreeMap<TrialId, Candidate<T>>,
}

impl<T> Default for KeepSet<T> {
    fn default() -> Self {
        KeepSet { kept: BTreeMap::new() }
    }
}

/// The candidate to drop: the worst that is not among its family's best [`KEEP_PER_FAMILY`]
/// (or the worst overall when every candidate is). Ties on loss go against the higher id.
fn eviction<T>(kept: &BTreeMap<TrialId, Candidate<T>>) -> Option<TrialId> {
    let worse = |a: (&TrialId, &Candidate<T>), b: (&TrialId, &Candidate<T>)| {
        a.1.loss.total_cmp(&b.1.loss).then(a.0.cmp(b.0))
    };
    let protected = |k: (&TrialId, &Candidate<T>)| {
        let better_in_family =
            kept.iter().filter(|o| o.1.family == k.1.family && worse(*o, k).is_lt()).count();
        better_in_family < KEEP_PER_FAMILY
    };
    kept.iter()
        .filter(|k| !protected(*k))
        .max_by(|a, b| worse(*a, *b))
        .or_else(|| kept.iter().max_by(|a, b| worse(*a, *b)))
        .map(|(id, _)| *id)
}

impl<T> KeepSet<T> {
    /// Considers a completed trial (`loss`: lower is better). Returns the candidate dropped to
    /// stay within the limits, if any (possibly this one), with its item.
    pub fn offer(&mut self, id: TrialId, family: &str, loss: f64, item: T) -> Option<(TrialId, T)> {
        self.kept.insert(id, Candidate { loss, family: family.to_string(), item });
        if self.kept.len() > KEEP_TOP
            && let Some(out) = eviction(&self.kept)
        {
            return self.kept.remove(&out).map(|c| (out, c.item));
        }
        None
    }

    /// Takes a candidate as it is, without the rule (a set someone else already chose).
    pub fn insert(&mut self, id: TrialId, family: &str, loss: f64, item: T) {
        self.kept.insert(id, Candidate { loss, family: family.to_string(), item });
    }

    pub fn ids(&self) -> Vec<TrialId> {
        self.kept.keys().copied().collect()
    }

    pub fn contains(&self, id: TrialId) -> bool {
        self.kept.contains_key(&id)
    }

    pub fn get(&self, id: TrialId) -> Option<&T> {
        self.kept.get(&id).map(|c| &c.item)
    }

    pub fn remove(&mut self, id: TrialId) -> Option<T> {
        self.kept.remove(&id).map(|c| c.item)
    }

    /// The kept candidates by id, with the family and loss they were offered with (what
    /// [`KeepSet::insert`] takes to rebuild the set).
    pub fn candidates(&self) -> impl Iterator<Item = (TrialId, &str, f64, &T)> {
        self.kept.iter().map(|(id, c)| (*id, c.family.as_str(), c.loss, &c.item))
    }

    /// The kept candidates by id.
    pub fn iter(&self) -> impl Iterator<Item = (TrialId, &T)> {
        self.kept.iter().map(|(id, c)| (*id, &c.item))
    }

    pub fn into_items(self) -> impl Iterator<Item = (TrialId, T)> {
        self.kept.into_iter().map(|(id, c)| (id, c.item))
    }

    pub fn len(&self) -> usize {
        self.kept.len()
    }

    pub fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }
}

/// The ids a [`KeepSet`] ends with when `trials` (id, family, loss of a completed trial) are
/// offered in this order.
pub fn keep_set(trials: &[(TrialId, String, f64)]) -> Vec<TrialId> {
    let mut keep = KeepSet::default();
    for (id, family, loss) in trials {
        keep.offer(*id, family, *loss, ());
    }
    keep.ids()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn eviction_spares_each_familys_best() {
        // Four boosters and one (much worse) linear model: the fourth booster goes, not the
        // linear model, which is its family's only candidate.
        let mut k = KeepSet::default();
        for (id, f, l) in
            [(1, "gbdt", 0.1), (2, "gbdt", 0.2), (3, "gbdt", 0.3), (4, "gbdt", 0.4), (5, "linear", 0.9)]
        {
            k.insert(TrialId(id), f, l, ());
        }
        assert_eq!(eviction(&k.kept), Some(TrialId(4)));
        // When every candidate is among its family's best, the worst overall goes.
        let mut k = KeepSet::default();
        for (id, f, l) in [(1, "gbdt", 0.1), (2, "linear", 0.9), (3, "knn", 0.5)] {
            k.insert(TrialId(id), f, l, ());
        }
        assert_eq!(eviction(&k.kept), Some(TrialId(2)));
    }

    #[test]
    fn keeps_the_top_twenty_plus_each_familys_best_three() {
        // 30 boosters (trial 30 best) and 2 poor linear models.
        let mut all: Vec<(TrialId, String, f64)> =
            (1..=30).map(|i| (TrialId(i), "gbdt".to_string(), (31 - i) as f64)).collect();
        all.push((TrialId(31), "linear".into(), 100.0));
        all.push((TrialId(32), "linear".into(), 90.0));
        let ids = keep_set(&all);
        assert_eq!(ids.len(), KEEP_TOP);
        assert!(ids.contains(&TrialId(31)) && ids.contains(&TrialId(32)));
        assert!(ids.contains(&TrialId(30)) && !ids.contains(&TrialId(1)));
        // The 18 best boosters fill the rest: 13..=30.
        assert_eq!(ids.iter().filter(|i| i.0 <= 30).min(), Some(&TrialId(13)));
        // Offering returns exactly the dropped ones, items included.
        let mut k = KeepSet::default();
        let mut dropped = Vec::new();
        for (id, f, l) in &all {
            dropped.extend(k.offer(*id, f, *l, id.0 * 10));
        }
        assert_eq!(dropped.len(), all.len() - KEEP_TOP);
        assert!(dropped.iter().all(|(d, item)| *item == d.0 * 10 && !ids.contains(d)));
        assert_eq!(k.ids(), ids);
    }
}
