//! The heap counter behind `--memory-limit`: the system allocator wrapped by `cap`, which keeps
//! the live heap in one atomic counter (one relaxed add per allocation and free; no limit is set
//! on it, because a refused allocation would abort the process). Trials read it through
//! `quarry_worker::memory` at their progress callbacks and stop themselves when it is over.

use std::alloc::System;

use cap::Cap;

#[global_allocator]
static ALLOC: Cap<System> = Cap::new(System, usize::MAX);

fn live_heap() -> usize {
    ALLOC.allocated()
}

/// Lets trials read the live heap.
pub fn install_probe() {
    quarry_worker::memory::set_heap_probe(live_heap);
}

/// `--memory-limit`'s parser: `512MiB`, `2GiB`, bytes.
pub fn parse_limit(text: &str) -> Result<u64, String> {
    quarry_worker::memory::parse_size(text)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_counter_sees_an_allocation_come_and_go() {
        super::install_probe();
        let before = super::live_heap();
        let block = vec![1u8; 64 << 20];
        let during = super::live_heap();
        drop(block);
        // Other test threads allocate too, so only what 64 MiB must dominate is asserted.
        assert!(during >= before + (60 << 20), "{before} → {during}");
        assert!(super::live_heap() < during - (60 << 20));
    }
}
