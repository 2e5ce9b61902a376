//! Test-only fault injection, compiled in always and inert unless `QUARRY_FAULT_INJECT` is set
//! (the end-to-end fault tests set it on a `quarry worker`). The value is a comma-separated list
//! of `panic@trial=N` (trial N panics inside its fit), `hang@trial=N` (trial N blocks forever
//! without polling its deadline, like a fit stuck in a loop), `alloc@trial=N` (trial N holds
//! a buffer as large as the memory limit, 1 GiB without one, while it fits: the runtime memory
//! guard must stop it; the buffer is zeroed lazily by the OS, so it costs address space, not
//! //! RAM) and `drop@trial=N` (trial N runs to the end and its result is never sent, as when a
//! worker gives up on its result retries: its lease must expire although the worker stays
//! live). Unknown entries are ignored.

use std::sync::OnceLock;

use crate::memory::MemoryBudget;

pub const ENV: &str = "QUARRY_FAULT_INJECT";
/// Test-only: milliseconds added to this worker's wall clock (negative: slow), as on a machine
/// whose clock is off. Read by the worker client's clock.
pub const CLOCK_OFFSET_ENV: &str = "QUARRY_TEST_CLOCK_OFFSET_MS";

/// The test clock offset; 0 unless [`CLOCK_OFFSET_ENV`] is set.
pub(crate) fn clock_offset_ms() -> i64 {
    static OFFSET: OnceLock<i64> = OnceLock::new();
    *OFFSET.get_or_init(|| std::env::var(CLOCK_OFFSET_ENV).ok().and_then(|v| v.parse().ok()).unwrap_or(0))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Panic(u64),
    Hang(u64),
    Alloc(u64),
    Drop(u64),
}

fn parse(text: &str) -> Vec<Fault> {
    text.split(',')
        .filter_map(|entry| {
            let (kind, trial) = entry.trim().split_once("@trial=")?;
            let trial = trial.trim().parse().ok()?;
            match kind {
                "panic" => Some(Fault::Panic(trial)),
                "hang" => Some(Fault::Hang(trial)),
                "alloc" => Some(Fault::Alloc(trial)),
                "drop" => Some(Fault::Drop(trial)),
                _ => None,
            }
        })
        .collect()
}

fn faults() -> &'static [Fault] {
    static FAULTS: OnceLock<Vec<Fault>> = OnceLock::new();
    FAULTS.get_or_init(|| std::env::var(ENV).map(|v| parse(&v)).unwrap_or_default())
}

/// Whether trial `trial`'s result is to be dropped instead of sent.
pub(crate) fn drops_result(trial: u64) -> bool {
    faults().contains(&Fault::Drop(trial))
}

/// Called at the start of every trial's fit; what it returns is held until the trial ends.
pub(crate) fn at_trial_start(trial: u64, memory: Option<&MemoryBudget>) -> Option<Vec<u8>> {
    let mut held = None;
    for fault in faults() {
        match *fault {
            Fault::Panic(t) if t == trial => panic!("injected fault ({ENV}): panic in trial {trial}"),
            Fault::Hang(t) if t == trial => {
                tracing::warn!(trial, "injected fault ({ENV}): hanging");
                loop {
                    std::thread::park();
                }
            }
            Fault::Alloc(t) if t == trial => {
                let bytes = memory.map_or(1 << 30, MemoryBudget::limit) as usize;
                tracing::warn!(trial, bytes, "injected fault ({ENV}): holding a large buffer");
                held = Some(vec![0u8; bytes]);
            }
            _ => {}
        }
    }
    held
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms_and_ignores_the_rest() {
        assert_eq!(
            parse("panic@trial=3, hang@trial=5,oops,crash@trial=1,panic@trial=x,alloc@trial=2,drop@trial=4"),
            vec![Fault::Panic(3), Fault::Hang(5), Fault::Alloc(2), Fault::Drop(4)]
        );
        assert!(parse("").is_empty());
    }
}
