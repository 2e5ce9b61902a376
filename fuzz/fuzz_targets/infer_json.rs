//! Arbitrary bodies POSTed to the Open Inference Protocol infer route of a served model
//! (the real axum router, no socket): the answer is a success or a 4xx with the protocol's
//! error JSON, never a panic or a 5xx.
//! The body is `quarry_fuzz_targets::infer_json`, which the test suite also runs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    quarry_fuzz_targets::infer_json(data);
});
