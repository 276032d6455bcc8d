//! Models: a layer list from the config, or a TorchScript module.
//!
//! Layer shapes are inferred in plain Rust before any tensor exists, so `bz validate` reports a bad layer stack
//! with the layer's index and a fix. Parameter names follow `torch.nn.Sequential` (`0.weight`, `3.bias`,
//! residual bodies `4.body.0.weight`), so the saved safetensors load into the same Python `nn.Sequential`.

mod sequence;

use crate::config::LayerSpec;
use crate::fmt::fmt_shape;
use anyhow::{bail, Context, Result};
use std::cell::RefCell;
use std::path::Path;
use tch::{nn, Device, Kind, Tensor};

/// Batch norm's and layer norm's epsilon (PyTorch's default); the ONNX export writes the same.
pub const NORM_EPS: f64 = 1e-5;

/// One row of the model summary.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerRow {
    pub name: String,
    pub kind: String,
    pub out_shape: Vec<i64>,
    pub params: i64,
}

/// A layer stack that does not fit its input: a config problem, with the layer's key and the fix in the message.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ShapeError(pub String);

/// Infers every layer's output shape (per sample, without the batch dimension) and parameter count.
pub fn infer_shapes(layers: &[LayerSpec], input: &[i64]) -> Result<Vec<LayerRow>, String> {
    let mut rows = Vec::new();
    infer_into(layers, input, "", "model.layers", &mut rows)?;
    check_memory(&rows)?;
    Ok(rows)
}

/// Refuses a model whose weights alone cannot fit in this machine's memory, before libtorch is asked for them (its
/// allocation failure would end bz with a C++ error instead of a line naming the layer).
fn check_memory(rows: &[LayerRow]) -> Result<(), String> {
    let total = rows.iter().try_fold(0i64, |t, r| t.checked_add(r.params)).ok_or("the model's parameter count overflows")?;
    let bytes = total.saturating_mul(4) as u64;
    let mut sys = sysinfo::System::new();
    sys.refresh_memory();
    let have = sys.total_memory();
    if have > 0 && bytes > have {
        let big = rows
            .iter()
            .max_by_key(|r| r.params)
            .map(|r| format!("; the largest is layer {} ({}, {} parameters)", r.name, r.kind, r.params))
            .unwrap_or_default();
        return Err(format!(
            "the model has {total} parameters, {:.1} GiB as f32, more than this machine's {:.1} GiB of memory{big}",
            bytes as f64 / (1u64 << 30) as f64,
            have as f64 / (1u64 << 30) as f64
        ));
    }
    Ok(())
}

/// Shape arithmetic that a config cannot overflow.
fn mul(a: i64, b: i64) -> Result<i64, String> {
    a.checked_mul(b).ok_or_else(|| format!("is too large: {a} x {b} overflows"))
}

