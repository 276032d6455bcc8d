//! The config's layers as ONNX nodes, one function per layer kind, each computing what `model::forward_layers`
//! computes in eval mode (the same stride, padding, epsilon and axis), with the layer's weights as initializers
//! named as PyTorch names them (`0.weight`, `4.body.0.bias`).

use super::graph::{self, Graph, Name};
use super::proto::AttributeProto;
use crate::config::LayerSpec;
use crate::model;
use anyhow::{anyhow, bail, Context, Result};
use std::collections::HashMap;
use tch::{Kind, Tensor};

/// Batch and layer norm's epsilon, as ONNX's f32 attribute.
const NORM_EPS: f32 = model::NORM_EPS as f32;

/// What the layers are lowered into, and where their weights come from.
pub struct Lowering<'a> {
    pub graph: &'a mut Graph,
    /// The predictor's weights by PyTorch name.
    pub weights: &'a HashMap<String, Tensor>,
}

/// A value of the graph and its per-sample shape (the batch dimension left out).
#[derive(Debug, Clone)]
pub struct Value {
    pub name: Name,
    pub shape: Vec<i64>,
}

/// A layer's place in the model: its PyTorch name prefix (`3.`, `4.body.0.`) and its config key for messages.
struct Site<'s> {
    spec: &'s LayerSpec,
    name: String,
    key: String,
}

