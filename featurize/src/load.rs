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

/// The most rows a table may have: row indices are `u32` downstream.
pub const MAX_ROWS: u64 = u32::MAX as u64;
/// Heap a loaded cell costs at least beyond its text (a `u32` offset in a text column, an
/// `f64` in a number column), plus the feature matrix's `f32` made from it.
const CELL_BYTES: u64 = 12;

/// What a file may make the loader allocate, checked from the file's size and (Parquet) its
/// footer before any row is materialized, and again as CSV rows are read: a small file that
/// declares 2·10⁹ rows (or a run-length page that expands to them) is an error, not an
/// out-of-memory kill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadLimits {
    pub max_rows: u64,
    /// Bytes the loaded table may take; `None`: no limit but the rows.
    pub max_bytes: Option<u64>,
}

impl Default for LoadLimits {
    /// At most [`MAX_ROWS`] rows and the machine's memory.
    fn default() -> LoadLimits {
        LoadLimits { max_rows: MAX_ROWS, max_bytes: physical_memory() }
    }
}

impl LoadLimits {
    /// The defaults, with at most `bytes` (`--memory-limit`) for the table.
    pub fn with_memory_limit(bytes: Option<u64>) -> LoadLimits {
        let d = LoadLimits::default();
        let max_bytes = match (bytes, d.max_bytes) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        LoadLimits { max_bytes, ..d }
    }

    fn check(&self, path: &Path, rows: u64, columns: usize, text_bytes: u64, declared: bool) -> Result<()> {
        let what = if declared { "declares" } else { "has" };
        if rows > self.max_rows {
            return Err(FeaturizeError::TooLarge {
                path: path.to_path_buf(),
                message: format!("it {what} {rows} rows, more than the {} a table may have", self.max_rows),
            });
        }
        let needs = rows.saturating_mul(columns as u64).saturating_mul(CELL_BYTES).saturating_add(text_bytes);
        if let Some(max) = self.max_bytes
            && needs > max
        {
            return Err(FeaturizeError::TooLarge {
                path: path.to_path_buf(),
                message: format!(
                    "{}, more than the {} this process may use (--memory-limit, or the machine's memory)",
                    if rows == 0 {
                        format!("its {} of data need at least as much once loaded", human(text_bytes))
                    } else {
                        format!(
                            "it {what} {rows} rows × {columns} columns, about {} once loaded",
                            human(needs)
                        )
                    },
                    human(max)
                ),
            });
        }
        Ok(())
    }
}

fn human(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b => format!("{b} bytes"),
    }
}

/// Total RAM from `/proc/meminfo` (Linux); `None` elsewhere.
fn physical_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 =
        text.lines().find_map(|l| l.strip_prefix("MemTotal:"))?.split_whitespace().next()?.parse().ok()?;
    Some(kib * 1024)
}

/// A table and where it came from.
#[derive(Debug, Clone)]
pub struct LoadedTable {
    pub path: PathBuf,
    /// SHA-256 of the file's bytes, hex: the dataset's identity in run records.
    pub content_hash: String,
    pub table: Table,
}

/// Loads a `.csv` or `.parquet` file (by extension; anything else is read as CSV), within
/// [`LoadLimits::default`].
pub fn load_table(path: &Path) -> Result<LoadedTable> {
    load_table_with(path, &LoadLimits::default())
}

