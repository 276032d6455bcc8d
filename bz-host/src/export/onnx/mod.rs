//! ONNX export: bz writes the graph itself from the config's layer list (prost over the ONNX schema, no Python and
//! no exporter), opset 17. The graph takes raw samples `input` `[batch, ...input_shape]`, applies the checkpoint's
//! normalisation, runs the layers in eval mode and returns `logits` and, for a classifier, `probabilities`: what
//! `bz predict` computes. The class labels, task and head ride along as metadata.
//!
//! - [`proto`]: the ONNX protobuf messages; [`graph`]: a builder with unique names and initializers;
//! - [`layers`]: one lowering per layer kind; [`signature`]: input, normalisation and head; [`metadata`].

pub mod graph;
pub mod layers;
pub mod metadata;
pub mod proto;
pub mod signature;

use super::Unsupported;
use crate::predict::Predictor;
use anyhow::{Context, Result};
use graph::Graph;
use layers::{Lowering, Value};
use prost::Message;
use proto::{GraphProto, ModelProto, OperatorSetIdProto};
use std::path::Path;

/// Opset 17 (`LayerNormalization` is there; `Gelu` is not, so GELU is spelled out) and its IR version.
pub const OPSET: i64 = 17;
pub const IR_VERSION: i64 = 8;

/// Protobuf's limit on one message (`INT_MAX` bytes): onnx and onnxruntime refuse a larger model file, whose
/// weights would have to go to external data files, which bz does not write.
const MAX_MODEL_BYTES: usize = i32::MAX as usize;

/// Writes `predictor`'s model to `path` as ONNX; the file appears only once complete.
pub fn write(predictor: &Predictor, path: &Path) -> Result<()> {
    let model = model(predictor)?;
    check_size(model.encoded_len())?;
    let bytes = model.encode_to_vec();
    crate::atomic::write(path, &bytes).with_context(|| format!("cannot write {}", path.display()))
}

fn check_size(bytes: usize) -> Result<()> {
    if bytes > MAX_MODEL_BYTES {
        return Err(Unsupported(format!(
            "the model is {:.1} GiB as ONNX, more than the 2 GiB one ONNX file can hold (bz does not write external data); use --format torchscript",
            bytes as f64 / (1u64 << 30) as f64
        ))
        .into());
    }
    Ok(())
}

/// The ONNX model of a config-defined predictor.
pub fn model(predictor: &Predictor) -> Result<ModelProto> {
    let Some(specs) = predictor.layers() else {
        return Err(Unsupported(
            "a TorchScript model cannot be exported to ONNX by bz: its graph is opaque to bz; use --format torchscript, or torch.onnx.export in Python".into(),
        )
        .into());
    };
    let inference = &predictor.inference;
    let mut g = Graph::default();
    let input = Value { name: g.fresh(signature::INPUT), shape: inference.input_shape.clone() };
    let x = signature::normalize(&mut g, input.clone(), inference.normalization.as_ref());
    let weights = predictor.weights();
    // Refused before the weights are copied into the graph, not after.
    check_size(weights.values().map(|t| t.numel().saturating_mul(4)).fold(0, usize::saturating_add))?;
    let out = Lowering { graph: &mut g, weights: &weights }.layers(specs, x, "", "model.layers")?;
    let logits = Value { name: g.rename_last(&out.name, signature::LOGITS), shape: out.shape };
    let mut outputs = vec![signature::value_info(&logits.name, &logits.shape)];
    if let Some(p) = signature::probabilities(&mut g, &logits, predictor.head()) {
        outputs.push(signature::value_info(&p.name, &p.shape));
    }
    let graph = GraphProto {
        name: "bz".into(),
        node: g.nodes,
        initializer: g.initializers,
        input: vec![signature::value_info(&input.name, &input.shape)],
        output: outputs,
        ..Default::default()
    };
    Ok(ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: OPSET }],
        producer_name: "bz".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: metadata::DOC.into(),
        graph: Some(graph),
        metadata_props: metadata::props(inference, predictor.head()),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_model_over_protobufs_limit_is_refused_in_one_line() {
        assert!(super::check_size(super::MAX_MODEL_BYTES).is_ok());
        let e = super::check_size(3 << 30).unwrap_err().to_string();
        assert!(e.contains("3.0 GiB") && e.contains("--format torchscript") && !e.contains('\n'), "{e}");
    }
}