impl Lowering<'_> {
    /// Lowers `specs` applied to `x`; `prefix` is the PyTorch name prefix (`""`, `"4.body."`), `at` the config key.
    pub fn layers(&mut self, specs: &[LayerSpec], x: Value, prefix: &str, at: &str) -> Result<Value> {
        let mut x = x;
        for (i, spec) in specs.iter().enumerate() {
            let site = Site { spec, name: format!("{prefix}{i}"), key: format!("{at}[{i}]") };
            let shape = model::output_shape(spec, &x.shape).map_err(|e| anyhow!("{}: {e}", site.key))?;
            let name = self.layer(&site, &x, &shape)?;
            x = Value { name, shape };
        }
        Ok(x)
    }

    /// One layer on `x`, whose output has the per-sample shape `out`; returns the output's name.
    fn layer(&mut self, site: &Site, x: &Value, out: &[i64]) -> Result<Name> {
        let hint = |op: &str| format!("{}.{op}", site.name);
        let g = &mut *self.graph;
        Ok(match site.spec {
            LayerSpec::Linear { bias, .. } => self.linear(site, x, *bias)?,
            LayerSpec::Conv2d { kernel, stride, padding, bias, .. } => {
                self.conv(site, x, Conv { kernel: *kernel, stride: *stride, padding: *padding, bias: *bias, dims: 2 })?
            }
            LayerSpec::Conv1d { kernel, stride, padding, bias, .. } => {
                self.conv(site, x, Conv { kernel: *kernel, stride: *stride, padding: *padding, bias: *bias, dims: 1 })?
            }
            LayerSpec::Maxpool2d { kernel, stride } => g.node("MaxPool", &[&x.name], pool_attrs(*kernel, *stride, 2), &hint("MaxPool")),
            LayerSpec::Maxpool1d { kernel, stride } => g.node("MaxPool", &[&x.name], pool_attrs(*kernel, *stride, 1), &hint("MaxPool")),
            LayerSpec::Avgpool2d { kernel, stride } => avg_pool(g, &x.name, pool_attrs(*kernel, *stride, 2), &hint("AveragePool")),
            LayerSpec::Avgpool1d { kernel, stride } => avg_pool(g, &x.name, pool_attrs(*kernel, *stride, 1), &hint("AveragePool")),
            LayerSpec::GlobalAvgpool => global_pool(g, x, "ReduceMean", &hint("ReduceMean")),
            LayerSpec::GlobalMaxpool => global_pool(g, x, "ReduceMax", &hint("ReduceMax")),
            // No padding reaches here: every layer that makes a padding mask (embedding) is refused above.
            LayerSpec::TemporalAvgpool => g.node("ReduceMean", &[&x.name], vec![graph::ints("axes", &[1]), graph::int("keepdims", 0)], &hint("ReduceMean")),
            LayerSpec::TemporalMaxpool => g.node("ReduceMax", &[&x.name], vec![graph::ints("axes", &[1]), graph::int("keepdims", 0)], &hint("ReduceMax")),
            LayerSpec::Embedding { .. }
            | LayerSpec::Lstm { .. }
            | LayerSpec::Gru { .. }
            | LayerSpec::PositionalEmbedding { .. }
            | LayerSpec::TransformerEncoder { .. } => {
                bail!("{} ({}): bz's ONNX export does not lower this layer; use --format torchscript", site.key, model::layer_kind(site.spec))
            }
            LayerSpec::Flatten => g.node("Flatten", &[&x.name], vec![graph::int("axis", 1)], &hint("Flatten")),
            LayerSpec::Reshape { .. } => reshape(g, &x.name, out, &hint("Reshape")),
            LayerSpec::Batchnorm => self.batchnorm(site, x)?,
            LayerSpec::Layernorm => self.layernorm(site, x)?,
            // Dropout is the identity at inference: no node at all.
            LayerSpec::Dropout { .. } => x.name.clone(),
            LayerSpec::Relu => g.node("Relu", &[&x.name], vec![], &hint("Relu")),
            LayerSpec::Gelu => gelu(g, &x.name, &site.name),
            LayerSpec::Tanh => g.node("Tanh", &[&x.name], vec![], &hint("Tanh")),
            LayerSpec::Sigmoid => g.node("Sigmoid", &[&x.name], vec![], &hint("Sigmoid")),
            LayerSpec::Softmax => g.node("Softmax", &[&x.name], vec![graph::int("axis", -1)], &hint("Softmax")),
            LayerSpec::Residual { layers } => {
                let body = self.layers(layers, x.clone(), &format!("{}.body.", site.name), &format!("{}.layers", site.key))?;
                self.graph.node("Add", &[&x.name, &body.name], vec![], &hint("Add"))
            }
        })
    }

    /// `y = x W^T + b`: Gemm with `transB = 1` takes PyTorch's `[out, in]` weight as it is.
    fn linear(&mut self, site: &Site, x: &Value, bias: bool) -> Result<Name> {
        let weights: &[&str] = if bias { &["weight", "bias"] } else { &["weight"] };
        self.weighted("Gemm", site, x, weights, vec![graph::int("transB", 1)])
    }

    fn conv(&mut self, site: &Site, x: &Value, conv: Conv) -> Result<Name> {
        let weights: &[&str] = if conv.bias { &["weight", "bias"] } else { &["weight"] };
        let attrs = vec![
            graph::ints("kernel_shape", &vec![conv.kernel; conv.dims]),
            graph::ints("strides", &vec![conv.stride; conv.dims]),
            graph::ints("pads", &vec![conv.padding; 2 * conv.dims]),
            graph::ints("dilations", &vec![1; conv.dims]),
            graph::int("group", 1),
        ];
        self.weighted("Conv", site, x, weights, attrs)
    }

    /// Eval-mode batch norm with the running statistics; ONNX takes `[N, C]` as well as `[N, C, H, W]`.
    fn batchnorm(&mut self, site: &Site, x: &Value) -> Result<Name> {
        let weights = ["weight", "bias", "running_mean", "running_var"];
        self.weighted("BatchNormalization", site, x, &weights, vec![graph::float("epsilon", NORM_EPS)])
    }

    /// Layer norm over the last dimension (opset 17's `LayerNormalization`).
    fn layernorm(&mut self, site: &Site, x: &Value) -> Result<Name> {
        self.weighted("LayerNormalization", site, x, &["weight", "bias"], vec![graph::int("axis", -1), graph::float("epsilon", NORM_EPS)])
    }

    /// A node `op_type(x, weights...)`, its inputs in the order ONNX defines them for `op_type`.
    fn weighted(&mut self, op_type: &str, site: &Site, x: &Value, weights: &[&str], attrs: Vec<AttributeProto>) -> Result<Name> {
        let mut inputs = vec![x.name.clone()];
        for what in weights {
            inputs.push(self.weight(site, what)?);
        }
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        Ok(self.graph.node(op_type, &inputs, attrs, &format!("{}.{op_type}", site.name)))
    }

    /// The layer's weight `what` (`weight`, `running_mean`) as an initializer named by its PyTorch name. The
    /// tensors come from a checkpoint `Predictor::load` already matched against the model, so their sizes are the
    /// layer's; a name the model lacks is an error, not a panic.
    fn weight(&mut self, site: &Site, what: &str) -> Result<Name> {
        let name = format!("{}.{what}", site.name);
        let tensor = self
            .weights
            .get(&name)
            .ok_or_else(|| anyhow!("{}: the model has no weight `{name}` to export (its checkpoint does not match the layer list)", site.key))?;
        let values =
            Vec::<f32>::try_from(&tensor.f_to_kind(Kind::Float)?.f_flatten(0, -1)?.f_contiguous()?).with_context(|| format!("cannot read weight `{name}`"))?;
        Ok(self.graph.floats(&name, &tensor.size(), &values))
    }
}

