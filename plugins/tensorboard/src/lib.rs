//! The `tensorboard` plugin for bz: TensorBoard event files that the real TensorBoard shows in full.
//!
//! ```toml
//! [plugins.tensorboard]
//! log_dir = "tb"                  # default: the run directory; else <log_dir>/<run name>
//! log_every_n_steps = 10          # train/batch_loss every N steps (0: off)
//! histogram_every_n_epochs = 0    # weights and gradients per parameter every N epochs (0: off)
//! images = true                   # validation images: the confusion matrix (when the run has one) and, for
//!                                 # image data, a grid of the first misclassified samples
//! images_every_n_epochs = 1       # … every N epochs (0: off)
//! pr_curves_every_n_epochs = 1    # per-class PR curves on the validation split every N epochs (0: off)
//! ```
//!
//! Per epoch: every train and validation metric (`train/loss`, `val/accuracy`, …), `optim/lr`,
//! `time/epoch_s`, `time/samples_per_s` and `epoch`, all at the global step; for classification with a
//! validation split, the confusion matrix as a heatmap image (`val/confusion_matrix`, rows true classes, with
//! `metrics.confusion_matrix = true`) and a PR curve per class (`val/pr_curves/<class>`); for image data
//! (`[C, H, W]` samples) the first misclassified validation samples as one grid (`val/misclassified`, at most 64
//! tiles, true class id in green and predicted in red under each) with their names in a text table
//! (`val/misclassified_labels`). At run start: the resolved config
//! and the model summary as text, and an HParams session with the run's hyperparameters, ended as success or
//! failure when the run ends, so runs (and the trials of a `bz tune` study) line up in the HPARAMS tab. The file
//! is flushed at every epoch end; a resumed run appends a new file in the same directory, starting with a
//! SessionLog START just after the resume step.

pub mod canvas;
pub mod grid;
pub mod heatmap;
pub mod proto;
pub mod record;
pub mod writer;

use bz_plugin_api::config::{self, ConfigType, PluginConfig};
use bz_plugin_api::payload::{EpochEnd, EpochSummary, EventPayload, Misclassified, RunEnd, RunStart};
use bz_plugin_api::{export_plugin, log, Callback, Directive, Event, EventKind, Host, Level, Plugin, PluginError, RunStatus};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::PathBuf;
use writer::Writer;

/// `[plugins.tensorboard]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Default: the run directory; else `<log_dir>/<run name>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_dir: Option<PathBuf>,
    /// `train/batch_loss` every N steps; 0 turns it off.
    pub log_every_n_steps: u64,
    /// Weight and gradient histograms every N epochs; 0 turns them off.
    pub histogram_every_n_epochs: u64,
    /// Validation images: the confusion matrix (`val/confusion_matrix`), when the run reports one
    /// (`metrics.confusion_matrix`), and for image data a grid of the first misclassified samples
    /// (`val/misclassified`).
    pub images: bool,
    /// Images every N epochs; 0 turns them off. A grid is at most 64 tiles of at most 64x64 pixels (about
    /// 0.5 MB of PNG at worst, a few KB for small images) per epoch.
    pub images_every_n_epochs: u64,
    /// Per-class precision-recall curves on the validation split (classification) every N epochs; 0 turns them
    /// off.
    pub pr_curves_every_n_epochs: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config { log_dir: None, log_every_n_steps: 10, histogram_every_n_epochs: 0, images: true, images_every_n_epochs: 1, pr_curves_every_n_epochs: 1 }
    }
}

impl PluginConfig for Config {
    fn check(&self) -> Result<(), PluginError> {
        match &self.log_dir {
            Some(d) if d.as_os_str().is_empty() => Err(config::key_error("log_dir", "must be a non-empty path")),
            _ => Ok(()),
        }
    }
}

struct TensorBoard {
    cfg: Config,
    host: Host,
    writer: Option<Writer>,
    /// Whether the HParams session got its end record (written once: readers keep only the first).
    ended: bool,
}

/// Whether epoch `epoch` (1-based) is one of every `n`th; never when `n` is 0.
fn due(epoch: u64, n: u64) -> bool {
    n > 0 && epoch.is_multiple_of(n)
}

