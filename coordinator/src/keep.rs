//! Which trials' artifacts (out-of-fold predictions, fold models) the server keeps for the
//! finalize task: the best [`KEEP_TOP`] plus each family's best [`KEEP_PER_FAMILY`], the same
//! rule `quarry fit` applies (`quarry_search::keep`, the one implementation). Results are considered in trial-id order,
//! as `quarry fit` sees them, so the kept set does not depend on arrival order.

use std::collections::BTreeMap;

use quarry_search::TrialId;
pub use quarry_search::{KEEP_PER_FAMILY, KEEP_TOP};

use crate::state::Artifact;

#[derive(Debug, Clone)]
struct Candidate {
    loss: f64,
    family: String,
    artifacts: Vec<Artifact>,
}

/// The kept trials' artifacts ([`quarry_search::KeepSet`], the one keep rule), with results
/// that arrived ahead of a lower id held back until their turn.
#[derive(Debug, Clone, Default)]
pub struct KeepSet {
    kept: quarry_search::KeepSet<Vec<Artifact>>,
    /// Results that arrived ahead of a lower id, not yet considered.
    waiting: BTreeMap<u64, Option<Candidate>>,
    /// Every id up to this one has been considered.
    considered: u64,
}

impl KeepSet {
    /// A finished trial; `loss` only for a completed, scored one. Returns the artifacts no
    /// longer kept (the caller may delete their blobs).
    pub fn add(
        &mut self,
        id: TrialId,
        family: String,
        loss: Option<f64>,
        artifacts: Vec<Artifact>,
    ) -> Vec<Artifact> {
        let mut dropped = Vec::new();
        let entry = match loss {
            Some(loss) => Some(Candidate { loss, family, artifacts }),
            None => {
                dropped.extend(artifacts);
                None
            }
        };
        self.waiting.insert(id.0, entry);
        while let Some(next) = self.waiting.remove(&(self.considered + 1)) {
            self.considered += 1;
            if let Some(c) = next
                && let Some((_, out)) =
                    self.kept.offer(TrialId(self.considered), &c.family, c.loss, c.artifacts)
            {
                dropped.extend(out);
            }
        }
        dropped
    }

    /// The kept trials and their artifacts, by id (results still waiting for a lower id are
    /// considered here, in id order, without changing the set).
    pub fn kept(&self) -> Vec<(TrialId, Vec<Artifact>)> {
        let mut kept = self.kept.clone();
        for (id, c) in &self.waiting {
            if let Some(c) = c {
                kept.offer(TrialId(*id), &c.family, c.loss, c.artifacts.clone());
            }
        }
        kept.into_items().collect()
    }

    /// Empties the set (a retired job's trials are no longer ensemble candidates); returns
    /// every artifact it held.
    pub fn clear(&mut self) -> Vec<Artifact> {
        let kept = std::mem::take(&mut self.kept);
        let waiting = std::mem::take(&mut self.waiting);
        kept.into_items()
            .flat_map(|(_, a)| a)
            .chain(waiting.into_values().flatten().flat_map(|c| c.artifacts))
            .collect()
    }

    /// The set as plain data, for a state snapshot.
    pub fn to_snapshot(&self) -> KeepSnapshot {
        let entry = |id: u64, family: &str, loss: f64, artifacts: &[Artifact]| KeptEntry {
            id,
            family: family.to_string(),
            loss,
            artifacts: artifacts.to_vec(),
        };
        KeepSnapshot {
            kept: self.kept.candidates().map(|(id, f, l, a)| entry(id.0, f, l, a)).collect(),
            waiting: self
                .waiting
                .iter()
                .map(|(id, c)| (*id, c.as_ref().map(|c| entry(*id, &c.family, c.loss, &c.artifacts))))
                .collect(),
            considered: self.considered,
        }
    }

    pub fn from_snapshot(s: KeepSnapshot) -> KeepSet {
        let mut kept = quarry_search::KeepSet::default();
        for e in s.kept {
            kept.insert(TrialId(e.id), &e.family, e.loss, e.artifacts);
        }
        let waiting = s
            .waiting
            .into_iter()
            .map(|(id, e)| {
                (id, e.map(|e| Candidate { loss: e.loss, family: e.family, artifacts: e.artifacts }))
            })
            .collect();
        KeepSet { kept, waiting, considered: s.considered }
    }

    pub fn artifacts(&self) -> impl Iterator<Item = &Artifact> {
        self.kept
            .iter()
            .flat_map(|(_, a)| a.iter())
            .chain(self.waiting.values().flatten().flat_map(|c| c.artifacts.iter()))
    }
}

/// A [`KeepSet`] as plain data (state snapshots).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KeepSnapshot {
    kept: Vec<KeptEntry>,
    waiting: Vec<(u64, Option<KeptEntry>)>,
    considered: u64,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct KeptEntry {
    id: u64,
    family: String,
    loss: f64,
    artifacts: Vec<Artifact>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn art(id: u64) -> Vec<Artifact> {
        vec![Artifact { name: "oof".into(), hash: format!("h{id}"), size: 1 }]
    }

    #[test]
    fn keeps_top_twenty_plus_family_best_in_any_arrival_order() {
        // 30 gbdt trials (loss = id) and 3 poor knn trials.
        let trials: Vec<(u64, &str, f64)> = (1..=30)
            .map(|i| (i, "gbdt", i as f64))
            .chain([(31, "knn", 100.0), (32, "knn", 101.0), (33, "knn", 102.0)])
            .collect();
        let run = |order: &[usize]| {
            let mut k = KeepSet::default();
            let mut dropped = 0;
            for &i in order {
                let (id, fam, loss) = trials[i];
                dropped += k.add(TrialId(id), fam.into(), Some(loss), art(id)).len();
            }
            (k.kept().into_iter().map(|(id, _)| id.0).collect::<Vec<_>>(), dropped)
        };
        let forward: Vec<usize> = (0..trials.len()).collect();
        let backward: Vec<usize> = forward.iter().rev().copied().collect();
        let (a, dropped) = run(&forward);
        let (b, _) = run(&backward);
        assert_eq!(a, b);
        assert_eq!(a.len(), KEEP_TOP);
        assert_eq!(dropped, 33 - KEEP_TOP);
        // The knn trials are protected as their family's best three.
        assert!(a.contains(&31) && a.contains(&32) && a.contains(&33));
        assert_eq!(a.iter().filter(|&&i| i <= 30).max(), Some(&17));
    }
}
