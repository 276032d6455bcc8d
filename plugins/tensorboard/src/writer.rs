//! Summaries as TensorBoard's loaders expect them: f32 scalars, legacy histograms, markdown text, PNG images (the
//! images plugin's blob sequences), PR curves, and the HParams plugin's session start and end records.

use crate::canvas::Png;
use crate::proto::{self, HParamsData, Kind, PbKind, PbValue};
use crate::record::EventFile;
use bz_plugin_api::payload::PrCurves;
use prost::Message;
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::path::Path;

pub struct Writer {
    file: EventFile,
}

pub fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

fn plugin(name: &str, content: Vec<u8>) -> Option<proto::SummaryMetadata> {
    Some(proto::SummaryMetadata { plugin_data: Some(proto::PluginData { plugin_name: name.into(), content }), ..Default::default() })
}

impl Writer {
    pub fn create(dir: &Path) -> std::io::Result<Writer> {
        Ok(Writer { file: EventFile::create(dir, now())? })
    }

    pub fn path(&self) -> &Path {
        self.file.path()
    }

    fn summary(&mut self, step: u64, value: Vec<proto::Value>) -> std::io::Result<()> {
        self.file.write(&proto::Event { wall_time: now(), step: step as i64, what: Some(proto::What::Summary(proto::Summary { value })) })
    }

    /// Several scalars at one step, in one event.
    pub fn scalars(&mut self, step: u64, values: &[(String, f64)]) -> std::io::Result<()> {
        let value = values.iter().map(|(tag, v)| proto::Value { tag: tag.clone(), metadata: None, value: Some(Kind::SimpleValue(*v as f32)) }).collect();
        self.summary(step, value)
    }

    /// A histogram in the host's JSON shape (`bz_plugin_api::Directive::WANT_HISTOGRAMS`); `None` if it is not one.
    pub fn histogram(&mut self, step: u64, tag: &str, h: &Json) -> std::io::Result<bool> {
        let list = |k: &str| -> Option<Vec<f64>> { h[k].as_array().map(|a| a.iter().filter_map(Json::as_f64).collect()) };
        let (Some(bucket_limit), Some(bucket)) = (list("bucket_limit"), list("bucket")) else { return Ok(false) };
        if bucket.is_empty() || bucket.len() != bucket_limit.len() {
            return Ok(false);
        }
        let f = |k: &str| h[k].as_f64().unwrap_or(0.0);
        let histo = proto::HistogramProto { min: f("min"), max: f("max"), num: f("num"), sum: f("sum"), sum_squares: f("sum_squares"), bucket_limit, bucket };
        self.summary(step, vec![proto::Value { tag: tag.into(), metadata: None, value: Some(Kind::Histo(histo)) }])?;
        Ok(true)
    }

    /// Markdown text (the text plugin renders it).
    pub fn text(&mut self, step: u64, tag: &str, markdown: &str) -> std::io::Result<()> {
        let tensor = proto::TensorProto {
            dtype: proto::DT_STRING,
            tensor_shape: Some(proto::TensorShapeProto { dim: vec![] }),
            string_val: vec![markdown.as_bytes().to_vec()],
            float_val: vec![],
        };
        self.summary(step, vec![proto::Value { tag: tag.into(), metadata: plugin("text", Vec::new()), value: Some(Kind::Tensor(tensor)) }])
    }

    /// A PNG image (the images plugin shows one per step), with a description for its card when not empty.
    pub fn image(&mut self, step: u64, tag: &str, png: &Png, description: &str) -> std::io::Result<()> {
        // The images plugin's own (v2) form: a blob sequence [width, height, PNG]. Both loaders read the legacy
        // `Summary.Image` too, but RustBoard drops its description from the card.
        let tensor = proto::TensorProto {
            dtype: proto::DT_STRING,
            tensor_shape: Some(proto::TensorShapeProto { dim: vec![proto::Dim { size: 3 }] }),
            string_val: vec![png.width.to_string().into_bytes(), png.height.to_string().into_bytes(), png.bytes.clone()],
            float_val: vec![],
        };
        let metadata = proto::SummaryMetadata {
            summary_description: description.into(),
            data_class: proto::DATA_CLASS_BLOB_SEQUENCE,
            ..plugin("images", Vec::new()).unwrap_or_default()
        };
        self.summary(step, vec![proto::Value { tag: tag.into(), metadata: Some(metadata), value: Some(Kind::Tensor(tensor)) }])
    }

