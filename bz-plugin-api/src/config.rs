//! Typed plugin configurations: declare the `[plugins.NAME]` table as a Rust type and the kit derives the
//! default configuration, the JSON Schema and the validation (errors that name the key, with "did you mean").
//!
//! ```
//! use bz_plugin_api::config::{self, ConfigType, PluginConfig};
//! use bz_plugin_api::{Plugin, PluginError};
//! use schemars::JsonSchema;
//! use serde::{Deserialize, Serialize};
//! use serde_json::json;
//!
//! /// `[plugins.hello]`.
//! #[derive(Debug, Deserialize, Serialize, JsonSchema)]
//! #[serde(deny_unknown_fields, default)]
//! struct Config {
//!     /// Stop when val/loss falls below this.
//!     target: f64,
//!     /// Log every N epochs.
//!     every: u64,
//! }
//!
//! impl Default for Config {
//!     fn default() -> Config {
//!         Config { target: 0.0, every: 1 }
//!     }
//! }
//!
//! impl PluginConfig for Config {
//!     fn check(&self) -> Result<(), PluginError> {
//!         if self.every == 0 {
//!             return Err(config::key_error("every", "must be at least 1"));
//!         }
//!         Ok(())
//!     }
//! }
//!
//! struct Hello;
//! impl Plugin for Hello {
//!     const NAME: &'static str = "hello";
//!     const VERSION: &'static str = "0.1.0";
//!     const DESCRIPTION: &'static str = "says hello";
//!     // default_config, config_schema and validate_config, derived from `Config`.
//!     const CONFIG: ConfigType = ConfigType::of::<Config>();
//! }
//!
//! assert_eq!(Hello::default_config(), json!({ "target": 0.0, "every": 1 }));
//! assert_eq!(Hello::validate_config(&json!({ "target": 0.5 })).unwrap(), json!({ "target": 0.5, "every": 1 }));
//! let e = Hello::validate_config(&json!({ "targt": 0.5 })).unwrap_err();
//! assert_eq!(e.message, "`targt`: unknown key; did you mean `target`? (known keys: `target`, `every`)");
//! let e = Hello::validate_config(&json!({ "every": 0 })).unwrap_err();
//! assert_eq!(e.message, "`every`: must be at least 1");
//! assert_eq!(Hello::config_schema()["properties"]["target"]["description"], "Stop when val/loss falls below this.");
//! ```
//!
//! Every error message starts with the key path in backticks (`` `pruner.n_warmup_steps`: … ``), relative to the
//! plugin's table; bz prefixes `plugins.NAME.` ([`split_key`] reads it back).

use crate::PluginError;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// A plugin's configuration as a Rust type. Derive `Deserialize`, `Serialize`, `JsonSchema`, and implement `Default`
/// (the configuration of an empty `[plugins.NAME]` table); mark it `#[serde(deny_unknown_fields, default)]` so an
/// unknown key is an error and a missing key takes its default. Then `const CONFIG: ConfigType =
/// ConfigType::of::<Config>()` in the [`crate::Plugin`] impl, and `Config::parse(&config)?` in `create_callback`.
///
/// ```
/// use bz_plugin_api::config::PluginConfig;
/// #[derive(Default, serde::Deserialize, serde::Serialize, schemars::JsonSchema)]
/// #[serde(deny_unknown_fields, default)]
/// struct Config {
///     log_every_n_steps: u64,
/// }
/// impl PluginConfig for Config {}
///
/// let c = Config::parse(&serde_json::json!({ "log_every_n_steps": 5 })).unwrap();
/// assert_eq!(c.log_every_n_steps, 5);
/// assert!(Config::parse(&serde_json::json!({ "log_every_n_steps": -1 })).is_err());
/// ```
pub trait PluginConfig: Serialize + DeserializeOwned + JsonSchema + Default {
    /// What serde cannot say (a range, keys that depend on each other): runs after deserialising. Name the key
    /// with [`key_error`].
    ///
    /// ```
    /// # use bz_plugin_api::{config::{key_error, PluginConfig}, PluginError};
    /// # #[derive(Default, serde::Deserialize, serde::Serialize, schemars::JsonSchema)]
    /// # struct Config { percentile: f64 }
    /// impl PluginConfig for Config {
    ///     fn check(&self) -> Result<(), PluginError> {
    ///         match (0.0..=100.0).contains(&self.percentile) {
    ///             true => Ok(()),
    ///             false => Err(key_error("percentile", format!("{} is not in [0, 100]", self.percentile))),
    ///         }
    ///     }
    /// }
    /// assert!(Config::parse(&serde_json::json!({ "percentile": 101.0 })).is_err());
    /// ```
    fn check(&self) -> Result<(), PluginError> {
        Ok(())
    }

