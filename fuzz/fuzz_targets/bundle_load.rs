//! A model bundle (`pipeline.json`) as the fuzzer mutates it (seeded with real bundles from
//! tests/data/bundles): loading gives a pipeline or an error, and a pipeline that loads
//! scores a fixed table without panicking (a corrupt tree must be an error, not an index out
//! of bounds).
//! The body is `quarry_fuzz_targets::bundle_load`, which the test suite also runs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    quarry_fuzz_targets::bundle_load(data);
});
