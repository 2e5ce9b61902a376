//! Parquet input. Raw bytes rarely get past the footer check, so the input is split: the
//! first bytes choose a small typed table (shape, types, nulls, values) written as a valid
//! Parquet file, the rest of the input overwrites a window of that file's bytes. Loading then
//! gives a table or an error, never a panic.
//! The body is `quarry_fuzz_targets::load_parquet`, which the test suite also runs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // libfuzzer-sys aborts on any panic from its hook; the loader catches the Parquet decoder's
    // own panics (a damaged file is an error), so only print them. A panic in our code still
    // unwinds into libFuzzer's C frame and aborts, so it is still reported.
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| std::panic::set_hook(Box::new(|info| eprintln!("{info}"))));
    quarry_fuzz_targets::load_parquet(data);
});
