//! A small ONNX graph builder: nodes in the order they are added (already topological, as each node's inputs exist
//! before it), initializers, and names that are unique across both, as ONNX requires of every value.

use super::proto::{AttributeProto, AttributeType, NodeProto, TensorProto, FLOAT, INT64};
use std::collections::HashSet;

#[derive(Default)]
pub struct Graph {
    pub nodes: Vec<NodeProto>,
    pub initializers: Vec<TensorProto>,
    taken: HashSet<String>,
}

/// A value's name in the graph.
pub type Name = String;

impl Graph {
    /// Reserves a name no value has yet: `hint`, else `hint_1`, `hint_2`, ...
    pub fn fresh(&mut self, hint: &str) -> Name {
        let mut name = hint.to_string();
        let mut n = 0;
        while self.taken.contains(&name) {
            n += 1;
            name = format!("{hint}_{n}");
        }
        self.taken.insert(name.clone());
        name
    }

    /// Adds a node `op_type(inputs)` with one output named after `hint`; returns the output's name.
    pub fn node(&mut self, op_type: &str, inputs: &[&str], attribute: Vec<AttributeProto>, hint: &str) -> Name {
        let output = self.fresh(hint);
        self.push(op_type, inputs, attribute, &output);
        output
    }

    /// An f32 initializer of shape `dims` (row-major `values`); a scalar has no dims.
    pub fn floats(&mut self, hint: &str, dims: &[i64], values: &[f32]) -> Name {
        let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializer(hint, dims, FLOAT, raw)
    }

    /// An i64 initializer of shape `[values.len()]` (a `Reshape` target, say).
    pub fn int64s(&mut self, hint: &str, values: &[i64]) -> Name {
        let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializer(hint, &[values.len() as i64], INT64, raw)
    }

    fn initializer(&mut self, hint: &str, dims: &[i64], data_type: i32, raw_data: Vec<u8>) -> Name {
        let name = self.fresh(hint);
        self.initializers.push(TensorProto { dims: dims.to_vec(), data_type, name: name.clone(), raw_data, ..Default::default() });
        name
    }

    /// Gives the value `from` the name `to` (a graph output's fixed name): the producing node's output is renamed
    /// when it is the last node's, which nothing else reads yet; otherwise an `Identity` node copies it.
    pub fn rename_last(&mut self, from: &str, to: &str) -> Name {
        let to = self.fresh(to);
        match self.nodes.last_mut().filter(|n| n.output == [from]) {
            Some(last) => {
                last.output = vec![to.clone()];
                last.name = to.clone();
            }
            None => self.push("Identity", &[from], vec![], &to),
        }
        to
    }

    /// Appends a node whose output (and node name) is `output`, a name already reserved.
    fn push(&mut self, op_type: &str, inputs: &[&str], attribute: Vec<AttributeProto>, output: &str) {
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.to_string()],
            name: output.to_string(),
            op_type: op_type.to_string(),
            attribute,
            ..Default::default()
        });
    }
}

/// An `int` attribute.
pub fn int(name: &str, i: i64) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: Some(AttributeType::Int as i32), i: Some(i), ..Default::default() }
}

/// An `ints` attribute.
pub fn ints(name: &str, ints: &[i64]) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: Some(AttributeType::Ints as i32), ints: ints.to_vec(), ..Default::default() }
}

/// A `float` attribute.
pub fn float(name: &str, f: f32) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: Some(AttributeType::Float as i32), f: Some(f), ..Default::default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_the_last_value_takes_the_output_name() {
        let mut g = Graph::default();
        let w = g.floats("w", &[2], &[1.0, 2.0]);
        let a = g.node("Relu", &["input"], vec![], "w");
        assert_eq!((w.as_str(), a.as_str()), ("w", "w_1"));
        assert_eq!(g.initializers[0].raw_data, [1.0f32.to_le_bytes(), 2.0f32.to_le_bytes()].concat());
        assert_eq!(g.rename_last(&a, "logits"), "logits");
        assert_eq!(g.nodes.len(), 1);
        assert_eq!(g.nodes[0].output, ["logits"]);
        // A value that is not the last node's output is copied.
        assert_eq!(g.rename_last("input", "copy"), "copy");
        assert_eq!(g.nodes[1].op_type, "Identity");
    }
}
