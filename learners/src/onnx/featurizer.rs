//! The fitted featurizer as graph nodes: one raw input per used column, one function per
//! [`ColumnTransform`], each producing the same `float [N,1]` feature columns, in the same
//! order, as `Featurizer::transform`.

use quarry_featurize::{ColumnTransform, Featurizer, FittedColumn, LevelEncoding};

use super::builder::{Attr, Graph, attr, value_info};
use super::pb::tensor_proto::DataType;
use crate::error::{Result, TrainError};

/// Strings quarry's loader reads as missing (`featurize::table`); an ONNX caller may pass them
/// raw, so categorical and boolean lookups map them to missing too.
const MISSING_MARKERS: &[&str] = &[
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>", "N/A",
    "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
];

/// The element type of a column's graph input.
pub(crate) fn input_type(t: &ColumnTransform) -> Option<DataType> {
    match t {
        ColumnTransform::Numeric => Some(DataType::Float),
        ColumnTransform::Boolean
        | ColumnTransform::Categorical { .. }
        | ColumnTransform::HighCardinality(_)
        | ColumnTransform::TfIdf { .. } => Some(DataType::String),
        ColumnTransform::Datetime { .. } => Some(DataType::Int64),
        ColumnTransform::Dropped { .. } => None,
    }
}

/// Declares the inputs and returns the feature columns (`float [N,1]` each) in matrix order.
pub(crate) fn featurize(g: &mut Graph, f: &Featurizer) -> Result<Vec<String>> {
    let mut features = Vec::new();
    for col in f.used_columns() {
        let Some(ty) = input_type(&col.transform) else { continue };
        g.inputs.push(value_info(&col.name, ty, &[None, Some(1)]));
        // A text input may be raw cell text: trimmed here as the CSV reader trims, so the
        // lookups below (which map the missing markers) see what `quarry predict` sees.
        let x = if ty == DataType::String { trim_spaces(g, &col.name) } else { col.name.clone() };
        let x = x.as_str();
        match &col.transform {
            ColumnTransform::Numeric => features.push(numeric(g, x)),
            ColumnTransform::Boolean => features.push(boolean(g, x)),
            ColumnTransform::Categorical { levels, has_other } => {
                features.push(categorical(g, x, levels, *has_other))
            }
            ColumnTransform::HighCardinality(enc) => features.extend(high_cardinality(g, x, enc)),
            ColumnTransform::Datetime { with_time } => features.extend(datetime(g, x, *with_time)),
            ColumnTransform::TfIdf { terms, idf, .. } if !terms.is_empty() => {
                features.extend(tfidf(g, x, terms, idf))
            }
            ColumnTransform::TfIdf { .. } => {
                return Err(unsupported(
                    col,
                    "hashed TF-IDF text features (bundles saved before vocabularies)",
                ));
            }
            ColumnTransform::Dropped { .. } => {}
        }
    }
    Ok(features)
}

/// `x` (`string [N,1]`) without leading and trailing spaces, as `StrColumn::push` trims a cell.
///
/// `StringSplit` with no delimiter and `maxsplit` 0 returns, per element, the one substring
/// from the first to the last non-space character (internal spaces kept), or none for an
/// empty or all-space text; one "" appended on the last axis stands in for that none.
/// Only U+0020 is trimmed: other whitespace at a cell's edge (a tab, a no-break space) reaches
/// the lookups as it is, so a caller should send such cells trimmed.
fn trim_spaces(g: &mut Graph, x: &str) -> String {
    let (parts, _) = g.op2("StringSplit", &[x], vec![attr("maxsplit", Attr::Int(0))]);
    let axis = g.i64s(&[2], &[1]);
    let x3 = g.op("Unsqueeze", &[x, &axis], vec![]);
    let zero = g.i64s(&[0], &[]);
    let never = g.cast(&zero, DataType::Bool);
    let empty = g.constant("empty", super::builder::tensor_str(&[String::new()], &[]));
    let blanks = g.op("Where", &[&never, &x3, &empty], vec![]);
    let padded = g.op("Concat", &[&parts, &blanks], vec![attr("axis", Attr::Int(2))]);
    g.op("Gather", &[&padded, &zero], vec![attr("axis", Attr::Int(2))])
}

fn unsupported(col: &FittedColumn, what: &str) -> TrainError {
    TrainError::Export(format!("column {:?}: {what} have no ONNX export yet", col.name))
}

