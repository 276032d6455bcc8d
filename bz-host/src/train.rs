//! `bz train`: the training loop, its run directory, checkpoints, exact resume and fault handling.
//!
//! Reproducibility rests on three choices: the sample order of an epoch is a function of (seed, epoch), libtorch's
//! generator is re-seeded from (seed, step) before every batch (dropout), and optimizer state is bz's own. So a run
//! resumed from any checkpoint, even one written mid-epoch by Ctrl-C, continues bit-identically.

use crate::checkpoint::{self, PartialEpoch, TrainerState};
use crate::config::{self, Config, Loaded, TaskKind};
use crate::data::{self, Dataset};
use crate::evaluate::{evaluate, Objective};
use crate::events::{Directive, Dispatcher, Event, EventKind, Metric, RunStatus};
use crate::model::{self, Model};
use crate::optim::Optimizer;
use crate::schedule::Schedule;
use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use tch::{nn, Kind, Tensor};

/// Set by the Ctrl-C handler; the loop checks it between batches.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

pub struct TrainOptions {
    pub resume: bool,
    pub run_name: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Completed,
    Stopped,
    Interrupted,
}

/// The loss stopped being a finite number; the last good checkpoint is kept.
#[derive(Debug, thiserror::Error)]
#[error("the training loss became {value} at epoch {epoch}, batch {batch} (step {step}); stopped. Lower optimizer.lr, add train.clip_grad_norm, or check the data. The last good checkpoint is kept{}", checkpoint.as_ref().map(|p| format!(" at {}", p.display())).unwrap_or_default())]
pub struct NonFiniteLoss {
    pub value: f64,
    pub epoch: usize,
    pub batch: usize,
    pub step: usize,
    pub checkpoint: Option<PathBuf>,
}

/// Builds data, model and objective for a config (shared with `bz eval` and `bz validate`).
pub fn prepare(cfg: &Config, config_path: &Path) -> Result<(Dataset, nn::VarStore, Model, Objective, tch::Device)> {
    if cfg.run.threads > 0 {
        tch::set_num_threads(cfg.run.threads as i32);
    }
    let device = model::device(&cfg.run.device)?;
    tch::manual_seed(cfg.run.seed as i64);
    let base = config_path.parent().unwrap_or(Path::new("."));
    let data = data::load(&cfg.data, cfg.run.seed, base, device)?;
    let vs = nn::VarStore::new(device);
    // Problems that the config can fix are config errors (exit 2), even when found only now that shapes are known.
    let config_error = |key: &str, message: String| -> anyhow::Error {
        config::ConfigError { file: config_path.to_path_buf(), location: None, key: Some(key.to_string()), message }.into()
    };
    let model = match &cfg.model.torchscript {
        Some(p) => Model::from_torchscript(&vs, &base.join(p), &data.input_shape)?,
        None => Model::from_layers(&vs, &cfg.model.layers, &data.input_shape).map_err(|e| match e.downcast::<crate::model::ShapeError>() {
            Ok(shape) => config_error("model", shape.0),
            Err(e) => e,
        })?,
    };
    let objective = Objective::new(cfg.train.loss, data.task, data.outputs, &model.output_shape, cfg.train.label_smoothing, cfg.metrics.top_k)
        .map_err(|e| config_error("model", format!("{e:#}")))?;
    let names = objective.metric_names();
    let check_metric = |key: &str, name: &str| -> Result<()> {
        if !names.iter().any(|n| n == name) {
            return Err(config_error(key, format!("{name:?} is not a metric of this run; choose one of: {}", names.join(", "))));
        }
        Ok(())
    };
    check_metric("checkpoint.monitor", &cfg.checkpoint.monitor)?;
    if cfg.scheduler.name == config::SchedulerKind::Plateau {
        check_metric("scheduler.monitor", &cfg.scheduler.monitor)?;
    }
    if data.val.is_empty()
        && (cfg.checkpoint.monitor.starts_with("val/") || cfg.scheduler.monitor.starts_with("val/") && cfg.scheduler.name == config::SchedulerKind::Plateau)
    {
        bail!("there is no validation set (data.val_split = 0) but a val/ metric is monitored: set data.val_split > 0, data.val, or monitor train/loss");
    }
    Ok((data, vs, model, objective, device))
}

