//! `[scheduler]`: the learning-rate schedule (`name`) with its own keys, and the warm-up every one but
//! one_cycle takes.

use super::tagged::{self, part, NoKeys, SectionError, Tagged};
use super::Mode;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SchedulerConfig {
    #[serde(flatten)]
    pub kind: SchedulerKind,
    /// Linear warm-up from ~0 to the schedule's starting lr, in optimizer steps or epochs (not both).
    pub warmup_steps: usize,
    pub warmup_epochs: f64,
}

/// `name = "…"` and the keys of that schedule.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum SchedulerKind {
    Constant,
    Step(StepOptions),
    Cosine(CosineOptions),
    /// PyTorch's OneCycleLR with cosine annealing; `optimizer.lr` is the peak.
    OneCycle(OneCycleOptions),
    /// PyTorch's ReduceLROnPlateau, relative threshold.
    Plateau(PlateauOptions),
}

/// Decay every `step_size` epochs by `gamma`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StepOptions {
    pub step_size: usize,
    pub gamma: f64,
}

impl Default for StepOptions {
    fn default() -> Self {
        StepOptions { step_size: 10, gamma: 0.1 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct CosineOptions {
    /// The floor.
    pub min_lr: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OneCycleOptions {
    pub pct_start: f64,
    pub div_factor: f64,
    pub final_div_factor: f64,
}

impl Default for OneCycleOptions {
    fn default() -> Self {
        OneCycleOptions { pct_start: 0.3, div_factor: 25.0, final_div_factor: 1e4 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PlateauOptions {
    pub monitor: String,
    /// Default: from the metric's name (see `config::default_mode`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    pub factor: f64,
    pub patience: usize,
    pub threshold: f64,
    /// The floor.
    pub min_lr: f64,
}

impl Default for PlateauOptions {
    fn default() -> Self {
        PlateauOptions { monitor: "val/loss".into(), mode: None, factor: 0.1, patience: 10, threshold: 1e-4, min_lr: 0.0 }
    }
}

/// The keys every schedule takes; the one place their defaults live.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct Common {
    warmup_steps: usize,
    warmup_epochs: f64,
}

impl SchedulerConfig {
    /// A schedule without warm-up.
    pub fn new(kind: SchedulerKind) -> SchedulerConfig {
        let c = Common::default();
        SchedulerConfig { kind, warmup_steps: c.warmup_steps, warmup_epochs: c.warmup_epochs }
    }

    /// The schedule's name as users write it, e.g. `"one_cycle"`.
    pub fn name(&self) -> &'static str {
        match self.kind {
            SchedulerKind::Constant => "constant",
            SchedulerKind::Step(_) => "step",
            SchedulerKind::Cosine(_) => "cosine",
            SchedulerKind::OneCycle(_) => "one_cycle",
            SchedulerKind::Plateau(_) => "plateau",
        }
    }

    /// The metric a plateau schedule watches; other schedules watch none.
    pub fn plateau_monitor(&self) -> Option<&str> {
        match &self.kind {
            SchedulerKind::Plateau(p) => Some(&p.monitor),
            _ => None,
        }
    }

    /// Whether the curve is shaped by the run's length, so that a different `train.epochs` changes it.
    pub fn depends_on_run_length(&self) -> bool {
        matches!(self.kind, SchedulerKind::Cosine(_) | SchedulerKind::OneCycle(_))
    }
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig::new(SchedulerKind::Constant)
    }
}

impl Tagged for SchedulerConfig {
    const TAG: &'static str = "name";
    const DEFAULT: Option<&'static str> = Some("constant");
    const KINDS: &'static [&'static str] = &["constant", "step", "cosine", "one_cycle", "plateau"];

    fn common_fields() -> &'static [&'static str] {
        tagged::fields::<Common>()
    }

    fn variant_fields(kind: &str) -> &'static [&'static str] {
        match kind {
            "step" => tagged::fields::<StepOptions>(),
            "cosine" => tagged::fields::<CosineOptions>(),
            "one_cycle" => tagged::fields::<OneCycleOptions>(),
            "plateau" => tagged::fields::<PlateauOptions>(),
            _ => &[],
        }
    }

    fn build(kind: &str, own: toml::Table, common: toml::Table) -> Result<Self, SectionError> {
        let kind = match kind {
            "step" => SchedulerKind::Step(part(own)?),
            "cosine" => SchedulerKind::Cosine(part(own)?),
            "one_cycle" => SchedulerKind::OneCycle(part(own)?),
            "plateau" => SchedulerKind::Plateau(part(own)?),
            _ => {
                part::<NoKeys>(own)?;
                SchedulerKind::Constant
            }
        };
        let c: Common = part(common)?;
        Ok(SchedulerConfig { kind, warmup_steps: c.warmup_steps, warmup_epochs: c.warmup_epochs })
    }
}

impl<'de> Deserialize<'de> for SchedulerConfig {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        tagged::deserialize(deserializer)
    }
}
