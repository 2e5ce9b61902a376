//! ONNX export of a global forecast model's one-step prediction. The recursive loop (each
//! prediction becoming the next step's lag) and the feature building stay with the caller:
//! the graph takes one row of lag / window / covariate / calendar features per series, in
//! model units (the series' values divided by its scale, logged for `log` models, features
//! relative to the anchor `level`), and returns the next value in the target's units.

use prost::Message;

use super::builder::{Graph, value_info};
use super::pb::tensor_proto::DataType;
use super::{IR_VERSION, ML_OPSET, OPSET, builder, pb, trees};
use crate::error::Result;
use crate::forecast::global::OneStep;
use crate::forecast::{GlobalModel, Transform};
use quarry_featurize::Task;

/// Inputs: `features` (`float [N,F]`, columns as `GlobalModel::feature_names`; NaN = missing)
/// and `scale` (`double [N,1]`, each row's series scale). Output: `variable` (`double [N,1]`),
/// the next value. `metadata` goes into `metadata_props` as given.
pub fn export_global_forecast(model: &GlobalModel, metadata: &[(String, String)]) -> Result<Vec<u8>> {
    let width = model.feature_names().len() as i64;
    let mut g = Graph::default();
    g.inputs.push(value_info("features", DataType::Float, &[None, Some(width)]));
    g.inputs.push(value_info("scale", DataType::Double, &[None, Some(1)]));
    let x = g.cast("features", DataType::Double);
    let pred = match model.one_step() {
        OneStep::Ridge { means, stds, coef, intercept } => {
            let m = g.f64s(means, &[1, width]);
            let s = g.f64s(stds, &[1, width]);
            let centred = g.op("Sub", &[&x, &m], vec![]);
            let z = g.op("Div", &[&centred, &s], vec![]);
            // A missing feature contributes nothing (it is imputed by its mean).
            let nan = g.op("IsNaN", &[&z], vec![]);
            let zero = g.f64s(&[0.0], &[]);
            let z = g.op("Where", &[&nan, &zero, &z], vec![]);
            let c = g.f64s(coef, &[width, 1]);
            let dot = g.op("MatMul", &[&z, &c], vec![]);
            let b = g.f64s(&[intercept], &[]);
            g.op("Add", &[&dot, &b], vec![])
        }
        OneStep::Trees(t) => trees::export(&mut g, t, Task::Regression, &x),
    };
    // The prediction is relative to the anchor, feature 0 (`level`).
    let starts = g.i64s(&[0], &[1]);
    let ends = g.i64s(&[1], &[1]);
    let axes = g.i64s(&[1], &[1]);
    let level = g.op("Slice", &[&x, &starts, &ends, &axes], vec![]);
    let z = g.op("Add", &[&level, &pred], vec![]);
    let y = match model.transform() {
        Transform::Identity => z,
        Transform::Log => {
            let lo = g.f64s(&[-50.0], &[]);
            let hi = g.f64s(&[50.0], &[]);
            let clipped = g.op("Clip", &[&z, &lo, &hi], vec![]);
            g.op("Exp", &[&clipped], vec![])
        }
    };
    g.node_named("", "Mul", &[&y, "scale"], "variable", vec![]);
    g.outputs.push(value_info("variable", DataType::Double, &[None, Some(1)]));
    let model = pb::ModelProto {
        ir_version: Some(IR_VERSION),
        opset_import: vec![
            pb::OperatorSetIdProto { domain: Some(String::new()), version: Some(OPSET) },
            pb::OperatorSetIdProto { domain: Some(builder::ML.to_string()), version: Some(ML_OPSET) },
        ],
        producer_name: Some("quarry".to_string()),
        producer_version: Some(env!("CARGO_PKG_VERSION").to_string()),
        doc_string: Some("quarry one-step global forecast model (features in, next value out)".into()),
        graph: Some(g.finish("quarry_forecast_one_step")),
        metadata_props: metadata
            .iter()
            .map(|(k, v)| pb::StringStringEntryProto { key: Some(k.clone()), value: Some(v.clone()) })
            .collect(),
        ..Default::default()
    };
    Ok(model.encode_to_vec())
}