    /// Deserialises and checks `config` (the `[plugins.NAME]` table as JSON); a CONFIG error names the key.
    ///
    /// ```
    /// # use bz_plugin_api::config::PluginConfig;
    /// # #[derive(Debug, Default, serde::Deserialize, serde::Serialize, schemars::JsonSchema)]
    /// # #[serde(deny_unknown_fields, default)]
    /// # struct Config { every: u64 }
    /// # impl PluginConfig for Config {}
    /// let e = Config::parse(&serde_json::json!({ "every": "often" })).unwrap_err();
    /// assert_eq!(e.message, "`every`: invalid type: string \"often\", expected a whole number ≥ 0");
    /// ```
    fn parse(config: &Value) -> Result<Self, PluginError> {
        let parsed: Self = from_value_at("", config.clone()).map_err(|e: serde_json::Error| PluginError::config(e.to_string()))?;
        parsed.check()?;
        Ok(parsed)
    }
}

/// The serialised [`Default`] of `C`: what `bz plugins info` shows as the default configuration.
///
/// ```
/// # #[derive(Default, serde::Deserialize, serde::Serialize, schemars::JsonSchema)]
/// # struct Config { every: u64 }
/// # impl bz_plugin_api::config::PluginConfig for Config {}
/// assert_eq!(bz_plugin_api::config::defaults::<Config>(), serde_json::json!({ "every": 0 }));
/// ```
pub fn defaults<C: PluginConfig>() -> Value {
    serde_json::to_value(C::default()).unwrap_or_else(|_| Value::Object(Default::default()))
}

/// `C`'s JSON Schema (draft 2020-12), derived by schemars: doc comments become descriptions, defaults come from
/// [`Default`], `deny_unknown_fields` becomes `"additionalProperties": false`.
///
/// ```
/// # #[derive(Default, serde::Deserialize, serde::Serialize, schemars::JsonSchema)]
/// # #[serde(deny_unknown_fields, default)]
/// # struct Config { every: u64 }
/// # impl bz_plugin_api::config::PluginConfig for Config {}
/// let schema = bz_plugin_api::config::schema::<Config>();
/// assert_eq!(schema["additionalProperties"], false);
/// assert_eq!(schema["properties"]["every"]["type"], "integer");
/// ```
pub fn schema<C: PluginConfig>() -> Value {
    schemars::schema_for!(C).to_value()
}

/// Checks `config` and returns it normalised: every key, with defaults filled in.
///
/// ```
/// # #[derive(Default, serde::Deserialize, serde::Serialize, schemars::JsonSchema)]
/// # #[serde(deny_unknown_fields, default)]
/// # struct Config { every: u64, name: String }
/// # impl bz_plugin_api::config::PluginConfig for Config {}
/// let out = bz_plugin_api::config::validate::<Config>(&serde_json::json!({ "name": "x" })).unwrap();
/// assert_eq!(out, serde_json::json!({ "every": 0, "name": "x" }));
/// ```
pub fn validate<C: PluginConfig>(config: &Value) -> Result<Value, PluginError> {
    let parsed = C::parse(config)?;
    serde_json::to_value(parsed).map_err(|e| PluginError::config(format!("the configuration does not serialise: {e}")))
}

/// How a plugin's configuration is handled: [`ConfigType::UNTYPED`] (the plugin's own `default_config`,
/// `config_schema` and `validate_config`, or none) or [`ConfigType::of`] a [`PluginConfig`] type. Set as
/// [`crate::Plugin::CONFIG`].
///
/// ```
/// # #[derive(Default, serde::Deserialize, serde::Serialize, schemars::JsonSchema)]
/// # #[serde(deny_unknown_fields, default)]
/// # struct Config { every: u64 }
/// # impl bz_plugin_api::config::PluginConfig for Config {}
/// use bz_plugin_api::config::ConfigType;
/// const CONFIG: ConfigType = ConfigType::of::<Config>();
/// assert!(CONFIG.validate(&serde_json::json!({ "evry": 1 })).is_err());
/// assert_eq!(ConfigType::UNTYPED.validate(&serde_json::json!({ "evry": 1 })).unwrap()["evry"], 1);
/// ```
#[derive(Clone, Copy)]
pub struct ConfigType {
    defaults: fn() -> Value,
    schema: fn() -> Value,
    validate: fn(&Value) -> Result<Value, PluginError>,
}