fn infer_into(layers: &[LayerSpec], input: &[i64], prefix: &str, at: &str, rows: &mut Vec<LayerRow>) -> Result<Vec<i64>, String> {
    let mut shape = input.to_vec();
    for (i, spec) in layers.iter().enumerate() {
        let key = format!("{at}[{i}]");
        let name = format!("{prefix}{i}");
        let kind = layer_kind(spec);
        let fail = |why: String| format!("{key} ({kind}) {why}");
        let (out, params) = match spec {
            LayerSpec::Linear { out, bias } => {
                let [inp] = shape[..] else {
                    return Err(fail(format!("needs a flat input but gets {shape:?}: add {{ type = \"flatten\" }} before it")));
                };
                (vec![*out], mul(inp, *out).map_err(fail)?.saturating_add(if *bias { *out } else { 0 }))
            }
            LayerSpec::Conv2d { out, kernel, stride, padding, bias } => {
                let [c, h, w] = shape[..] else {
                    return Err(fail(format!(
                        "needs a [channels, height, width] input but gets {shape:?}: images come as [1, H, W]; use reshape for flat data"
                    )));
                };
                let oh = (h + 2 * padding - kernel) / stride + 1;
                let ow = (w + 2 * padding - kernel) / stride + 1;
                if oh <= 0 || ow <= 0 {
                    return Err(fail(format!("kernel {kernel} is larger than its padded input {h}x{w}")));
                }
                (
                    vec![*out, oh, ow],
                    mul(mul(*out, c).map_err(fail)?, mul(*kernel, *kernel).map_err(fail)?).map_err(fail)?.saturating_add(if *bias { *out } else { 0 }),
                )
            }
            LayerSpec::Maxpool2d { kernel, stride } | LayerSpec::Avgpool2d { kernel, stride } => {
                let [c, h, w] = shape[..] else { return Err(fail(format!("needs a [channels, height, width] input but gets {shape:?}"))) };
                let s = stride.unwrap_or(*kernel);
                let (oh, ow) = ((h - kernel) / s + 1, (w - kernel) / s + 1);
                if h < *kernel || w < *kernel {
                    return Err(fail(format!("kernel {kernel} is larger than its input {h}x{w}")));
                }
                (vec![c, oh, ow], 0)
            }
            LayerSpec::Flatten => (vec![shape.iter().try_fold(1, |p, d| mul(p, *d)).map_err(fail)?], 0),
            LayerSpec::Reshape { shape: to } => (reshape(&shape, to).map_err(fail)?, 0),
            LayerSpec::Batchnorm => match shape[..] {
                [c] | [c, _, _] => (shape.clone(), 2 * c),
                _ => return Err(fail(format!("works on [features] or [channels, H, W] inputs, not {shape:?}"))),
            },
            LayerSpec::Layernorm => (shape.clone(), 2 * shape.last().copied().unwrap_or(0)),
            LayerSpec::Residual { layers } => {
                let body_out = infer_into(layers, &shape, &format!("{name}.body."), &format!("{key}.layers"), rows)?;
                if body_out != shape {
                    return Err(fail(format!("body turns {shape:?} into {body_out:?}; a residual block must keep the shape")));
                }
                (shape.clone(), 0)
            }
            LayerSpec::Dropout { .. } | LayerSpec::Relu | LayerSpec::Gelu | LayerSpec::Tanh | LayerSpec::Sigmoid | LayerSpec::Softmax => (shape.clone(), 0),
            // The sequence and 1-d layers: `sequence` decides which they are.
            _ => sequence::infer(spec, &shape).map_err(fail)?,
        };
        rows.push(LayerRow { name, kind: kind.to_string(), out_shape: out.clone(), params });
        shape = out;
    }
    Ok(shape)
}

/// The per-sample shape one layer turns `input` into (a residual block's whole body included).
pub fn output_shape(spec: &LayerSpec, input: &[i64]) -> Result<Vec<i64>, String> {
    infer_into(std::slice::from_ref(spec), input, "", "", &mut Vec::new())
}

fn reshape(shape: &[i64], to: &[i64]) -> Result<Vec<i64>, String> {
    let total: i64 = shape.iter().product();
    let known: i64 = to.iter().filter(|d| **d != -1).product();
    let free = to.iter().filter(|d| **d == -1).count();
    let out: Vec<i64> = match free {
        0 => to.to_vec(),
        1 if known > 0 && total % known == 0 => to.iter().map(|d| if *d == -1 { total / known } else { *d }).collect(),
        _ => return Err(format!("cannot reshape {shape:?} into {to:?}")),
    };
    if out.iter().product::<i64>() != total {
        return Err(format!("cannot reshape {shape:?} ({total} values) into {to:?}"));
    }
    Ok(out)
}

/// The layer's `type` as the config spells it.
pub fn layer_kind(spec: &LayerSpec) -> &'static str {
    match spec {
        LayerSpec::Linear { .. } => "linear",
        LayerSpec::Conv2d { .. } => "conv2d",
        LayerSpec::Maxpool2d { .. } => "maxpool2d",
        LayerSpec::Avgpool2d { .. } => "avgpool2d",
        LayerSpec::Flatten => "flatten",
        LayerSpec::Reshape { .. } => "reshape",
        LayerSpec::Batchnorm => "batchnorm",
        LayerSpec::Layernorm => "layernorm",
        LayerSpec::Dropout { .. } => "dropout",
        LayerSpec::Relu => "relu",
        LayerSpec::Gelu => "gelu",
        LayerSpec::Tanh => "tanh",
        LayerSpec::Sigmoid => "sigmoid",
        LayerSpec::Softmax => "softmax",
        LayerSpec::Residual { .. } => "residual",
        LayerSpec::Conv1d { .. } => "conv1d",
        LayerSpec::Maxpool1d { .. } => "maxpool1d",
        LayerSpec::Avgpool1d { .. } => "avgpool1d",
        LayerSpec::GlobalAvgpool => "global_avgpool",
        LayerSpec::GlobalMaxpool => "global_maxpool",
        LayerSpec::TemporalAvgpool => "temporal_avgpool",
        LayerSpec::TemporalMaxpool => "temporal_maxpool",
        LayerSpec::Embedding { .. } => "embedding",
        LayerSpec::Lstm { .. } => "lstm",
        LayerSpec::Gru { .. } => "gru",
        LayerSpec::PositionalEmbedding { .. } => "positional_embedding",
        LayerSpec::TransformerEncoder { .. } => "transformer_encoder",
    }
}

