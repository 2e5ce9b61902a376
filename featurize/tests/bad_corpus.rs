//! Every file in `tests/data/bad/` (and a few generated ones too big to commit) goes through
//! the whole pipeline — load → target fit → encode → featurizer fit → transform → guardrails —
//! without panicking, and either succeeds with sane shapes or fails with one short line that
//! names the file, a column or a row. Files listed in [`EXPECTED`] must have that outcome.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use quarry_featurize::{FeatureKind, Featurizer, TargetEncoder, Task, guardrails, load_table};

/// The target column in every corpus file.
const TARGET: &str = "y";

#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Succeeds with this many rows after rows with a missing target are dropped.
    Ok { rows: usize },
    /// Succeeds, with the given task and row count.
    OkTask { rows: usize, task: Task },
    /// Fails with a message containing this text.
    Err(&'static str),
}

use Expect::{Err as Fails, Ok as Rows, OkTask};

/// Expected outcomes. Files not listed only get the generic checks.
const EXPECTED: &[(&str, Expect)] = &[
    ("empty.csv", Fails("file is empty")),
    ("header_only.csv", Fails("no data rows")),
    // A header, then only blank lines: still no data rows.
    ("header_blank_lines.csv", Fails("no data rows")),
    // Blank lines and a whitespace-only first line: no column names at all.
    ("blank_lines_only.csv", Fails("no header row")),
    ("ragged_rows.csv", Fails("line 3")),
    // Rows end in a comma the header does not have: one field too many, on the first data line.
    ("trailing_comma_rows_only.csv", Fails("line 2")),
    // An unclosed quote swallows the rest of the file into one field: a ragged row.
    ("unclosed_quote.csv", Fails("line 3")),
    ("not_utf8.csv", Fails("UTF-8")),
    ("latin1.csv", Fails("UTF-8")),
    ("utf16_bom.csv", Fails("UTF-16")),
    // Found by fuzzing (scripts/fuzz.sh load_csv): a two-byte character whose second byte is a
    // comma; arrow-csv returned the cut field and trimming it panicked.
    ("utf8_cut_by_delimiter.csv", Fails("UTF-8")),
    ("text_pretending.parquet", Fails("not a readable parquet file")),
    // Found by fuzzing (scripts/fuzz.sh load_parquet): a damaged page header declares a huge
    // list, and parquet-rs skipped it one empty read at a time at end of file (minutes).
    ("page_header_list_past_end.parquet", Fails("past the end of the file")),
    ("one_class.csv", Fails("one class")),
    // One row is one class, whatever it is.
    ("one_row.csv", Fails("one class")),
    ("all_missing_target.csv", Fails("every value is missing")),
    ("constant_target_regression.csv", Fails("single value")),
    ("too_many_classes.csv", Fails("too many classes")),
    ("duplicate_columns.csv", Fails("\"a\" appears more than once")),
    ("only_id_feature.csv", Fails("no usable feature")),
    ("target_only.csv", Fails("only the target column")),
    // The target column is called `label`, not `y`: the error lists what there is.
    ("missing_target_column.csv", Fails("\"label\"")),
    ("bom.csv", Rows { rows: 10 }),
    ("quoted_newlines.csv", Rows { rows: 12 }),
    ("all_missing_column.csv", Rows { rows: 12 }),
    ("inf_nan_numeric.csv", Rows { rows: 12 }),
    ("mixed_types.csv", Rows { rows: 12 }),
    // Header and rows end in a comma: an extra, empty column named `unnamed_4`.
    ("trailing_commas.csv", Rows { rows: 12 }),
    ("crlf.csv", Rows { rows: 12 }),
    ("semicolon.csv", Rows { rows: 12 }),
    ("tab_separated.csv", Rows { rows: 12 }),
    ("whitespace_cells.csv", Rows { rows: 12 }),
    ("empty_column_name.csv", Rows { rows: 12 }),
    ("unicode_names.csv", Rows { rows: 12 }),
    ("thousands_separators.csv", Rows { rows: 12 }),
    ("target_every_other_missing.csv", OkTask { rows: 10, task: Task::Binary }),
    ("duplicate_rows.csv", Rows { rows: 12 }),
    // Four rows have an infinite target: dropped like missing ones.
    ("target_inf_regression.csv", OkTask { rows: 8, task: Task::Regression }),
    ("text_column.csv", Rows { rows: 60 }),
    ("regression_text_target.csv", OkTask { rows: 12, task: Task::Multiclass }),
    ("nul_bytes.csv", Rows { rows: 3 }),
];

#[derive(Debug)]
struct Success {
    rows: usize,
    task: Task,
    n_features: usize,
}