struct Conv {
    kernel: i64,
    stride: i64,
    padding: i64,
    bias: bool,
    /// Spatial dimensions: 1 for conv1d, 2 for conv2d.
    dims: usize,
}

/// Square kernels over `dims` spatial dimensions, stride defaulting to the kernel, no padding, floor mode:
/// `model::forward_layers`' pools.
fn pool_attrs(kernel: i64, stride: Option<i64>, dims: usize) -> Vec<AttributeProto> {
    let s = stride.unwrap_or(kernel);
    vec![
        graph::ints("kernel_shape", &vec![kernel; dims]),
        graph::ints("strides", &vec![s; dims]),
        graph::ints("pads", &vec![0; 2 * dims]),
        graph::int("ceil_mode", 0),
    ]
}

fn avg_pool(g: &mut Graph, x: &str, mut attrs: Vec<AttributeProto>, hint: &str) -> Name {
    // No padding, so count_include_pad changes nothing; it is spelled out as PyTorch's default anyway.
    attrs.push(graph::int("count_include_pad", 1));
    g.node("AveragePool", &[x], attrs, hint)
}

/// Mean or max over every per-sample dimension after the first (ONNX axes 2..): opset 17's reductions take the
/// axes as an attribute.
fn global_pool(g: &mut Graph, x: &Value, op: &str, hint: &str) -> Name {
    let axes: Vec<i64> = (2..=x.shape.len() as i64).collect();
    g.node(op, &[&x.name], vec![graph::ints("axes", &axes), graph::int("keepdims", 0)], hint)
}

/// Reshape to `[batch, ...per_sample]`: `0` copies the batch dimension, and `per_sample` is the shape the model
/// resolved (no `-1`), so any batch size reshapes as bz's own `unflatten` does.
fn reshape(g: &mut Graph, x: &str, per_sample: &[i64], hint: &str) -> Name {
    let mut target = vec![0];
    target.extend(per_sample);
    let shape = g.int64s(&format!("{hint}.shape"), &target);
    g.node("Reshape", &[x, &shape], vec![], hint)
}

