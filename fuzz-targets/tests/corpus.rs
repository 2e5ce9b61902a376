//! Every fuzz target on its checked-in corpus (`fuzz/corpus/`, [`corpus`]) and on seeded
//! mutations of it: byte flips, inserts, deletes, repeats, splices and tokens that parsers
//! trip on. Not coverage-guided (that is `scripts/fuzz.sh`, libFuzzer), but it runs in every
//! `cargo test`, so an input class the fuzzer once found, or a plain parser regression, fails
//! CI. A failing input is written to `target/fuzz-failures/TARGET-N` to replay.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use quarry_fuzz_targets::TARGETS;

/// Mutants per target, spread over its corpus files: seconds per target in a test build.
const MUTANTS: usize = 20_000;
const SEED: u64 = 0x5eed_f022;

/// Tokens that move parsers into unusual states.
const TOKENS: &[&[u8]] = &[
    b",",
    b";",
    b"\t",
    b"\n",
    b"\r\n",
    b"\"",
    b"\"\"",
    b"NaN",
    b"inf",
    b"-1e308",
    b"1e309",
    b"NA",
    b" ",
    b"\xef\xbb\xbf",
    b"\xff\xfe",
    b"\xc3",
    b"\0",
    b"{",
    b"}",
    b"[",
    b"]",
    b"null",
    b"\"data\"",
    b"\"shape\"",
    b"-1",
    b"4294967296",
    b"18446744073709551615",
    b"PAR1",
];

/// xorshift64*: a fixed seed gives the same mutants on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(out.len() + 1);
        match rng.below(7) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] ^= 1 << rng.below(8);
            }
            1 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] = rng.next() as u8;
            }
            2 => out.insert(at, rng.next() as u8),
            3 if !out.is_empty() => {
                let end = (at + 1 + rng.below(16)).min(out.len());
                out.drain(at.min(end)..end);
            }
            4 if !out.is_empty() => {
                // Repeat a slice: long rows, long fields, deep nesting.
                let start = rng.below(out.len());
                let end = (start + 1 + rng.below(32)).min(out.len());
                let slice = out[start..end].to_vec();
                for _ in 0..=rng.below(8) {
                    out.splice(at..at, slice.iter().copied());
                }
            }
            5 if !other.is_empty() => {
                // Splice in part of another corpus file.
                let start = rng.below(other.len());
                let end = (start + 1 + rng.below(64)).min(other.len());
                out.splice(at..at, other[start..end].iter().copied());
            }
            _ => {
                let token = TOKENS[rng.below(TOKENS.len())];
                out.splice(at..at, token.iter().copied());
            }
        }
    }
    out
}

/// A target's seeds: its folder under `fuzz/corpus/`, and the repo's test inputs of its kind
/// (the malformed CSVs of `tests/data/bad/`, the model bundles of `tests/data/bundles/`).
fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let (dirs, ext): (&[&str], Option<&str>) = match target {
        "load_csv" | "featurize" => (&["fuzz/corpus/load_csv", "tests/data/bad"], Some("csv")),
        "bundle_load" => (&["tests/data/bundles"], Some("json")),
        _ => (&[], None),
    };
    let own = format!("fuzz/corpus/{target}");
    let dirs: Vec<PathBuf> =
        if dirs.is_empty() { vec![root.join(own)] } else { dirs.iter().map(|d| root.join(d)).collect() };
    let mut files: Vec<PathBuf> = Vec::new();
    for dir in &dirs {
        let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        files.extend(
            entries
                .map(|e| e.unwrap().path())
                .filter(|p| ext.is_none_or(|x| p.extension().is_some_and(|e| e == x))),
        );
    }
    files.sort();
    files.into_iter().map(|p| (p.clone(), std::fs::read(&p).unwrap())).collect()
}

/// Runs `f` on `input`; on a panic, saves the input and fails naming it.
fn run(target: &str, f: fn(&[u8]), input: &[u8], what: &str) {
    if catch_unwind(AssertUnwindSafe(|| f(input))).is_err() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/fuzz-failures");
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join(format!(
            "{target}-{:016x}",
            input.iter().fold(0u64, |h, b| h.wrapping_mul(31) ^ u64::from(*b))
        ));
        let _ = std::fs::write(&path, input);
        panic!("fuzz target {target} panicked on {what} (input saved to {})", path.display());
    }
}

fn check(target: &str) {
    let f = TARGETS.iter().find(|(name, _)| *name == target).map(|(_, f)| *f).unwrap();
    let files = corpus(target);
    assert!(!files.is_empty(), "fuzz/corpus/{target} is empty");
    for (path, bytes) in &files {
        run(target, f, bytes, &path.display().to_string());
    }
    let mut rng = Rng(SEED ^ target.len() as u64);
    for i in 0..MUTANTS {
        let (path, input) = &files[i % files.len()];
        let other = &files[rng.below(files.len())].1;
        let mutant = mutate(&mut rng, input, other);
        run(target, f, &mutant, &format!("mutant {i} of {}", path.display()));
    }
}

#[test]
fn load_csv() {
    check("load_csv");
}

#[test]
fn load_parquet() {
    check("load_parquet");
}

#[test]
fn featurize() {
    check("featurize");
}

#[test]
fn bundle_load() {
    check("bundle_load");
}

#[test]
fn proto_decode() {
    check("proto_decode");
}

#[test]
fn infer_json() {
    check("infer_json");
}

#[test]
fn every_target_has_a_test_here() {
    let text = include_str!("corpus.rs");
    for (name, _) in TARGETS {
        assert!(text.contains(&format!("fn {name}() {{\n    check(\"{name}\");")), "no test runs {name}");
    }
}