/// The CLI's pipeline, checking shapes on the way. `Err` is the error's message.
fn run_pipeline(path: &Path) -> Result<Success, (String, Vec<String>)> {
    let loaded = load_table(path).map_err(|e| (e.to_string(), Vec::new()))?;
    let table = loaded.table;
    let names: Vec<String> = table.columns.iter().map(|c| c.name.clone()).collect();
    for c in &table.columns {
        assert_eq!(c.values.len(), table.n_rows, "{}: column {:?} length", path.display(), c.name);
    }
    let fail = |e: quarry_featurize::FeaturizeError| (e.to_string(), names.clone());
    let encoder = TargetEncoder::fit(&table, TARGET, None).map_err(fail)?;
    let (y, kept) = encoder.encode(&table).map_err(fail)?;
    assert_eq!(y.len(), kept.len());
    let table_kept = if kept.len() < table.n_rows { table.select_rows(&kept) } else { table.clone() };
    let mut featurizer = Featurizer::fit(&table_kept, &[TARGET]).map_err(fail)?;
    let encodings = featurizer.fit_target(&table_kept, &y).map_err(fail)?;
    let mut x = featurizer.transform(&table_kept).map_err(fail)?;
    encodings.cross_fit_into(&mut x, &y);
    assert_eq!(x.n_rows, kept.len(), "{}", path.display());
    assert!(x.n_features() > 0, "{}", path.display());
    for col in &x.columns {
        assert_eq!(col.values.len(), x.n_rows, "{}: feature {:?}", path.display(), col.name);
        if let FeatureKind::Categorical { n_levels } = col.kind {
            assert!(
                col.values
                    .iter()
                    .all(|v| v.is_nan() || (*v >= 0.0 && *v < n_levels as f32 && v.fract() == 0.0)),
                "{}: feature {:?} has codes outside 0..{n_levels}",
                path.display(),
                col.name
            );
        } else {
            assert!(
                col.values.iter().all(|v| !v.is_infinite()),
                "{}: {:?} has ±inf",
                path.display(),
                col.name
            );
        }
    }
    // The featurizer must survive the bundle's JSON round trip.
    let json = serde_json::to_string(&featurizer).expect("featurizer serialises");
    let back: Featurizer = serde_json::from_str(&json).expect("featurizer deserialises");
    assert_eq!(back, featurizer);
    // Guardrails see the table as loaded (before target-missing rows are dropped).
    let report = guardrails(&table, &encoder, &featurizer);
    let report_json = serde_json::to_string(&report).expect("guardrails serialise");
    assert!(report_json.contains("findings"));
    for line in report.summary_lines() {
        assert!(!line.contains('\n'), "{}: multi-line summary {line:?}", path.display());
    }
    Ok(Success { rows: x.n_rows, task: encoder.task, n_features: x.n_features() })
}

/// Runs one file and applies the generic checks; returns the outcome for specific checks.
fn check_file(path: &Path) -> Result<Success, String> {
    let result = catch_unwind(AssertUnwindSafe(|| run_pipeline(path)));
    let outcome = match result {
        Ok(r) => r,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("{}: panicked: {msg}", path.display());
        }
    };
    match outcome {
        Ok(s) => Ok(s),
        Err((message, columns)) => {
            let file = path.file_name().and_then(|f| f.to_str()).unwrap_or_default();
            assert!(!message.trim().is_empty(), "{file}: empty error message");
            assert!(
                !message.contains('\n') && !message.contains('\r'),
                "{file}: multi-line error {message:?}"
            );
            assert!(
                message.chars().count() <= 600,
                "{file}: error is {} chars long",
                message.chars().count()
            );
            let names_something = message.contains(file)
                || message.contains(&format!("{TARGET:?}"))
                || columns.iter().any(|c| message.contains(&format!("{c:?}")))
                || message.contains("row ")
                || message.contains("line ");
            assert!(names_something, "{file}: error names no file, column or row: {message:?}");
            Err(message)
        }
    }
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/bad")
}

/// `Some(problem)` when the outcome differs from [`EXPECTED`].
fn check_expected(name: &str, outcome: &Result<Success, String>) -> Option<String> {
    let (_, expect) = EXPECTED.iter().find(|(n, _)| *n == name)?;
    match (expect, outcome) {
        (Expect::Ok { rows }, Ok(s)) if s.rows == *rows => None,
        (Expect::OkTask { rows, task }, Ok(s)) if (s.rows, s.task) == (*rows, *task) => None,
        (Expect::Err(needle), Err(msg)) if msg.contains(needle) => None,
        (expect, outcome) => Some(format!("{name}: expected {expect:?}, got {outcome:?}")),
    }
}

