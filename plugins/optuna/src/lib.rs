//! The `optuna` plugin for bz: hyperparameter search whose studies Python Optuna and optuna-dashboard open.

pub mod space;
pub mod tpe;
