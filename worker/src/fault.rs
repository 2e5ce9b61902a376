//! Test-only fault injection, compiled in always and inert unless `QUARRY_FAULT_INJECT` is set
//! (the end-to-end fault tests set it on a `quarry worker`). The value is a comma-separated list
//! of `panic@trial=N` (trial N panics inside its fit) and `hang@trial=N` (trial N blocks forever
//! without polling its deadline, like a fit stuck in a loop). Unknown entries are ignored.

use std::sync::OnceLock;

pub const ENV: &str = "QUARRY_FAULT_INJECT";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Panic(u64),
    Hang(u64),
}

fn parse(text: &str) -> Vec<Fault> {
    text.split(',')
        .filter_map(|entry| {
            let (kind, trial) = entry.trim().split_once("@trial=")?;
            let trial = trial.trim().parse().ok()?;
            match kind {
                "panic" => Some(Fault::Panic(trial)),
                "hang" => Some(Fault::Hang(trial)),
                _ => None,
            }
        })
        .collect()
}

fn faults() -> &'static [Fault] {
    static FAULTS: OnceLock<Vec<Fault>> = OnceLock::new();
    FAULTS.get_or_init(|| std::env::var(ENV).map(|v| parse(&v)).unwrap_or_default())
}

/// Called at the start of every trial's fit.
pub(crate) fn at_trial_start(trial: u64) {
    for fault in faults() {
        match *fault {
            Fault::Panic(t) if t == trial => panic!("injected fault ({ENV}): panic in trial {trial}"),
            Fault::Hang(t) if t == trial => {
                tracing::warn!(trial, "injected fault ({ENV}): hanging");
                loop {
                    std::thread::park();
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms_and_ignores_the_rest() {
        assert_eq!(
            parse("panic@trial=3, hang@trial=5,oops,crash@trial=1,panic@trial=x"),
            vec![Fault::Panic(3), Fault::Hang(5)]
        );
        assert!(parse("").is_empty());
    }
}