#[test]
fn every_corpus_file_fails_cleanly_or_succeeds() {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("tests/data/bad exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.is_file())
        .collect();
    entries.sort();
    assert!(entries.len() >= 25, "the corpus has only {} files", entries.len());
    let mut report = Vec::new();
    let mut problems = Vec::new();
    for path in &entries {
        let name = path.file_name().and_then(|f| f.to_str()).unwrap_or_default().to_string();
        let outcome = check_file(path);
        report.push(match &outcome {
            Ok(s) => format!("{name}: ok, {} rows, {} features, {}", s.rows, s.n_features, s.task),
            Err(m) => format!("{name}: error: {m}"),
        });
        if let Some(problem) = check_expected(&name, &outcome) {
            problems.push(problem);
        }
    }
    eprintln!("{}", report.join("\n"));
    assert!(problems.is_empty(), "unexpected outcomes:\n{}", problems.join("\n"));
}

#[test]
fn every_expectation_names_a_corpus_file() {
    for (name, _) in EXPECTED {
        assert!(corpus_dir().join(name).is_file(), "{name} is listed in EXPECTED but missing");
    }
}

#[test]
fn committed_corpus_stays_small() {
    let total: u64 = std::fs::read_dir(corpus_dir())
        .expect("tests/data/bad exists")
        .map(|e| e.expect("entry").metadata().expect("metadata").len())
        .sum();
    assert!(total < 200 * 1024, "tests/data/bad is {total} bytes; generate big inputs in tests");
}

#[test]
fn missing_file_names_it() {
    let err = check_file(&corpus_dir().join("no_such_file.csv")).unwrap_err();
    assert!(err.contains("no_such_file.csv"), "{err}");
}

#[test]
fn directory_instead_of_file() {
    let err = check_file(&corpus_dir()).unwrap_err();
    assert!(err.contains("directory"), "{err}");
}

// ---- Generated inputs: too big to commit, or binary. ----

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn categorical_with_100k_levels() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = String::from("level,x,y\n");
    // Each of 100,000 levels twice, so the column is categorical, not ID-like.
    for i in 0..200_000 {
        s.push_str(&format!("L{},{},{}\n", i % 100_000, i % 13, (i / 7) % 2));
    }
    let path = write(dir.path(), "levels.csv", &s);
    let ok = check_file(&path).unwrap();
    assert_eq!(ok.rows, 200_000);
    let t = load_table(&path).unwrap().table;
    let f = Featurizer::fit(&t, &["y"]).unwrap();
    let level = f.columns.iter().find(|c| c.name == "level").unwrap();
    match &level.transform {
        quarry_featurize::ColumnTransform::HighCardinality(enc) => {
            // Every level is kept for the encodings; each is seen twice, too rarely for a code.
            assert_eq!((enc.levels.len(), enc.n_codes), (100_000, 0));
        }
        other => panic!("level column became {other:?}"),
    }
}

#[test]
fn ten_thousand_columns() {
    let dir = tempfile::tempdir().unwrap();
    let n_cols = 10_000;
    let mut s: String = (0..n_cols).map(|j| format!("c{j},")).collect();
    s.push_str("y\n");
    for i in 0..30 {
        for j in 0..n_cols {
            s.push_str(&format!("{},", (i * 31 + j * 7) % 11));
        }
        s.push_str(&format!("{}\n", i % 2));
    }
    let path = write(dir.path(), "wide.csv", &s);
    let ok = check_file(&path).unwrap();
    assert_eq!((ok.rows, ok.n_features), (30, n_cols));
    // A 700 KB file once took 10 GB to load (arrow-csv preallocated 64 Ki rows × 10,000 cells).
    // Peak memory is per process and other tests run alongside, so the bound is loose.
    if let Some(peak_kb) = peak_rss_kb() {
        assert!(peak_kb < 2 * 1024 * 1024, "peak memory {peak_kb} kB");
    }

    // The "target not found" hint must not list 10,000 names.
    let t = load_table(&path).unwrap().table;
    let err = TargetEncoder::fit(&t, "nope", None).unwrap_err().to_string();
    assert!(err.len() < 600 && err.contains("more)"), "{err}");
}

#[test]
fn one_megabyte_cell() {
    let dir = tempfile::tempdir().unwrap();
    let big = "word ".repeat(200_000);
    let mut s = String::from("note,x,y\n");
    for i in 0..10 {
        let cell = if i == 3 { big.as_str() } else { "short" };
        s.push_str(&format!("{cell},{i},{}\n", i % 2));
    }
    let path = write(dir.path(), "bigcell.csv", &s);
    assert_eq!(check_file(&path).unwrap().rows, 10);

    // A 1 MB cell in a bad target is shown cut short.
    let mut s = String::from("x,y\n");
    for i in 0..10 {
        s.push_str(&format!("{i},{}\n", if i == 5 { big.as_str() } else { "1.5" }));
    }
    s.push_str("11,2.5\n");
    let path = write(dir.path(), "bigtarget.csv", &s);
    let t = load_table(&path).unwrap().table;
    let enc = TargetEncoder::fit(&t, "y", Some(Task::Regression));
    let err = match enc {
        Err(e) => e.to_string(),
        Ok(enc) => enc.encode(&t).unwrap_err().to_string(),
    };
    assert!(err.len() < 300, "{} chars", err.len());
}