/// The run directory for a new run, or the one to resume, claimed for this process (see `run_dir`).
fn run_dir(loaded: &Loaded, opts: &TrainOptions) -> Result<crate::run_dir::Claim> {
    let root = &loaded.config.run.dir;
    let explicit = opts.run_name.clone().or_else(|| loaded.config.run.name.clone());
    if let Some(name) = &explicit {
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            bail!("run name {name:?} must be a plain directory name");
        }
    }
    if opts.resume {
        let dir = match &explicit {
            Some(name) => root.join(name),
            None => latest_run(root, &loaded.stem)
                .with_context(|| format!("nothing to resume: no run of {} under {} (start one without --resume)", loaded.stem, root.display()))?,
        };
        if !dir.join("checkpoints/last").exists() {
            bail!("nothing to resume: {} has no checkpoint (checkpoints/last)", dir.display());
        }
        return crate::run_dir::claim_existing(&dir);
    }
    match explicit {
        Some(name) => crate::run_dir::claim_new(root, std::iter::once(name), true),
        None => {
            let stem = loaded.stem.clone();
            let names = std::iter::once(stem.clone()).chain((2..).map(move |n| format!("{stem}-{n}")));
            crate::run_dir::claim_new(root, names, false)
        }
    }
}

/// The most recent run of a config stem (`stem`, `stem-2`, …) that has a checkpoint.
fn latest_run(root: &Path, stem: &str) -> Option<PathBuf> {
    let mut best: Option<(std::time::SystemTime, PathBuf)> = None;
    for entry in fs::read_dir(root).ok()?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let ours = name == stem || name.strip_prefix(&format!("{stem}-")).is_some_and(|n| n.parse::<u32>().is_ok());
        let last = entry.path().join("checkpoints/last");
        if let (true, Ok(meta)) = (ours, fs::metadata(last.join("trainer.json"))) {
            let t = meta.modified().ok()?;
            if best.as_ref().is_none_or(|(bt, _)| t > *bt) {
                best = Some((t, entry.path()));
            }
        }
    }
    best.map(|(_, p)| p)
}

/// Appends JSON lines to metrics.jsonl, flushed at every epoch so a crash keeps what was measured.
struct MetricsLog {
    out: std::io::BufWriter<fs::File>,
}