enum Layer {
    Linear(nn::Linear),
    /// tch keeps a conv's stride and padding private, so they are kept here too.
    Conv(nn::Conv2D, i64, i64),
    MaxPool(i64, i64),
    AvgPool(i64, i64),
    Flatten,
    /// The per-sample shape with any `-1` resolved, so the batch dimension is never computed from a size (a traced
    /// export would freeze it).
    Reshape(Vec<i64>),
    BatchNorm(nn::BatchNorm),
    LayerNorm(nn::LayerNorm),
    Dropout(f64),
    Relu,
    Gelu,
    Tanh,
    Sigmoid,
    Softmax,
    Residual(Vec<Layer>),
    /// Sequence and 1-d layers (see `sequence`).
    Seq(sequence::SeqLayer),
}

enum Body {
    Layers(Vec<Layer>),
    /// `forward_t` of a TrainableCModule ignores the train flag, so the mode is switched explicitly.
    Script {
        module: RefCell<tch::TrainableCModule>,
        training: RefCell<bool>,
    },
}

pub struct Model {
    body: Body,
    pub rows: Vec<LayerRow>,
    pub input_shape: Vec<i64>,
    pub output_shape: Vec<i64>,
    /// `train.sync_batchnorm` in a data-parallel job: training batch norms normalise over every rank's batch.
    sync_norm: Option<crate::dist::ProcessGroup>,
}

impl Model {
    /// Builds a config model; parameters are created in `vs` under PyTorch-compatible names.
    pub fn from_layers(vs: &nn::VarStore, specs: &[LayerSpec], input: &[i64]) -> Result<Model> {
        let rows = infer_shapes(specs, input).map_err(ShapeError)?;
        // A residual's body rows come before its own, so the last row is always the last top-level layer.
        let output_shape = rows.last().map_or_else(|| input.to_vec(), |r| r.out_shape.clone());
        let layers = build(&vs.root(), specs, input, "model.layers")?;
        Ok(Model { body: Body::Layers(layers), rows, input_shape: input.to_vec(), output_shape, sync_norm: None })
    }

    /// Loads a TorchScript module for training; its parameters are registered in `vs`.
    pub fn from_torchscript(vs: &nn::VarStore, path: &Path, input: &[i64]) -> Result<Model> {
        let module = tch::TrainableCModule::load(path, vs.root())
            .with_context(|| format!("cannot load the TorchScript model {} (save it with torch.jit.script(model).save(path))", path.display()))?;
        let mut dims = vec![2];
        dims.extend_from_slice(input);
        let probe = tch::no_grad(|| module.forward_ts(&[Tensor::zeros(&dims[..], (Kind::Float, vs.device()))]))
            .with_context(|| format!("the TorchScript model {} fails on an input of shape {dims:?}", path.display()))?;
        let output_shape = probe.size()[1..].to_vec();
        let params: i64 = vs.trainable_variables().iter().map(|t| t.numel() as i64).sum();
        let rows = vec![LayerRow { name: "script".into(), kind: format!("torchscript {}", path.display()), out_shape: output_shape.clone(), params }];
        let body = Body::Script { module: RefCell::new(module), training: RefCell::new(true) };
        Ok(Model { body, rows, input_shape: input.to_vec(), output_shape, sync_norm: None })
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        match &self.body {
            Body::Layers(layers) => forward_layers(layers, x, train, self.sync_norm.as_ref().filter(|_| train)),
            Body::Script { module, training } => {
                if *training.borrow() != train {
                    let mut m = module.borrow_mut();
                    if train {
                        m.f_set_train()?
                    } else {
                        m.f_set_eval()?
                    }
                    *training.borrow_mut() = train;
                }
                Ok(module.borrow().forward_ts(&[x])?)
            }
        }
    }