/// Infinities become the largest finite `f32`, as `featurize` does; NaN stays missing.
fn numeric(g: &mut Graph, x: &str) -> String {
    let big = g.f32s(&[f32::MAX], &[]);
    let small = g.f32s(&[f32::MIN], &[]);
    let pos = g.op("IsInf", &[x], vec![attr("detect_negative", Attr::Int(0))]);
    let neg = g.op("IsInf", &[x], vec![attr("detect_positive", Attr::Int(0))]);
    let a = g.op("Where", &[&pos, &big, x], vec![]);
    g.op("Where", &[&neg, &small, &a], vec![])
}

/// A string → float lookup (`ai.onnx.ml` LabelEncoder); missing markers map to NaN.
/// Target/frequency encodings are the same lookup with other values and default.
pub(crate) fn lookup(g: &mut Graph, x: &str, pairs: &[(String, f32)], default: f32) -> String {
    let mut keys: Vec<String> = pairs.iter().map(|(k, _)| k.clone()).collect();
    let mut values: Vec<f32> = pairs.iter().map(|(_, v)| *v).collect();
    for m in MISSING_MARKERS {
        if !keys.iter().any(|k| k == m) {
            keys.push(m.to_string());
            values.push(f32::NAN);
        }
    }
    g.ml(
        "LabelEncoder",
        &[x],
        vec![
            attr("keys_strings", Attr::Strs(keys)),
            attr("values_floats", Attr::Floats(values)),
            attr("default_float", Attr::Float(default)),
        ],
    )
}

fn boolean(g: &mut Graph, x: &str) -> String {
    let pairs: Vec<(String, f32)> = [("true", 1.0), ("True", 1.0), ("TRUE", 1.0), ("1", 1.0)]
        .into_iter()
        .chain([("false", 0.0), ("False", 0.0), ("FALSE", 0.0), ("0", 0.0)])
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    lookup(g, x, &pairs, f32::NAN)
}

/// Level → code; anything else is "other" (or missing when the column has no "other").
fn categorical(g: &mut Graph, x: &str, levels: &[String], has_other: bool) -> String {
    let pairs: Vec<(String, f32)> = levels.iter().enumerate().map(|(k, l)| (l.clone(), k as f32)).collect();
    let other = if has_other { levels.len() as f32 } else { f32::NAN };
    lookup(g, x, &pairs, other)
}

/// Codes for the most frequent levels (when any keep one), then frequency, then one target
/// mean per output: the same lookups, in the same order, as `LevelEncoding::features`.
fn high_cardinality(g: &mut Graph, x: &str, enc: &LevelEncoding) -> Vec<String> {
    let mut out = Vec::new();
    if enc.n_codes > 0 {
        let pairs: Vec<(String, f32)> =
            enc.levels.iter().take(enc.n_codes).enumerate().map(|(k, l)| (l.clone(), k as f32)).collect();
        out.push(lookup(g, x, &pairs, enc.n_codes as f32));
    }
    let table = |values: &[f32]| -> Vec<(String, f32)> {
        enc.levels.iter().cloned().zip(values.iter().copied()).collect()
    };
    out.push(lookup(g, x, &table(&enc.frequency), 0.0));
    for (values, &prior) in enc.target.iter().zip(&enc.prior) {
        out.push(lookup(g, x, &table(values), prior));
    }
    out
}

