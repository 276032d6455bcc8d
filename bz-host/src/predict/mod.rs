//! `bz predict`: runs a checkpoint's model on new samples, applying exactly the normalisation training applied
//! (from the checkpoint's `inference.json`), a batch at a time.

pub mod idx_input;
pub mod image_input;
pub mod input;
pub mod output;
pub mod safetensors_input;
pub mod safetensors_output;

use crate::checkpoint::{self, inference::Inference};
use crate::config::{Config, LayerSpec, LossKind, TaskKind};
use crate::data::Standardizer;
use crate::evaluate::{to_vec_f32, to_vec_i64, Objective};
use crate::model::{self, Model};
use anyhow::{Context, Result};
use output::{Format, Labels, OutputFile, Prediction, Sink, Writer};
use safetensors_output::SafetensorsWriter;
use std::io::{BufWriter, Write};
use std::path::Path;
use tch::{nn, Kind, Tensor};

/// A bad input sample (wrong field count, a value that is not a number): the user's input to fix, exit 2.
#[derive(Debug)]
pub struct InputError {
    /// The input's path, or `<stdin>`.
    pub source_name: String,
    pub line: Option<u64>,
    pub message: String,
}

impl std::fmt::Display for InputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.source_name, self.message),
            None => write!(f, "{}: {}", self.source_name, self.message),
        }
    }
}

impl std::error::Error for InputError {}

/// A checkpoint's model, ready to predict.
pub struct Predictor {
    pub inference: Inference,
    model: Model,
    /// The config's layer list the model was built from; `None` for a TorchScript model.
    layers: Option<Vec<LayerSpec>>,
    head: Head,
    /// The checkpoint's normalisation, as tensors made once.
    standardizer: Option<Standardizer>,
    device: tch::Device,
    vs: nn::VarStore,
}

/// What turns the model's raw outputs into what a user reads: the one place predict, the exports and their tests
/// take it from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head {
    /// Cross-entropy logits: probabilities by softmax over the classes.
    Softmax,
    /// One-vs-rest logits (BCE with logits on several classes): a sigmoid per class.
    Sigmoid,
    /// One logit for two classes: `[1 - p, p]` with `p = sigmoid(logit)`.
    BinaryLogit,
    /// Regression: the outputs are the values.
    Values,
}

impl Head {
    pub fn of(objective: &Objective) -> Head {
        if objective.task == TaskKind::Regression {
            Head::Values
        } else if objective.binary_logit {
            Head::BinaryLogit
        } else if objective.loss == LossKind::BceWithLogits {
            Head::Sigmoid
        } else {
            Head::Softmax
        }
    }

    /// Class probabilities `[N, classes]` from logits `[N, outputs]`; `None` for regression.
    pub fn probabilities(self, logits: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(match self {
            Head::Values => return Ok(None),
            Head::Softmax => logits.f_softmax(-1, Kind::Float)?,
            Head::Sigmoid => logits.f_sigmoid()?,
            Head::BinaryLogit => {
                let p = logits.f_sigmoid()?;
                Tensor::f_cat(&[p.f_neg()?.f_add_scalar(1.0)?, p], 1)?
            }
        }))
    }
}

/// A batch's outputs: the model's own (logits, or regression values) and, for classification, the probabilities.
pub struct Outputs {
    pub logits: Tensor,
    pub probabilities: Option<Tensor>,
}

impl Labels for Inference {
    fn label(&self, id: usize) -> String {
        Inference::label(self, id)
    }

    fn has_names(&self) -> bool {
        self.labels.is_some()
    }
}

impl Predictor {
    /// Builds the config's model for the shapes the checkpoint records and loads the checkpoint's weights; the
    /// training data is not read.
    pub fn load(cfg: &Config, config_path: &Path, dir: &Path) -> Result<Predictor> {
        let device = model::device(&cfg.run.device).with_context(|| format!("{}: run.device", config_path.display()))?;
        Predictor::load_on(cfg, config_path, dir, device)
    }

    /// [`Predictor::load`] on a device of the caller's choosing (exports trace and read weights on the CPU).
    pub fn load_on(cfg: &Config, config_path: &Path, dir: &Path, device: tch::Device) -> Result<Predictor> {
        if !dir.join("model.safetensors").exists() {
            anyhow::bail!("{} is not a checkpoint (no model.safetensors); train first or pass --checkpoint DIR", dir.display());
        }
        let inference = Inference::read(dir)?;
        if cfg.run.threads > 0 {
            tch::set_num_threads(cfg.run.threads as i32);
        }
        let mut vs = nn::VarStore::new(device);
        let model = match &cfg.model.torchscript {
            // A TorchScript model's buffers live only in the module the checkpoint saved.
            Some(_) => Model::from_torchscript(&vs, &dir.join("model.pt"), &inference.input_shape)?,
            None => Model::from_layers(&vs, &cfg.model.layers, &inference.input_shape)?,
        };
        let objective = Objective::new(cfg.train.loss, inference.task, inference.outputs, &model.output_shape, 0.0, 0)
            .with_context(|| format!("the model of {} does not fit checkpoint {}", config_path.display(), dir.display()))?;
        checkpoint::load_model(dir, &mut vs)?;
        // Inference never needs gradients, and a traced export may only capture weights that do not ask for them.
        vs.freeze();
        let layers = cfg.model.torchscript.is_none().then(|| cfg.model.layers.clone());
        let standardizer = inference.normalization.as_ref().map(|n| n.standardizer(device)).transpose()?;
        Ok(Predictor { inference, model, layers, head: Head::of(&objective), standardizer, device, vs })
    }

