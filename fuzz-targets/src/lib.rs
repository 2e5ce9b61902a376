//! The bodies of the fuzz targets, one function per target, each taking the fuzzer's bytes.
//! `fuzz/` wraps each in a libFuzzer `fuzz_target!` (coverage-guided runs: `scripts/fuzz.sh`);
//! `tests/corpus.rs` runs each on the checked-in corpus (`fuzz/corpus/TARGET/`) plus seeded
//! mutations in every `cargo test`, so a parser regression fails CI without a manual run.
//!
//! A target returns normally on any input: errors are fine, a panic (or a failed assertion of
//! what must hold) is the finding.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use prost::Message;
use quarry_featurize::{Featurizer, RawColumn, RawValues, StrColumn, Table, load_table, profile_column};
use quarry_learners::Pipeline;
use quarry_proto::{convert, pb};

/// A target: the fuzzer's bytes in, a panic on a finding.
pub type Target = fn(&[u8]);

/// The targets by name, as `fuzz/Cargo.toml` names its binaries.
pub const TARGETS: &[(&str, Target)] = &[
    ("load_csv", load_csv),
    ("load_parquet", load_parquet),
    ("featurize", featurize),
    ("bundle_load", bundle_load),
    ("proto_decode", proto_decode),
    ("infer_json", infer_json),
];

/// A scratch path of this process and call: targets run on several test threads at once.
fn scratch(name: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("quarry-fuzz-{}-{n}-{name}", std::process::id()))
}

/// Writes `data` to a scratch file, runs `f` on its path, removes it.
fn with_file(name: &str, data: &[u8], f: impl FnOnce(&std::path::Path)) {
    let path = scratch(name);
    if std::fs::write(&path, data).is_ok() {
        f(&path);
    }
    let _ = std::fs::remove_file(&path);
}

/// Arbitrary bytes as a CSV file: loading either gives a table or an error, never a panic; a
/// loaded table is profiled column by column (type inference).
pub fn load_csv(data: &[u8]) {
    with_file("data.csv", data, |path| {
        if let Ok(loaded) = load_table(path) {
            for column in &loaded.table.columns {
                let profile = profile_column(column);
                assert!(profile.n_missing <= loaded.table.n_rows);
            }
        }
    });
}

/// Parquet input. Raw bytes rarely get past the footer check, so the input is split: the
/// first bytes choose a small typed table (shape, types, nulls, values) written as a valid
/// Parquet file, the rest of the input overwrites a window of that file's bytes. Loading then
/// gives a table or an error, never a panic.
pub fn load_parquet(data: &[u8]) {
    let split = data.len().min(16);
    let (seed, patch) = data.split_at(split);
    let Some(mut file) = parquet_table(seed) else { return };
    if let Some((&at, bytes)) = patch.split_first() {
        let start = usize::from(at) * file.len() / 256;
        for (i, b) in bytes.iter().enumerate() {
            if let Some(slot) = file.get_mut(start + i) {
                *slot = *b;
            }
        }
    }
    with_file("data.parquet", &file, |path| {
        let _ = load_table(path);
    });
}

