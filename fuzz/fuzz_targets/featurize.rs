//! Arbitrary CSV bytes through the featurizer: fit on the loaded table (last column as the
//! target, as `quarry fit` would exclude it), transform the same rows; errors are fine, panics
//! are not, and a transform keeps every row.
//! The body is `quarry_fuzz_targets::featurize`, which the test suite also runs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    quarry_fuzz_targets::featurize(data);
});
