//! What surrounds the layers: the graph's input (raw samples, a symbolic batch dimension), the normalisation in
//! front of the model, and the head behind it (the probabilities `Head::probabilities` computes).

use super::graph::{self, Graph, Name};
use super::layers::Value;
use super::proto::{tensor_shape_proto, type_proto, TensorShapeProto, TypeProto, ValueInfoProto, FLOAT};
use crate::data::Normalization;
use crate::predict::Head;

/// The symbolic batch dimension of every graph input and output.
pub const BATCH: &str = "batch";
pub const INPUT: &str = "input";
pub const LOGITS: &str = "logits";
pub const PROBABILITIES: &str = "probabilities";

/// A float tensor `[batch, ...per_sample]` named `name`.
pub fn value_info(name: &str, per_sample: &[i64]) -> ValueInfoProto {
    use tensor_shape_proto::dimension::Value as Dim;
    let dim = |value| tensor_shape_proto::Dimension { value: Some(value), denotation: String::new() };
    let mut dims = vec![dim(Dim::DimParam(BATCH.into()))];
    dims.extend(per_sample.iter().map(|&d| dim(Dim::DimValue(d))));
    let tensor = type_proto::Tensor { elem_type: FLOAT, shape: Some(TensorShapeProto { dim: dims }) };
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto { value: Some(type_proto::Value::TensorType(tensor)), denotation: String::new() }),
        doc_string: String::new(),
    }
}

/// `(x - mean) / std` with the statistics as `[1, ...shape]` initializers, as `data::Standardizer::apply` does.
pub fn normalize(g: &mut Graph, x: Value, normalization: Option<&Normalization>) -> Value {
    let Some(n) = normalization else { return x };
    let mut dims = vec![1];
    dims.extend(&n.shape);
    let mean = g.floats("normalization.mean", &dims, &n.mean);
    let std = g.floats("normalization.std", &dims, &n.std);
    let centred = g.node("Sub", &[&x.name, &mean], vec![], "normalization.Sub");
    let name = g.node("Div", &[&centred, &std], vec![], "normalization.Div");
    Value { name, shape: x.shape }
}

/// The head's probabilities `[batch, classes]` from the logits; `None` for regression.
pub fn probabilities(g: &mut Graph, logits: &Value, head: Head) -> Option<Value> {
    let width = logits.shape.last().copied().unwrap_or(1);
    let (name, classes) = match head {
        Head::Values => return None,
        Head::Softmax => (g.node("Softmax", &[&logits.name], vec![graph::int("axis", -1)], PROBABILITIES), width),
        Head::Sigmoid => (g.node("Sigmoid", &[&logits.name], vec![], PROBABILITIES), width),
        Head::BinaryLogit => (binary(g, &logits.name), 2),
    };
    Some(Value { name, shape: vec![classes] })
}

/// One logit for two classes: `[1 - p, p]` with `p = sigmoid(logit)`.
fn binary(g: &mut Graph, logit: &str) -> Name {
    let p = g.node("Sigmoid", &[logit], vec![], "head.Sigmoid");
    let one = g.floats("head.one", &[], &[1.0]);
    let q = g.node("Sub", &[&one, &p], vec![], "head.Sub");
    g.node("Concat", &[&q, &p], vec![graph::int("axis", 1)], PROBABILITIES)
}

/// The head's name in the metadata.
pub fn head_name(head: Head) -> &'static str {
    match head {
        Head::Softmax => "softmax",
        Head::Sigmoid => "sigmoid",
        Head::BinaryLogit => "binary_logit",
        Head::Values => "values",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_broadcasts_over_the_batch_and_a_binary_logit_gives_two_classes() {
        let mut g = Graph::default();
        let input = Value { name: g.fresh(INPUT), shape: vec![3, 4, 4] };
        let n = Normalization { shape: vec![3, 1, 1], mean: vec![0.1, 0.2, 0.3], std: vec![1.0, 2.0, 3.0] };
        let x = normalize(&mut g, input, Some(&n));
        assert_eq!(g.initializers[0].dims, [1, 3, 1, 1]);
        assert_eq!(x.shape, [3, 4, 4]);
        let logits = Value { name: g.rename_last(&x.name, LOGITS), shape: vec![1] };
        let p = probabilities(&mut g, &logits, Head::BinaryLogit).unwrap();
        assert_eq!((p.name.as_str(), p.shape.as_slice()), (PROBABILITIES, &[2][..]));
        let ops: Vec<&str> = g.nodes.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(ops, ["Sub", "Div", "Sigmoid", "Sub", "Concat"]);
        assert_eq!(g.nodes[1].output, [LOGITS]);
        assert!(probabilities(&mut g, &logits, Head::Values).is_none());
    }

    #[test]
    fn inputs_and_outputs_have_a_symbolic_batch() {
        use tensor_shape_proto::dimension::Value as Dim;
        let info = value_info(LOGITS, &[10]);
        let Some(TypeProto { value: Some(type_proto::Value::TensorType(t)), .. }) = info.r#type else { panic!("{info:?}") };
        let dims: Vec<Dim> = t.shape.unwrap().dim.into_iter().filter_map(|d| d.value).collect();
        assert_eq!(dims, [Dim::DimParam(BATCH.into()), Dim::DimValue(10)]);
        assert_eq!(t.elem_type, FLOAT);
    }
}
