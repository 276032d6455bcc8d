//! Sequence and 1-d layers: conv1d, the 1-d and global pools, embedding, LSTM/GRU, positional embedding and the
//! transformer encoder. Shapes are per sample, the batch left out: `[channels, length]` for conv1d and the 1-d
//! pools, `[length, features]` for the recurrent and attention layers (PyTorch's `batch_first=True`). Parameters
//! take the names of the equivalent `torch.nn` modules (`weight_ih_l0`, `layers.0.self_attn.in_proj_weight`), so
//! `model.safetensors` loads into them with `strict=True`.

use super::{mul, NORM_EPS};
use crate::config::{LayerSpec, RecurrentOutput};
use anyhow::{bail, Result};
use tch::nn::{self, RNN};
use tch::{Kind, Tensor};

/// Output shape and parameter count of a sequence or 1-d layer on a per-sample `shape`; the error says what the
/// layer needs and how to get it, the caller prefixes the layer's key.
pub(super) fn infer(spec: &LayerSpec, shape: &[i64]) -> Result<(Vec<i64>, i64), String> {
    let bias = |yes: bool, n: i64| if yes { n } else { 0 };
    match spec {
        LayerSpec::Conv1d { out, kernel, stride, padding, bias: b } => {
            let [c, l] = shape[..] else {
                return Err(needs("a [channels, length]", shape, "reshape flat features, e.g. { type = \"reshape\", shape = [1, -1] }"));
            };
            let padded = l.saturating_add(padding.saturating_mul(2));
            if padded < *kernel {
                return Err(format!("kernel {kernel} is longer than its padded input {l}"));
            }
            Ok((vec![*out, (padded - kernel) / stride + 1], mul(mul(*out, c)?, *kernel)?.saturating_add(bias(*b, *out))))
        }
        LayerSpec::Maxpool1d { kernel, stride } | LayerSpec::Avgpool1d { kernel, stride } => {
            let [c, l] = shape[..] else {
                return Err(needs("a [channels, length]", shape, "reshape flat features, e.g. { type = \"reshape\", shape = [1, -1] }"));
            };
            if l < *kernel {
                return Err(format!("kernel {kernel} is longer than its input {l}"));
            }
            Ok((vec![c, (l - kernel) / stride.unwrap_or(*kernel) + 1], 0))
        }
        LayerSpec::TemporalAvgpool | LayerSpec::TemporalMaxpool => match shape {
            [_, f] => Ok((vec![*f], 0)),
            _ => Err(needs("a [length, features] sequence", shape, "it comes after an embedding, lstm/gru with output = \"all\", or transformer_encoder")),
        },
        LayerSpec::GlobalAvgpool | LayerSpec::GlobalMaxpool => match shape {
            [c, _, ..] => Ok((vec![*c], 0)),
            _ => Err(needs("a [channels, ...] input (pooling over every dimension after the first)", shape, "it comes after conv1d or conv2d")),
        },
        LayerSpec::Embedding { num, dim, .. } => {
            let [l] = shape[..] else { return Err(needs("a [length] input of token ids", shape, "feed one id per feature, or flatten first")) };
            Ok((vec![l, *dim], mul(*num, *dim)?))
        }
        LayerSpec::Lstm { hidden, layers, bidirectional, output } | LayerSpec::Gru { hidden, layers, bidirectional, output } => {
            let [l, f] = shape[..] else {
                return Err(needs("a [length, features]", shape, "reshape flat features, e.g. { type = \"reshape\", shape = [-1, 1] }"));
            };
            let gates = if matches!(spec, LayerSpec::Lstm { .. }) { 4 } else { 3 };
            let dirs = if *bidirectional { 2 } else { 1 };
            let width = mul(*hidden, dirs)?;
            // weight_ih, weight_hh and the two biases, per direction; the first layer reads the features, the others
            // the previous layer's output.
            let per_layer = |input: i64| mul(mul(mul(gates, *hidden)?, input.saturating_add(*hidden).saturating_add(2))?, dirs);
            let params = per_layer(f)?.saturating_add(mul(per_layer(width)?, layers - 1)?);
            let out = match output {
                RecurrentOutput::Last => vec![width],
                RecurrentOutput::All => vec![l, width],
            };
            Ok((out, params))
        }
        LayerSpec::PositionalEmbedding { max_len } => {
            let [l, d] = shape[..] else { return Err(needs("a [length, dim]", shape, "it comes after an embedding layer")) };
            if l > *max_len {
                return Err(format!("gets sequences of length {l}, longer than max_len = {max_len}: raise max_len to at least {l}"));
            }
            Ok((shape.to_vec(), mul(*max_len, d)?))
        }
        LayerSpec::TransformerEncoder { heads, ff, layers, .. } => {
            let [_, d] = shape[..] else { return Err(needs("a [length, d]", shape, "it comes after an embedding layer, or reshape to [length, d]")) };
            if d % heads != 0 {
                return Err(format!("width d = {d} is not divisible by heads = {heads}: pick heads dividing {d}"));
            }
            // in_proj 3d² + 3d, out_proj d² + d, linear1 d·ff + ff, linear2 ff·d + d, two norms 4d.
            let one = mul(4, mul(d, d)?)?.saturating_add(mul(2, mul(d, *ff)?)?).saturating_add(mul(9, d)?).saturating_add(*ff);
            Ok((shape.to_vec(), mul(one, *layers)?))
        }
        _ => Err("is not a sequence layer".into()),
    }
}