    /// Whether a training forward pass draws random numbers (dropout, or an opaque TorchScript module).
    pub fn uses_randomness(&self) -> bool {
        fn any_dropout(layers: &[Layer]) -> bool {
            layers.iter().any(|l| match l {
                Layer::Dropout(_) => true,
                Layer::Residual(body) => any_dropout(body),
                Layer::Seq(l) => l.uses_randomness(),
                _ => false,
            })
        }
        match &self.body {
            Body::Layers(layers) => any_dropout(layers),
            Body::Script { .. } => true,
        }
    }

    /// Makes every batch norm normalise training batches over all ranks of `group` (PyTorch's SyncBatchNorm);
    /// parameter and buffer names stay those of `torch.nn.BatchNorm*d`.
    pub fn sync_batchnorm(&mut self, group: crate::dist::ProcessGroup) -> Result<()> {
        if self.is_torchscript() {
            bail!("train.sync_batchnorm = true needs a model of config layers: a TorchScript module's batch norms cannot be synchronised (set it to false)");
        }
        self.sync_norm = Some(group);
        Ok(())
    }

    /// Whether training batch norms run collectives (forward and backward) that every rank must join.
    pub fn syncs_batchnorm(&self) -> bool {
        self.sync_norm.is_some()
    }

    /// Whether the model is a TorchScript module rather than a config layer list.
    pub fn is_torchscript(&self) -> bool {
        matches!(self.body, Body::Script { .. })
    }

    pub fn param_count(&self) -> i64 {
        self.rows.iter().map(|r| r.params).sum()
    }

    /// TorchScript buffers (e.g. batch-norm statistics) are not VarStore variables: save the whole module too.
    pub fn save_script(&self, path: &Path) -> Result<bool> {
        match &self.body {
            Body::Script { module, .. } => {
                module.borrow().save(path)?;
                Ok(true)
            }
            Body::Layers(_) => Ok(false),
        }
    }

    /// A table of layers, output shapes and parameter counts.
    pub fn summary(&self) -> String {
        // Wide enough for `positional_embedding` and `transformer_encoder`.
        let w = self.rows.iter().map(|r| r.kind.len()).max().unwrap_or(0).max(12);
        let mut s = format!("{:<14} {:<w$} {:<18} {:>10}\n", "layer", "type", "output", "params");
        s.push_str(&format!("{:<14} {:<w$} {:<18} {:>10}\n", "input", "", fmt_shape(&self.input_shape), ""));
        for r in &self.rows {
            let params = if r.params > 0 { group_digits(r.params) } else { "-".into() };
            s.push_str(&format!("{:<14} {:<w$} {:<18} {:>10}\n", r.name, r.kind, fmt_shape(&r.out_shape), params));
        }
        s.push_str(&format!("total parameters: {}", group_digits(self.param_count())));
        s
    }
}

pub fn group_digits(n: i64) -> String {
    let s = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// The layers' modules; `at` is their config key (`model.layers`, `model.layers[4].layers`) for runtime errors.
fn build(path: &nn::Path, specs: &[LayerSpec], input: &[i64], at: &str) -> Result<Vec<Layer>> {
    let mut shape = input.to_vec();
    let mut layers = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        let p = path / i;
        let layer = match spec {
            LayerSpec::Linear { out, bias } => Layer::Linear(nn::linear(&p, shape[0], *out, nn::LinearConfig { bias: *bias, ..Default::default() })),
            LayerSpec::Conv2d { out, kernel, stride, padding, bias } => {
                let cfg = nn::ConvConfig { stride: *stride, padding: *padding, bias: *bias, ..Default::default() };
                Layer::Conv(nn::conv2d(&p, shape[0], *out, *kernel, cfg), *stride, *padding)
            }
            LayerSpec::Maxpool2d { kernel, stride } => Layer::MaxPool(*kernel, stride.unwrap_or(*kernel)),
            LayerSpec::Avgpool2d { kernel, stride } => Layer::AvgPool(*kernel, stride.unwrap_or(*kernel)),
            LayerSpec::Flatten => Layer::Flatten,
            LayerSpec::Reshape { .. } => Layer::Reshape(output_shape(spec, &shape).map_err(anyhow::Error::msg)?),
            LayerSpec::Batchnorm => {
                // PyTorch initialises the scale to ones (tch's default is uniform).
                let cfg = nn::BatchNormConfig { ws_init: nn::Init::Const(1.0), ..Default::default() };
                let bn = if shape.len() == 1 { nn::batch_norm1d(&p, shape[0], cfg) } else { nn::batch_norm2d(&p, shape[0], cfg) };
                Layer::BatchNorm(bn)
            }
            LayerSpec::Layernorm => {
                let last = *shape.last().context("layernorm on an empty shape")?;
                Layer::LayerNorm(nn::layer_norm(&p, vec![last], Default::default()))
            }
            LayerSpec::Dropout { p } => Layer::Dropout(*p),
            LayerSpec::Relu => Layer::Relu,
            LayerSpec::Gelu => Layer::Gelu,
            LayerSpec::Tanh => Layer::Tanh,
            LayerSpec::Sigmoid => Layer::Sigmoid,
            LayerSpec::Softmax => Layer::Softmax,
            LayerSpec::Residual { layers: body } => Layer::Residual(build(&(&p / "body"), body, &shape, &format!("{at}[{i}].layers"))?),
            _ => Layer::Seq(sequence::build(&p, spec, &shape, &format!("{at}[{i}]"))?),
        };
        layers.push(layer);
        shape = output_shape(spec, &shape).map_err(anyhow::Error::msg)?;
    }
    Ok(layers)
}