fn io(what: &str, e: std::io::Error) -> PluginError {
    PluginError::new(PluginError::IO, format!("{what}: {e}"))
}

impl TensorBoard {
    fn writer(&mut self) -> Result<&mut Writer, PluginError> {
        self.writer.as_mut().ok_or_else(|| PluginError::other("no event file: RUN_START was not seen"))
    }

    fn run_start(&mut self, e: &Event<'_>) -> Result<(), PluginError> {
        let p = RunStart::from_event(e).unwrap_or_default();
        let dir = match &self.cfg.log_dir {
            Some(d) => d.join(p.run_name.as_deref().unwrap_or("run")),
            None if p.run_dir.is_empty() => self.host.run_dir(),
            None => PathBuf::from(&p.run_dir),
        };
        let mut w = Writer::create(&dir).map_err(|err| io(&format!("cannot create an event file in {}", dir.display()), err))?;
        log!(Level::Info, "writing {}", w.path().display());
        let path = w.path().display().to_string();
        let result = (|| {
            if p.resumed {
                // The session's start, config and summary are in the first file already. Readers drop stored
                // points at or after a START's step: the checkpoint's own step (the last epoch's scalars) stays,
                // anything an interrupted run wrote after it goes.
                w.session_log_start(e.global_step + 1)?;
            } else {
                w.session_start(&p.hyperparameters, "")?;
                if !p.config.is_empty() {
                    w.text(0, "run/config", &format!("```toml\n{}\n```", p.config))?;
                }
                if !p.model_summary.is_empty() {
                    w.text(0, "run/model", &format!("```\n{}\n```", p.model_summary))?;
                }
            }
            w.flush()
        })();
        result.map_err(|err| io(&path, err))?;
        self.writer = Some(w);
        Ok(())
    }

    fn epoch_end(&mut self, e: &Event<'_>) -> Result<(), PluginError> {
        let p = EpochEnd::from_event(e).unwrap_or_default();
        let mut values: Vec<(String, f64)> = e.split_metrics().collect();
        let s = &p.summary;
        values.extend([("optim/lr".into(), s.lr), ("time/epoch_s".into(), s.epoch_time_s), ("time/samples_per_s".into(), s.samples_per_s)]);
        values.push(("epoch".into(), e.epoch as f64));
        let image = self.confusion_image(e.epoch, s)?;
        let misclassified = p.misclassified.as_ref().filter(|_| self.images_due(e.epoch)).and_then(misclassified_grid).transpose()?;
        // Another plugin may have asked for them in an epoch this one skips.
        let pr_curves = p.pr_curves.as_ref().filter(|_| due(e.epoch, self.cfg.pr_curves_every_n_epochs));
        let step = e.global_step;
        let w = self.writer()?;
        let path = w.path().display().to_string();
        let result = (|| {
            w.scalars(step, &values)?;
            if let Some(hs) = &p.histograms {
                for (prefix, group) in [("weights", &hs.weights), ("gradients", &hs.gradients)] {
                    for (name, h) in group {
                        w.histogram(step, &format!("{prefix}/{name}"), h)?;
                    }
                }
            }
            if let Some(png) = &image {
                w.image(step, "val/confusion_matrix", png, "")?;
            }
            if let Some(g) = &misclassified {
                w.image(step, "val/misclassified", &g.png, grid::DESCRIPTION)?;
                w.text(step, "val/misclassified_labels", &g.table)?;
            }
            if let Some(pr) = pr_curves {
                w.pr_curves(step, "val/pr_curves", pr)?;
            }
            w.flush()
        })();
        result.map_err(|err| io(&path, err))
    }

    /// The epoch's confusion matrix as a heatmap, when it has one and images are due.
    fn confusion_image(&self, epoch: u64, s: &EpochSummary) -> Result<Option<canvas::Png>, PluginError> {
        let Some(rows) = s.confusion_matrix.as_deref().filter(|_| self.images_due(epoch)) else {
            return Ok(None);
        };
        match heatmap::confusion_matrix(rows) {
            Some(png) => png.map(Some).map_err(|err| PluginError::other(format!("cannot encode the confusion matrix as PNG: {err}"))),
            None => {
                log!(Level::Warn, "epoch {epoch}: the confusion matrix is not square; no image");
                Ok(None)
            }
        }
    }

