//! Parquet input. Raw bytes rarely get past the footer check, so the input is split: the
//! first bytes choose a small typed table (shape, types, nulls, values) written as a valid
//! Parquet file, the rest of the input overwrites a window of that file's bytes. Loading then
//! gives a table or an error, never a panic.
#![no_main]

use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use libfuzzer_sys::fuzz_target;
use parquet::arrow::ArrowWriter;
use quarry_featurize::load_table;

fn table(seed: &[u8]) -> Option<Vec<u8>> {
    let n = (*seed.first()? as usize % 40) + 1;
    let byte = |i: usize| seed.get(i % seed.len().max(1)).copied().unwrap_or(0);
    let nums: Vec<Option<f64>> =
        (0..n).map(|i| (byte(i) % 7 != 0).then(|| f64::from(byte(i + 1)) / 3.0 - 20.0)).collect();
    let ints: Vec<Option<i64>> =
        (0..n).map(|i| (byte(i + 2) % 5 != 0).then(|| i64::from(byte(i + 3)))).collect();
    let strs: Vec<Option<String>> =
        (0..n).map(|i| (byte(i + 4) % 6 != 0).then(|| format!("v{}", byte(i + 5) % 9))).collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("x", DataType::Float64, true),
        Field::new("k", DataType::Int64, true),
        Field::new("s", DataType::Utf8, true),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Float64Array::from(nums)),
        Arc::new(Int64Array::from(ints)),
        Arc::new(StringArray::from(strs)),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns).ok()?;
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, schema, None).ok()?;
    writer.write(&batch).ok()?;
    writer.close().ok()?;
    Some(out)
}

fuzz_target!(|data: &[u8]| {
    // libfuzzer-sys aborts on any panic from its hook; the loader catches the Parquet decoder's
    // own panics (a damaged file is an error), so only print them. A panic in our code still
    // unwinds into libFuzzer's C frame and aborts, so it is still reported.
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| std::panic::set_hook(Box::new(|info| eprintln!("{info}"))));
    let split = data.len().min(16);
    let (seed, patch) = data.split_at(split);
    let Some(mut file) = table(seed) else { return };
    if let Some((&at, bytes)) = patch.split_first() {
        let start = usize::from(at) * file.len() / 256;
        for (i, b) in bytes.iter().enumerate() {
            if let Some(slot) = file.get_mut(start + i) {
                *slot = *b;
            }
        }
    }
    let path = std::env::temp_dir().join(format!("quarry-fuzz-{}.parquet", std::process::id()));
    if std::fs::write(&path, &file).is_ok() {
        let _ = load_table(&path);
    }
});
