//! The config as flat `section.key` pairs: TensorBoard's HParams, W&B's config and tuner trials read them.

use super::Config;
use serde_json::{json, Map, Value};

/// The config's scalar settings as flat `section.key` pairs, only the keys that apply to the chosen data source,
/// optimizer and schedule. Layers are summarised by count; plugin sections are left out.
pub fn hyperparameters(cfg: &Config) -> Value {
    let mut out = Map::new();
    if let Ok(v) = toml::Value::try_from(cfg) {
        walk("", &v, &mut out);
    }
    out.insert("model.layers".into(), json!(cfg.model.layers.len()));
    Value::Object(out)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_keys_that_apply() {
        let cfg = super::super::parse("[model]\nlayers = [{ type = \"linear\", out = 10 }]\n", std::path::Path::new("c.toml"), &[]).unwrap();
        let hp = hyperparameters(&cfg);
        assert_eq!(hp["data.source"], "digits");
        assert_eq!(hp["optimizer.name"], "adam");
        assert_eq!(hp["model.layers"], 1);
        for absent in ["data.classes", "data.delimiter", "data.features_key", "data.noise", "optimizer.momentum", "scheduler.gamma"] {
            assert!(hp.get(absent).is_none(), "{absent} in {hp}");
        }
    }
}
