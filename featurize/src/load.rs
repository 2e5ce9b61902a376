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

use crate::error::{FeaturizeError, Result};
use crate::table::{RawColumn, RawValues, StrColumn, Table};

const BATCH_ROWS: usize = 64 * 1024;

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
    let table = if is_parquet { read_parquet(path)? } else { read_csv(path)? };
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
    let format = arrow_csv::reader::Format::default().with_header(true);
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
        return Err(FeaturizeError::Parse { path: path.to_path_buf(), message: "no header row".to_string() });
    }
    check_unique(path, &names)?;
    let schema =
        Arc::new(Schema::new(names.iter().map(|n| Field::new(n, DataType::Utf8, true)).collect::<Vec<_>>()));
    let reader = arrow_csv::ReaderBuilder::new(schema)
        .with_header(true)
        .with_batch_size(BATCH_ROWS)
        .build(open()?)
        .map_err(|e| arrow_error(path, e))?;
    let mut columns: Vec<StrColumn> = names.iter().map(|_| StrColumn::new()).collect();
    let mut n_rows = 0;
    for batch in reader {
        let batch = batch.map_err(|e| arrow_error(path, e))?;
        n_rows += batch.num_rows();
        for (col, array) in columns.iter_mut().zip(batch.columns()) {
            let strings = array.as_string::<i32>();
            for i in 0..strings.len() {
                let value = (!strings.is_null(i)).then(|| strings.value(i));
                if !col.push(value) {
                    return Err(FeaturizeError::Parse {
                        path: path.to_path_buf(),
                        message: "a column holds more than 4 GiB of text".to_string(),
                    });
                }
            }
        }
    }
    Ok(Table {
        n_rows,
        columns: names
            .into_iter()
            .zip(columns)
            .map(|(name, c)| RawColumn { name, values: RawValues::Text(c) })
            .collect(),
    })
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
        message: e.to_string(),
    };
    let builder =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).map_err(parse_err)?;
    let schema = builder.schema().clone();
    let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    check_unique(path, &names)?;
    let reader = builder.with_batch_size(BATCH_ROWS).build().map_err(parse_err)?;
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