/// GELU, exact (erf) form: `0.5 * x * (1 + erf(x / sqrt 2))`, spelled out because ONNX's `Gelu` arrived in
/// opset 20. PyTorch multiplies by `1/sqrt 2` rather than dividing, so the graph does the same.
fn gelu(g: &mut Graph, x: &str, site: &str) -> Name {
    let hint = |op: &str| format!("{site}.Gelu.{op}");
    let rsqrt2 = g.floats(&hint("rsqrt2"), &[], &[std::f32::consts::FRAC_1_SQRT_2]);
    let one = g.floats(&hint("one"), &[], &[1.0]);
    let half = g.floats(&hint("half"), &[], &[0.5]);
    let scaled = g.node("Mul", &[x, &rsqrt2], vec![], &hint("Mul"));
    let erf = g.node("Erf", &[&scaled], vec![], &hint("Erf"));
    let plus_one = g.node("Add", &[&erf, &one], vec![], &hint("Add"));
    let times_x = g.node("Mul", &[x, &plus_one], vec![], &hint("Mul"));
    g.node("Mul", &[&times_x, &half], vec![], &hint("Mul"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn, Device};

    fn lowered(specs: &[LayerSpec], input: &[i64]) -> Result<(Graph, Value)> {
        let vs = nn::VarStore::new(Device::Cpu);
        model::Model::from_layers(&vs, specs, input)?;
        let weights = vs.variables();
        let mut graph = Graph::default();
        let x = Value { name: graph.fresh("input"), shape: input.to_vec() };
        let out = Lowering { graph: &mut graph, weights: &weights }.layers(specs, x, "", "model.layers")?;
        Ok((graph, out))
    }

    #[test]
    fn every_layer_kind_lowers_to_its_ops_with_pytorch_weight_names() {
        let specs = vec![
            LayerSpec::Reshape { shape: vec![1, 8, 8] },
            LayerSpec::Conv2d { out: 4, kernel: 3, stride: 1, padding: 1, bias: true },
            LayerSpec::Batchnorm,
            LayerSpec::Relu,
            LayerSpec::Maxpool2d { kernel: 2, stride: None },
            LayerSpec::Avgpool2d { kernel: 2, stride: Some(2) },
            LayerSpec::Flatten,
            LayerSpec::Residual {
                layers: vec![LayerSpec::Layernorm, LayerSpec::Linear { out: 16, bias: false }, LayerSpec::Gelu, LayerSpec::Dropout { p: 0.5 }],
            },
            LayerSpec::Tanh,
            LayerSpec::Linear { out: 3, bias: true },
            LayerSpec::Sigmoid,
            LayerSpec::Softmax,
        ];
        let (g, out) = lowered(&specs, &[64]).unwrap();
        let ops: Vec<&str> = g.nodes.iter().map(|n| n.op_type.as_str()).collect();
        let gelu = ["Mul", "Erf", "Add", "Mul", "Mul"];
        let mut want = vec!["Reshape", "Conv", "BatchNormalization", "Relu", "MaxPool", "AveragePool", "Flatten", "LayerNormalization", "Gemm"];
        want.extend(gelu);
        want.extend(["Add", "Tanh", "Gemm", "Sigmoid", "Softmax"]);
        assert_eq!(ops, want);
        assert_eq!(out.shape, vec![3]);
        let inits: Vec<&str> = g.initializers.iter().map(|t| t.name.as_str()).collect();
        for name in ["1.weight", "1.bias", "2.running_mean", "2.running_var", "7.body.0.weight", "7.body.1.weight", "9.bias"] {
            assert!(inits.contains(&name), "{name} in {inits:?}");
        }
        assert!(!inits.contains(&"7.body.1.bias"), "a linear layer without bias has none: {inits:?}");
        let reshape = g.initializers.iter().find(|t| t.name == "0.Reshape.shape").unwrap();
        let target: Vec<i64> = reshape.raw_data.chunks(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect();
        assert_eq!(target, [0, 1, 8, 8]);
        let gemm = g.nodes.iter().find(|n| n.op_type == "Gemm").unwrap();
        assert_eq!((gemm.attribute[0].name.as_str(), gemm.attribute[0].i), ("transB", Some(1)));
    }

    #[test]
    fn one_d_layers_lower_and_sequence_layers_are_refused_in_one_line() {
        let specs = vec![
            LayerSpec::Reshape { shape: vec![2, 12] },
            LayerSpec::Conv1d { out: 4, kernel: 3, stride: 2, padding: 1, bias: false },
            LayerSpec::Maxpool1d { kernel: 2, stride: None },
            LayerSpec::Avgpool1d { kernel: 2, stride: Some(1) },
            LayerSpec::GlobalAvgpool,
        ];
        let (g, out) = lowered(&specs, &[24]).unwrap();
        let ops: Vec<&str> = g.nodes.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(ops, ["Reshape", "Conv", "MaxPool", "AveragePool", "ReduceMean"]);
        assert_eq!(out.shape, vec![4]);
        let conv = &g.nodes[1];
        assert_eq!(conv.attribute[0].ints, [3]);
        assert_eq!(conv.attribute[2].ints, [1, 1]);
        assert_eq!(g.nodes[4].attribute[0].ints, [2]);
        let (g, _) = lowered(&[LayerSpec::GlobalMaxpool], &[3, 4, 5]).unwrap();
        assert_eq!((g.nodes[0].op_type.as_str(), &g.nodes[0].attribute[0].ints[..]), ("ReduceMax", &[2, 3][..]));

        let lstm = LayerSpec::Lstm { hidden: 3, layers: 1, bidirectional: false, output: Default::default() };
        let Err(e) = lowered(&[LayerSpec::Reshape { shape: vec![4, 2] }, lstm], &[8]) else { panic!("an LSTM lowered to ONNX") };
        let e = e.to_string();
        assert_eq!(e, "model.layers[1] (lstm): bz's ONNX export does not lower this layer; use --format torchscript");
    }

    #[test]
    fn a_missing_weight_is_an_error_naming_it() {
        let specs = [LayerSpec::Linear { out: 2, bias: true }];
        let weights = HashMap::new();
        let mut graph = Graph::default();
        let x = Value { name: "input".into(), shape: vec![4] };
        let e = Lowering { graph: &mut graph, weights: &weights }.layers(&specs, x, "", "model.layers").unwrap_err().to_string();
        assert!(e.contains("model.layers[0]") && e.contains("`0.weight`"), "{e}");
    }
}