impl MetricsLog {
    fn open(path: &Path, keep_up_to_step: Option<usize>) -> Result<MetricsLog> {
        // On resume, drop lines written after the checkpoint: they will be produced again.
        if let (Some(step), Ok(text)) = (keep_up_to_step, fs::read_to_string(path)) {
            let kept: String = text
                .lines()
                .filter(|l| serde_json::from_str::<Value>(l).ok().and_then(|v| v.get("step")?.as_u64()).is_some_and(|s| s as usize <= step))
                .map(|l| format!("{l}\n"))
                .collect();
            crate::atomic::write(path, kept.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
        }
        let file = fs::OpenOptions::new().create(true).append(true).open(path).with_context(|| format!("cannot open {}", path.display()))?;
        Ok(MetricsLog { out: std::io::BufWriter::new(file) })
    }

    fn write(&mut self, v: &Value) -> Result<()> {
        serde_json::to_writer(&mut self.out, v)?;
        self.out.write_all(b"\n")?;
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.out.flush()?;
        Ok(())
    }
}

#[derive(Clone, Copy)]
enum Phase {
    Data,
    Forward,
    Backward,
    Metrics,
    Optimizer,
    Validation,
    Checkpoint,
}

/// Seconds per phase of one epoch, for the profiler. On CUDA, kernels run asynchronously, so the time of a
/// phase shows up in the next one that waits for the device (the loss read in `forward`).
#[derive(Default)]
struct Phases([f64; 7]);

impl Phases {
    const NAMES: [&'static str; 7] = ["data", "forward", "backward", "train_metrics", "optimizer", "validation", "checkpoint"];

    /// Adds the time since `since` to `phase` and returns now, for the next lap.
    fn lap(&mut self, since: Instant, phase: Phase) -> Instant {
        let now = Instant::now();
        self.0[phase as usize] += (now - since).as_secs_f64();
        now
    }

    fn to_json(&self) -> Value {
        Value::Object(Self::NAMES.iter().zip(self.0).map(|(n, v)| (n.to_string(), json!(v))).collect())
    }
}

/// The config's scalar settings as flat `section.key` pairs (TensorBoard's HParams, W&B's config, tuner trials).
/// Layers are summarised by count; plugin sections are left out.
pub fn hyperparameters(cfg: &Config) -> Value {
    fn walk(prefix: &str, v: &toml::Value, out: &mut Map<String, Value>) {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                    if key != "plugins" && key != "model.layers" {
                        walk(&key, v, out);
                    }
                }
            }
            toml::Value::Array(a) if a.iter().all(|x| !x.is_table() && !x.is_array()) => {
                out.insert(prefix.to_string(), serde_json::to_value(a).unwrap_or(Value::Null));
            }
            toml::Value::Array(_) => {}
            other => {
                out.insert(prefix.to_string(), serde_json::to_value(other).unwrap_or(Value::Null));
            }
        }
    }
    let mut out = Map::new();
    if let Ok(v) = toml::Value::try_from(cfg) {
        walk("", &v, &mut out);
    }
    out.insert("model.layers".into(), json!(cfg.model.layers.len()));
    Value::Object(out)
}

/// Mixes seed and step into libtorch's seed for one batch.
fn step_seed(seed: u64, step: usize) -> i64 {
    let mut z = seed ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) >> 1) as i64
}

fn metrics_map(metrics: &[Metric]) -> Map<String, Value> {
    metrics.iter().map(|m| (m.key(), json!(m.value))).collect()
}

fn emit(d: &mut Dispatcher, kind: EventKind, epoch: usize, step: usize, batch: usize, metrics: &[Metric], payload: &Value) -> Result<Directive> {
    if !d.wants(kind) {
        return Ok(Directive::NONE);
    }
    d.emit(&Event { kind, epoch, global_step: step, batch_in_epoch: batch, metrics, payload })
}

/// Trains a run to completion, early stop, interrupt or failure. Callbacks get every lifecycle event.
pub fn train(loaded: &Loaded, opts: &TrainOptions, dispatcher: &mut Dispatcher) -> Result<Outcome> {
    let result = train_inner(loaded, opts, dispatcher);
    let status = match &result {
        Ok(Outcome::Completed) => RunStatus::COMPLETED,
        Ok(Outcome::Stopped) => RunStatus::STOPPED,
        Ok(Outcome::Interrupted) => RunStatus::INTERRUPTED,
        Err(_) => RunStatus::FAILED,
    };
    if let Err(e) = &result {
        // A run that started ends with a RUN_END too, so plugins can record why and with which exit code; the
        // error itself is what bz reports, whatever a plugin does here.
        if dispatcher.started() {
            let code = if e.downcast_ref::<NonFiniteLoss>().is_some() { 3 } else { 1 };
            let payload = json!({ "status": "failed", "message": format!("{e:#}"), "exit_code": code });
            let _ = dispatcher.emit(&Event { kind: EventKind::RUN_END, epoch: 0, global_step: 0, batch_in_epoch: 0, metrics: &[], payload: &payload });
        }
    }
    dispatcher.finish(status);
    result
}

fn train_inner(loaded: &Loaded, opts: &TrainOptions, d: &mut Dispatcher) -> Result<Outcome> {
    let claim = run_dir(loaded, opts)?;
    let result = train_in(loaded, opts, d, claim.dir.clone());
    if result.is_err() {
        claim.release_if_unused();
    }
    result
}

