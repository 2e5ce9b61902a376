//! Reading CSV and Parquet files into a [`Table`].

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Date64Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType,
    UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{ArrowError, DataType, Field, Schema, TimeUnit};
use sha2::{Digest, Sha256};

use crate::error::{FeaturizeError, Result, one_line};
use crate::table::{RawColumn, RawValues, StrColumn, Table};

const BATCH_ROWS: usize = 8 * 1024;
/// Cells per batch. arrow-csv preallocates offsets for `batch rows × columns` cells, so a
/// 10,000-column file with 64 Ki-row batches would reserve gigabytes before reading a byte;
/// wide files get proportionally shorter batches.
const BATCH_CELLS: usize = 1 << 20;

fn batch_rows(n_columns: usize) -> usize {
    (BATCH_CELLS / n_columns.max(1)).clamp(16, BATCH_ROWS)
}

/// A table and where it came from.
#[derive(Debug, Clone)]
pub struct LoadedTable {
    pub path: PathBuf,
    /// SHA-256 of the file's bytes, hex: the dataset's identity in run records.
    pub content_hash: String,
    pub table: Table,
}

/// Loads a `.csv` or `.parquet` file (by extension; anything else is read as CSV).
pub fn load_table(path: &Path) -> Result<LoadedTable> {
    let io_err = |error| FeaturizeError::Io { path: path.to_path_buf(), error };
    let meta = std::fs::metadata(path).map_err(io_err)?;
    if meta.is_dir() {
        return Err(io_err(std::io::Error::other("is a directory, not a file")));
    }
    if meta.len() == 0 {
        return Err(FeaturizeError::EmptyFile { path: path.to_path_buf() });
    }
    let content_hash = hash_file(path)?;
    let is_parquet = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("parquet") || e.eq_ignore_ascii_case("pq"));
    let table = if is_parquet {
        // parquet-rs panics on some damaged files (fuzzing found an assertion in its metadata
        // decoder): a bad file must be an error that names it, not a crash.
        std::panic::catch_unwind(|| read_parquet(path)).unwrap_or_else(|_| {
            Err(FeaturizeError::Parse {
                path: path.to_path_buf(),
                message: "not a readable parquet file (its metadata is damaged)".to_string(),
            })
        })?
    } else {
        read_csv(path)?
    };
    if table.n_rows == 0 {
        return Err(FeaturizeError::NoRows { path: path.to_path_buf() });
    }
    tracing::debug!(path = %path.display(), rows = table.n_rows, columns = table.columns.len(), "loaded table");
    Ok(LoadedTable { path: path.to_path_buf(), content_hash, table })
}

