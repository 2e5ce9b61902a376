//! Arbitrary bytes as a CSV file: loading either gives a table or an error, never a panic;
//! a loaded table is profiled column by column (type inference).
#![no_main]

use libfuzzer_sys::fuzz_target;
use quarry_featurize::{load_table, profile_column};

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("quarry-fuzz-{}.csv", std::process::id()));
    if std::fs::write(&path, data).is_err() {
        return;
    }
    if let Ok(loaded) = load_table(&path) {
        for column in &loaded.table.columns {
            let profile = profile_column(column);
            assert!(profile.n_missing <= loaded.table.n_rows);
        }
    }
});