/// TF-IDF over the fitted vocabulary, computed as `featurize::text::transform_vocabulary`:
/// missing markers become "", `StringNormalizer` lowercases (C.UTF-8: `towlower`, the simple
/// case mapping quarry uses), `StringSplit` splits on spaces, `TfIdfVectorizer` counts the
/// words and word pairs, then `f32` × idf, the squared norm in `f64`, `f32` × inverse norm.
fn tfidf(g: &mut Graph, x: &str, terms: &[String], idf: &[f32]) -> Vec<String> {
    let keys: Vec<String> = MISSING_MARKERS.iter().map(|m| m.to_string()).collect();
    let is_missing = g.ml(
        "LabelEncoder",
        &[x],
        vec![
            attr("keys_strings", Attr::Strs(keys.clone())),
            attr("values_int64s", Attr::Ints(vec![1; keys.len()])),
            attr("default_int64", Attr::Int(0)),
        ],
    );
    let is_missing = g.cast(&is_missing, DataType::Bool);
    let empty = g.constant("empty", super::builder::tensor_str(&[String::new()], &[]));
    let text = g.op("Where", &[&is_missing, &empty, x], vec![]);
    let flat_shape = g.i64s(&[-1], &[1]);
    let flat = g.op("Reshape", &[&text, &flat_shape], vec![]);
    let lower = g.op(
        "StringNormalizer",
        &[&flat],
        vec![
            attr("case_change_action", Attr::Str("LOWER".into())),
            attr("locale", Attr::Str("C.UTF-8".into())),
        ],
    );
    let (tokens, _) = g.op2("StringSplit", &[&lower], vec![]);
    let n_words = terms.iter().filter(|t| !quarry_featurize::text::is_pair(t)).count();
    let pool: Vec<String> = terms.iter().flat_map(|t| t.split(' ').map(str::to_string)).collect();
    let counts = g.op(
        "TfIdfVectorizer",
        &[&tokens],
        vec![
            attr("mode", Attr::Str("TF".into())),
            attr("min_gram_length", Attr::Int(1)),
            attr("max_gram_length", Attr::Int(2)),
            attr("max_skip_count", Attr::Int(0)),
            attr("ngram_counts", Attr::Ints(vec![0, n_words as i64])),
            attr("ngram_indexes", Attr::Ints((0..terms.len() as i64).collect())),
            attr("pool_strings", Attr::Strs(pool)),
        ],
    );
    let idf_c = g.f32s(idf, &[1, idf.len() as i64]);
    let v = g.op("Mul", &[&counts, &idf_c], vec![]);
    let vd = g.cast(&v, DataType::Double);
    let sq = g.op("Mul", &[&vd, &vd], vec![]);
    let axes = g.i64s(&[1], &[1]);
    let norm2 = g.op("ReduceSum", &[&sq, &axes], vec![attr("keepdims", Attr::Int(1))]);
    let norm = g.op("Sqrt", &[&norm2], vec![]);
    let inv = g.op("Reciprocal", &[&norm], vec![]);
    let inv = g.cast(&inv, DataType::Float);
    let zero_d = g.f64s(&[0.0], &[]);
    let zero_f = g.f32s(&[0.0], &[]);
    let present = g.op("Greater", &[&norm2, &zero_d], vec![]);
    let inv = g.op("Where", &[&present, &inv, &zero_f], vec![]);
    let out = g.op("Mul", &[&v, &inv], vec![]);
    if terms.len() == 1 {
        return vec![out];
    }
    let sizes = g.i64s(&vec![1; terms.len()], &[terms.len() as i64]);
    g.op_n("Split", &[&out, &sizes], terms.len(), vec![attr("axis", Attr::Int(1))])
}