    fn images_due(&self, epoch: u64) -> bool {
        self.cfg.images && due(epoch, self.cfg.images_every_n_epochs)
    }

    /// What to ask the host for before an epoch: histograms, PR curves and misclassified samples, when due.
    fn requests(&self, epoch: u64) -> Directive {
        let mut d = Directive::NONE;
        if due(epoch, self.cfg.histogram_every_n_epochs) {
            d = d | Directive::WANT_HISTOGRAMS;
        }
        if due(epoch, self.cfg.pr_curves_every_n_epochs) {
            d = d | Directive::WANT_PR_CURVES;
        }
        if self.images_due(epoch) {
            d = d | Directive::WANT_MISCLASSIFIED;
        }
        d
    }

    /// A RUN_END's metrics (the test split's, evaluated after training) as `test/…` scalars at the final step;
    /// with no experiment declared, TensorBoard's HParams view lists them as metrics too.
    fn test_scalars(&mut self, e: &Event<'_>) -> Result<(), PluginError> {
        let values: Vec<(String, f64)> = e.split_metrics().collect();
        if values.is_empty() || self.writer.is_none() {
            return Ok(());
        }
        let step = e.global_step;
        let w = self.writer()?;
        let path = w.path().display().to_string();
        w.scalars(step, &values).and_then(|_| w.flush()).map_err(|err| io(&path, err))
    }

    /// Ends the HParams session once; an interrupted run stays open (it can be resumed).
    fn end(&mut self, status: RunStatus) -> Result<(), PluginError> {
        let Some(w) = self.writer.as_mut() else { return Ok(()) };
        let path = w.path().display().to_string();
        let result = (|| {
            if !self.ended && status != RunStatus::INTERRUPTED {
                w.session_end(status != RunStatus::FAILED)?;
                self.ended = true;
            }
            w.flush()
        })();
        result.map_err(|err| io(&path, err))
    }
}

/// The grid of misclassified samples and its table of names.
struct MisclassifiedGrid {
    png: canvas::Png,
    table: String,
}

/// `None` when the host sent no usable sample (each is checked against the payload's bounds).
fn misclassified_grid(m: &Misclassified) -> Option<Result<MisclassifiedGrid, PluginError>> {
    let (png, shown) = grid::grid(m)?;
    if shown.len() < m.samples.len() {
        log!(Level::Warn, "{} of {} misclassified samples had malformed pixels; left out of the grid", m.samples.len() - shown.len(), m.samples.len());
    }
    let table = grid::table(m, &shown);
    Some(png.map(|png| MisclassifiedGrid { png, table }).map_err(|err| PluginError::other(format!("cannot encode the misclassified grid as PNG: {err}"))))
}

impl Callback for TensorBoard {
    fn subscriptions(&self) -> Vec<EventKind> {
        let mut kinds = vec![EventKind::RUN_START, EventKind::EPOCH_END, EventKind::RUN_END];
        if self.cfg.log_every_n_steps > 0 {
            kinds.push(EventKind::TRAIN_BATCH_END);
        }
        if self.cfg.histogram_every_n_epochs > 0 || self.cfg.pr_curves_every_n_epochs > 0 || (self.cfg.images && self.cfg.images_every_n_epochs > 0) {
            kinds.push(EventKind::EPOCH_START);
        }
        kinds
    }

    fn on_event(&mut self, e: &Event<'_>) -> Result<Directive, PluginError> {
        match e.kind {
            EventKind::RUN_START => self.run_start(e)?,
            EventKind::EPOCH_START => return Ok(self.requests(e.epoch)),
            EventKind::TRAIN_BATCH_END if e.global_step.is_multiple_of(self.cfg.log_every_n_steps.max(1)) => {
                if let Some(loss) = e.metric("train", "loss") {
                    let step = e.global_step;
                    let w = self.writer()?;
                    let path = w.path().display().to_string();
                    w.scalars(step, &[("train/batch_loss".into(), loss)]).map_err(|err| io(&path, err))?;
                }
            }
            EventKind::EPOCH_END => self.epoch_end(e)?,
            EventKind::RUN_END => {
                self.test_scalars(e)?;
                self.end(RunEnd::from_event(e).map_or(RunStatus::COMPLETED, |end| end.status.into()))?;
            }
            _ => {}
        }
        Ok(Directive::NONE)
    }

