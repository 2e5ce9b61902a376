//! A small ONNX graph builder over the prost types: fresh tensor names, nodes, constants.

use super::pb::{
    AttributeProto, GraphProto, NodeProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
    attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto, type_proto,
};

pub(crate) const ML: &str = "ai.onnx.ml";

/// An attribute value; `Tensor` carries typed arrays such as `leaf_weights`.
pub(crate) enum Attr {
    Int(i64),
    Float(f32),
    Str(String),
    Ints(Vec<i64>),
    Floats(Vec<f32>),
    Strs(Vec<String>),
    Tensor(Box<TensorProto>),
}

pub(crate) fn attr(name: &str, value: Attr) -> AttributeProto {
    let mut a = AttributeProto { name: Some(name.to_string()), ..Default::default() };
    let kind = match value {
        Attr::Int(v) => {
            a.i = Some(v);
            AttributeType::Int
        }
        Attr::Float(v) => {
            a.f = Some(v);
            AttributeType::Float
        }
        Attr::Str(v) => {
            a.s = Some(v.into_bytes());
            AttributeType::String
        }
        Attr::Ints(v) => {
            a.ints = v;
            AttributeType::Ints
        }
        Attr::Floats(v) => {
            a.floats = v;
            AttributeType::Floats
        }
        Attr::Strs(v) => {
            a.strings = v.into_iter().map(String::into_bytes).collect();
            AttributeType::Strings
        }
        Attr::Tensor(t) => {
            a.t = Some(*t);
            AttributeType::Tensor
        }
    };
    a.r#type = Some(kind as i32);
    a
}

pub(crate) fn tensor_f64(values: &[f64], dims: &[i64]) -> TensorProto {
    TensorProto {
        dims: dims.to_vec(),
        data_type: Some(DataType::Double as i32),
        raw_data: Some(values.iter().flat_map(|v| v.to_le_bytes()).collect()),
        ..Default::default()
    }
}

pub(crate) fn tensor_f32(values: &[f32], dims: &[i64]) -> TensorProto {
    TensorProto {
        dims: dims.to_vec(),
        data_type: Some(DataType::Float as i32),
        raw_data: Some(values.iter().flat_map(|v| v.to_le_bytes()).collect()),
        ..Default::default()
    }
}

pub(crate) fn tensor_i64(values: &[i64], dims: &[i64]) -> TensorProto {
    TensorProto {
        dims: dims.to_vec(),
        data_type: Some(DataType::Int64 as i32),
        raw_data: Some(values.iter().flat_map(|v| v.to_le_bytes()).collect()),
        ..Default::default()
    }
}

pub(crate) fn tensor_u8(values: &[u8], dims: &[i64]) -> TensorProto {
    TensorProto {
        dims: dims.to_vec(),
        data_type: Some(DataType::Uint8 as i32),
        raw_data: Some(values.to_vec()),
        ..Default::default()
    }
}

pub(crate) fn tensor_str(values: &[String], dims: &[i64]) -> TensorProto {
    TensorProto {
        dims: dims.to_vec(),
        data_type: Some(DataType::String as i32),
        string_data: values.iter().map(|s| s.clone().into_bytes()).collect(),
        ..Default::default()
    }
}

/// `None` in `dims` is a symbolic batch dimension `N`.
pub(crate) fn value_info(name: &str, elem: DataType, dims: &[Option<i64>]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| tensor_shape_proto::Dimension {
            value: Some(match d {
                Some(v) => tensor_shape_proto::dimension::Value::DimValue(*v),
                None => tensor_shape_proto::dimension::Value::DimParam("N".to_string()),
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: Some(name.to_string()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(elem as i32),
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[derive(Default)]
pub(crate) struct Graph {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    pub(crate) inputs: Vec<ValueInfoProto>,
    pub(crate) outputs: Vec<ValueInfoProto>,
    next: usize,
}

impl Graph {
    /// A tensor name no other node uses (user column names are inputs, so ours carry a prefix
    /// no CSV header is likely to have, plus a counter that makes them unique anyway).
    pub(crate) fn fresh(&mut self, hint: &str) -> String {
        self.next += 1;
        format!("_q{}_{hint}", self.next)
    }

    /// Adds a node with one output and returns the output's name.
    pub(crate) fn op(&mut self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> String {
        self.op_in("", op, inputs, attrs)
    }

    pub(crate) fn ml(&mut self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> String {
        self.op_in(ML, op, inputs, attrs)
    }

    fn op_in(&mut self, domain: &str, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> String {
        let out = self.fresh(&op.to_lowercase());
        self.node_named(domain, op, inputs, &out, attrs);
        out
    }

    /// Adds a node with two outputs (`TopK`: values, indices).
    pub(crate) fn op2(
        &mut self,
        op: &str,
        inputs: &[&str],
        attribute: Vec<AttributeProto>,
    ) -> (String, String) {
        let a = self.fresh(&op.to_lowercase());
        let b = self.fresh(&op.to_lowercase());
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![a.clone(), b.clone()],
            name: Some(format!("n{}_{op}", self.nodes.len())),
            op_type: Some(op.to_string()),
            domain: Some(String::new()),
            attribute,
            ..Default::default()
        });
        (a, b)
    }

    /// Adds a node with `n` outputs (`Split`) and returns their names.
    pub(crate) fn op_n(
        &mut self,
        op: &str,
        inputs: &[&str],
        n: usize,
        attribute: Vec<AttributeProto>,
    ) -> Vec<String> {
        let outs: Vec<String> = (0..n).map(|_| self.fresh(&op.to_lowercase())).collect();
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outs.clone(),
            name: Some(format!("n{}_{op}", self.nodes.len())),
            op_type: Some(op.to_string()),
            domain: Some(String::new()),
            attribute,
            ..Default::default()
        });
        outs
    }

    /// Adds a node whose single output has a given name (graph outputs).
    pub(crate) fn node_named(
        &mut self,
        domain: &str,
        op: &str,
        inputs: &[&str],
        output: &str,
        attribute: Vec<AttributeProto>,
    ) {
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.to_string()],
            name: Some(format!("n{}_{op}", self.nodes.len())),
            op_type: Some(op.to_string()),
            domain: Some(domain.to_string()),
            attribute,
            ..Default::default()
        });
    }

    pub(crate) fn constant(&mut self, hint: &str, mut t: TensorProto) -> String {
        let name = self.fresh(hint);
        t.name = Some(name.clone());
        self.initializers.push(t);
        name
    }

    pub(crate) fn f64s(&mut self, values: &[f64], dims: &[i64]) -> String {
        self.constant("c", tensor_f64(values, dims))
    }

    pub(crate) fn f32s(&mut self, values: &[f32], dims: &[i64]) -> String {
        self.constant("c", tensor_f32(values, dims))
    }

    pub(crate) fn i64s(&mut self, values: &[i64], dims: &[i64]) -> String {
        self.constant("c", tensor_i64(values, dims))
    }

    /// `Cast` to an element type.
    pub(crate) fn cast(&mut self, x: &str, to: DataType) -> String {
        self.op("Cast", &[x], vec![attr("to", Attr::Int(to as i64))])
    }

    pub(crate) fn finish(self, name: &str) -> GraphProto {
        GraphProto {
            node: self.nodes,
            name: Some(name.to_string()),
            initializer: self.initializers,
            input: self.inputs,
            output: self.outputs,
            ..Default::default()
        }
    }
}
