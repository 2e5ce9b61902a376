//! ONNX export of a whole [`Pipeline`]: the featurizer, every member model and the ensemble's
//! weighted sum in one graph, runnable by any ONNX runtime.
//!
//! Inputs are the raw columns (numeric `float [N,1]`, categorical/boolean/text `string [N,1]`,
//! datetime `int64 [N,1]` Unix seconds); missing is NaN, the empty string (or any of quarry's
//! missing markers) and `INT64_MIN`. Outputs: `label` (`string [N]`) and `probabilities`
//! (`double [N,C]`, columns in class order) for classification, `variable` (`double [N,1]`) for
//! regression. Models compute in double precision, as quarry does, so onnxruntime agrees with
//! `quarry predict` to ~1e-12 rather than to float precision.

mod builder;
mod featurizer;
mod forecast;
mod knn;
mod linear;
mod mlp;
mod naive_bayes;
mod svm;
mod trees;

/// The ONNX protobuf types, generated from the vendored `proto/onnx-ml.proto` (onnx 1.23.2).
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

use prost::Message;
use quarry_featurize::{ColumnTransform, Task};
use serde_json::json;

use crate::error::{Result, TrainError};
use crate::family::FittedModel;
use crate::pipeline::Pipeline;
use builder::{Attr, Graph, attr, tensor_str, value_info};
pub use forecast::export_global_forecast;
use pb::tensor_proto::DataType;

/// IR version 10 (onnx 1.16+) with ai.onnx opset 21 and ai.onnx.ml opset 5 (`TreeEnsemble`).
const IR_VERSION: i64 = 10;
const OPSET: i64 = 21;
const ML_OPSET: i64 = 5;

/// Why a pipeline cannot be exported, if it cannot (checked before building anything).
pub fn unsupported_reason(p: &Pipeline) -> Option<String> {
    for c in p.featurizer.used_columns() {
        if let ColumnTransform::TfIdf { terms, .. } = &c.transform
            && terms.is_empty()
        {
            return Some(format!(
                "column {:?} is hashed TF-IDF text (a bundle saved before text vocabularies), which has no ONNX export",
                c.name
            ));
        }
    }
    None
}

/// The serialized ONNX model. `dataset_hash` (the training file's content hash) goes into the
/// metadata when known.
pub fn export(p: &Pipeline, dataset_hash: Option<&str>) -> Result<Vec<u8>> {
    if let Some(reason) = unsupported_reason(p) {
        return Err(TrainError::Export(reason));
    }
    if p.members.is_empty() {
        return Err(TrainError::Export("pipeline has no models".into()));
    }
    let mut g = Graph::default();
    let features = featurizer::featurize(&mut g, &p.featurizer)?;
    let refs: Vec<&str> = features.iter().map(String::as_str).collect();
    let x = g.op("Concat", &refs, vec![attr("axis", Attr::Int(1))]);
    let x = g.cast(&x, DataType::Double);
    let total: f64 = p.members.iter().map(|m| m.weight).sum();
    let mut parts = Vec::new();
    for m in &p.members {
        let out = match &m.model {
            FittedModel::Trees(t) => trees::export(&mut g, t, p.task, &x),
            FittedModel::Linear(l) => linear::export(&mut g, l, &features),
            FittedModel::NaiveBayes(nb) => naive_bayes::export(&mut g, nb, &features),
            FittedModel::Knn(k) => knn::export(&mut g, k, &features),
            FittedModel::Mlp(m) => mlp::export(&mut g, m, &features),
            FittedModel::Svm(m) => svm::export(&mut g, m, &features),
        };
        let w = g.f64s(&[m.weight / total], &[]);
        parts.push(g.op("Mul", &[&out, &w], vec![]));
    }
    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    let combined = if refs.len() == 1 { parts[0].clone() } else { g.op("Sum", &refs, vec![]) };
    if p.task == Task::Regression {
        g.node_named("", "Identity", &[&combined], "variable", vec![]);
        g.outputs.push(value_info("variable", DataType::Double, &[None, Some(1)]));
    } else {
        let c = p.target.classes.len() as i64;
        g.node_named("", "Identity", &[&combined], "probabilities", vec![]);
        g.outputs.push(value_info("probabilities", DataType::Double, &[None, Some(c)]));
        // First maximum on ties, as `Predictions::class_codes`.
        let code =
            g.op("ArgMax", &[&combined], vec![attr("axis", Attr::Int(1)), attr("keepdims", Attr::Int(0))]);
        let classes = g.constant("classes", tensor_str(&p.target.classes, &[c]));
        g.node_named("", "Gather", &[&classes, &code], "label", vec![attr("axis", Attr::Int(0))]);
        g.outputs.push(value_info("label", DataType::String, &[None]));
    }
    let model = pb::ModelProto {
        ir_version: Some(IR_VERSION),
        opset_import: vec![
            pb::OperatorSetIdProto { domain: Some(String::new()), version: Some(OPSET) },
            pb::OperatorSetIdProto { domain: Some(builder::ML.to_string()), version: Some(ML_OPSET) },
        ],
        producer_name: Some("quarry".to_string()),
        producer_version: Some(p.quarry_version.clone()),
        doc_string: Some(format!("quarry {} pipeline predicting {:?}", p.task, p.target.name)),
        graph: Some(g.finish("quarry_pipeline")),
        metadata_props: metadata(p, dataset_hash),
        ..Default::default()
    };
    Ok(model.encode_to_vec())
}

