//! `[optimizer]`: the algorithm (`name`) with its own keys, and the rate and weight decay every one takes.

use super::tagged::{self, part, SectionError, Tagged};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OptimizerConfig {
    #[serde(flatten)]
    pub kind: OptimizerKind,
    pub lr: f64,
    /// Default: 0, or 0.01 for adamw (as PyTorch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight_decay: Option<f64>,
}

/// `name = "…"` and the keys of that algorithm, with PyTorch's defaults.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum OptimizerKind {
    Sgd(SgdOptions),
    Adam(AdamOptions),
    /// Adam with decoupled weight decay.
    Adamw(AdamOptions),
    Rmsprop(RmspropOptions),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SgdOptions {
    pub momentum: f64,
    pub dampening: f64,
    pub nesterov: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdamOptions {
    pub betas: [f64; 2],
    pub eps: f64,
}

impl Default for AdamOptions {
    fn default() -> Self {
        AdamOptions { betas: [0.9, 0.999], eps: 1e-8 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RmspropOptions {
    /// The smoothing constant.
    pub alpha: f64,
    pub eps: f64,
    pub momentum: f64,
    pub centered: bool,
}

impl Default for RmspropOptions {
    fn default() -> Self {
        RmspropOptions { alpha: 0.99, eps: 1e-8, momentum: 0.0, centered: false }
    }
}

/// The keys every algorithm takes; the one place their defaults live.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Common {
    lr: f64,
    weight_decay: Option<f64>,
}

impl Default for Common {
    fn default() -> Self {
        Common { lr: 1e-3, weight_decay: None }
    }
}

impl OptimizerConfig {
    /// An optimizer with the common keys at their defaults.
    pub fn new(kind: OptimizerKind) -> OptimizerConfig {
        let c = Common::default();
        OptimizerConfig { kind, lr: c.lr, weight_decay: c.weight_decay }
    }

    /// The algorithm's name as users write it, e.g. `"adamw"`.
    pub fn name(&self) -> &'static str {
        match self.kind {
            OptimizerKind::Sgd(_) => "sgd",
            OptimizerKind::Adam(_) => "adam",
            OptimizerKind::Adamw(_) => "adamw",
            OptimizerKind::Rmsprop(_) => "rmsprop",
        }
    }
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        OptimizerConfig::new(OptimizerKind::Adam(AdamOptions::default()))
    }
}

impl Tagged for OptimizerConfig {
    const TAG: &'static str = "name";
    const DEFAULT: Option<&'static str> = Some("adam");
    const KINDS: &'static [&'static str] = &["sgd", "adam", "adamw", "rmsprop"];

    fn common_fields() -> &'static [&'static str] {
        tagged::fields::<Common>()
    }

    fn variant_fields(kind: &str) -> &'static [&'static str] {
        match kind {
            "sgd" => tagged::fields::<SgdOptions>(),
            "rmsprop" => tagged::fields::<RmspropOptions>(),
            _ => tagged::fields::<AdamOptions>(),
        }
    }

    fn build(kind: &str, own: toml::Table, common: toml::Table) -> Result<Self, SectionError> {
        let kind = match kind {
            "sgd" => OptimizerKind::Sgd(part(own)?),
            "adamw" => OptimizerKind::Adamw(part(own)?),
            "rmsprop" => OptimizerKind::Rmsprop(part(own)?),
            _ => OptimizerKind::Adam(part(own)?),
        };
        let c: Common = part(common)?;
        Ok(OptimizerConfig { kind, lr: c.lr, weight_decay: c.weight_decay })
    }
}

impl<'de> Deserialize<'de> for OptimizerConfig {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        tagged::deserialize(deserializer)
    }
}
