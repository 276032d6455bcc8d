//! Losses and evaluation of a model on a split; shared by `bz train`'s validation and `bz eval`.

mod tally;

use crate::config::{LossKind, TaskKind};
use crate::data::{BatchPlan, Split};
use crate::events::Metric;
use crate::metrics::{top_k_hits, Average, ConfusionMatrix, RegressionMetrics};
use crate::model::Model;
use crate::train::Ranks;
use anyhow::{bail, Context, Result};
use tally::Tally;
use tch::{Device, Kind, Reduction, Tensor};

/// How a model's output is turned into a loss and predictions.
#[derive(Clone, Debug)]
pub struct Objective {
    pub loss: LossKind,
    pub task: TaskKind,
    /// Classes (classification) or target width (regression).
    pub outputs: usize,
    pub label_smoothing: f64,
    /// The model emits one logit for a two-class problem (binary BCE).
    pub binary_logit: bool,
    pub top_k: usize,
}

impl Objective {
    /// Checks the loss against the task and the model's output shape; errors say what to change.
    pub fn new(loss: Option<LossKind>, task: TaskKind, outputs: usize, model_out: &[i64], label_smoothing: f64, top_k: usize) -> Result<Objective> {
        let loss = loss.unwrap_or(match task {
            TaskKind::Classification => LossKind::CrossEntropy,
            TaskKind::Regression => LossKind::Mse,
        });
        let [out] = model_out[..] else {
            bail!("the model outputs shape {model_out:?} per sample; end it with a linear layer (flatten first) so it outputs a flat vector")
        };
        let out = out as usize;
        let mut binary_logit = false;
        match (task, loss) {
            (TaskKind::Classification, LossKind::CrossEntropy) => {
                if out != outputs {
                    bail!("the model outputs {out} values per sample but the data has {outputs} classes: set the last layer's `out = {outputs}`");
                }
            }
            (TaskKind::Classification, LossKind::BceWithLogits) => {
                binary_logit = out == 1 && outputs == 2;
                if !binary_logit && out != outputs {
                    bail!("bce_with_logits needs 1 output (two classes) or one per class ({outputs}); the model outputs {out}");
                }
            }
            (TaskKind::Regression, LossKind::Mse | LossKind::L1 | LossKind::SmoothL1) => {
                if out != outputs {
                    bail!("the model outputs {out} values per sample but the targets have {outputs}: set the last layer's `out = {outputs}`");
                }
            }
            (TaskKind::Classification, l) => bail!("train.loss = {:?} is a regression loss but the task is classification: use cross_entropy or bce_with_logits, or set data.task = \"regression\"", l),
            (TaskKind::Regression, l) => bail!("train.loss = {:?} is a classification loss but the task is regression: use mse, l1 or smooth_l1", l),
        }
        if label_smoothing > 0.0 && loss != LossKind::CrossEntropy {
            bail!("train.label_smoothing only applies to cross_entropy");
        }
        let top_k = if task == TaskKind::Classification && top_k > 0 && top_k < outputs { top_k } else { 0 };
        Ok(Objective { loss, task, outputs, label_smoothing, binary_logit, top_k })
    }

    /// Mean loss of a batch.
    pub fn loss(&self, out: &Tensor, y: &Tensor) -> Result<Tensor> {
        let r = Reduction::Mean;
        Ok(match self.loss {
            LossKind::CrossEntropy => out.f_cross_entropy_loss(y, None::<Tensor>, r, -100, self.label_smoothing)?,
            LossKind::BceWithLogits => {
                let target =
                    if self.binary_logit { y.f_to_kind(Kind::Float)?.f_unsqueeze(1)? } else { y.f_one_hot(self.outputs as i64)?.f_to_kind(Kind::Float)? };
                out.f_binary_cross_entropy_with_logits(&target, None::<Tensor>, None::<Tensor>, r)?
            }
            LossKind::Mse => out.f_mse_loss(y, r)?,
            LossKind::L1 => out.f_l1_loss(y, r)?,
            LossKind::SmoothL1 => out.f_smooth_l1_loss(y, r, 1.0)?,
        })
    }

    /// Predicted class ids of a classification batch.
    pub fn predict(&self, out: &Tensor) -> Result<Tensor> {
        Ok(if self.binary_logit { out.f_gt(0.0)?.f_to_kind(Kind::Int64)?.f_squeeze_dim(1)? } else { out.f_argmax(-1, false)? })
    }

    /// The metric names an epoch reports, in order, so configs can be checked before training.
    pub fn metric_names(&self) -> Vec<String> {
        let mut names = vec!["train/loss".to_string()];
        if self.task == TaskKind::Classification {
            names.push("train/accuracy".into());
        }
        names.extend(self.val_metric_names().into_iter().map(|n| format!("val/{n}")));
        names
    }

    fn val_metric_names(&self) -> Vec<String> {
        let mut names = vec!["loss".to_string()];
        match self.task {
            TaskKind::Classification => {
                names.push("accuracy".into());
                if self.top_k > 0 {
                    names.push(format!("top{}_accuracy", self.top_k));
                }
                for what in ["precision", "recall", "f1"] {
                    for avg in Average::ALL {
                        names.push(format!("{what}_{}", avg.name()));
                    }
                }
            }
            TaskKind::Regression => names.extend(["mse", "mae", "r2"].map(String::from)),
        }
        names
    }
}

