//! Lease tokens: the coordinator's epoch in the high bits, random low bits.
//!
//! The epoch grows at every coordinator start (kept in the store and in Redis, see
//! `crate::owner`), so a token issued now never equals one issued by an earlier run, even when
//! the log lost that run's tail (a Redis without its append-only file): a worker still holding
//! such a token is refused instead of landing its result on another trial. Within an epoch the
//! low bits are drawn until they are new, so a released token is never handed out again.

use std::collections::HashSet;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Bits of a token below the epoch.
pub const EPOCH_SHIFT: u32 = 40;
const LOW_MASK: u64 = (1 << EPOCH_SHIFT) - 1;

/// The epoch a token was issued in.
pub fn epoch_of(token: u64) -> u64 {
    token >> EPOCH_SHIFT
}

#[derive(Debug)]
pub(super) struct TokenGen {
    epoch: u64,
    /// The largest epoch of any token applied (logged or live), so a new epoch is past it.
    max_seen: u64,
    /// Tokens of the current epoch handed out so far (live or released).
    issued: HashSet<u64>,
    rng: ChaCha8Rng,
}

impl TokenGen {
    pub(super) fn new() -> TokenGen {
        TokenGen { epoch: 1, max_seen: 0, issued: HashSet::new(), rng: ChaCha8Rng::seed_from_u64(1) }
    }

    pub(super) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Starts a new epoch: at least `floor`, and past every token seen so far.
    pub(super) fn begin(&mut self, floor: u64, seed: u64) -> u64 {
        self.epoch = floor.max(self.max_seen + 1).min(u64::MAX >> EPOCH_SHIFT);
        self.issued.clear();
        self.rng = ChaCha8Rng::seed_from_u64(seed);
        self.epoch
    }

    /// Notes a token applied from the log or issued live.
    /// The highest epoch of any token seen.
    pub(super) fn max_seen(&self) -> u64 {
        self.max_seen
    }

    pub(super) fn saw(&mut self, token: u64) {
        let epoch = epoch_of(token);
        self.max_seen = self.max_seen.max(epoch);
        if epoch == self.epoch {
            self.issued.insert(token);
        }
    }

    /// A token of this epoch never handed out before (and never zero).
    pub(super) fn next(&mut self) -> u64 {
        loop {
            let token = (self.epoch << EPOCH_SHIFT) | (self.rng.random::<u64>() & LOW_MASK);
            if token != 0 && self.issued.insert(token) {
                return token;
            }
        }
    }
}
