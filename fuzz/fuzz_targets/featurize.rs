//! Arbitrary CSV bytes through the featurizer: fit on the loaded table (last column as the
//! target, as `quarry fit` would exclude it), transform the same rows; errors are fine, panics
//! are not, and a transform keeps every row.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quarry_featurize::{Featurizer, load_table};

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("quarry-fuzz-featurize-{}.csv", std::process::id()));
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let Ok(loaded) = load_table(&path) else { return };
    let table = loaded.table;
    let target = table.columns.last().map(|c| c.name.clone()).unwrap_or_default();
    let Ok(featurizer) = Featurizer::fit(&table, &[target.as_str()]) else { return };
    if let Ok(matrix) = featurizer.transform(&table) {
        assert_eq!(matrix.n_rows, table.n_rows);
    }
});