fn needs(what: &str, shape: &[i64], fix: &str) -> String {
    format!("needs {what} input but gets {shape:?}: {fix}")
}

/// A built sequence or 1-d layer.
pub(super) enum SeqLayer {
    /// tch keeps a conv's stride and padding private, so they are kept here too.
    Conv1d(nn::Conv1D, i64, i64),
    MaxPool1d(i64, i64),
    AvgPool1d(i64, i64),
    GlobalAvgPool,
    GlobalMaxPool,
    TemporalAvgPool,
    TemporalMaxPool,
    Embedding(Embedding),
    Recurrent(Recurrent),
    /// The `[max_len, dim]` table.
    Positional(Tensor),
    Transformer(Transformer),
}

pub(super) struct Embedding {
    weight: Tensor,
    num: i64,
    padding_idx: Option<i64>,
    /// The layer's config key, for the out-of-range id message.
    key: String,
}

pub(super) enum Cell {
    Lstm(nn::LSTM),
    Gru(nn::GRU),
}

pub(super) struct Recurrent {
    cell: Cell,
    /// Layers times directions: the rows of `h_n`.
    rows: i64,
    hidden: i64,
    directions: i64,
    output: RecurrentOutput,
}

pub(super) struct Transformer {
    layers: Vec<EncoderLayer>,
    heads: i64,
    dropout: f64,
}

/// One `nn.TransformerEncoderLayer(norm_first=True, activation="relu")`.
struct EncoderLayer {
    in_proj_weight: Tensor,
    in_proj_bias: Tensor,
    out_proj: nn::Linear,
    linear1: nn::Linear,
    linear2: nn::Linear,
    norm1: nn::LayerNorm,
    norm2: nn::LayerNorm,
}

