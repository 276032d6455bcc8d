//! `train.precision`: the training forward pass (model and loss) under autocast, bf16 or fp16, with fp16's
//! dynamic loss scaling. Weights, gradients and optimizer state stay f32 (autocast semantics), so checkpoints,
//! export, validation, test, `bz eval` and `bz predict` are unchanged and run in f32.

mod autocast;
mod scaler;

pub use autocast::Autocast;
pub use scaler::ScalerState;

use crate::config::Precision;
use anyhow::Result;
use tch::{Device, Kind};

impl Precision {
    /// The dtype autocast runs the forward pass in; none for full precision.
    pub fn autocast_kind(self) -> Option<Kind> {
        match self {
            Precision::Full => None,
            Precision::Bf16 => Some(Kind::BFloat16),
            Precision::Mixed16 => Some(Kind::Half),
        }
    }

    /// A fresh loss scaler, for the precision that scales the loss.
    pub fn initial_scaler(self) -> Option<ScalerState> {
        (self == Precision::Mixed16).then(ScalerState::default)
    }
}

/// Autocast for `precision` on `device` until the guard drops; nothing for full precision.
pub fn autocast(precision: Precision, device: Device) -> Result<Option<Autocast>> {
    precision.autocast_kind().map(|kind| Autocast::enter(device, kind)).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse, parse_resolved, to_toml};
    use std::path::Path;

    const LAYERS: &str = "[model]\nlayers = [{ type = \"flatten\" }, { type = \"linear\", out = 10 }]\n";

    #[test]
    fn precision_defaults_to_32_and_round_trips_through_the_run_directory() {
        let c = parse(LAYERS, Path::new("c.toml"), &[]).unwrap();
        assert_eq!(c.train.precision, Precision::Full);
        assert!(to_toml(&c).contains("precision = \"32\""));
        for (value, precision, kind) in [("bf16", Precision::Bf16, Some(Kind::BFloat16)), ("16-mixed", Precision::Mixed16, Some(Kind::Half))] {
            let c = parse(&format!("{LAYERS}[train]\nprecision = \"{value}\"\n"), Path::new("c.toml"), &[]).unwrap();
            assert_eq!((c.train.precision, c.train.precision.autocast_kind()), (precision, kind));
            assert_eq!(parse_resolved(&to_toml(&c)).unwrap(), c);
        }
        assert_eq!(Precision::Mixed16.initial_scaler(), Some(ScalerState::default()));
        assert_eq!(Precision::Bf16.initial_scaler(), None);
    }

    #[test]
    fn full_precision_needs_no_guard() {
        assert!(autocast(Precision::Full, Device::Cpu).unwrap().is_none());
        let guard = autocast(Precision::Bf16, Device::Cpu).unwrap();
        assert!(guard.is_some() && Autocast::is_enabled(Device::Cpu));
        drop(guard);
        assert!(!Autocast::is_enabled(Device::Cpu));
    }
}
