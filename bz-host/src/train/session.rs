//! A prepared session: the data, the model and its variables, the objective and the device a config describes.
//! `bz train` trains it; `bz eval` and `bz validate` use it as it is.

use crate::config::{self, Config, DataSource, ImagesData};
use crate::data::augment::Augmenter;
use crate::data::{self, Dataset};
use crate::evaluate::Objective;
use crate::model::{self, Model};
use anyhow::Result;
use std::path::Path;
use tch::nn;

/// Everything a config builds before the first batch.
pub struct Session {
    pub data: Dataset,
    /// The model's variables (weights and buffers), what checkpoints save and load.
    pub vs: nn::VarStore,
    pub model: Model,
    pub objective: Objective,
    pub device: tch::Device,
    /// `data.augment` of an images source, applied to training batches only.
    pub augment: Option<Augmenter>,
}

impl Session {
    /// Builds data, model and objective for a config; problems the config can fix are config errors (exit 2).
    pub fn prepare(cfg: &Config, config_path: &Path) -> Result<Session> {
        if cfg.run.threads > 0 {
            tch::set_num_threads(cfg.run.threads as i32);
        }
        let device = model::device(&cfg.run.device).map_err(|e| config_error(config_path, "run.device", format!("{e:#}")))?;
        tch::manual_seed(cfg.run.seed as i64);
        let base = config_path.parent().unwrap_or(Path::new("."));
        let data = data::load(&cfg.data, cfg.run.seed, base, device).map_err(|e| config::in_file(e, config_path))?;
        let vs = nn::VarStore::new(device);
        let model = match &cfg.model.torchscript {
            Some(p) => Model::from_torchscript(&vs, &base.join(p), &data.input_shape)?,
            None => Model::from_layers(&vs, &cfg.model.layers, &data.input_shape).map_err(|e| match e.downcast::<crate::model::ShapeError>() {
                Ok(shape) => config_error(config_path, "model", shape.0),
                Err(e) => e,
            })?,
        };
        let objective = Objective::new(cfg.train.loss, data.task, data.outputs, &model.output_shape, cfg.train.label_smoothing, cfg.metrics.top_k)
            .map_err(|e| config_error(config_path, "model", format!("{e:#}")))?;
        check_monitors(cfg, config_path, &objective, &data)?;
        let augment = match &cfg.data.source {
            DataSource::Images(ImagesData { augment: Some(a), .. }) => Augmenter::new(a, cfg.run.seed, data.normalization.as_ref(), device)?,
            _ => None,
        };
        Ok(Session { data, vs, model, objective, device, augment })
    }
}

// Even when found only now that shapes are known.
fn config_error(file: &Path, key: &str, message: String) -> anyhow::Error {
    config::ConfigError { file: file.to_path_buf(), location: None, key: Some(key.to_string()), message }.into()
}

/// The metrics the checkpoint and the scheduler monitor must be ones this run reports.
fn check_monitors(cfg: &Config, config_path: &Path, objective: &Objective, data: &Dataset) -> Result<()> {
    let names = objective.metric_names();
    let check_metric = |key: &str, name: &str| -> Result<()> {
        if !names.iter().any(|n| n == name) {
            return Err(config_error(config_path, key, format!("{name:?} is not a metric of this run; choose one of: {}", names.join(", "))));
        }
        Ok(())
    };
    check_metric("checkpoint.monitor", &cfg.checkpoint.monitor)?;
    // A study's objectives and constraints: a trial that never reports one would fail only after training.
    if let Some(tune) = &cfg.tune {
        let study_keys = tune.metric.0.iter().map(|m| ("tune.metric", m)).chain(tune.constraints.iter().map(|c| ("tune.constraints", &c.metric)));
        for (key, name) in study_keys.filter(|(_, m)| !config::EPOCH_NUMBERS.contains(&m.as_str())) {
            check_metric(key, name)?;
        }
    }
    if let Some(monitor) = cfg.scheduler.plateau_monitor() {
        check_metric("scheduler.monitor", monitor)?;
    }
    if data.val.is_empty() && (cfg.checkpoint.monitor.starts_with("val/") || cfg.scheduler.plateau_monitor().is_some_and(|m| m.starts_with("val/"))) {
        return Err(config_error(
            config_path,
            "data.val_split",
            "is 0, so there is no validation set, but a val/ metric is monitored: set data.val_split > 0, data.val, or monitor train/loss".into(),
        ));
    }
    Ok(())
}
