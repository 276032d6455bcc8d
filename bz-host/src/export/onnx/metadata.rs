//! What a runtime's user needs besides the graph, as the model's `metadata_props`: the class labels, the task, the
//! head, the input shape and the bz that wrote it.

use super::proto::StringStringEntryProto;
use super::signature;
use crate::checkpoint::inference::Inference;
use crate::config::TaskKind;
use crate::predict::Head;

/// The model's `doc_string`.
pub const DOC: &str = "Exported by bz. Feed raw samples as `input` [batch, ...input_shape]: the training normalisation is part of the \
graph. `logits` are the model's outputs (a regression model's values); a classifier also has `probabilities` [batch, classes], \
what `bz predict` reports. The class names are in the metadata (`labels`, a JSON list, index = class id).";

/// The metadata entries, in a fixed order.
pub fn props(inference: &Inference, head: Head) -> Vec<StringStringEntryProto> {
    let entry = |key: &str, value: String| StringStringEntryProto { key: key.into(), value };
    let task = match inference.task {
        TaskKind::Classification => "classification",
        TaskKind::Regression => "regression",
    };
    let mut props = vec![
        entry("task", task.into()),
        entry("head", signature::head_name(head).into()),
        entry("input_shape", serde_json::json!(inference.input_shape).to_string()),
        entry("bz_version", env!("CARGO_PKG_VERSION").into()),
    ];
    if inference.task == TaskKind::Classification {
        let labels: Vec<String> = (0..inference.outputs).map(|id| inference.label(id)).collect();
        props.insert(0, entry("labels", serde_json::json!(labels).to_string()));
    }
    props
}