impl ConfigType {
    /// No typed configuration: an empty default, a schema that allows any object, every configuration accepted.
    pub const UNTYPED: ConfigType = ConfigType { defaults: empty_object, schema: any_object, validate: accept };

    /// The configuration is `C`.
    pub const fn of<C: PluginConfig>() -> ConfigType {
        ConfigType { defaults: defaults::<C>, schema: schema::<C>, validate: validate::<C> }
    }

    /// The default configuration (see [`defaults`]).
    pub fn defaults(&self) -> Value {
        (self.defaults)()
    }

    /// The JSON Schema (see [`schema`]).
    pub fn schema(&self) -> Value {
        (self.schema)()
    }

    /// The normalised configuration or a CONFIG error naming the key (see [`validate`]).
    pub fn validate(&self, config: &Value) -> Result<Value, PluginError> {
        (self.validate)(config)
    }
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

fn any_object() -> Value {
    serde_json::json!({ "type": "object" })
}

fn accept(config: &Value) -> Result<Value, PluginError> {
    Ok(config.clone())
}

/// A CONFIG error about `key` (a dotted path relative to the plugin's table), in the kit's form
/// `` `key`: message ``.
///
/// ```
/// let e = bz_plugin_api::config::key_error("pruner.percentile", "must be in [0, 100]");
/// assert_eq!(e.message, "`pruner.percentile`: must be in [0, 100]");
/// assert_eq!(e.code, bz_plugin_api::PluginError::CONFIG);
/// ```
pub fn key_error(key: &str, message: impl std::fmt::Display) -> PluginError {
    PluginError::config(with_key(key, &message.to_string()))
}

/// Splits a CONFIG message of the kit's form into its key path and the rest; `None` for other messages. The host
/// uses it to report `plugins.NAME.<key>`.
///
/// ```
/// use bz_plugin_api::config::split_key;
/// assert_eq!(split_key("`pruner.type`: unknown value"), Some(("pruner.type", "unknown value")));
/// assert_eq!(split_key("`mode` = 3 is not a string"), None);
/// ```
pub fn split_key(message: &str) -> Option<(&str, &str)> {
    let rest = message.strip_prefix('`')?;
    let (key, rest) = rest.split_once("`: ")?;
    (!key.is_empty() && !key.contains(char::is_whitespace)).then_some((key, rest))
}

/// Deserialises `value` as a `T` whose errors name the key path below `prefix` in the kit's form. For a hand-written
/// `Deserialize` that rebuilds its input (to fill in a default tag, say): its errors keep naming the inner key,
/// and the kit joins them to the outer path.
///
/// ```
/// use bz_plugin_api::config::from_value_at;
/// #[derive(Debug, serde::Deserialize)]
/// #[serde(deny_unknown_fields)]
/// struct Median { n_startup_trials: u64 }
/// let e = from_value_at::<Median, serde_json::Error>("pruner", serde_json::json!({ "n_startup": 5 })).unwrap_err();
/// assert!(e.to_string().starts_with("`pruner.n_startup`: unknown key; did you mean `n_startup_trials`?"), "{e}");
/// ```
pub fn from_value_at<T: DeserializeOwned, E: serde::de::Error>(prefix: &str, value: Value) -> Result<T, E> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = join(prefix, &e.path().to_string());
        E::custom(describe(&path, &e.into_inner().to_string()))
    })
}

/// `outer.inner`, where `.` (serde_path_to_error's root) and empty parts vanish.
fn join(outer: &str, inner: &str) -> String {
    let inner = if inner == "." { "" } else { inner };
    match (outer.is_empty(), inner.is_empty()) {
        (_, true) => outer.to_string(),
        (true, false) => inner.to_string(),
        (false, false) if inner.starts_with('[') => format!("{outer}{inner}"),
        (false, false) => format!("{outer}.{inner}"),
    }
}