    /// One PR curve per class, tagged `<prefix>/<class label>`, in one event. The pr_curves plugin's layout: a
    /// DT_FLOAT `[6, num_thresholds]` tensor of TP, FP, TN, FN, precision and recall. Curves whose lists do not
    /// have `num_thresholds` entries are skipped.
    pub fn pr_curves(&mut self, step: u64, prefix: &str, curves: &PrCurves) -> std::io::Result<()> {
        let n = curves.num_thresholds as usize;
        let content = proto::PrCurvePluginData { version: 0, num_thresholds: curves.num_thresholds }.encode_to_vec();
        let value = curves
            .classes
            .iter()
            .filter(|c| n >= 2 && [&c.tp, &c.fp, &c.tn, &c.fn_].iter().all(|l| l.len() == n))
            .map(|c| {
                let counts = [&c.tp, &c.fp, &c.tn, &c.fn_].into_iter().flat_map(|l| l.iter().map(|v| *v as f32));
                let ratios = (0..n).map(|i| c.precision(i) as f32).chain((0..n).map(|i| c.recall(i) as f32));
                let tensor = proto::TensorProto {
                    dtype: proto::DT_FLOAT,
                    tensor_shape: Some(proto::TensorShapeProto { dim: vec![proto::Dim { size: 6 }, proto::Dim { size: n as i64 }] }),
                    string_val: vec![],
                    float_val: counts.chain(ratios).collect(),
                };
                proto::Value { tag: format!("{prefix}/{}", c.label), metadata: plugin("pr_curves", content.clone()), value: Some(Kind::Tensor(tensor)) }
            })
            .collect::<Vec<_>>();
        if value.is_empty() {
            return Ok(());
        }
        self.summary(step, value)
    }

    fn hparams(&mut self, tag: &str, data: HParamsData) -> std::io::Result<()> {
        let content = proto::HParamsPluginData { version: 0, data: Some(data) }.encode_to_vec();
        // The "null tensor" the hparams plugin expects: DT_FLOAT of shape [0].
        let tensor = proto::TensorProto {
            dtype: proto::DT_FLOAT,
            tensor_shape: Some(proto::TensorShapeProto { dim: vec![proto::Dim { size: 0 }] }),
            string_val: vec![],
            float_val: vec![],
        };
        self.summary(0, vec![proto::Value { tag: tag.into(), metadata: plugin("hparams", content), value: Some(Kind::Tensor(tensor)) }])
    }

    /// The run's hyperparameters: numbers, strings and booleans (anything else is written as its JSON text).
    pub fn session_start(&mut self, hparams: &serde_json::Map<String, Json>, group: &str) -> std::io::Result<()> {
        let hparams: BTreeMap<String, PbValue> = hparams
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| {
                let kind = match v {
                    Json::Number(n) => PbKind::Number(n.as_f64().unwrap_or(f64::NAN)),
                    Json::Bool(b) => PbKind::Bool(*b),
                    Json::String(s) => PbKind::String(s.clone()),
                    other => PbKind::String(other.to_string()),
                };
                (k.clone(), PbValue { kind: Some(kind) })
            })
            .collect();
        let start = proto::SessionStartInfo { hparams, group_name: group.into(), start_time_secs: now() };
        self.hparams("_hparams_/session_start_info", HParamsData::SessionStartInfo(start))
    }

    pub fn session_end(&mut self, success: bool) -> std::io::Result<()> {
        let status = if success { proto::STATUS_SUCCESS } else { proto::STATUS_FAILURE };
        self.hparams("_hparams_/session_end_info", HParamsData::SessionEndInfo(proto::SessionEndInfo { status, end_time_secs: now() }))
    }

    /// SessionLog START at `step`: readers drop what an earlier, crashed file wrote at or after it.
    pub fn session_log_start(&mut self, step: u64) -> std::io::Result<()> {
        self.file.write(&proto::Event { wall_time: now(), step: step as i64, what: Some(proto::What::SessionLog(proto::SessionLog { status: 1 })) })
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}