fn parquet_table(seed: &[u8]) -> Option<Vec<u8>> {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
    use arrow_schema::{DataType, Field, Schema};
    use parquet::arrow::ArrowWriter;

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

/// Arbitrary CSV bytes through the featurizer: fit on the loaded table (last column as the
/// target, as `quarry fit` would exclude it), transform the same rows; errors are fine, panics
/// are not, and a transform keeps every row.
pub fn featurize(data: &[u8]) {
    with_file("featurize.csv", data, |path| {
        let Ok(loaded) = load_table(path) else { return };
        let table = loaded.table;
        let target = table.columns.last().map(|c| c.name.clone()).unwrap_or_default();
        let Ok(featurizer) = Featurizer::fit(&table, &[target.as_str()]) else { return };
        if let Ok(matrix) = featurizer.transform(&table) {
            assert_eq!(matrix.n_rows, table.n_rows);
        }
    });
}

/// A model bundle (`pipeline.json`) as the fuzzer mutates it (seeded with real bundles from
/// tests/data/bundles): loading gives a pipeline or an error, and a pipeline that loads scores
/// a fixed table without panicking (a corrupt tree must be an error, not an index out of
/// bounds).
pub fn bundle_load(data: &[u8]) {
    let dir = scratch("bundle");
    if std::fs::create_dir_all(&dir).is_ok()
        && std::fs::write(dir.join("pipeline.json"), data).is_ok()
        && let Ok(pipeline) = Pipeline::load(&dir)
    {
        let _ = pipeline.predict(&probe(&pipeline));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

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

fn decode<M: Message + Default>(bytes: &[u8]) -> Option<M> {
    M::decode(bytes).ok()
}

/// Arbitrary bytes as each wire message the coordinator or a worker decodes, then the pb →
/// domain conversions both sides run on them. The first byte picks the message.
pub fn proto_decode(data: &[u8]) {
    let Some((&which, bytes)) = data.split_first() else { return };
    match which % 14 {
        0 => {
            if let Some(spec) = decode::<pb::JobSpec>(bytes) {
                let _ = quarry_worker::client::prepare_options(&spec);
            }
        }
        1 => {
            if let Some(t) = decode::<pb::TrialSpec>(bytes) {
                let _ = quarry_search::TrialSpec::try_from(t);
            }
        }
        2 => {
            if let Some(o) = decode::<pb::TrialOutcome>(bytes) {
                let _ = quarry_search::TrialOutcome::try_from(o);
            }
        }
        3 => {
            if let Some(pb::CompleteRequest {
                result: Some(pb::complete_request::Result::Trial(o)), ..
            }) = decode::<pb::CompleteRequest>(bytes)
            {
                let _ = quarry_search::TrialOutcome::try_from(o);
            }
        }
        4 => drop(decode::<pb::Task>(bytes)),
        5 => drop(decode::<pb::LeaseRequest>(bytes)),
        6 => drop(decode::<pb::LeaseResponse>(bytes)),
        7 => drop(decode::<pb::ProgressRequest>(bytes)),
        8 => drop(decode::<pb::FailRequest>(bytes)),
        9 => drop(decode::<pb::WorkerInfo>(bytes)),
        10 => drop(decode::<pb::Chunk>(bytes)),
        11 => drop(decode::<pb::Leaderboard>(bytes)),
        12 => drop(decode::<pb::JobEvent>(bytes)),
        _ => {
            if let Ok(status) = i32::decode(bytes) {
                let _ = convert::status_from_pb(status);
            }
        }
    }
}

/// The served model `infer_json` posts to: the repo's small GBDT bundle behind the real
/// Open Inference Protocol router, on a runtime of its own (built once per process).
fn inference_app() -> Option<&'static (tokio::runtime::Runtime, axum::Router)> {
    static APP: OnceLock<Option<(tokio::runtime::Runtime, axum::Router)>> = OnceLock::new();
    APP.get_or_init(|| {
        use quarry_serving::{BatchConfig, Limits, ServedModel, router};
        let bundle = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/bundles/gbdt.json");
        let dir = scratch("model");
        std::fs::create_dir_all(&dir).ok()?;
        std::fs::copy(&bundle, dir.join("pipeline.json")).ok()?;
        let pipeline = quarry_serving::model::load_pipeline(&dir).ok()?;
        let model = ServedModel::new(pipeline, "m", "1", None, BatchConfig::default()).ok()?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
        Some((runtime, router(model, Limits::default())))
    })
    .as_ref()
}

/// Arbitrary bodies POSTed to the Open Inference Protocol infer route of a served model (the
/// real axum router, no socket): the answer is a success or a 4xx with the protocol's error
/// JSON, never a panic or a 5xx.
pub fn infer_json(data: &[u8]) {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    let (runtime, router) = inference_app().expect("tests/data/bundles/gbdt.json serves");
    let Ok(request) = Request::post("/v2/models/m/infer")
        .header("content-type", "application/json")
        .body(Body::from(data.to_vec()))
    else {
        return;
    };
    let Ok(response) = runtime.block_on(router.clone().oneshot(request));
    let status = response.status();
    assert!(
        status.is_success() || status.is_client_error(),
        "{status} for {:?}",
        String::from_utf8_lossy(data)
    );
    let body =
        runtime.block_on(axum::body::to_bytes(response.into_body(), 1 << 24)).expect("a body under 16 MiB");
    assert!(serde_json::from_slice::<serde_json::Value>(&body).is_ok(), "non-JSON answer");
}