fn with_key(key: &str, message: &str) -> String {
    if key.is_empty() {
        message.to_string()
    } else {
        format!("`{key}`: {message}")
    }
}

/// One line for serde's message `message` at `path`: unknown keys and values get their candidates and the closest
/// one, a nested error (already in the kit's form) joins its key to `path`, Rust type names become words.
fn describe(path: &str, message: &str) -> String {
    if let Some((inner, rest)) = split_key(message) {
        return with_key(&join(path, inner), rest);
    }
    if let Some((field, expected)) = unknown("unknown field `", message) {
        // serde_path_to_error's path already ends with the unknown key; a rebuilt input's may not.
        let key = if path == field || path.ends_with(&format!(".{field}")) { path.to_string() } else { join(path, field) };
        return with_key(&key, &format!("unknown key{}", candidates(field, &expected, "known keys")));
    }
    if let Some((variant, expected)) = unknown("unknown variant `", message) {
        return with_key(path, &format!("unknown value `{variant}`{}", candidates(variant, &expected, "expected one of")));
    }
    if let Some(field) = message.strip_prefix("missing field `").and_then(|r| r.strip_suffix('`')) {
        return with_key(&join(path, field), "is required");
    }
    with_key(path, &plain_types(message))
}

/// Serde's "unknown field `x`, expected one of `a`, `b`" (or "expected `a`", or "there are no fields") as `x` and
/// its candidates.
fn unknown<'a>(prefix: &str, message: &'a str) -> Option<(&'a str, Vec<&'a str>)> {
    let (name, rest) = message.strip_prefix(prefix)?.split_once('`')?;
    let expected = rest.split_once("expected").map_or("", |(_, e)| e);
    let candidates = expected.split('`').skip(1).step_by(2).collect();
    Some((name, candidates))
}

/// `; did you mean `x`? (known keys: `a`, `b`)`, the suggestion only when one is close.
fn candidates(given: &str, known: &[&str], label: &str) -> String {
    let closest = known
        .iter()
        .map(|k| (strsim::jaro_winkler(given, k), *k))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| format!("; did you mean `{k}`?"))
        .unwrap_or_default();
    let list = match known {
        [] => " (this table takes no keys)".to_string(),
        _ => format!(" ({label}: {})", known.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")),
    };
    format!("{closest}{list}")
}