fn metadata(p: &Pipeline, dataset_hash: Option<&str>) -> Vec<pb::StringStringEntryProto> {
    let columns: Vec<serde_json::Value> = p
        .featurizer
        .columns
        .iter()
        .map(|c| {
            let input = featurizer::input_type(&c.transform).map(|t| match t {
                DataType::Float => "float",
                DataType::Int64 => "int64",
                _ => "string",
            });
            json!({"name": c.name, "kind": c.kind, "transform": transform_name(&c.transform), "input": input})
        })
        .collect();
    let members: Vec<serde_json::Value> =
        p.members.iter().map(|m| json!({"family": m.family, "weight": m.weight})).collect();
    let mut props = vec![
        ("quarry_version", p.quarry_version.clone()),
        ("task", p.task.to_string()),
        ("metric", p.metric.to_string()),
        ("target", p.target.name.clone()),
        ("classes", json!(p.target.classes).to_string()),
        ("columns", json!(columns).to_string()),
        ("members", json!(members).to_string()),
    ];
    if let Some(h) = dataset_hash {
        props.push(("dataset_hash", h.to_string()));
    }
    props
        .into_iter()
        .map(|(k, v)| pb::StringStringEntryProto { key: Some(k.to_string()), value: Some(v) })
        .collect()
}

