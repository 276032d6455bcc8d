//! bz: trains PyTorch models on libtorch from a TOML file.
//!
//! The binary's commands live in `main.rs` and `commands/`; everything they use is here so integration tests can reach it.

pub mod atomic;
pub mod checkpoint;
pub mod config;
pub mod console;
pub mod data;
pub mod dist;
pub mod evaluate;
pub mod events;
pub mod exit_code;
pub mod export;
pub mod fmt;
pub mod histogram;
pub mod interrupt;
pub mod metrics;
pub mod misclassified;
pub mod model;
pub mod optim;
pub mod plugins;
pub mod pr_curves;
pub mod precision;
pub mod predict;
pub mod redact;
pub mod schedule;
pub mod train;
pub mod tune;