fn train_in(loaded: &Loaded, opts: &TrainOptions, d: &mut Dispatcher, dir: PathBuf) -> Result<Outcome> {
    let cfg = &loaded.config;
    if opts.resume {
        check_resume_compatible(&dir, cfg)?;
    }
    let (data, mut vs, model, objective, device) = prepare(cfg, &loaded.path)?;
    let tc = &cfg.train;
    let bs = tc.batch_size;
    let n_train = data.train.len();
    let mut batches = if tc.drop_last { n_train / bs } else { n_train.div_ceil(bs) };
    if tc.limit_train_batches > 0 {
        batches = batches.min(tc.limit_train_batches);
    }
    if batches == 0 {
        bail!("train.batch_size = {bs} is larger than the {n_train} training samples with drop_last = true: lower batch_size");
    }
    let accum = tc.grad_accumulation;
    let opt_steps_per_epoch = batches.div_ceil(accum);
    let mut schedule = Schedule::new(&cfg.scheduler, cfg.optimizer.lr, tc.epochs, opt_steps_per_epoch);
    let mut params: Vec<(String, Tensor)> = vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).collect();
    params.sort_by(|a, b| a.0.cmp(&b.0));
    let mut opt = Optimizer::new(&cfg.optimizer, params);
    let ckpt_root = dir.join("checkpoints");
    let mode = cfg.checkpoint.mode.unwrap_or_else(|| config::default_mode(&cfg.checkpoint.monitor));

    // Fresh run or resume: where to start, and what the run knew so far.
    let mut state = TrainerState {
        format_version: checkpoint::FORMAT_VERSION,
        bz_version: env!("CARGO_PKG_VERSION").to_string(),
        epoch: 0,
        batch_in_epoch: 0,
        global_step: 0,
        optimizer_steps: 0,
        best: None,
        best_epoch: None,
        plateau: schedule.plateau.clone(),
        partial: PartialEpoch::default(),
        elapsed_s: 0.0,
        metrics: Map::new(),
    };
    let mut loaded_from = None;
    if opts.resume {
        let last = ckpt_root.join("last");
        let st = checkpoint::read_state(&last)?;
        checkpoint::load_model(&last, &mut vs)?;
        opt.load_state_tensors(checkpoint::load_optimizer(&last)?, st.optimizer_steps)?;
        schedule.plateau = st.plateau.clone();
        let resolved = fs::canonicalize(&last).unwrap_or(last);
        if st.epoch >= tc.epochs {
            bail!("{} already trained {} epochs; raise --epochs to train further", dir.display(), st.epoch);
        }
        loaded_from = Some(resolved);
        state = st;
    } else {
        fs::create_dir_all(&dir).with_context(|| format!("cannot create the run directory {}", dir.display()))?;
    }
    // Absolute from here on: plugins get it in payloads and may change their working directory.
    let dir = fs::canonicalize(&dir).with_context(|| format!("cannot resolve {}", dir.display()))?;
    let ckpt_root = dir.join("checkpoints");
    // Rewritten on resume too: `--epochs` may have grown.
    let config_file = dir.join("config.toml");
    crate::atomic::write(&config_file, config::to_toml(cfg).as_bytes()).with_context(|| format!("cannot write {}", config_file.display()))?;
    let mut log = MetricsLog::open(&dir.join("metrics.jsonl"), opts.resume.then_some(state.global_step))?;

    let threads = tch::get_num_threads();
    let mut hyperparameters = hyperparameters(cfg);
    hyperparameters["model.params"] = json!(model.param_count());
    let run_payload = json!({
        "run_dir": dir.display().to_string(),
        "run_name": dir.file_name().map(|n| n.to_string_lossy().into_owned()),
        "config": config::to_toml(cfg),
        "data": format!("{} · {} train / {} val samples", data.description, n_train, data.val.len()),
        "device": format!("{device:?}").to_lowercase(),
        "threads": threads,
        "seed": cfg.run.seed,
        "epochs": tc.epochs,
        "batch_size": bs,
        "batches_per_epoch": batches,
        "params": model.param_count(),
        "model_summary": model.summary(),
        "resumed": opts.resume,
        "metric_names": objective.metric_names(),
        "hyperparameters": hyperparameters,
    });
    let mut stop = emit(d, EventKind::RUN_START, state.epoch, state.global_step, 0, &[], &run_payload)?.contains(Directive::STOP_TRAINING);
    if let Some(path) = &loaded_from {
        emit(d, EventKind::CHECKPOINT_LOADED, state.epoch, state.global_step, state.batch_in_epoch, &[], &json!({ "path": path.display().to_string() }))?;
    }

    let val_bs = tc.val_batch_size.unwrap_or(bs);
    // Only dropout (or a TorchScript module, which may do anything) draws random numbers during training; a
    // deterministic model need not pay for re-seeding every batch.
    let reseed = model.uses_randomness();
    let seed = cfg.run.seed;
    let bench_warmup = tc.bench_warmup_steps;
    let mut bench: Option<(Instant, usize)> = None;
    let mut last_saved: Option<PathBuf> = loaded_from.clone();
    let empty = Value::Null;

    while state.epoch < tc.epochs && !stop {
        let epoch = state.epoch; // 0-based here; events and logs say epoch + 1
        let e1 = epoch + 1;
        let epoch_start = Instant::now();
        let mut phases = Phases::default();
        let t = Instant::now();
        let order = Tensor::f_from_slice(&data::epoch_order(n_train, seed, epoch))?.f_to_device(device)?;
        let x_epoch = data.train.x.f_index_select(0, &order)?;
        let y_epoch = data.train.y.f_index_select(0, &order)?;
        phases.lap(t, Phase::Data);
        if state.batch_in_epoch == 0 {
            state.partial = PartialEpoch::default();
            stop |= emit(d, EventKind::EPOCH_START, e1, state.global_step, 0, &[], &empty)?.contains(Directive::STOP_TRAINING);
        }
        stop |= emit(d, EventKind::TRAIN_LOOP_START, e1, state.global_step, state.batch_in_epoch, &[], &json!({ "batches": batches }))?
            .contains(Directive::STOP_TRAINING);
        let mut correct = Tensor::f_zeros([], (Kind::Int64, device))?;
        // Gradients of the optimizer step being accumulated (grad_accumulation micro-batches).
        let mut grads: Vec<Tensor> = Vec::new();
        let mut grad_histograms: Option<Value> = None;
        let loop_start = Instant::now();
        let seconds_before = state.partial.seconds;
        while state.batch_in_epoch < batches {
            // Only between optimizer steps: gradients of a half-accumulated step are not part of a checkpoint.
            if grads.is_empty() && INTERRUPTED.load(Ordering::SeqCst) {
                state.partial.correct += correct.f_int64_value(&[])?;
                state.partial.seconds = seconds_before + loop_start.elapsed().as_secs_f64();
                return interrupted(d, &dir, &ckpt_root, &vs, &opt, &model, &mut state, &mut log, last_saved.as_deref());
            }
            let b = state.batch_in_epoch;
            if bench_warmup == Some(state.global_step) {
                bench = Some((Instant::now(), state.global_step));
            }
            if reseed {
                tch::manual_seed(step_seed(seed, state.global_step));
            }
            emit(d, EventKind::TRAIN_BATCH_START, e1, state.global_step, b, &[], &empty)?;
            let start = b * bs;
            let len = bs.min(n_train - start);
            let mut step = || -> Result<(f64, Tensor)> {
                let t = Instant::now();
                let x = x_epoch.f_narrow(0, start as i64, len as i64)?;
                let y = y_epoch.f_narrow(0, start as i64, len as i64)?;
                let t = phases.lap(t, Phase::Data);
                let out = model.forward_t(&x, true)?;
                let loss = objective.loss(&out, &y)?;
                let value = loss.f_double_value(&[])?;
                let t = phases.lap(t, Phase::Forward);
                if !value.is_finite() {
                    return Ok((value, Tensor::new()));
                }
                if accum > 1 {
                    opt.backward(&loss.f_div_scalar(accum as f64)?, &mut grads)?;
                } else {
                    opt.backward(&loss, &mut grads)?;
                }
                let t = phases.lap(t, Phase::Backward);
                let hits = if objective.task == TaskKind::Classification {
                    objective.predict(&out.f_detach()?)?.f_eq_tensor(&y)?.f_sum(Kind::Int64)?
                } else {
                    Tensor::new()
                };
                phases.lap(t, Phase::Metrics);
                Ok((value, hits))
            };
            let (loss, hits) = step().with_context(|| format!("training failed at epoch {e1}, batch {b} (step {})", state.global_step))?;
            if !loss.is_finite() {
                return Err(NonFiniteLoss { value: loss, epoch: e1, batch: b, step: state.global_step, checkpoint: last_saved.clone() }.into());
            }
            if hits.defined() {
                correct = correct.f_add(&hits)?;
            }
            if (b + 1).is_multiple_of(accum) || b + 1 == batches {
                let t = Instant::now();
                if let Some(v) = tc.clip_grad_value {
                    Optimizer::clip_grad_value(&mut grads, v)?;
                }
                if let Some(n) = tc.clip_grad_norm {
                    Optimizer::clip_grad_norm(&mut grads, n)?;
                }
                opt.set_lr(schedule.lr(opt.steps as usize));
                // The epoch's last step's gradients, for a plugin that asked for histograms this epoch.
                if b + 1 == batches && d.requested(Directive::WANT_HISTOGRAMS) {
                    let names = opt.named_params().map(|(n, _)| n);
                    grad_histograms = Some(crate::histogram::named(names.zip(grads.iter()))?);
                }
                opt.step(&grads)?;
                grads.clear();
                phases.lap(t, Phase::Optimizer);
            }
            state.partial.loss_sum += loss * len as f64;
            state.partial.samples += len as i64;
            state.global_step += 1;
            state.batch_in_epoch += 1;
            if d.wants(EventKind::TRAIN_BATCH_END) {
                let m = [Metric::new("train", "loss", loss)];
                stop |= emit(d, EventKind::TRAIN_BATCH_END, e1, state.global_step, b, &m, &empty)?.contains(Directive::STOP_TRAINING);
            }
            if tc.log_every_n_steps > 0 && state.global_step.is_multiple_of(tc.log_every_n_steps) {
                log.write(&json!({ "event": "step", "epoch": e1, "step": state.global_step, "train/loss": loss, "lr": opt.lr() }))?;
            }
        }
        state.partial.correct += correct.f_int64_value(&[])?;
        state.partial.seconds = seconds_before + loop_start.elapsed().as_secs_f64();
        let train_seconds = state.partial.seconds;
        let samples = state.partial.samples.max(1) as f64;
        let mut metrics = vec![Metric::new("train", "loss", state.partial.loss_sum / samples)];
        if objective.task == TaskKind::Classification {
            metrics.push(Metric::new("train", "accuracy", state.partial.correct as f64 / samples));
        }
        stop |= emit(d, EventKind::TRAIN_LOOP_END, e1, state.global_step, batches, &metrics, &empty)?.contains(Directive::STOP_TRAINING);
        if let Some((t0, s0)) = bench.take() {
            let secs = t0.elapsed().as_secs_f64();
            let steps = state.global_step - s0;
            log.write(&json!({ "event": "throughput", "step": state.global_step, "warmup_steps": s0, "steps": steps, "seconds": secs,
                               "samples_per_s": (steps * bs) as f64 / secs.max(1e-12) }))?;
        }

        // Validation.
        let t_val = Instant::now();
        let mut confusion = None;
        if !data.val.is_empty() {
            emit(d, EventKind::VAL_LOOP_START, e1, state.global_step, 0, &[], &empty)?;
            let gs = state.global_step;
            let wants_batches = d.wants(EventKind::VAL_BATCH_START) || d.wants(EventKind::VAL_BATCH_END);
            let ev = evaluate(&model, &objective, &data.val, val_bs, tc.limit_val_batches, "val", |vb, loss| {
                if wants_batches {
                    emit(d, EventKind::VAL_BATCH_START, e1, gs, vb, &[], &empty)?;
                    emit(d, EventKind::VAL_BATCH_END, e1, gs, vb, &[Metric::new("val", "loss", loss)], &empty)?;
                }
                Ok(())
            })?;
            stop |= emit(d, EventKind::VAL_LOOP_END, e1, state.global_step, 0, &ev.metrics, &empty)?.contains(Directive::STOP_TRAINING);
            metrics.extend(ev.metrics);
            confusion = ev.confusion;
        }
        phases.lap(t_val, Phase::Validation);
        let by_name = metrics_map(&metrics);
        if let Some(monitor) = schedule.monitor() {
            if let Some(v) = by_name.get(monitor).and_then(|v| v.as_f64()) {
                schedule.observe(v);
            }
        }
        let monitored = by_name.get(&cfg.checkpoint.monitor).and_then(|v| v.as_f64());
        let is_best = match (monitored, state.best) {
            (Some(v), _) if !v.is_finite() => false,
            (Some(_), None) => true,
            (Some(v), Some(best)) => match mode {
                config::Mode::Min => v < best,
                config::Mode::Max => v > best,
            },
            (None, _) => false,
        };
        if is_best {
            state.best = monitored;
            state.best_epoch = Some(e1);
        }
        state.epoch += 1;
        state.batch_in_epoch = 0;
        state.optimizer_steps = opt.steps;
        state.plateau = schedule.plateau.clone();
        state.elapsed_s += train_seconds;
        state.metrics = by_name.clone();
        let lr = schedule.lr(opt.steps as usize);
        let mut line = json!({ "event": "epoch", "epoch": e1, "step": state.global_step, "lr": lr,
            "epoch_time_s": epoch_start.elapsed().as_secs_f64(), "train_time_s": train_seconds,
            "samples_per_s": samples / train_seconds.max(1e-12) });
        if let Some(obj) = line.as_object_mut() {
            obj.extend(by_name);
            if let (true, Some(cm)) = (cfg.metrics.confusion_matrix, &confusion) {
                obj.insert("val/confusion_matrix".into(), json!(cm.rows()));
            }
        }
        log.write(&line)?;
        log.flush()?;
        let t_ckpt = Instant::now();
        if cfg.checkpoint.enabled {
            let script = |p: &Path| model.save_script(p);
            let saved = checkpoint::save(&ckpt_root, &vs, &opt.state_tensors(), &state, Some(&script), is_best)?;
            last_saved = Some(saved.clone());
            emit(d, EventKind::CHECKPOINT_SAVED, e1, state.global_step, 0, &[], &json!({ "path": saved.display().to_string(), "is_best": is_best }))?;
        }
        phases.lap(t_ckpt, Phase::Checkpoint);
        let mut payload = line;
        if let Some(obj) = payload.as_object_mut() {
            obj.insert("is_best".into(), json!(is_best));
            obj.insert("phases_s".into(), phases.to_json());
            let plugins: Map<String, Value> = d.timings().into_iter().map(|(n, t)| (n, json!(t))).collect();
            obj.insert("plugins_s".into(), Value::Object(plugins));
            if d.take(Directive::WANT_HISTOGRAMS) {
                let weights = crate::histogram::named(opt.named_params())?;
                obj.insert("histograms".into(), json!({ "weights": weights, "gradients": grad_histograms.take().unwrap_or(json!({})) }));
            }
        }
        stop |= emit(d, EventKind::EPOCH_END, e1, state.global_step, batches, &metrics, &payload)?.contains(Directive::STOP_TRAINING);
    }
    let outcome = if state.epoch < tc.epochs { Outcome::Stopped } else { Outcome::Completed };
    let best = match (state.best, state.best_epoch) {
        (Some(v), Some(e)) => format!("; best {} {} at epoch {e}", cfg.checkpoint.monitor, crate::fmt::fmt_value(v)),
        _ => String::new(),
    };
    let what = if outcome == Outcome::Stopped { "stopped early" } else { "done" };
    let message = format!("{what}: {} epochs in {:.1}s{best} · {}", state.epoch, state.elapsed_s, dir.display());
    emit(
        d,
        EventKind::RUN_END,
        state.epoch,
        state.global_step,
        0,
        &[],
        &json!({ "status": if outcome == Outcome::Stopped { "stopped" } else { "completed" }, "message": message, "best": state.best, "exit_code": 0 }),
    )?;
    Ok(outcome)
}