/// Creates the layer's parameters under `p` (its index prefix), initialised as PyTorch initialises them.
pub(super) fn build(p: &nn::Path, spec: &LayerSpec, shape: &[i64], key: &str) -> Result<SeqLayer> {
    let dim = |i: usize| shape.get(i).copied().ok_or_else(|| anyhow::anyhow!("{key}: input shape {shape:?} has no dimension {i}"));
    Ok(match spec {
        LayerSpec::Conv1d { out, kernel, stride, padding, bias } => {
            let cfg = nn::ConvConfig { stride: *stride, padding: *padding, bias: *bias, ..Default::default() };
            SeqLayer::Conv1d(nn::conv1d(p, dim(0)?, *out, *kernel, cfg), *stride, *padding)
        }
        LayerSpec::Maxpool1d { kernel, stride } => SeqLayer::MaxPool1d(*kernel, stride.unwrap_or(*kernel)),
        LayerSpec::Avgpool1d { kernel, stride } => SeqLayer::AvgPool1d(*kernel, stride.unwrap_or(*kernel)),
        LayerSpec::GlobalAvgpool => SeqLayer::GlobalAvgPool,
        LayerSpec::GlobalMaxpool => SeqLayer::GlobalMaxPool,
        LayerSpec::TemporalAvgpool => SeqLayer::TemporalAvgPool,
        LayerSpec::TemporalMaxpool => SeqLayer::TemporalMaxPool,
        LayerSpec::Embedding { num, dim, padding_idx } => {
            let weight = p.var("weight", &[*num, *dim], nn::Init::Randn { mean: 0.0, stdev: 1.0 });
            if let Some(i) = padding_idx {
                // nn.Embedding starts the padding row at zero (and never trains it).
                tch::no_grad(|| weight.f_get(*i).and_then(|mut row| row.f_zero_()).map(drop))?;
            }
            SeqLayer::Embedding(Embedding { weight, num: *num, padding_idx: *padding_idx, key: key.to_string() })
        }
        LayerSpec::Lstm { hidden, layers, bidirectional, output } | LayerSpec::Gru { hidden, layers, bidirectional, output } => {
            // PyTorch draws every weight and bias from U(-1/sqrt(hidden), 1/sqrt(hidden)).
            let k = 1.0 / (*hidden as f64).sqrt();
            let init = nn::Init::Uniform { lo: -k, up: k };
            let cfg = nn::RNNConfig {
                num_layers: *layers,
                bidirectional: *bidirectional,
                batch_first: true,
                w_ih_init: init,
                w_hh_init: init,
                b_ih_init: Some(init),
                b_hh_init: Some(init),
                ..Default::default()
            };
            let cell = match spec {
                LayerSpec::Lstm { .. } => Cell::Lstm(nn::lstm(p, dim(1)?, *hidden, cfg)),
                _ => Cell::Gru(nn::gru(p, dim(1)?, *hidden, cfg)),
            };
            let directions = if *bidirectional { 2 } else { 1 };
            SeqLayer::Recurrent(Recurrent { cell, rows: layers * directions, hidden: *hidden, directions, output: *output })
        }
        LayerSpec::PositionalEmbedding { max_len } => SeqLayer::Positional(p.var("weight", &[*max_len, dim(1)?], nn::Init::Randn { mean: 0.0, stdev: 1.0 })),
        LayerSpec::TransformerEncoder { heads, ff, layers, dropout } => {
            let d = dim(1)?;
            let layers = (0..*layers).map(|j| encoder_layer(&(p / "layers" / j), d, *ff)).collect();
            SeqLayer::Transformer(Transformer { layers, heads: *heads, dropout: *dropout })
        }
        _ => bail!("{key}: not a sequence layer"),
    })
}

fn encoder_layer(p: &nn::Path, d: i64, ff: i64) -> EncoderLayer {
    let attn = p / "self_attn";
    // nn.MultiheadAttention: Xavier-uniform in_proj_weight, zero biases.
    let bound = (6.0 / (d + 3 * d) as f64).sqrt();
    let zero_bias = nn::LinearConfig { bs_init: Some(nn::Init::Const(0.0)), ..Default::default() };
    EncoderLayer {
        in_proj_weight: attn.var("in_proj_weight", &[3 * d, d], nn::Init::Uniform { lo: -bound, up: bound }),
        in_proj_bias: attn.var("in_proj_bias", &[3 * d], nn::Init::Const(0.0)),
        out_proj: nn::linear(&attn / "out_proj", d, d, zero_bias),
        linear1: nn::linear(p / "linear1", d, ff, Default::default()),
        linear2: nn::linear(p / "linear2", ff, d, Default::default()),
        norm1: nn::layer_norm(p / "norm1", vec![d], Default::default()),
        norm2: nn::layer_norm(p / "norm2", vec![d], Default::default()),
    }
}

