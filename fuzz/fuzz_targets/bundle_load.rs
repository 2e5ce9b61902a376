//! A model bundle (`pipeline.json`) as the fuzzer mutates it (seeded with real bundles from
//! tests/data/bundles): loading gives a pipeline or an error, and a pipeline that loads
//! scores a fixed table without panicking (a corrupt tree must be an error, not an index out
//! of bounds).
#![no_main]

use libfuzzer_sys::fuzz_target;
use quarry_featurize::{RawColumn, RawValues, StrColumn, Table};
use quarry_learners::Pipeline;

fn probe(pipeline: &Pipeline) -> Table {
    let columns = pipeline
        .featurizer
        .used_columns()
        .map(|c| {
            let mut values = StrColumn::new();
            for v in [Some("1.5"), None, Some("abc"), Some("-3"), Some("2024-01-02")] {
                values.push(v);
            }
            RawColumn { name: c.name.clone(), values: RawValues::Text(values) }
        })
        .collect();
    Table { n_rows: 5, columns }
}

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("quarry-fuzz-bundle-{}", std::process::id()));
    if std::fs::create_dir_all(&dir).is_err() || std::fs::write(dir.join("pipeline.json"), data).is_err() {
        return;
    }
    if let Ok(pipeline) = Pipeline::load(&dir) {
        let _ = pipeline.predict(&probe(&pipeline));
    }
});