/// Metrics of one pass over a split.
pub struct Evaluation {
    pub metrics: Vec<Metric>,
    pub confusion: Option<ConfusionMatrix>,
}

/// One evaluated batch, as `evaluate`'s `on_batch` sees it.
pub struct EvaluatedBatch<'a> {
    pub index: usize,
    pub loss: f64,
    /// The batch's samples, the model's outputs and the targets.
    pub x: &'a Tensor,
    pub out: &'a Tensor,
    pub y: &'a Tensor,
}

/// Which batches of a split one evaluation pass covers, and the name its metrics carry.
#[derive(Clone, Copy)]
pub struct Pass {
    /// `val`, `test` or `train`.
    pub name: &'static str,
    pub batch_size: usize,
    /// At most this many batches (0 = all).
    pub limit: usize,
}

/// Runs the model over `split` without gradients. `on_batch` sees each batch this process evaluates (for
/// VAL_BATCH events and PR curves). In a data-parallel job each rank evaluates its share of the batches and every
/// rank gets the metrics of the whole split (see `tally`).
pub fn evaluate(
    model: &Model,
    objective: &Objective,
    split: &Split,
    pass: Pass,
    ranks: &mut Ranks,
    mut on_batch: impl FnMut(EvaluatedBatch) -> Result<()>,
) -> Result<Evaluation> {
    let _guard = tch::no_grad_guard();
    let (batch_size, split_name) = (pass.batch_size, pass.name);
    let n = split.len();
    let mut batches = n.div_ceil(batch_size);
    if pass.limit > 0 {
        batches = batches.min(pass.limit);
    }
    let mut tally = Tally {
        loss_sum: 0.0,
        seen: 0,
        top_hits: 0,
        confusion: (objective.task == TaskKind::Classification).then(|| ConfusionMatrix::new(objective.outputs)),
        regression: (objective.task == TaskKind::Regression).then(|| RegressionMetrics::new(objective.outputs)),
    };
    let share = ranks.batch_share(batches);
    let mut loader = split.loader(BatchPlan { order: None, batch_size, first: share.start, end: share.end })?;
    for b in share {
        let len = batch_size.min(n - b * batch_size);
        let (x, y) = loader.next_batch().with_context(|| format!("{split_name} batch {b}: reading the data failed"))?;
        let out = model.forward_t(&x, false).with_context(|| format!("{split_name} batch {b}: forward pass failed"))?;
        let loss = objective.loss(&out, &y)?.f_double_value(&[])?;
        tally.loss_sum += loss * len as f64;
        tally.seen += len as u64;
        if let Some(cm) = &mut tally.confusion {
            let preds = to_vec_i64(&objective.predict(&out)?)?;
            let targets = to_vec_i64(&y)?;
            cm.add(&targets, &preds)?;
            if objective.top_k > 0 {
                let scores = to_vec_f32(&out)?;
                tally.top_hits += top_k_hits(&scores, objective.outputs, &targets, objective.top_k)?;
            }
        }
        if let Some(rm) = &mut tally.regression {
            rm.add(&to_vec_f32(&y)?, &to_vec_f32(&out)?)?;
        }
        on_batch(EvaluatedBatch { index: b, loss, x: &x, out: &out, y: &y })?;
    }
    tally.reduce(ranks)?;
    let Tally { loss_sum, seen, top_hits, confusion, regression } = tally;
    let mut metrics = vec![Metric::new(split_name, "loss", if seen > 0 { loss_sum / seen as f64 } else { f64::NAN })];
    if let Some(cm) = &confusion {
        metrics.push(Metric::new(split_name, "accuracy", cm.accuracy()));
        if objective.top_k > 0 {
            metrics.push(Metric::new(split_name, &format!("top{}_accuracy", objective.top_k), top_hits as f64 / seen.max(1) as f64));
        }
        for avg in Average::ALL {
            metrics.push(Metric::new(split_name, &format!("precision_{}", avg.name()), cm.precision(avg)));
        }
        for avg in Average::ALL {
            metrics.push(Metric::new(split_name, &format!("recall_{}", avg.name()), cm.recall(avg)));
        }
        for avg in Average::ALL {
            metrics.push(Metric::new(split_name, &format!("f1_{}", avg.name()), cm.f1(avg)));
        }
    }
    if let Some(rm) = &regression {
        metrics.push(Metric::new(split_name, "mse", rm.mse()));
        metrics.push(Metric::new(split_name, "mae", rm.mae()));
        metrics.push(Metric::new(split_name, "r2", rm.r2()));
    }
    Ok(Evaluation { metrics, confusion })
}

pub(crate) fn to_vec_i64(t: &Tensor) -> Result<Vec<i64>> {
    let t = t.f_to_device(Device::Cpu)?.f_to_kind(Kind::Int64)?.f_flatten(0, -1)?.f_contiguous()?;
    Ok(Vec::<i64>::try_from(&t)?)
}

pub(crate) fn to_vec_f32(t: &Tensor) -> Result<Vec<f32>> {
    let t = t.f_to_device(Device::Cpu)?.f_to_kind(Kind::Float)?.f_flatten(0, -1)?.f_contiguous()?;
    Ok(Vec::<f32>::try_from(&t)?)
}