/// Serde's expectations in Rust's words ("expected u64") in a config author's.
fn plain_types(message: &str) -> String {
    const WORDS: [(&str, &str); 10] = [
        ("expected u64", "expected a whole number ≥ 0"),
        ("expected u32", "expected a whole number ≥ 0"),
        ("expected usize", "expected a whole number ≥ 0"),
        ("expected i64", "expected a whole number"),
        ("expected f64", "expected a number"),
        ("expected f32", "expected a number"),
        ("expected a sequence", "expected a list"),
        ("expected a map", "expected a table"),
        ("expected a boolean", "expected true or false"),
        ("expected a borrowed string", "expected a string"),
    ];
    WORDS.iter().fold(message.to_string(), |m, (rust, words)| m.replace(rust, words))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Tb {
        /// Where the event files go.
        #[serde(skip_serializing_if = "Option::is_none")]
        log_dir: Option<String>,
        log_every_n_steps: u64,
        mode: Mode,
        section: Section,
        tags: Vec<String>,
    }

    impl Default for Tb {
        fn default() -> Tb {
            Tb { log_dir: None, log_every_n_steps: 10, mode: Mode::Offline, section: Section::default(), tags: vec![] }
        }
    }

    impl PluginConfig for Tb {
        fn check(&self) -> Result<(), PluginError> {
            match self.log_dir.as_deref() {
                Some("") => Err(key_error("log_dir", "must not be empty")),
                _ => Ok(()),
            }
        }
    }

    #[derive(Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
    #[serde(rename_all = "lowercase")]
    enum Mode {
        #[default]
        Offline,
        Online,
    }

    #[derive(Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Section {
        n_warmup_steps: u64,
        interval_steps: u64,
    }

    fn err(config: Value) -> String {
        let e = validate::<Tb>(&config).unwrap_err();
        assert_eq!(e.code, PluginError::CONFIG);
        e.message.to_string()
    }

    #[test]
    fn an_unknown_key_is_named_with_the_closest_known_one() {
        assert_eq!(
            err(json!({ "log_every": 3 })),
            "`log_every`: unknown key; did you mean `log_every_n_steps`? (known keys: `log_dir`, `log_every_n_steps`, `mode`, `section`, `tags`)"
        );
        assert_eq!(err(json!({ "zzz": 3 })), "`zzz`: unknown key (known keys: `log_dir`, `log_every_n_steps`, `mode`, `section`, `tags`)");
    }

    #[test]
    fn keys_in_sections_and_lists_are_named_by_their_path() {
        assert!(err(json!({ "section": { "n_warmup": 1 } })).starts_with("`section.n_warmup`: unknown key; did you mean `n_warmup_steps`?"));
        assert_eq!(err(json!({ "section": { "interval_steps": "1" } })), "`section.interval_steps`: invalid type: string \"1\", expected a whole number ≥ 0");
        assert_eq!(err(json!({ "tags": ["a", 2] })), "`tags[1]`: invalid type: integer `2`, expected a string");
    }

    #[test]
    fn wrong_types_and_values_say_what_is_expected() {
        assert_eq!(err(json!({ "log_every_n_steps": -1 })), "`log_every_n_steps`: invalid value: integer `-1`, expected a whole number ≥ 0");
        assert_eq!(err(json!({ "tags": "a" })), "`tags`: invalid type: string \"a\", expected a list");
        assert_eq!(err(json!({ "mode": "onlin" })), "`mode`: unknown value `onlin`; did you mean `online`? (expected one of: `offline`, `online`)");
        assert_eq!(err(json!(3)), "invalid type: integer `3`, expected struct Tb");
    }

    #[test]
    fn checks_run_after_deserialising_and_name_their_key() {
        assert_eq!(err(json!({ "log_dir": "" })), "`log_dir`: must not be empty");
    }

    #[test]
    fn validation_fills_in_defaults_and_keeps_what_was_given() {
        let out = validate::<Tb>(&json!({ "log_dir": "tb", "section": { "interval_steps": 2 } })).unwrap();
        assert_eq!(
            out,
            json!({ "log_dir": "tb", "log_every_n_steps": 10, "mode": "offline", "section": { "n_warmup_steps": 0, "interval_steps": 2 }, "tags": [] })
        );
        assert_eq!(validate::<Tb>(&out).unwrap(), out, "normalising is idempotent");
        assert_eq!(
            defaults::<Tb>(),
            json!({ "log_every_n_steps": 10, "mode": "offline", "section": { "n_warmup_steps": 0, "interval_steps": 0 }, "tags": [] })
        );
    }

    #[test]
    fn the_schema_is_derived_with_descriptions_defaults_and_no_extra_keys() {
        let s = schema::<Tb>();
        assert_eq!(s["type"], "object");
        assert_eq!(s["additionalProperties"], false);
        assert_eq!(s["properties"]["log_dir"]["description"], "Where the event files go.");
        assert_eq!(s["properties"]["log_every_n_steps"]["default"], 10);
        assert_eq!(s["properties"]["log_every_n_steps"]["minimum"], 0);
        assert!(s.to_string().contains("\"offline\""), "{s}");
    }

    #[test]
    fn a_nested_error_joins_its_key_to_the_outer_path() {
        #[derive(Debug, Default, Serialize, JsonSchema)]
        struct Wrapped(Section);
        impl<'de> Deserialize<'de> for Wrapped {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let v = Value::deserialize(d)?;
                from_value_at("", v).map(Wrapped)
            }
        }
        #[derive(Debug, Default, Deserialize, Serialize, JsonSchema)]
        #[serde(deny_unknown_fields, default)]
        struct Outer {
            pruner: Wrapped,
        }
        impl PluginConfig for Outer {}
        let e = validate::<Outer>(&json!({ "pruner": { "interval": 1 } })).unwrap_err();
        assert!(e.message.starts_with("`pruner.interval`: unknown key; did you mean `interval_steps`?"), "{}", e.message);
    }

    #[test]
    fn split_key_reads_the_kits_form_only() {
        assert_eq!(split_key("`a.b[0]`: bad"), Some(("a.b[0]", "bad")));
        assert_eq!(split_key("`a b`: bad"), None);
        assert_eq!(split_key("plain"), None);
    }
}
