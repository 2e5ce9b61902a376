//! Arbitrary bytes as a CSV file: loading either gives a table or an error, never a panic;
//! a loaded table is profiled column by column (type inference).
//! The body is `quarry_fuzz_targets::load_csv`, which the test suite also runs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    quarry_fuzz_targets::load_csv(data);
});