pub fn hash_file(path: &Path) -> Result<String> {
    let io_err = |error| FeaturizeError::Io { path: path.to_path_buf(), error };
    let mut file = File::open(path).map_err(io_err)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(io_err)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn arrow_error(path: &Path, e: ArrowError) -> FeaturizeError {
    let message = match e {
        ArrowError::CsvError(m) | ArrowError::ParseError(m) => m,
        ArrowError::ExternalError(e) => e.to_string(),
        other => other.to_string(),
    };
    let message = one_line(&message);
    if message.contains("UTF-8") || message.contains("utf8") || message.contains("utf-8") {
        FeaturizeError::NotUtf8 { path: path.to_path_buf(), detail: message }
    } else {
        FeaturizeError::Parse { path: path.to_path_buf(), message }
    }
}

fn read_csv(path: &Path) -> Result<Table> {
    let open = || {
        File::open(path)
            .map(BufReader::new)
            .map_err(|error| FeaturizeError::Io { path: path.to_path_buf(), error })
    };
    let head = read_head(path)?;
    if head.starts_with(&[0xFF, 0xFE]) || head.starts_with(&[0xFE, 0xFF]) {
        return Err(FeaturizeError::NotUtf8 {
            path: path.to_path_buf(),
            detail: "it is UTF-16, with a byte-order mark".to_string(),
        });
    }
    let delimiter = sniff_delimiter(path, &head);
    let format = arrow_csv::reader::Format::default().with_header(true).with_delimiter(delimiter);
    let (header, _) = format.infer_schema(open()?, Some(0)).map_err(|e| arrow_error(path, e))?;
    let mut names: Vec<String> = header.fields().iter().map(|f| f.name().clone()).collect();
    if let Some(first) = names.first_mut() {
        // Excel writes a byte-order mark; it must not become part of the first column's name.
        *first = first.trim_start_matches('\u{feff}').to_string();
    }
    for n in names.iter_mut() {
        *n = n.trim().to_string();
    }
    if names.is_empty() || names.iter().all(|n| n.is_empty()) {
        return Err(FeaturizeError::Parse {
            path: path.to_path_buf(),
            message: "no header row (the first line has no column names)".to_string(),
        });
    }
    // A blank header cell (often a trailing comma) gets a name, as pandas does, so the column
    // can be reported, overridden and matched at predict time.
    for (k, n) in names.iter_mut().enumerate() {
        if n.is_empty() {
            *n = format!("unnamed_{}", k + 1);
            tracing::warn!(path = %path.display(), column = k + 1, "blank column name; calling it {n}");
        }
    }
    check_unique(path, &names)?;
    let schema =
        Arc::new(Schema::new(names.iter().map(|n| Field::new(n, DataType::Utf8, true)).collect::<Vec<_>>()));
    let reader = arrow_csv::ReaderBuilder::new(schema)
        .with_header(true)
        .with_delimiter(delimiter)
        .with_batch_size(batch_rows(names.len()))
        .build(open()?)
        .map_err(|e| arrow_error(path, e))?;
    let mut columns: Vec<StrColumn> = names.iter().map(|_| StrColumn::new()).collect();
    let mut n_rows = 0;
    let file_len = std::fs::metadata(path).map(|m| m.len() as usize).unwrap_or(0);
    for batch in reader {
        let batch = batch.map_err(|e| arrow_error(path, e))?;
        if n_rows == 0 && batch.num_rows() > 0 {
            reserve_from_sample(&mut columns, &batch, file_len);
        }
        let first_row = n_rows;
        n_rows += batch.num_rows();
        for ((col, array), name) in columns.iter_mut().zip(batch.columns()).zip(&names) {
            let strings = array.as_string::<i32>();
            let (offsets, bytes) = (strings.value_offsets(), strings.values());
            for i in 0..strings.len() {
                // The field's bytes are checked here rather than read with `value(i)`: arrow-csv
                // can return a field that is not UTF-8 (fuzzing found a multi-byte character cut
                // by a delimiter), and `&str` methods on it panic.
                let value = if strings.is_null(i) {
                    None
                } else {
                    let raw = offsets
                        .get(i)
                        .zip(offsets.get(i + 1))
                        .and_then(|(&a, &b)| bytes.get(usize::try_from(a).ok()?..usize::try_from(b).ok()?))
                        .unwrap_or_default();
                    Some(std::str::from_utf8(raw).map_err(|e| FeaturizeError::NotUtf8 {
                        path: path.to_path_buf(),
                        detail: format!("data row {}, column {name:?}: {e}", first_row + i + 1),
                    })?)
                };
                if !col.push(value) {
                    return Err(FeaturizeError::Parse {
                        path: path.to_path_buf(),
                        message: "a column holds more than 4 GiB of text".to_string(),
                    });
                }
            }
        }
    }
    columns.iter_mut().for_each(StrColumn::shrink_to_fit);
    Ok(Table {
        n_rows,
        columns: names
            .into_iter()
            .zip(columns)
            .map(|(name, c)| RawColumn { name, values: RawValues::Text(c) })
            .collect(),
    })
}

/// Sizes every column's buffers from the first batch, extrapolated to the file's length, so
/// they grow once instead of doubling (doubling can leave a third of the memory unused).
fn reserve_from_sample(columns: &mut [StrColumn], batch: &RecordBatch, file_len: usize) {
    let rows = batch.num_rows();
    let bytes: Vec<usize> = batch
        .columns()
        .iter()
        .map(|a| {
            let s = a.as_string::<i32>();
            (0..s.len()).filter(|&i| !s.is_null(i)).map(|i| s.value(i).len()).sum()
        })
        .collect();
    // Cell bytes plus a separator per cell approximate the bytes a row takes in the file.
    let row_bytes = (bytes.iter().sum::<usize>() + rows * columns.len()) as f64 / rows as f64;
    if row_bytes <= 0.0 {
        return;
    }
    let est_rows = (file_len as f64 / row_bytes * 1.02) as usize;
    for (col, b) in columns.iter_mut().zip(bytes) {
        col.reserve(est_rows, (b as f64 / rows as f64 * est_rows as f64 * 1.02) as usize);
    }
}

/// The first bytes of a file: enough to see an encoding mark and the header line.
fn read_head(path: &Path) -> Result<Vec<u8>> {
    let mut head = Vec::with_capacity(HEAD_BYTES);
    File::open(path)
        .and_then(|f| f.take(HEAD_BYTES as u64).read_to_end(&mut head))
        .map_err(|error| FeaturizeError::Io { path: path.to_path_buf(), error })?;
    Ok(head)
}

const HEAD_BYTES: usize = 64 * 1024;

/// Comma unless the header line has none and uses `;`, tab or `|` instead (European Excel
/// exports and `.tsv` files); a `.tsv` extension always means tab. Quoted text is skipped.
fn sniff_delimiter(path: &Path, head: &[u8]) -> u8 {
    if path.extension().and_then(|e| e.to_str()).is_some_and(|e| e.eq_ignore_ascii_case("tsv")) {
        return b'\t';
    }
    let mut counts = [0usize; 4];
    let candidates = [b',', b';', b'\t', b'|'];
    let mut quoted = false;
    for &b in head {
        match b {
            b'"' => quoted = !quoted,
            b'\n' if !quoted => break,
            _ if !quoted => {
                if let Some(k) = candidates.iter().position(|&c| c == b) {
                    counts[k] += 1;
                }
            }
            _ => {}
        }
    }
    if counts[0] > 0 {
        return b',';
    }
    // Ties go to the earlier candidate: `;` before tab before `|`.
    let mut best = 0;
    for k in 1..candidates.len() {
        if counts[k] > counts[best] {
            best = k;
        }
    }
    candidates[best]
}

fn check_unique(path: &Path, names: &[String]) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for n in names {
        if !seen.insert(n.as_str()) {
            return Err(FeaturizeError::DuplicateColumn { path: path.to_path_buf(), name: n.clone() });
        }
    }
    Ok(())
}