/// Peak resident memory of this process (Linux only).
fn peak_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn write_parquet(path: &Path, n_rows: usize) {
    use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch};
    let x: Vec<f64> = (0..n_rows).map(|i| i as f64 * 0.5).collect();
    let y: Vec<i64> = (0..n_rows).map(|i| (i % 2) as i64).collect();
    let batch = RecordBatch::try_from_iter(vec![
        ("x", Arc::new(Float64Array::from(x)) as ArrayRef),
        ("y", Arc::new(Int64Array::from(y)) as ArrayRef),
    ])
    .unwrap();
    let mut w =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(path).unwrap(), batch.schema(), None)
            .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

#[test]
fn truncated_and_zero_row_parquet() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.parquet");
    write_parquet(&good, 100);
    assert_eq!(check_file(&good).unwrap().rows, 100);

    let bytes = std::fs::read(&good).unwrap();
    for cut in [bytes.len() / 2, bytes.len() - 3, 10] {
        let path = dir.path().join(format!("cut{cut}.parquet"));
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let err = check_file(&path).unwrap_err();
        assert!(err.contains("parquet"), "{err}");
    }
    // Flip bytes in the middle (the data pages): an error or a table, never a panic.
    let mut corrupt = bytes.clone();
    for b in corrupt.iter_mut().skip(8).take(bytes.len() / 3) {
        *b ^= 0x5a;
    }
    let path = dir.path().join("corrupt.parquet");
    std::fs::write(&path, &corrupt).unwrap();
    let _ = check_file(&path);

    let empty = dir.path().join("zero.parquet");
    write_parquet(&empty, 0);
    let err = check_file(&empty).unwrap_err();
    assert!(err.contains("no data rows"), "{err}");
}

#[test]
fn tricky_files_load_as_intended() {
    let load = |name: &str| load_table(&corpus_dir().join(name)).unwrap().table;
    let names = |name: &str| load(name).column_names().into_iter().map(str::to_string).collect::<Vec<_>>();
    assert_eq!(names("semicolon.csv"), ["x", "z", "y"]);
    assert_eq!(names("tab_separated.csv"), ["x", "z", "y"]);
    assert_eq!(names("bom.csv"), ["x", "y"]);
    assert_eq!(names("empty_column_name.csv"), ["x", "unnamed_2", "y"]);
    assert_eq!(names("trailing_commas.csv"), ["x", "z", "y", "unnamed_4"]);
    assert_eq!(names("unicode_names.csv"), ["größe", "日付", "名前 ✓", "y"]);
    let crlf = load("crlf.csv");
    let y = &crlf.column("y").unwrap().values;
    assert!((0..crlf.n_rows).all(|i| !y.text(i).unwrap().contains('\r')));
    let q = load("quoted_newlines.csv");
    assert!(q.column("note").unwrap().values.text(0).unwrap().contains('\n'));

    // Kinds: the all-missing and the trailing-comma columns are dropped as constant; the
    // unicode date column is a datetime; free text becomes TF-IDF buckets.
    let fit = |name: &str| Featurizer::fit(&load(name), &["y"]).unwrap();
    let kind = |f: &Featurizer, col: &str| f.columns.iter().find(|c| c.name == col).unwrap().kind;
    use quarry_featurize::ColumnKind;
    assert_eq!(kind(&fit("all_missing_column.csv"), "empty"), ColumnKind::Constant);
    assert_eq!(kind(&fit("trailing_commas.csv"), "unnamed_4"), ColumnKind::Constant);
    assert_eq!(kind(&fit("unicode_names.csv"), "日付"), ColumnKind::Datetime);
    assert_eq!(kind(&fit("inf_nan_numeric.csv"), "x"), ColumnKind::Numeric);
    assert_eq!(kind(&fit("mixed_types.csv"), "x"), ColumnKind::Categorical);
    let text = fit("text_column.csv");
    assert_eq!(kind(&text, "review"), ColumnKind::Text);
    let x = text.transform(&load("text_column.csv")).unwrap();
    assert!(x.columns.iter().filter(|c| c.name.starts_with("review__tfidf_")).count() > 10);
}
