//! One epoch: the batch loop with gradient accumulation and clipping, validation, best tracking, the
//! metrics.jsonl line, the checkpoint and EPOCH_END.

use super::phases::{Phase, Phases};
use super::trainer::{emit, to_payload, At, Trainer};
use super::NonFiniteLoss;
use crate::checkpoint::PartialEpoch;
use crate::config::{Mode, TaskKind};
use crate::data;
use crate::evaluate::{evaluate, to_vec_f32, to_vec_i64, Pass};
use crate::events::{Directive, EventKind, Metric};
use crate::metrics::ConfusionMatrix;
use crate::misclassified;
use crate::optim::Optimizer;
use crate::pr_curves::{self, PrCounts};
use crate::precision;
use crate::predict::Head;
use anyhow::{Context, Result};
use bz_plugin_api::payload::{CheckpointSaved, EpochEnd, EpochSummary, Histograms, Misclassified, PrCurves, TrainLoopStart};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::time::Instant;
use tch::{Kind, Tensor};

/// The epoch in progress.
pub(super) struct EpochRun {
    /// 1-based, as events and logs count.
    e1: usize,
    start: Instant,
    phases: Phases,
    /// This epoch's batches of its sample order (this rank's part), gathered or streamed one at a time so the split
    /// is never copied whole; the order itself for augmentation.
    loader: data::Loader,
    order: std::sync::Arc<[i64]>,
    metrics: Vec<Metric>,
    confusion: Option<ConfusionMatrix>,
    /// The epoch's last step's gradients, for a plugin that asked for histograms this epoch.
    grad_histograms: Option<Value>,
    /// Validation PR counts, for a plugin that asked for them this epoch.
    pr_curves: Option<PrCurves>,
    /// The first misclassified validation images, for a plugin that asked for them this epoch.
    misclassified: Option<Misclassified>,
    train_seconds: f64,
}

/// The optimizer step being accumulated (`grad_accumulation` micro-batches) and the epoch's correct predictions.
struct Accumulated {
    grads: Vec<Tensor>,
    correct: Tensor,
    /// A data-parallel rank's first non-finite loss of this step (batch, value): every rank learns of it when the
    /// step's gradients are averaged, and all stop there.
    nonfinite: Option<(usize, f64)>,
}