fn read_parquet(path: &Path) -> Result<Table> {
    let file = File::open(path).map_err(|error| FeaturizeError::Io { path: path.to_path_buf(), error })?;
    let parse_err = |e: parquet::errors::ParquetError| FeaturizeError::Parse {
        path: path.to_path_buf(),
        message: format!("not a readable parquet file ({})", one_line(&e.to_string())),
    };
    let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        crate::parquet_guard::GuardedFile(file),
    )
    .map_err(parse_err)?;
    let schema = builder.schema().clone();
    let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    check_unique(path, &names)?;
    let reader = builder.with_batch_size(batch_rows(names.len())).build().map_err(parse_err)?;
    let mut columns: Vec<Option<RawValues>> = names.iter().map(|_| None).collect();
    let mut n_rows = 0;
    for batch in reader {
        let batch: RecordBatch = batch.map_err(|e| arrow_error(path, e))?;
        n_rows += batch.num_rows();
        for ((slot, array), name) in columns.iter_mut().zip(batch.columns()).zip(&names) {
            append_array(path, name, slot, array)?;
        }
    }
    Ok(Table {
        n_rows,
        columns: names
            .into_iter()
            .zip(columns)
            .map(|(name, v)| RawColumn { name, values: v.unwrap_or(RawValues::Number(Vec::new())) })
            .collect(),
    })
}