/// [`load_table`] within `limits`.
pub fn load_table_with(path: &Path, limits: &LoadLimits) -> Result<LoadedTable> {
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
        std::panic::catch_unwind(|| read_parquet(path, limits)).unwrap_or_else(|_| {
            Err(FeaturizeError::Parse {
                path: path.to_path_buf(),
                message: "not a readable parquet file (its metadata is damaged)".to_string(),
            })
        })?
    } else {
        read_csv(path, limits)?
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

fn read_csv(path: &Path, limits: &LoadLimits) -> Result<Table> {
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
    // The text is at most the file's bytes; the rows are counted as they come.
    limits.check(path, 0, names.len(), file_len as u64, false)?;
    for batch in reader {
        let batch = batch.map_err(|e| arrow_error(path, e))?;
        limits.check(path, (n_rows + batch.num_rows()) as u64, names.len(), file_len as u64, false)?;
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

fn read_parquet(path: &Path, limits: &LoadLimits) -> Result<Table> {
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
    // The footer says how many rows and uncompressed bytes the file expands to; a few bytes of
    // run-length encoding can stand for billions of values, so check before reading a page.
    let meta = builder.metadata();
    let (mut rows, mut bytes) = (0u64, 0u64);
    for rg in meta.row_groups() {
        let (Ok(r), Ok(b)) = (u64::try_from(rg.num_rows()), u64::try_from(rg.total_byte_size())) else {
            return Err(FeaturizeError::Parse {
                path: path.to_path_buf(),
                message: "not a readable parquet file (a row group declares a negative size)".into(),
            });
        };
        rows = rows.saturating_add(r);
        bytes = bytes.saturating_add(b);
    }
    let declared = u64::try_from(meta.file_metadata().num_rows()).unwrap_or(u64::MAX);
    limits.check(path, rows.max(declared), names.len(), bytes, true)?;
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

    /// A valid Parquet file whose footer declares 2·10⁹ rows; its pages hold 8. The committed
    /// fixture `tests/data/bad/declares_2e9_rows.parquet` is exactly this.
    fn row_bomb() -> Vec<u8> {
        use parquet::file::metadata::{
            FileMetaData, ParquetMetaData, ParquetMetaDataReader, ParquetMetaDataWriter,
        };
        let col = |k: i64| Arc::new(Int64Array::from((0..8).map(|i| i * k).collect::<Vec<_>>())) as ArrayRef;
        let batch =
            RecordBatch::try_from_iter(vec![("a", col(1)), ("b", col(2)), ("c", col(3)), ("y", col(4))])
                .unwrap();
        let mut buf = Vec::new();
        let mut w = ArrowWriter::try_new(&mut buf, batch.schema(), None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let bytes = bytes::Bytes::from(buf);
        let meta = ParquetMetaDataReader::new().parse_and_finish(&bytes).unwrap();
        let n = bytes.len();
        let footer = u32::from_le_bytes([bytes[n - 8], bytes[n - 7], bytes[n - 6], bytes[n - 5]]) as usize;
        let rows = 2_000_000_000i64;
        let fm = meta.file_metadata();
        let file_meta = FileMetaData::new(
            fm.version(),
            rows,
            fm.created_by().map(String::from),
            fm.key_value_metadata().cloned(),
            fm.schema_descr_ptr(),
            fm.column_orders().cloned(),
        );
        let groups = meta
            .row_groups()
            .iter()
            .map(|rg| {
                let columns = rg
                    .columns()
                    .iter()
                    .map(|c| c.clone().into_builder().set_num_values(rows).build().unwrap())
                    .collect();
                rg.clone().into_builder().set_num_rows(rows).set_column_metadata(columns).build().unwrap()
            })
            .collect();
        let mut out = bytes[..n - 8 - footer].to_vec();
        ParquetMetaDataWriter::new(&mut out, &ParquetMetaData::new(file_meta, groups)).finish().unwrap();
        out
    }

    #[test]
    fn a_footer_declaring_billions_of_rows_is_refused_before_reading() {
        let bomb = row_bomb();
        let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/data/bad/declares_2e9_rows.parquet");
        if std::env::var_os("QUARRY_WRITE_FIXTURES").is_some() {
            std::fs::write(&fixture, &bomb).unwrap();
        }
        assert_eq!(std::fs::read(&fixture).unwrap(), bomb, "regenerate with QUARRY_WRITE_FIXTURES=1");
        assert!(bomb.len() < 4096, "{} bytes", bomb.len());
        let limits = LoadLimits { max_rows: MAX_ROWS, max_bytes: Some(1 << 30) };
        let err = load_table_with(&fixture, &limits).unwrap_err().to_string();
        assert!(err.contains("too large to load: it declares 2000000000 rows × 4 columns"), "{err}");
        assert!(err.contains("more than the 1.0 GiB"), "{err}");
        let err =
            load_table_with(&fixture, &LoadLimits { max_rows: 1_000_000, max_bytes: None }).unwrap_err();
        assert!(err.to_string().contains("more than the 1000000 a table may have"), "{err}");
    }

    #[test]
    fn a_csv_over_the_limit_is_refused_by_its_size_and_by_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.csv");
        let mut text = String::from("a,y\n");
        for i in 0..1000 {
            text.push_str(&format!("{i},{}\n", i % 2));
        }
        std::fs::write(&path, &text).unwrap();
        let size = LoadLimits { max_rows: MAX_ROWS, max_bytes: Some(100) };
        let err = load_table_with(&path, &size).unwrap_err().to_string();
        assert!(err.contains("too large to load: its 5894 bytes of data need"), "{err}");
        assert!(err.contains("more than the 100 bytes this process may use"), "{err}");
        let rows = LoadLimits { max_rows: 999, max_bytes: None };
        let err = load_table_with(&path, &rows).unwrap_err().to_string();
        assert!(err.contains("it has 1000 rows, more than the 999"), "{err}");
        assert_eq!(
            load_table_with(&path, &LoadLimits { max_rows: 1000, max_bytes: None }).unwrap().table.n_rows,
            1000
        );
    }
}