    pub fn head(&self) -> Head {
        self.head
    }

    /// The layer list the model was built from; `None` for a TorchScript model.
    pub fn layers(&self) -> Option<&[LayerSpec]> {
        self.layers.as_deref()
    }

    /// The model's weights and buffers by their PyTorch names (`0.weight`, `2.running_mean`), on the model's device.
    pub fn weights(&self) -> std::collections::HashMap<String, Tensor> {
        self.vs.variables()
    }

    pub fn device(&self) -> tch::Device {
        self.device
    }

    /// Runs raw samples `[N, ...input_shape]` through exactly what training applied: the normalisation, the model
    /// in eval mode, then the head. The TorchScript export traces this very function.
    pub fn forward(&self, raw: &Tensor) -> Result<Outputs> {
        let x = match &self.standardizer {
            Some(s) => s.apply(raw)?,
            None => raw.shallow_clone(),
        };
        let logits = self.model.forward_t(&x, false)?;
        let probabilities = self.head.probabilities(&logits)?;
        Ok(Outputs { logits, probabilities })
    }

    /// Predictions for a batch of `n` samples laid out flat in `features`.
    pub fn predict(&self, features: &[f32], n: usize, top_k: usize) -> Result<Batch> {
        let _guard = tch::no_grad_guard();
        let mut dims = vec![n as i64];
        dims.extend(&self.inference.input_shape);
        let x = Tensor::f_from_slice(features)?.f_reshape(&dims[..])?.f_to_device(self.device)?;
        let out = self.forward(&x)?;
        let logits = to_vec_f32(&out.logits)?;
        let Some(probs) = out.probabilities else {
            let predictions = logits.chunks(self.inference.outputs).map(|c| Prediction::Values(c.to_vec())).collect();
            return Ok(Batch { rows: n, keys: None, logits, probabilities: None, predictions });
        };
        let k = top_k.clamp(1, self.inference.outputs) as i64;
        let (values, ids) = probs.f_topk(k, -1, true, true)?;
        let values = to_vec_f32(&values)?;
        let ids = to_vec_i64(&ids)?;
        let predictions = ids
            .chunks(k as usize)
            .zip(values.chunks(k as usize))
            .map(|(i, v)| Prediction::Classes(i.iter().map(|&c| c as usize).zip(v.iter().copied()).collect()))
            .collect();
        Ok(Batch { rows: n, keys: None, logits, probabilities: Some(to_vec_f32(&probs)?), predictions })
    }
}

/// One batch's predictions: the raw outputs for tensor formats, the per-sample top-k for text formats.
pub struct Batch {
    pub rows: usize,
    /// Each sample's key (an image's path), for inputs that have them.
    pub keys: Option<Vec<String>>,
    /// `[rows, model outputs]`, row-major: logits, or a regression model's values.
    pub logits: Vec<f32>,
    /// `[rows, classes]`, row-major; `None` for regression.
    pub probabilities: Option<Vec<f32>>,
    pub predictions: Vec<Prediction>,
}

/// How `run` batches and what it reports per sample.
pub struct Options {
    pub batch_size: usize,
    pub top_k: usize,
}

/// Predicts every sample of `input` into the file `path` in `format`, which appears only once complete; returns how
/// many samples.
pub fn run_to_file(predictor: &Predictor, input: &mut dyn input::Samples, path: &Path, format: Format, opts: &Options) -> Result<usize> {
    let mut file = OutputFile::create(path)?;
    let mut out = BufWriter::new(file.file());
    let count = if format == Format::Safetensors {
        let mut writer = SafetensorsWriter::new(predictor.head() != Head::Values)?;
        let count = run(predictor, input, &mut writer, opts)?;
        writer.finish(&mut out, &predictor.inference)?;
        count
    } else {
        run(predictor, input, &mut Writer::new(&mut out, format), opts)?
    };
    out.flush()?;
    drop(out);
    file.commit()?;
    Ok(count)
}

/// Predicts every sample of `input` into `sink`; returns how many.
pub fn run(predictor: &Predictor, input: &mut dyn input::Samples, sink: &mut dyn Sink, opts: &Options) -> Result<usize> {
    let batch = opts.batch_size.max(1);
    let mut features = Vec::with_capacity(batch * predictor.inference.sample_len());
    let mut total = 0;
    loop {
        features.clear();
        let n = input.next_batch(batch, &mut features)?;
        if n == 0 {
            return Ok(total);
        }
        let mut batch = predictor.predict(&features, n, opts.top_k)?;
        batch.keys = input.keys().map(<[String]>::to_vec);
        sink.write(&batch, &predictor.inference)?;
        total += n;
    }
}