impl Trainer<'_> {
    fn at(&self, batch: usize) -> At {
        At { epoch: self.state.epoch + 1, step: self.state.global_step, batch }
    }

    fn stop_if(&mut self, d: Directive) {
        self.stop |= d.contains(Directive::STOP_TRAINING);
    }

    /// Orders the training split for this epoch (a function of seed and epoch, so a resume sees the same order).
    pub(super) fn begin_epoch(&mut self) -> Result<EpochRun> {
        let mut phases = Phases::default();
        let t = Instant::now();
        let order: std::sync::Arc<[i64]> = self.ranks.shard(data::epoch_order(self.plan.n_total, self.cfg.run.seed, self.state.epoch)).into();
        // A resumed epoch starts at its next batch: a streamed source reads nothing it will not train on.
        let plan = data::BatchPlan { order: Some(order.clone()), batch_size: self.plan.batch_size, first: self.state.batch_in_epoch, end: self.plan.batches };
        let loader = self.session.data.train.loader(plan)?;
        phases.lap(t, Phase::Data);
        let e1 = self.state.epoch + 1;
        Ok(EpochRun {
            e1,
            start: t,
            phases,
            loader,
            order,
            metrics: vec![],
            confusion: None,
            grad_histograms: None,
            pr_curves: None,
            misclassified: None,
            train_seconds: 0.0,
        })
    }

    /// The batch loop; true when Ctrl-C ended it (the caller saves and ends the run).
    pub(super) fn train_epoch(&mut self, ep: &mut EpochRun) -> Result<bool> {
        if self.state.batch_in_epoch == 0 {
            self.state.partial = PartialEpoch::default();
            let d = self.emit(EventKind::EPOCH_START, self.at(0), &[], &Value::Null)?;
            self.stop_if(d);
        }
        let payload = to_payload(&TrainLoopStart { batches: self.plan.batches as u64 })?;
        let d = self.emit(EventKind::TRAIN_LOOP_START, self.at(self.state.batch_in_epoch), &[], &payload)?;
        self.stop_if(d);
        let mut acc = Accumulated { grads: Vec::new(), correct: Tensor::f_zeros([], (Kind::Int64, self.session.device))?, nonfinite: None };
        let loop_start = Instant::now();
        let seconds_before = self.state.partial.seconds;
        while self.state.batch_in_epoch < self.plan.batches {
            // Only between optimizer steps: gradients of a half-accumulated step are not part of a checkpoint. Ranks
            // agree on Ctrl-C with each step's gradients, so every rank stops before the same step.
            let interrupted = if self.ranks.world_size() > 1 { self.interrupt_agreed } else { self.interrupt.is_raised() };
            if acc.grads.is_empty() && interrupted {
                self.state.partial.correct += acc.correct.f_int64_value(&[])?;
                self.state.partial.seconds = seconds_before + loop_start.elapsed().as_secs_f64();
                return Ok(true);
            }
            self.train_batch(ep, &mut acc)?;
        }
        self.state.partial.correct += acc.correct.f_int64_value(&[])?;
        self.state.partial.seconds = seconds_before + loop_start.elapsed().as_secs_f64();
        ep.train_seconds = self.state.partial.seconds;
        // Over every rank's samples: sums, not a mean of means.
        let p = &self.state.partial;
        let mut sums = [p.loss_sum, p.samples as f64, p.correct as f64];
        self.ranks.sum(&mut sums)?;
        let [loss_sum, samples, correct] = sums;
        ep.metrics.push(Metric::new("train", "loss", loss_sum / samples.max(1.0)));
        if self.session.objective.task == TaskKind::Classification {
            ep.metrics.push(Metric::new("train", "accuracy", correct / samples.max(1.0)));
        }
        let d = self.emit(EventKind::TRAIN_LOOP_END, self.at(self.plan.batches), &ep.metrics, &Value::Null)?;
        self.stop_if(d);
        self.log_throughput()?;
        Ok(false)
    }

    fn train_batch(&mut self, ep: &mut EpochRun, acc: &mut Accumulated) -> Result<()> {
        let b = self.state.batch_in_epoch;
        if self.cfg.train.bench_warmup_steps == Some(self.state.global_step) {
            self.bench = Some((Instant::now(), self.state.global_step));
        }
        if self.plan.reseed {
            tch::manual_seed(super::step_seed(self.ranks.seed(self.cfg.run.seed), self.state.global_step));
        }
        self.emit(EventKind::TRAIN_BATCH_START, self.at(b), &[], &Value::Null)?;
        let start = b * self.plan.batch_size;
        let len = self.plan.batch_size.min(self.plan.n_train - start);
        let (loss, hits) = self
            .forward_backward(ep, start, len, &mut acc.grads)
            .with_context(|| format!("training failed at epoch {}, batch {b} (step {})", ep.e1, self.state.global_step))?;
        if !loss.is_finite() {
            acc.nonfinite.get_or_insert((b, loss));
        }
        // A single process stops at once; data-parallel ranks at the step's end, together (below).
        if self.ranks.world_size() == 1 {
            if let Some(err) = self.nonfinite_error(ep, acc, b) {
                return Err(err);
            }
        }
        if hits.defined() {
            acc.correct = acc.correct.f_add(&hits)?;
        }
        if (b + 1).is_multiple_of(self.plan.accum) || b + 1 == self.plan.batches {
            let [nonfinite, interrupted] =
                self.optimizer_step(ep, &mut acc.grads, b + 1 == self.plan.batches, [acc.nonfinite.is_some(), self.interrupt.is_raised()])?;
            self.interrupt_agreed |= interrupted;
            if nonfinite {
                acc.nonfinite.get_or_insert((b, f64::NAN));
                return Err(self.nonfinite_error(ep, acc, b).unwrap_or_else(|| anyhow::anyhow!("a rank's training loss was not finite")));
            }
        }
        self.state.partial.loss_sum += loss * len as f64;
        self.state.partial.samples += len as i64;
        self.state.global_step += 1;
        self.state.batch_in_epoch += 1;
        if self.d.wants(EventKind::TRAIN_BATCH_END) {
            let m = [Metric::new("train", "loss", loss)];
            let d = self.emit(EventKind::TRAIN_BATCH_END, self.at(b), &m, &Value::Null)?;
            self.stop_if(d);
        }
        let every = self.cfg.train.log_every_n_steps;
        if every > 0 && self.state.global_step.is_multiple_of(every) {
            let mut line = json!({ "event": "step", "epoch": ep.e1, "step": self.state.global_step, "train/loss": loss, "lr": self.opt.lr() });
            // fp16: a scale that keeps halving says the gradients overflow, i.e. steps are being skipped.
            if let Some(scaler) = &self.state.scaler {
                line["loss_scale"] = scaler.scale.into();
            }
            self.run.log.write(&line)?;
        }
        Ok(())
    }

    /// One micro-batch: forward, loss, backward into `grads`, and the correct predictions (classification).
    /// A non-finite loss comes back before backward, for the caller to stop on.
    fn forward_backward(&mut self, ep: &mut EpochRun, start: usize, len: usize, grads: &mut Vec<Tensor>) -> Result<(f64, Tensor)> {
        let (model, objective) = (&self.session.model, &self.session.objective);
        let t = Instant::now();
        let (mut x, y) = ep.loader.next_batch()?;
        if let Some(augment) = &self.session.augment {
            x = augment.apply(&x, &ep.order[start..start + len], self.state.epoch)?;
        }
        let t = ep.phases.lap(t, Phase::Data);
        let (out, loss) = {
            let _autocast = precision::autocast(self.cfg.train.precision, self.session.device)?;
            let out = model.forward_t(&x, true)?;
            let loss = objective.loss(&out, &y)?;
            (out, loss)
        };
        let value = loss.f_double_value(&[])?;
        let t = ep.phases.lap(t, Phase::Forward);
        // Synchronised batch norms all-reduce in backward, so every rank runs it, or the ranks' collectives would
        // pair up wrongly; the step is not taken all the same (the flag rides with the gradients).
        if !value.is_finite() && !model.syncs_batchnorm() {
            return Ok((value, Tensor::new()));
        }
        let mut loss = if self.plan.accum > 1 { loss.f_div_scalar(self.plan.accum as f64)? } else { loss };
        if let Some(scaler) = &self.state.scaler {
            loss = scaler.scale_loss(&loss)?;
        }
        self.opt.backward(&loss, grads)?;
        let t = ep.phases.lap(t, Phase::Backward);
        let hits =
            if objective.task == TaskKind::Classification { objective.predict(&out.f_detach()?)?.f_eq_tensor(&y)?.f_sum(Kind::Int64)? } else { Tensor::new() };
        ep.phases.lap(t, Phase::Metrics);
        Ok((value, hits))
    }

    /// The error of a non-finite loss this step saw (on this rank, or another one's: NaN), if any; for a single
    /// process only this batch's.
    fn nonfinite_error(&self, ep: &EpochRun, acc: &Accumulated, b: usize) -> Option<anyhow::Error> {
        let (batch, value) = acc.nonfinite?;
        let step = self.state.global_step - (b - batch);
        Some(NonFiniteLoss { value, epoch: ep.e1, batch, step, checkpoint: self.last_saved.clone() }.into())
    }

    /// Averages (data-parallel, with `flags` agreed in the same collective: any rank's non-finite loss, any
    /// rank's Ctrl-C), unscales (fp16), clips and steps; returns the agreed flags. A step with a non-finite loss
    /// anywhere is not taken. With fp16, a step whose gradients overflowed is skipped (the learning-rate schedule,
    /// counted in optimizer steps, waits for it).
    fn optimizer_step(&mut self, ep: &mut EpochRun, grads: &mut Vec<Tensor>, last_of_epoch: bool, flags: [bool; 2]) -> Result<[bool; 2]> {
        let t = Instant::now();
        // Averaged first: an inf on any rank reaches every rank's sum, so all of them skip the same steps.
        let params: Vec<&Tensor> = self.opt.named_params().map(|(_, p)| p).collect();
        let agreed = self.ranks.average_gradients(grads, &params, flags)?;
        drop(params);
        let t = ep.phases.lap(t, Phase::AllReduce);
        if agreed[0] {
            grads.clear();
            return Ok(agreed);
        }
        let finite = match &mut self.state.scaler {
            Some(scaler) => scaler.unscale_and_update(grads)?,
            None => true,
        };
        if finite {
            self.clip_and_step(ep, grads, last_of_epoch)?;
        }
        grads.clear();
        let t = ep.phases.lap(t, Phase::Optimizer);
        // Also after a skipped step: the forward pass moved batch norm's running statistics all the same.
        self.ranks.broadcast_buffers(&self.session.vs)?;
        ep.phases.lap(t, Phase::AllReduce);
        Ok(agreed)
    }

    /// Clips the gradients, sets the scheduled learning rate and steps.
    fn clip_and_step(&mut self, ep: &mut EpochRun, grads: &mut [Tensor], last_of_epoch: bool) -> Result<()> {
        if let Some(v) = self.cfg.train.clip_grad_value {
            Optimizer::clip_grad_value(grads, v)?;
        }
        if let Some(n) = self.cfg.train.clip_grad_norm {
            Optimizer::clip_grad_norm(grads, n)?;
        }
        self.opt.set_lr(self.schedule.lr(self.opt.steps as usize));
        if last_of_epoch && self.d.requested(Directive::WANT_HISTOGRAMS) {
            let names = self.opt.named_params().map(|(n, _)| n);
            ep.grad_histograms = Some(crate::histogram::named(names.zip(grads.iter()))?);
        }
        self.opt.step(grads)
    }

    /// The `throughput` line of `train.bench_warmup_steps`, once the epoch that started measuring ends.
    fn log_throughput(&mut self) -> Result<()> {
        if let Some((t0, s0)) = self.bench.take() {
            let secs = t0.elapsed().as_secs_f64();
            let steps = self.state.global_step - s0;
            let samples_per_s = (steps * self.plan.batch_size * self.ranks.world_size()) as f64 / secs.max(1e-12);
            self.run.log.write(&json!({ "event": "throughput", "step": self.state.global_step, "warmup_steps": s0, "steps": steps, "seconds": secs,
                                    "samples_per_s": samples_per_s }))?;
        }
        Ok(())
    }

    /// Validation metrics (and VAL_* events), when the run has a validation split.
    pub(super) fn validate(&mut self, ep: &mut EpochRun) -> Result<()> {
        let t_val = Instant::now();
        if !self.session.data.val.is_empty() {
            let at = self.at(0);
            emit(self.d, EventKind::VAL_LOOP_START, at, &[], &Value::Null)?;
            let wants_batches = self.d.wants(EventKind::VAL_BATCH_START) || self.d.wants(EventKind::VAL_BATCH_END);
            // Plugins run on rank 0 only: it tells the others whether to count PR curves over their batches.
            let wants_pr = self.ranks.any([self.d.requested(Directive::WANT_PR_CURVES)])?[0];
            let (s, d) = (&self.session, &mut *self.d);
            let head = Head::of(&s.objective);
            let mut pr = (wants_pr && s.objective.task == TaskKind::Classification).then(|| PrCounts::new(s.objective.outputs, pr_curves::THRESHOLDS));
            // In a data-parallel job the grid shows rank 0's share of the split (plugins run there only).
            let mut wrong = if d.requested(Directive::WANT_MISCLASSIFIED) { misclassified::Collector::new(&s.data, s.device)? } else { None };
            let batch_size = self.plan.val_batch_size;
            let pass = Pass { name: "val", batch_size: self.plan.val_batch_size, limit: self.cfg.train.limit_val_batches };
            let mut alone = super::Ranks::single();
            let ranks = self.ranks.for_evaluation(self.cfg.model.torchscript.is_some(), &mut alone);
            let ev = evaluate(&s.model, &s.objective, &s.data.val, pass, ranks, |b| {
                if wants_batches {
                    emit(d, EventKind::VAL_BATCH_START, At { batch: b.index, ..at }, &[], &Value::Null)?;
                    emit(d, EventKind::VAL_BATCH_END, At { batch: b.index, ..at }, &[Metric::new("val", "loss", b.loss)], &Value::Null)?;
                }
                if let (Some(pr), Some(p)) = (&mut pr, head.probabilities(b.out)?) {
                    pr.add(&to_vec_f32(&p)?, &to_vec_i64(b.y)?);
                }
                if let Some(w) = &mut wrong {
                    let predicted = s.objective.predict(b.out)?;
                    w.add(misclassified::Batch { x: b.x, start: b.index * batch_size, predicted: &predicted, targets: b.y })?;
                }
                Ok(())
            })?;
            if let Some(pr) = &mut pr {
                ranks.sum_counts(&mut pr.counts_mut())?;
            }
            ep.pr_curves = pr.map(|pr| pr.curves(s.data.class_names.as_deref()));
            ep.misclassified = wrong.map(misclassified::Collector::finish);
            let d = emit(self.d, EventKind::VAL_LOOP_END, at, &ev.metrics, &Value::Null)?;
            self.stop_if(d);
            ep.metrics.extend(ev.metrics);
            ep.confusion = ev.confusion;
        }
        ep.phases.lap(t_val, Phase::Validation);
        Ok(())
    }

    /// Best tracking, the scheduler's plateau, the metrics.jsonl line, the checkpoint and EPOCH_END.
    pub(super) fn finish_epoch(&mut self, mut ep: EpochRun) -> Result<()> {
        let by_name = Metric::to_json_map(&ep.metrics);
        if let Some(monitor) = self.schedule.monitor() {
            if let Some(v) = by_name.get(monitor).and_then(|v| v.as_f64()) {
                self.schedule.observe(v);
            }
        }
        let is_best = self.track_best(by_name.get(&self.cfg.checkpoint.monitor).and_then(|v| v.as_f64()), ep.e1);
        self.state.epoch += 1;
        self.state.batch_in_epoch = 0;
        self.state.optimizer_steps = self.opt.steps;
        self.state.plateau = self.schedule.plateau.clone();
        self.state.elapsed_s += ep.train_seconds;
        self.state.metrics = by_name.clone();
        let summary = self.summary(&ep, by_name);
        self.run.log.write(&serde_json::to_value(&summary)?)?;
        self.run.log.flush()?;
        let t_ckpt = Instant::now();
        if self.cfg.checkpoint.enabled {
            let saved = self.save_checkpoint(is_best)?;
            self.last_saved = Some(saved.clone());
            let payload = to_payload(&CheckpointSaved { path: saved.display().to_string(), is_best })?;
            self.emit(EventKind::CHECKPOINT_SAVED, At { epoch: ep.e1, step: self.state.global_step, batch: 0 }, &[], &payload)?;
        }
        ep.phases.lap(t_ckpt, Phase::Checkpoint);
        let histograms = match self.d.take(Directive::WANT_HISTOGRAMS) {
            true => Some(Histograms {
                weights: object(crate::histogram::named(self.opt.named_params())?),
                gradients: object(ep.grad_histograms.take().unwrap_or_default()),
            }),
            false => None,
        };
        let plugins_s: BTreeMap<String, f64> = self.d.timings().into_iter().collect();
        // Taken even when there was nothing to compute (no validation split): a request lasts one epoch.
        self.d.take(Directive::WANT_PR_CURVES);
        let pr_curves = ep.pr_curves.take();
        self.d.take(Directive::WANT_MISCLASSIFIED);
        let misclassified = ep.misclassified.take();
        let end = EpochEnd { summary, is_best, phases_s: ep.phases.seconds(), plugins_s, histograms, pr_curves, misclassified };
        let at = At { epoch: ep.e1, step: self.state.global_step, batch: self.plan.batches };
        let d = self.emit(EventKind::EPOCH_END, at, &ep.metrics, &to_payload(&end)?)?;
        self.stop_if(d);
        Ok(())
    }

    /// Whether the monitored value beats the best so far (a non-finite one never does); records it if so.
    fn track_best(&mut self, monitored: Option<f64>, e1: usize) -> bool {
        let is_best = match (monitored, self.state.best) {
            (Some(v), _) if !v.is_finite() => false,
            (Some(_), None) => true,
            (Some(v), Some(best)) => match self.plan.mode {
                Mode::Min => v < best,
                Mode::Max => v > best,
            },
            (None, _) => false,
        };
        if is_best {
            self.state.best = monitored;
            self.state.best_epoch = Some(e1);
        }
        is_best
    }

    /// The epoch's metrics.jsonl line.
    fn summary(&self, ep: &EpochRun, by_name: Map<String, Value>) -> EpochSummary {
        // The job's rate: every rank trains as many samples in the same time.
        let samples = (self.state.partial.samples.max(1) as usize * self.ranks.world_size()) as f64;
        let confusion = ep.confusion.as_ref().filter(|_| self.cfg.metrics.confusion_matrix);
        EpochSummary {
            event: "epoch".into(),
            epoch: ep.e1 as u64,
            step: self.state.global_step as u64,
            lr: self.schedule.lr(self.opt.steps as usize),
            epoch_time_s: ep.start.elapsed().as_secs_f64(),
            train_time_s: ep.train_seconds,
            samples_per_s: samples / ep.train_seconds.max(1e-12),
            confusion_matrix: confusion.map(|cm| cm.rows()),
            metrics: by_name.into_iter().collect(),
        }
    }
}

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}