/// Calendar parts of Unix seconds with Hinnant's integer civil-from-days algorithm, as
/// `featurize::datetime::civil_from_unix`. ONNX integer `Div` truncates and `Mod` (fmod=0)
/// floors, so floor division is `(a - a mod b) / b`.
fn datetime(g: &mut Graph, x: &str, with_time: bool) -> Vec<String> {
    let missing_v = g.i64s(&[i64::MIN], &[]);
    let zero = g.i64s(&[0], &[]);
    let missing = g.op("Equal", &[x, &missing_v], vec![]);
    let secs = g.op("Where", &[&missing, &zero, x], vec![]);
    let int = |g: &mut Graph, v: i64| g.i64s(&[v], &[]);
    let floor_div = |g: &mut Graph, a: &str, b: i64| {
        let bc = g.i64s(&[b], &[]);
        let m = g.op("Mod", &[a, &bc], vec![]);
        let d = g.op("Sub", &[a, &m], vec![]);
        (g.op("Div", &[&d, &bc], vec![]), m)
    };
    let (days, tod) = floor_div(g, &secs, 86_400);
    let c = int(g, 719_468);
    let z = g.op("Add", &[&days, &c], vec![]);
    let (era, doe) = floor_div(g, &z, 146_097);
    // yoe = (doe - doe/1460 + doe/36524 - doe/146096) / 365, all non-negative.
    let div = |g: &mut Graph, a: &str, b: i64| {
        let bc = g.i64s(&[b], &[]);
        g.op("Div", &[a, &bc], vec![])
    };
    let mul = |g: &mut Graph, a: &str, b: i64| {
        let bc = g.i64s(&[b], &[]);
        g.op("Mul", &[a, &bc], vec![])
    };
    let add = |g: &mut Graph, a: &str, b: &str| g.op("Add", &[a, b], vec![]);
    let sub = |g: &mut Graph, a: &str, b: &str| g.op("Sub", &[a, b], vec![]);
    let d1460 = div(g, &doe, 1460);
    let d36524 = div(g, &doe, 36_524);
    let d146096 = div(g, &doe, 146_096);
    let t = sub(g, &doe, &d1460);
    let t = add(g, &t, &d36524);
    let t = sub(g, &t, &d146096);
    let yoe = div(g, &t, 365);
    // doy_mar = doe - (365 * yoe + yoe / 4 - yoe / 100)
    let y365 = mul(g, &yoe, 365);
    let y4 = div(g, &yoe, 4);
    let y100 = div(g, &yoe, 100);
    let t = add(g, &y365, &y4);
    let t = sub(g, &t, &y100);
    let doy_mar = sub(g, &doe, &t);
    // mp = (5 * doy_mar + 2) / 153; day = doy_mar - (153 * mp + 2) / 5 + 1
    let two = int(g, 2);
    let one = int(g, 1);
    let t = mul(g, &doy_mar, 5);
    let t = add(g, &t, &two);
    let mp = div(g, &t, 153);
    let t = mul(g, &mp, 153);
    let t = add(g, &t, &two);
    let t = div(g, &t, 5);
    let t = sub(g, &doy_mar, &t);
    let day = add(g, &t, &one);
    // month = mp < 10 ? mp + 3 : mp - 9
    let ten = int(g, 10);
    let lt10 = g.op("Less", &[&mp, &ten], vec![]);
    let three = int(g, 3);
    let nine = int(g, 9);
    let m_a = add(g, &mp, &three);
    let m_b = sub(g, &mp, &nine);
    let month = g.op("Where", &[&lt10, &m_a, &m_b], vec![]);
    // year = yoe + era * 400 + (month <= 2)
    let e400 = mul(g, &era, 400);
    let t = add(g, &yoe, &e400);
    let le2 = g.op("LessOrEqual", &[&month, &two], vec![]);
    let le2 = g.cast(&le2, DataType::Int64);
    let year = add(g, &t, &le2);
    // weekday = (days + 3) mod 7 (floored)
    let t = add(g, &days, &three);
    let seven = int(g, 7);
    let weekday = g.op("Mod", &[&t, &seven], vec![]);
    // day_of_year = days - days_from_civil(year, 1, 1) + 1, where (Jan: m <= 2 so y - 1, mp = 10)
    // days_from_civil(y, 1, 1) = era' * 146097 + doe' - 719468 with y' = year - 1.
    let yp = sub(g, &year, &one);
    let (era2, yoe2) = floor_div(g, &yp, 400);
    let doy_jan1 = int(g, 306); // (153 * 10 + 2) / 5 + 1 - 1
    let t = mul(g, &yoe2, 365);
    let y4 = div(g, &yoe2, 4);
    let y100 = div(g, &yoe2, 100);
    let t = add(g, &t, &y4);
    let t = sub(g, &t, &y100);
    let doe2 = add(g, &t, &doy_jan1);
    let e = mul(g, &era2, 146_097);
    let t = add(g, &e, &doe2);
    let c = int(g, 719_468);
    let jan1 = sub(g, &t, &c);
    let t = sub(g, &days, &jan1);
    let day_of_year = add(g, &t, &one);

    let nan = g.f32s(&[f32::NAN], &[]);
    let as_f32 = |g: &mut Graph, v: &str| {
        let f = g.cast(v, DataType::Float);
        g.op("Where", &[&missing, &nan, &f], vec![])
    };
    let mut out = Vec::new();
    for part in [&year, &month, &day, &weekday, &day_of_year] {
        out.push(as_f32(g, part));
    }
    // elapsed_days = (s as f64 / 86400.0) as f32
    let sd = g.cast(&secs, DataType::Double);
    let c = g.f64s(&[86_400.0], &[]);
    let t = g.op("Div", &[&sd, &c], vec![]);
    let t = g.cast(&t, DataType::Float);
    out.push(g.op("Where", &[&missing, &nan, &t], vec![]));
    if with_time {
        // hour + minute / 60, in f32
        let h = div(g, &tod, 3600);
        let m = g.i64s(&[3600], &[]);
        let rem = g.op("Mod", &[&tod, &m], vec![]);
        let minute = div(g, &rem, 60);
        let hf = g.cast(&h, DataType::Float);
        let mf = g.cast(&minute, DataType::Float);
        let sixty = g.f32s(&[60.0], &[]);
        let t = g.op("Div", &[&mf, &sixty], vec![]);
        let t = g.op("Add", &[&hf, &t], vec![]);
        out.push(g.op("Where", &[&missing, &nan, &t], vec![]));
    }
    out
}