impl SeqLayer {
    /// The layer on `x`, with the padding mask (`[batch, length]`, true at padding) it gets and the one it passes
    /// on: an embedding with `padding_idx` starts one, attention and temporal pooling leave padding out.
    pub(super) fn forward_masked(&self, x: &Tensor, train: bool, padding: Option<&Tensor>) -> Result<(Tensor, Option<Tensor>)> {
        Ok(match self {
            SeqLayer::Embedding(e) => (e.forward(x)?, e.padding_idx.map(|i| x.f_eq(i as f64)).transpose()?),
            SeqLayer::Transformer(t) => (t.forward(x, train, padding)?, padding.map(Tensor::shallow_clone)),
            SeqLayer::TemporalAvgPool | SeqLayer::TemporalMaxPool => (temporal_pool(x, padding, matches!(self, SeqLayer::TemporalMaxPool))?, None),
            _ => (self.forward(x, train)?, padding.map(Tensor::shallow_clone)),
        })
    }

    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        Ok(match self {
            SeqLayer::Conv1d(c, s, p) => x.f_conv1d(&c.ws, c.bs.as_ref(), [*s], [*p], [1], 1)?,
            SeqLayer::MaxPool1d(k, s) => x.f_max_pool1d([*k], [*s], [0], [1], false)?,
            SeqLayer::AvgPool1d(k, s) => x.f_avg_pool1d([*k], [*s], [0], false, true)?,
            SeqLayer::GlobalAvgPool => x.f_flatten(2, -1)?.f_mean_dim(-1, false, None::<Kind>)?,
            SeqLayer::GlobalMaxPool => x.f_flatten(2, -1)?.f_amax(-1, false)?,
            SeqLayer::Embedding(e) => e.forward(x)?,
            SeqLayer::Recurrent(r) => r.forward(x)?,
            SeqLayer::Positional(w) => {
                let length = *x.size().get(1).ok_or_else(|| anyhow::anyhow!("positional embedding input has no length dimension"))?;
                x.f_add(&w.f_narrow(0, 0, length)?)?
            }
            SeqLayer::Transformer(t) => t.forward(x, train, None)?,
            SeqLayer::TemporalAvgPool => temporal_pool(x, None, false)?,
            SeqLayer::TemporalMaxPool => temporal_pool(x, None, true)?,
        })
    }

    /// Whether a training forward pass draws random numbers.
    pub(super) fn uses_randomness(&self) -> bool {
        matches!(self, SeqLayer::Transformer(t) if t.dropout > 0.0)
    }
}

impl Embedding {
    /// Looks the ids up after checking their range: libtorch's own check would abort on some builds and name no
    /// layer on others.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if x.numel() > 0 {
            let lo = x.f_min()?.f_double_value(&[])?;
            let hi = x.f_max()?.f_double_value(&[])?;
            // Written so that NaN fails too.
            if !(lo >= 0.0 && hi < self.num as f64) {
                let bad = if lo >= 0.0 { hi } else { lo };
                bail!("{} (embedding): token id {bad} is outside 0..{}: the features must be whole-number token ids below `num`", self.key, self.num);
            }
        }
        Ok(Tensor::f_embedding(&self.weight, &x.f_to_kind(Kind::Int64)?, self.padding_idx.unwrap_or(-1), false, false)?)
    }
}

impl Recurrent {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // The zero initial state `[rows, batch, hidden]` is made from the input, not from its size (tch's
        // `zero_state` reads it): a traced export would freeze the batch size, and a torch.jit module fed another
        // batch size would hand LSTM a state of the wrong shape.
        let zero = x.f_narrow(1, 0, 1)?.f_narrow(2, 0, 1)?.f_zeros_like()?;
        let h0 = zero.f_expand([-1, self.rows, self.hidden], false)?.f_transpose(0, 1)?.f_contiguous()?;
        let (all, h_n) = match &self.cell {
            Cell::Lstm(l) => {
                let (out, state) = l.seq_init(x, &nn::LSTMState((h0.shallow_clone(), h0)));
                (out, state.h())
            }
            Cell::Gru(g) => {
                let (out, state) = g.seq_init(x, &nn::GRUState(h0));
                (out, state.value())
            }
        };
        Ok(match self.output {
            RecurrentOutput::All => all,
            // The last layer's rows of h_n ([directions, batch, hidden]) side by side: torch.cat([h_n[-2], h_n[-1]]).
            RecurrentOutput::Last => h_n.f_narrow(0, self.rows - self.directions, self.directions)?.f_transpose(0, 1)?.f_flatten(1, -1)?,
        })
    }
}