/// Ctrl-C: save where we are (unless nothing changed since the last checkpoint), report, and let the caller exit 130.
#[allow(clippy::too_many_arguments)]
fn interrupted(
    d: &mut Dispatcher,
    dir: &Path,
    ckpt_root: &Path,
    vs: &nn::VarStore,
    opt: &Optimizer,
    model: &Model,
    state: &mut TrainerState,
    log: &mut MetricsLog,
    last_saved: Option<&Path>,
) -> Result<Outcome> {
    log.flush()?;
    state.optimizer_steps = opt.steps;
    let unchanged = last_saved.and_then(|p| checkpoint::read_state(p).ok()).is_some_and(|s| s.global_step == state.global_step);
    let path = if unchanged {
        last_saved.map(Path::to_path_buf)
    } else {
        let script = |p: &Path| model.save_script(p);
        Some(checkpoint::save(ckpt_root, vs, &opt.state_tensors(), state, Some(&script), false)?)
    };
    let message = format!(
        "interrupted at epoch {}, batch {}: checkpoint {} · continue with `bz train CONFIG --resume --run-name {}`",
        state.epoch + 1,
        state.batch_in_epoch,
        path.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "none".into()),
        dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    );
    emit(
        d,
        EventKind::RUN_END,
        state.epoch + 1,
        state.global_step,
        state.batch_in_epoch,
        &[],
        &json!({ "status": "interrupted", "message": message, "exit_code": 130 }),
    )?;
    Ok(Outcome::Interrupted)
}