/// `sync`: the group batch norms synchronise over (training only).
fn forward_layers(layers: &[Layer], x: &Tensor, train: bool, sync: Option<&crate::dist::ProcessGroup>) -> Result<Tensor> {
    let mut x = x.shallow_clone();
    // `[batch, length]`, true at padding: set by an embedding with `padding_idx`, read by attention and temporal
    // pooling, and dropped once a layer changes the length dimension.
    let mut padding: Option<Tensor> = None;
    for layer in layers {
        x = match layer {
            Layer::Linear(l) => x.f_linear(&l.ws, l.bs.as_ref())?,
            Layer::Conv(c, s, p) => x.f_conv2d(&c.ws, c.bs.as_ref(), [*s, *s], [*p, *p], [1, 1], 1)?,
            Layer::MaxPool(k, s) => x.f_max_pool2d([*k, *k], [*s, *s], [0, 0], [1, 1], false)?,
            Layer::AvgPool(k, s) => x.f_avg_pool2d([*k, *k], [*s, *s], [0, 0], false, true, None)?,
            Layer::Flatten => x.f_flatten(1, -1)?,
            Layer::Reshape(to) => x.f_flatten(1, -1)?.f_unflatten(1, to.as_slice())?,
            Layer::BatchNorm(bn) => match sync {
                Some(group) => {
                    let p = crate::dist::BatchNormParams {
                        weight: bn.ws.as_ref(),
                        bias: bn.bs.as_ref(),
                        running_mean: Some(&bn.running_mean),
                        running_var: Some(&bn.running_var),
                        eps: NORM_EPS,
                        momentum: 0.1,
                    };
                    group.sync_batch_norm(&x, &p)?
                }
                None => Tensor::f_batch_norm(&x, bn.ws.as_ref(), bn.bs.as_ref(), Some(&bn.running_mean), Some(&bn.running_var), train, 0.1, NORM_EPS, false)?,
            },
            Layer::LayerNorm(ln) => {
                let last = *x.size().last().context("layernorm input has no dimensions")?;
                x.f_layer_norm([last], ln.ws.as_ref(), ln.bs.as_ref(), NORM_EPS, false)?
            }
            Layer::Dropout(p) => x.f_dropout(*p, train)?,
            Layer::Relu => x.f_relu()?,
            Layer::Gelu => x.f_gelu("none")?,
            Layer::Tanh => x.f_tanh()?,
            Layer::Sigmoid => x.f_sigmoid()?,
            Layer::Softmax => x.f_softmax(-1, None::<Kind>)?,
            Layer::Residual(body) => x.f_add(&forward_layers(body, &x, train, sync)?)?,
            Layer::Seq(l) => {
                let (out, pad) = l.forward_masked(&x, train, padding.as_ref())?;
                padding = pad;
                out
            }
        };
        padding = padding.filter(|p| x.dim() == 3 && x.size().get(1) == p.size().get(1));
    }
    Ok(x)
}