fn append_array(path: &Path, name: &str, slot: &mut Option<RawValues>, array: &ArrayRef) -> Result<()> {
    macro_rules! numbers {
        ($t:ty) => {{
            let a = array.as_primitive::<$t>();
            let out = slot.get_or_insert_with(|| RawValues::Number(Vec::new()));
            if let RawValues::Number(v) = out {
                v.extend((0..a.len()).map(|i| if a.is_null(i) { f64::NAN } else { a.value(i) as f64 }));
            }
        }};
    }
    macro_rules! times {
        ($t:ty, $to_secs:expr) => {{
            let a = array.as_primitive::<$t>();
            let out = slot.get_or_insert_with(|| RawValues::Timestamp(Vec::new()));
            if let RawValues::Timestamp(v) = out {
                let f: fn(i64) -> i64 = $to_secs;
                v.extend((0..a.len()).map(|i| (!a.is_null(i)).then(|| f(a.value(i) as i64))));
            }
        }};
    }
    match array.data_type() {
        DataType::Float32 => numbers!(Float32Type),
        DataType::Float64 => numbers!(Float64Type),
        DataType::Int8 => numbers!(Int8Type),
        DataType::Int16 => numbers!(Int16Type),
        DataType::Int32 => numbers!(Int32Type),
        DataType::Int64 => numbers!(Int64Type),
        DataType::UInt8 => numbers!(UInt8Type),
        DataType::UInt16 => numbers!(UInt16Type),
        DataType::UInt32 => numbers!(UInt32Type),
        DataType::UInt64 => numbers!(UInt64Type),
        DataType::Boolean => {
            let a = array.as_boolean();
            if let RawValues::Bool(v) = slot.get_or_insert_with(|| RawValues::Bool(Vec::new())) {
                v.extend((0..a.len()).map(|i| (!a.is_null(i)).then(|| a.value(i))));
            }
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            let out = slot.get_or_insert_with(|| RawValues::Text(StrColumn::new()));
            if let RawValues::Text(c) = out {
                let mut push = |v: Option<&str>| {
                    if c.push(v) {
                        Ok(())
                    } else {
                        Err(FeaturizeError::Parse {
                            path: path.to_path_buf(),
                            message: format!("column {name:?} holds more than 4 GiB of text"),
                        })
                    }
                };
                match array.data_type() {
                    DataType::Utf8 => {
                        let a = array.as_string::<i32>();
                        for i in 0..a.len() {
                            push((!a.is_null(i)).then(|| a.value(i)))?;
                        }
                    }
                    DataType::LargeUtf8 => {
                        let a = array.as_string::<i64>();
                        for i in 0..a.len() {
                            push((!a.is_null(i)).then(|| a.value(i)))?;
                        }
                    }
                    _ => {
                        let a = array.as_string_view();
                        for i in 0..a.len() {
                            push((!a.is_null(i)).then(|| a.value(i)))?;
                        }
                    }
                }
            }
        }
        DataType::Date32 => times!(Date32Type, |d| d * 86_400),
        DataType::Date64 => times!(Date64Type, |ms| ms.div_euclid(1000)),
        DataType::Timestamp(TimeUnit::Second, _) => times!(TimestampSecondType, |s| s),
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            times!(TimestampMillisecondType, |v| v.div_euclid(1_000))
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            times!(TimestampMicrosecondType, |v| v.div_euclid(1_000_000))
        }
        DataType::Timestamp(TimeUnit::Nanosecond, _) => {
            times!(TimestampNanosecondType, |v| v.div_euclid(1_000_000_000))
        }
        other => {
            return Err(FeaturizeError::UnsupportedColumnType {
                path: path.to_path_buf(),
                column: name.to_string(),
                data_type: other.to_string(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use arrow_array::{BooleanArray, Float64Array, Int64Array, StringArray, TimestampSecondArray};
    use parquet::arrow::ArrowWriter;

    #[test]
    fn reads_parquet_typed_columns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        let batch = RecordBatch::try_from_iter(vec![
            ("x", Arc::new(Float64Array::from(vec![Some(1.5), None, Some(3.0)])) as ArrayRef),
            ("n", Arc::new(Int64Array::from(vec![1, 2, 3])) as ArrayRef),
            ("s", Arc::new(StringArray::from(vec![Some("a"), Some("NA"), None])) as ArrayRef),
            ("b", Arc::new(BooleanArray::from(vec![Some(true), None, Some(false)])) as ArrayRef),
            ("t", Arc::new(TimestampSecondArray::from(vec![Some(86_400), None, Some(0)])) as ArrayRef),
        ])
        .unwrap();
        let mut w = ArrowWriter::try_new(File::create(&path).unwrap(), batch.schema(), None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();

        let t = load_table(&path).unwrap().table;
        assert_eq!(t.n_rows, 3);
        let RawValues::Number(x) = &t.columns[0].values else { panic!("x") };
        assert_eq!(x[0], 1.5);
        assert!(x[1].is_nan());
        assert_eq!(t.columns[1].values, RawValues::Number(vec![1.0, 2.0, 3.0]));
        let RawValues::Text(s) = &t.columns[2].values else { panic!("s") };
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![Some("a"), None, None]);
        assert_eq!(t.columns[3].values, RawValues::Bool(vec![Some(true), None, Some(false)]));
        assert_eq!(t.columns[4].values, RawValues::Timestamp(vec![Some(86_400), None, Some(0)]));
    }

    #[test]
    fn csv_hash_is_sha256_of_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.csv");
        std::fs::write(&path, "a,b\n1,2\n").unwrap();
        let loaded = load_table(&path).unwrap();
        // sha256("a,b\n1,2\n")
        let expected: String = Sha256::digest(b"a,b\n1,2\n").iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(loaded.content_hash, expected);
        assert_eq!(loaded.table.n_rows, 1);
    }

    #[test]
    fn quoted_newlines_stay_in_one_cell() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.csv");
        std::fs::write(&path, "a,b\n\"line one\nline two\",2\n").unwrap();
        let t = load_table(&path).unwrap().table;
        assert_eq!(t.n_rows, 1);
        assert_eq!(t.columns[0].values.text(0).as_deref(), Some("line one\nline two"));
    }
}
