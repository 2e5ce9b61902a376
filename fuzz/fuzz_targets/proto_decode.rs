//! Arbitrary bytes as each wire message the coordinator or a worker decodes, then the pb →
//! domain conversions both sides run on them. The first byte picks the message.
//! The body is `quarry_fuzz_targets::proto_decode`, which the test suite also runs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    quarry_fuzz_targets::proto_decode(data);
});