/// A resumed run must train the same model on the same data with the same seed; anything else would silently
/// produce a different run under the old name.
fn check_resume_compatible(dir: &Path, cfg: &Config) -> Result<()> {
    let path = dir.join("config.toml");
    let text = fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let old: Config = toml::from_str(&text).with_context(|| format!("{} is damaged", path.display()))?;
    let sections: [(&str, bool); 5] = [
        ("data", old.data == cfg.data),
        ("model", old.model == cfg.model),
        ("run.seed", old.run.seed == cfg.run.seed),
        ("train.batch_size", old.train.batch_size == cfg.train.batch_size),
        ("optimizer.name", old.optimizer.name == cfg.optimizer.name),
    ];
    if let Some((what, _)) = sections.iter().find(|(_, same)| !same) {
        bail!("cannot resume {}: `{what}` differs from the run's config.toml; resume with the same settings or start a new run", dir.display());
    }
    // These schedules are shaped by the run's length: more epochs stretch the curve from here on.
    let shaped = matches!(cfg.scheduler.name, config::SchedulerKind::Cosine | config::SchedulerKind::OneCycle);
    if shaped && old.train.epochs != cfg.train.epochs {
        eprintln!(
            "warning: resuming with {} epochs instead of {}: the {} learning-rate curve is stretched from here on, so the run is not the one a {}-epoch run would have been",
            cfg.train.epochs,
            old.train.epochs,
            if cfg.scheduler.name == config::SchedulerKind::Cosine { "cosine" } else { "one-cycle" },
            cfg.train.epochs
        );
    }
    Ok(())
}