fn transform_name(t: &ColumnTransform) -> &'static str {
    match t {
        ColumnTransform::Numeric => "numeric",
        ColumnTransform::Boolean => "boolean",
        ColumnTransform::Categorical { .. } => "categorical",
        ColumnTransform::HighCardinality(_) => "high_cardinality",
        ColumnTransform::Datetime { .. } => "datetime",
        ColumnTransform::TfIdf { .. } => "tfidf",
        ColumnTransform::Dropped { .. } => "dropped",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::family::{Family, check_params, fit};
    use crate::params::ParamMap;
    use crate::pipeline::Member;
    use quarry_featurize::{Featurizer, Metric, RawColumn, RawValues, StrColumn, Table, TargetEncoder};

    fn table() -> Table {
        let col = |name: &str, f: &dyn Fn(usize) -> String| {
            let mut c = StrColumn::new();
            for i in 0..60 {
                c.push(Some(&f(i)));
            }
            RawColumn { name: name.to_string(), values: RawValues::Text(c) }
        };
        Table {
            n_rows: 60,
            columns: vec![
                col("x", &|i| format!("{}", i as f64 * 0.5)),
                col("c", &|i| ["red", "green", "blue"][i % 3].to_string()),
                col("when", &|i| format!("2020-01-{:02}", i % 28 + 1)),
                col("y", &|i| ["no", "yes"][usize::from(i % 3 == 0 || i > 40)].to_string()),
            ],
        }
    }

    fn pipeline(family: Family) -> Pipeline {
        let t = table();
        let f = Featurizer::fit(&t, &["y"]).unwrap();
        let enc = TargetEncoder::fit(&t, "y", None).unwrap();
        let (y, _) = enc.encode(&t).unwrap();
        let x = f.transform(&t).unwrap();
        let spec = check_params(family, &ParamMap::new()).unwrap();
        let model = fit(&spec, &x, &y, enc.task, None, 1, &mut |_, _| true).unwrap();
        let member = Member { weight: 1.0, family, params: ParamMap::new(), model };
        Pipeline::new(enc.task, Metric::LogLoss, f, enc, vec![member])
    }

    #[test]
    fn exported_graph_has_one_typed_input_per_column_and_the_outputs() {
        let bytes = export(&pipeline(Family::Gbdt), Some("abc")).unwrap();
        let m = pb::ModelProto::decode(bytes.as_slice()).unwrap();
        let g = m.graph.unwrap();
        let inputs: Vec<(String, i32)> = g
            .input
            .iter()
            .map(|v| {
                let Some(pb::type_proto::Value::TensorType(t)) = v.r#type.as_ref().unwrap().value.as_ref()
                else {
                    panic!()
                };
                (v.name.clone().unwrap(), t.elem_type.unwrap())
            })
            .collect();
        let want = [("x", DataType::Float), ("c", DataType::String), ("when", DataType::Int64)];
        assert_eq!(inputs, want.map(|(n, t)| (n.to_string(), t as i32)));
        let outputs: Vec<String> = g.output.iter().map(|o| o.name.clone().unwrap()).collect();
        assert_eq!(outputs, ["probabilities", "label"]);
        assert!(g.node.iter().any(|n| n.op_type.as_deref() == Some("TreeEnsemble")));
        let meta: Vec<(String, String)> =
            m.metadata_props.into_iter().map(|p| (p.key.unwrap(), p.value.unwrap())).collect();
        assert!(meta.contains(&("classes".to_string(), "[\"no\",\"yes\"]".to_string())));
        assert!(meta.contains(&("dataset_hash".to_string(), "abc".to_string())));
    }

    #[test]
    fn text_columns_export_as_string_ops_over_the_vocabulary() {
        let mut t = table();
        let mut c = StrColumn::new();
        for i in 0..60 {
            c.push(Some(&format!("Review number {i} says {} things", ["good", "bad"][i % 2])));
        }
        t.columns.insert(0, RawColumn { name: "review".into(), values: RawValues::Text(c) });
        let f = Featurizer::fit(&t, &["y"]).unwrap();
        let ColumnTransform::TfIdf { terms, .. } = &f.columns[0].transform else { panic!() };
        let n_terms = terms.len();
        let mut p = pipeline(Family::Linear);
        let enc = TargetEncoder::fit(&t, "y", None).unwrap();
        let (y, _) = enc.encode(&t).unwrap();
        let x = f.transform(&t).unwrap();
        let spec = check_params(Family::Linear, &ParamMap::new()).unwrap();
        p.members[0].model = fit(&spec, &x, &y, enc.task, None, 1, &mut |_, _| true).unwrap();
        p.featurizer = f;
        assert_eq!(unsupported_reason(&p), None);
        let m = pb::ModelProto::decode(export(&p, None).unwrap().as_slice()).unwrap();
        let g = m.graph.unwrap();
        let ops: Vec<&str> = g.node.iter().filter_map(|n| n.op_type.as_deref()).collect();
        for op in ["StringNormalizer", "StringSplit", "TfIdfVectorizer", "Split"] {
            assert!(ops.contains(&op), "{op} missing from {ops:?}");
        }
        let split = g.node.iter().find(|n| n.op_type.as_deref() == Some("Split")).unwrap();
        assert_eq!(split.output.len(), n_terms);
    }

    #[test]
    fn hashed_text_columns_are_refused_with_a_reason() {
        let mut p = pipeline(Family::Knn);
        assert!(export(&p, None).is_ok());
        p.featurizer.columns[1].transform =
            ColumnTransform::TfIdf { terms: Vec::new(), buckets: vec![3], idf: vec![1.0] };
        assert!(unsupported_reason(&p).unwrap().contains("\"c\""));
        assert!(matches!(export(&p, None), Err(TrainError::Export(_))));
    }
}