/// Mean or max over the length of `[batch, length, features]`, over the positions that are not padding.
fn temporal_pool(x: &Tensor, padding: Option<&Tensor>, max: bool) -> Result<Tensor> {
    let Some(pad) = padding else {
        return Ok(if max { x.f_amax(1, false)? } else { x.f_mean_dim(1, false, None::<Kind>)? });
    };
    let pad = pad.f_unsqueeze(-1)?;
    if max {
        return Ok(x.f_masked_fill(&pad, f64::NEG_INFINITY)?.f_amax(1, false)?);
    }
    let keep = pad.f_logical_not()?.f_to_kind(x.kind())?;
    // An all-padding sequence averages to zero rather than dividing by zero.
    let count = keep.f_sum_dim_intlist(1, false, None::<Kind>)?.f_clamp_min(1.0)?;
    Ok(x.f_mul(&keep)?.f_sum_dim_intlist(1, false, None::<Kind>)?.f_div(&count)?)
}

impl Transformer {
    /// `padding` (`[batch, length]`, true at padding) keeps padded positions out of every position's attention,
    /// as PyTorch's `src_key_padding_mask`.
    fn forward(&self, x: &Tensor, train: bool, padding: Option<&Tensor>) -> Result<Tensor> {
        let mut x = x.shallow_clone();
        // [batch, 1, 1, length], true where attention may look.
        let attend = padding.map(|p| p.f_logical_not()?.f_unsqueeze(1)?.f_unsqueeze(1)).transpose()?;
        for layer in &self.layers {
            let attended = layer.self_attention(&layer_norm(&x, &layer.norm1)?, self.heads, self.dropout, train, attend.as_ref())?;
            x = x.f_add(&attended.f_dropout(self.dropout, train)?)?;
            let h = layer_norm(&x, &layer.norm2)?.f_linear(&layer.linear1.ws, layer.linear1.bs.as_ref())?.f_relu()?.f_dropout(self.dropout, train)?;
            let h = h.f_linear(&layer.linear2.ws, layer.linear2.bs.as_ref())?.f_dropout(self.dropout, train)?;
            x = x.f_add(&h)?;
        }
        Ok(x)
    }
}

impl EncoderLayer {
    /// `nn.MultiheadAttention(x, x, x)` on `[batch, length, d]`, keys masked where `attend` is false. The batch size
    /// is never read, so a traced export keeps it free.
    fn self_attention(&self, x: &Tensor, heads: i64, dropout: f64, train: bool, attend: Option<&Tensor>) -> Result<Tensor> {
        let d = *x.size().last().ok_or_else(|| anyhow::anyhow!("attention input has no dimensions"))?;
        let qkv = x.f_linear(&self.in_proj_weight, Some(&self.in_proj_bias))?;
        // [batch, length, d] -> [batch, heads, length, d / heads]
        let split = |t: &Tensor| -> Result<Tensor> { Ok(t.f_unflatten(-1, [heads, d / heads])?.f_transpose(1, 2)?) };
        let parts = qkv.f_chunk(3, -1)?;
        let (q, k, v) = (split(&parts[0])?, split(&parts[1])?, split(&parts[2])?);
        let p = if train { dropout } else { 0.0 };
        let a = Tensor::f_scaled_dot_product_attention(&q, &k, &v, attend, p, false, None, false)?;
        Ok(a.f_transpose(1, 2)?.f_flatten(2, -1)?.f_linear(&self.out_proj.ws, self.out_proj.bs.as_ref())?)
    }
}

fn layer_norm(x: &Tensor, norm: &nn::LayerNorm) -> Result<Tensor> {
    let last = *x.size().last().ok_or_else(|| anyhow::anyhow!("layer norm input has no dimensions"))?;
    Ok(x.f_layer_norm([last], norm.ws.as_ref(), norm.bs.as_ref(), NORM_EPS, false)?)
}

#[cfg(test)]
mod tests {
    use super::super::{infer_shapes, Model};
    use crate::config::{LayerSpec, RecurrentOutput};
    use tch::{nn, Device, Kind, Tensor};

    fn reshape(shape: &[i64]) -> LayerSpec {
        LayerSpec::Reshape { shape: shape.to_vec() }
    }

    fn lstm(hidden: i64, layers: i64, bidirectional: bool, output: RecurrentOutput) -> LayerSpec {
        LayerSpec::Lstm { hidden, layers, bidirectional, output }
    }