    fn finish(&mut self, status: RunStatus) -> Result<(), PluginError> {
        let r = self.end(status);
        // Closes the file.
        self.writer = None;
        r
    }
}

pub struct TensorBoardPlugin;

impl Plugin for TensorBoardPlugin {
    const NAME: &'static str = "tensorboard";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "TensorBoard event files: scalars, histograms, text, hparams, images and PR curves";

    const CONFIG: ConfigType = ConfigType::of::<Config>();

    fn create_callback(host: Host, config: Value) -> Result<Option<Box<dyn Callback>>, PluginError> {
        Ok(Some(Box::new(TensorBoard { cfg: Config::parse(&config)?, host, writer: None, ended: false })))
    }
}

export_plugin!(TensorBoardPlugin);

#[cfg(test)]
mod tests {
    use super::*;
    use bz_plugin_api::harness::Harness;
    use serde_json::json;

    #[test]
    fn config_errors_name_the_key() {
        let err = |v: Value| TensorBoardPlugin::validate_config(&v).unwrap_err().message.to_string();
        assert!(err(json!({ "log_every_n_steps": -1 })).starts_with("`log_every_n_steps`: "));
        assert!(err(json!({ "histogram_every": 1 })).starts_with("`histogram_every`: unknown key; did you mean `histogram_every_n_epochs`?"));
        assert_eq!(err(json!({ "log_dir": "" })), "`log_dir`: must be a non-empty path");
        assert!(err(json!({ "log_dir": 3 })).starts_with("`log_dir`: invalid type"));
        assert_eq!(TensorBoardPlugin::validate_config(&json!({ "log_dir": "tb" })).unwrap()["log_dir"], "tb");
    }