/// The device a config asks for, checked against what this build and machine have.
pub fn device(spec: &str) -> Result<Device> {
    let cuda = tch::Cuda::is_available();
    match spec {
        "cpu" => Ok(Device::Cpu),
        "auto" => Ok(if cuda { Device::Cuda(0) } else { Device::Cpu }),
        _ => {
            let idx: usize = spec.strip_prefix("cuda:").map(|n| n.parse()).transpose()?.unwrap_or(0);
            if !cuda {
                bail!("{spec:?} needs CUDA, which is not available (this build links CUDA only after `scripts/setup --cuda`; see `bz doctor`)");
            }
            let n = tch::Cuda::device_count() as usize;
            if idx >= n {
                bail!("{spec:?}: this machine has {n} CUDA device(s)");
            }
            Ok(Device::Cuda(idx))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lin(out: i64) -> LayerSpec {
        LayerSpec::Linear { out, bias: true }
    }

    #[test]
    fn mlp_shapes_and_params() {
        let rows = infer_shapes(&[LayerSpec::Flatten, lin(256), LayerSpec::Relu, lin(10)], &[1, 28, 28]).unwrap();
        assert_eq!(rows[0].out_shape, vec![784]);
        assert_eq!(rows[1].params, 784 * 256 + 256);
        assert_eq!(rows[3].out_shape, vec![10]);
    }

    #[test]
    fn cnn_shapes() {
        let conv = LayerSpec::Conv2d { out: 32, kernel: 3, stride: 1, padding: 1, bias: true };
        let pool = LayerSpec::Maxpool2d { kernel: 2, stride: None };
        let rows = infer_shapes(&[conv, LayerSpec::Relu, pool, LayerSpec::Flatten, lin(10)], &[1, 28, 28]).unwrap();
        assert_eq!(rows[0].out_shape, vec![32, 28, 28]);
        assert_eq!(rows[0].params, 32 * 9 + 32);
        assert_eq!(rows[2].out_shape, vec![32, 14, 14]);
        assert_eq!(rows[3].out_shape, vec![32 * 14 * 14]);
    }

    #[test]
    fn linear_on_images_says_add_flatten() {
        let e = infer_shapes(&[lin(10)], &[1, 8, 8]).unwrap_err();
        assert!(e.contains("model.layers[0] (linear)") && e.contains("flatten"), "{e}");
    }

    #[test]
    fn residual_must_keep_shape() {
        let e = infer_shapes(&[LayerSpec::Flatten, LayerSpec::Residual { layers: vec![lin(3)] }], &[4]).unwrap_err();
        assert!(e.contains("must keep the shape"), "{e}");
        let ok = infer_shapes(&[LayerSpec::Residual { layers: vec![lin(4), LayerSpec::Relu] }], &[4]).unwrap();
        assert_eq!(ok.last().unwrap().kind, "residual");
        assert_eq!(ok[0].name, "0.body.0");
    }

    #[test]
    fn built_model_runs_and_names_params_like_pytorch() {
        let vs = nn::VarStore::new(Device::Cpu);
        let specs = vec![
            LayerSpec::Reshape { shape: vec![1, 8, 8] },
            LayerSpec::Conv2d { out: 4, kernel: 3, stride: 1, padding: 0, bias: true },
            LayerSpec::Batchnorm,
            LayerSpec::Relu,
            LayerSpec::Avgpool2d { kernel: 2, stride: None },
            LayerSpec::Flatten,
            LayerSpec::Layernorm,
            LayerSpec::Residual { layers: vec![lin(36), LayerSpec::Gelu] },
            LayerSpec::Dropout { p: 0.5 },
            lin(3),
            LayerSpec::Softmax,
        ];
        let m = Model::from_layers(&vs, &specs, &[64]).unwrap();
        let y = m.forward_t(&Tensor::ones([5, 64], (Kind::Float, Device::Cpu)), true).unwrap();
        assert_eq!(y.size(), vec![5, 3]);
        let mut names: Vec<String> = vs.variables().into_keys().collect();
        names.sort();
        assert!(names.contains(&"1.weight".to_string()) && names.contains(&"2.running_mean".to_string()), "{names:?}");
        assert!(names.contains(&"7.body.0.weight".to_string()), "{names:?}");
        let trainable: i64 = vs.trainable_variables().iter().map(|t| t.numel() as i64).sum();
        assert_eq!(trainable, m.param_count());
    }
}