    fn encoder(heads: i64) -> LayerSpec {
        LayerSpec::TransformerEncoder { heads, ff: 16, layers: 2, dropout: 0.1 }
    }

    #[test]
    fn conv1d_pools_and_global_pooling_shapes() {
        let conv = LayerSpec::Conv1d { out: 8, kernel: 3, stride: 1, padding: 1, bias: true };
        let pool = LayerSpec::Maxpool1d { kernel: 2, stride: None };
        let avg = LayerSpec::Avgpool1d { kernel: 3, stride: Some(1) };
        let rows = infer_shapes(&[reshape(&[2, 12]), conv, pool, avg, LayerSpec::GlobalAvgpool], &[24]).unwrap();
        assert_eq!(rows[1].out_shape, vec![8, 12]);
        assert_eq!(rows[1].params, 8 * 2 * 3 + 8);
        assert_eq!(rows[2].out_shape, vec![8, 6]);
        assert_eq!(rows[3].out_shape, vec![8, 4]);
        assert_eq!(rows[4].out_shape, vec![8]);
        let rows = infer_shapes(&[LayerSpec::GlobalMaxpool], &[3, 4, 5]).unwrap();
        assert_eq!(rows[0].out_shape, vec![3]);
    }

    #[test]
    fn wrong_rank_names_the_layer_and_the_fix() {
        let conv = LayerSpec::Conv1d { out: 8, kernel: 3, stride: 1, padding: 0, bias: true };
        let e = infer_shapes(&[conv], &[24]).unwrap_err();
        assert!(e.starts_with("model.layers[0] (conv1d) needs a [channels, length] input but gets [24]: reshape"), "{e}");
        let e = infer_shapes(&[LayerSpec::GlobalAvgpool], &[24]).unwrap_err();
        assert!(e.contains("(global_avgpool) needs a [channels, ...]"), "{e}");
        let e = infer_shapes(&[lstm(4, 1, false, RecurrentOutput::Last)], &[24]).unwrap_err();
        assert!(e.contains("model.layers[0] (lstm) needs a [length, features] input") && e.contains("reshape"), "{e}");
        let e = infer_shapes(&[LayerSpec::Embedding { num: 5, dim: 3, padding_idx: None }], &[2, 3]).unwrap_err();
        assert!(e.contains("(embedding) needs a [length] input of token ids"), "{e}");
        let e = infer_shapes(&[LayerSpec::Maxpool1d { kernel: 5, stride: None }], &[1, 4]).unwrap_err();
        assert!(e.contains("kernel 5 is longer than its input 4") && !e.contains('\n'), "{e}");
    }

    #[test]
    fn positional_embedding_and_heads_are_checked_against_the_shape() {
        let e = infer_shapes(&[reshape(&[6, 4]), LayerSpec::PositionalEmbedding { max_len: 5 }], &[24]).unwrap_err();
        assert!(e.contains("model.layers[1] (positional_embedding) gets sequences of length 6, longer than max_len = 5"), "{e}");
        let e = infer_shapes(&[reshape(&[6, 4]), encoder(3)], &[24]).unwrap_err();
        assert!(e.contains("(transformer_encoder) width d = 4 is not divisible by heads = 3"), "{e}");
        let rows = infer_shapes(&[reshape(&[6, 4]), LayerSpec::PositionalEmbedding { max_len: 8 }, encoder(2)], &[24]).unwrap();
        assert_eq!(rows[1].params, 8 * 4);
        assert_eq!(rows[2].out_shape, vec![6, 4]);
    }