    #[test]
    fn defaults_and_schema_are_as_documented() {
        assert_eq!(
            TensorBoardPlugin::default_config(),
            json!({ "log_every_n_steps": 10, "histogram_every_n_epochs": 0, "images": true, "images_every_n_epochs": 1, "pr_curves_every_n_epochs": 1 })
        );
        assert_eq!(TensorBoardPlugin::validate_config(&json!({})).unwrap(), TensorBoardPlugin::default_config());
        let schema = TensorBoardPlugin::config_schema();
        assert_eq!(schema["additionalProperties"], false);
        let keys: Vec<&String> = schema["properties"].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["histogram_every_n_epochs", "images", "images_every_n_epochs", "log_dir", "log_every_n_steps", "pr_curves_every_n_epochs"]);
        assert_eq!(schema["properties"]["log_every_n_steps"]["default"], 10);
    }

    #[test]
    fn a_run_writes_one_event_file_that_asks_for_histograms_when_due() {
        let dir = std::env::temp_dir().join(format!("bz-tb-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut h = Harness::new::<TensorBoardPlugin>(json!({ "histogram_every_n_epochs": 2, "pr_curves_every_n_epochs": 0, "images": false })).unwrap();
        Harness::set_run_dir(&dir);
        let run = h.run(3, 2, |epoch| vec![("val", "loss", 1.0 / epoch as f64)]).unwrap();
        assert_eq!(run.epochs_run, 3);
        let null = Value::Null;
        assert_eq!(h.send(EventKind::EPOCH_START, 4, 6, 0, &[], &null).unwrap(), Directive::WANT_HISTOGRAMS);
        assert_eq!(h.send(EventKind::EPOCH_START, 5, 8, 0, &[], &null).unwrap(), Directive::NONE);
        let files: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().contains("tfevents")).collect();
        assert_eq!(files.len(), 1);
        assert!(std::fs::metadata(files[0].path()).unwrap().len() > 100);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn pr_curves_and_histograms_are_asked_for_on_their_own_schedules() {
        let h = |cfg: Value| Harness::new::<TensorBoardPlugin>(cfg).unwrap();
        let null = Value::Null;
        let mut both = h(json!({ "histogram_every_n_epochs": 2 }));
        let images = Directive::WANT_MISCLASSIFIED;
        assert_eq!(both.send(EventKind::EPOCH_START, 1, 0, 0, &[], &null).unwrap(), Directive::WANT_PR_CURVES | images);
        assert_eq!(both.send(EventKind::EPOCH_START, 2, 6, 0, &[], &null).unwrap(), Directive::WANT_HISTOGRAMS | Directive::WANT_PR_CURVES | images);
        let mut none = h(json!({ "pr_curves_every_n_epochs": 0, "images": false }));
        assert_eq!(none.send(EventKind::EPOCH_START, 1, 0, 0, &[], &null).unwrap(), Directive::NONE);
        let mut every_other = h(json!({ "pr_curves_every_n_epochs": 0, "images_every_n_epochs": 2 }));
        assert_eq!(every_other.send(EventKind::EPOCH_START, 1, 0, 0, &[], &null).unwrap(), Directive::NONE);
        assert_eq!(every_other.send(EventKind::EPOCH_START, 2, 6, 0, &[], &null).unwrap(), images);
    }

    #[test]
    fn an_epoch_with_a_confusion_matrix_and_pr_curves_writes_an_image_and_curves() {
        let dir = std::env::temp_dir().join(format!("bz-tb-unit-img-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let write = |cfg: Value, sub: &str| -> u64 {
            let d = dir.join(sub);
            let mut h = Harness::new::<TensorBoardPlugin>(cfg).unwrap();
            Harness::set_run_dir(&d);
            let start = json!({ "run_dir": d.display().to_string(), "epochs": 1 });
            h.send(EventKind::RUN_START, 0, 0, 0, &[], &start).unwrap();
            let curve = json!({ "index": 0, "label": "a", "tp": [2, 1, 0], "fp": [2, 0, 0], "tn": [0, 2, 2], "fn": [0, 1, 2] });
            let end = json!({ "event": "epoch", "epoch": 1, "val/confusion_matrix": [[2, 0], [1, 1]],
                              "val/pr_curves": { "num_thresholds": 3, "classes": [curve] } });
            h.send(EventKind::EPOCH_END, 1, 4, 0, &[], &end).unwrap();
            let file = std::fs::read_dir(&d).unwrap().flatten().find(|e| e.file_name().to_string_lossy().contains("tfevents")).unwrap();
            std::fs::metadata(file.path()).unwrap().len()
        };
        let with = write(json!({}), "with");
        let without = write(json!({ "images": false, "pr_curves_every_n_epochs": 0 }), "without");
        assert!(with > without + 100, "a PNG and a curve add bytes: {with} vs {without}");
        // The misclassified grid: one 8x8 sample, 64 zero bytes (black); its PNG and table add bytes,
        // and a sample with malformed pixels is left out (no grid at all here).
        let grid = |pixels: &str| {
            let sample = json!({ "index": 3, "target": 1, "predicted": 7, "target_label": "1", "predicted_label": "7", "pixels": pixels });
            json!({ "event": "epoch", "epoch": 1, "val/misclassified": { "channels": 1, "height": 8, "width": 8, "total": 1, "samples": [sample] } })
        };
        let sizes: Vec<u64> = [grid(&format!("{}AA==", "A".repeat(84))), grid("AAAA")]
            .iter()
            .enumerate()
            .map(|(i, end)| {
                let d = dir.join(format!("grid{i}"));
                let mut h = Harness::new::<TensorBoardPlugin>(json!({})).unwrap();
                h.send(EventKind::RUN_START, 0, 0, 0, &[], &json!({ "run_dir": d.display().to_string(), "epochs": 1 })).unwrap();
                h.send(EventKind::EPOCH_END, 1, 4, 0, &[], end).unwrap();
                let file = std::fs::read_dir(&d).unwrap().flatten().find(|e| e.file_name().to_string_lossy().contains("tfevents")).unwrap();
                std::fs::metadata(file.path()).unwrap().len()
            })
            .collect();
        assert!(sizes[0] > sizes[1] + 100, "a grid adds a PNG and a table: {sizes:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