    #[test]
    fn recurrent_shapes() {
        let rows = infer_shapes(&[reshape(&[6, 4]), lstm(5, 2, true, RecurrentOutput::All)], &[24]).unwrap();
        assert_eq!(rows[1].out_shape, vec![6, 10]);
        let gru = LayerSpec::Gru { hidden: 5, layers: 1, bidirectional: false, output: RecurrentOutput::Last };
        let rows = infer_shapes(&[reshape(&[6, 4]), gru], &[24]).unwrap();
        assert_eq!(rows[1].out_shape, vec![5]);
        assert_eq!(rows[1].params, 3 * 5 * (4 + 5 + 2));
        // PyTorch's count for nn.LSTM(4, 5, num_layers=2, bidirectional=True).
        let rows = infer_shapes(&[reshape(&[6, 4]), lstm(5, 2, true, RecurrentOutput::Last)], &[24]).unwrap();
        assert_eq!(rows[1].params, 2 * 4 * 5 * (4 + 5 + 2) + 2 * 4 * 5 * (10 + 5 + 2));
        // A layer count no machine could hold is refused by arithmetic, not by counting to it.
        let e = infer_shapes(&[reshape(&[6, 4]), lstm(5, i64::MAX, false, RecurrentOutput::Last)], &[24]).unwrap_err();
        assert!(e.contains("(lstm) is too large"), "{e}");
        // Nor does a huge padding overflow.
        let huge = LayerSpec::Conv1d { out: 2, kernel: 3, stride: 1, padding: i64::MAX, bias: true };
        assert!(infer_shapes(&[reshape(&[2, 12]), huge], &[24]).is_ok());
    }

    /// Every layer builds, runs forward and backward, names its parameters as torch.nn does, and the summary's
    /// counts are the VarStore's.
    #[test]
    fn built_sequence_models_run_and_name_params_like_pytorch() {
        let vs = nn::VarStore::new(Device::Cpu);
        let specs = vec![
            LayerSpec::Embedding { num: 10, dim: 8, padding_idx: Some(0) },
            LayerSpec::PositionalEmbedding { max_len: 7 },
            encoder(2),
            lstm(3, 2, true, RecurrentOutput::All),
            LayerSpec::Gru { hidden: 4, layers: 1, bidirectional: true, output: RecurrentOutput::Last },
            reshape(&[2, 4]),
            LayerSpec::Conv1d { out: 3, kernel: 2, stride: 1, padding: 1, bias: false },
            LayerSpec::Avgpool1d { kernel: 2, stride: None },
            LayerSpec::GlobalMaxpool,
        ];
        let m = Model::from_layers(&vs, &specs, &[6]).unwrap();
        assert!(m.uses_randomness());
        let x = Tensor::from_slice(&[0f32, 1., 2., 3., 4., 9., 9., 8., 7., 6., 5., 0.]).view([2, 6]);
        let y = m.forward_t(&x, true).unwrap();
        assert_eq!(y.size(), vec![2, 3]);
        y.sum(Kind::Float).backward();
        let names: Vec<String> = vs.variables().into_keys().collect();
        for want in [
            "0.weight",
            "1.weight",
            "2.layers.1.self_attn.in_proj_weight",
            "2.layers.0.self_attn.out_proj.bias",
            "2.layers.0.linear2.weight",
            "2.layers.1.norm2.bias",
            "3.weight_ih_l1_reverse",
            "3.bias_hh_l0",
            "4.weight_hh_l0_reverse",
            "6.weight",
        ] {
            assert!(names.contains(&want.to_string()), "{want} in {names:?}");
        }
        assert!(!names.contains(&"6.bias".to_string()));
        let trainable: i64 = vs.trainable_variables().iter().map(|t| t.numel() as i64).sum();
        assert_eq!(trainable, m.param_count());
        let pad = vs.variables()["0.weight"].get(0).abs().sum(Kind::Float).double_value(&[]);
        assert_eq!(pad, 0.0, "the padding row starts at zero");
    }

    #[test]
    fn an_out_of_range_token_id_is_an_error_naming_the_layer() {
        let vs = nn::VarStore::new(Device::Cpu);
        let specs = [LayerSpec::Embedding { num: 5, dim: 2, padding_idx: None }];
        let m = Model::from_layers(&vs, &specs, &[3]).unwrap();
        for bad in [5f32, -1., f32::NAN] {
            let x = Tensor::from_slice(&[0f32, 1., bad]).view([1, 3]);
            let e = m.forward_t(&x, false).unwrap_err().to_string();
            assert!(e.contains("model.layers[0] (embedding): token id") && e.contains("outside 0..5"), "{e}");
        }
        assert_eq!(m.forward_t(&Tensor::from_slice(&[0f32, 4., 2.]).view([1, 3]), false).unwrap().size(), vec![1, 3, 2]);
    }
}
