//! Sections whose keys depend on a tag: `data.source`, `optimizer.name`, `scheduler.name`, `tune.pruner.type` and
//! each `tune.params` entry. The tag is read first; then the keys every variant takes and the variant's own keys
//! are deserialized into their own structs, each with `deny_unknown_fields`.
//!
//! serde's internally tagged enums and `#[serde(flatten)]` buffer a section and lose the key path that line:col
//! and "did you mean" come from; deserializing each half from its own table keeps the path.

use serde::de::{self, DeserializeOwned, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;

/// A problem inside one section: the key path relative to the section (empty for the section itself) and why.
#[derive(Debug, Clone, PartialEq)]
pub struct SectionError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for SectionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "`{}`: {}", self.path, self.message)
        }
    }
}

/// The own keys of a variant that has none.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NoKeys {}

/// A section typed by a tag key.
pub trait Tagged: Sized {
    /// The tag key: `source`, `name` or `type`.
    const TAG: &'static str;
    /// The variant of a section that leaves the tag out; `None` makes the tag required.
    const DEFAULT: Option<&'static str>;
    /// Every tag value, as users write them.
    const KINDS: &'static [&'static str];
    /// Keys every variant takes, besides the tag.
    fn common_fields() -> &'static [&'static str];
    /// The keys of one variant; `kind` is one of `KINDS`.
    fn variant_fields(kind: &str) -> &'static [&'static str];
    /// Builds the section from its tag, its variant's own keys and the common keys.
    fn build(kind: &str, own: toml::Table, common: toml::Table) -> Result<Self, SectionError>;
}

/// Types a section's table: the tag, then each half; a key of another variant says which variant it belongs to.
pub fn resolve<T: Tagged>(table: &toml::Table) -> Result<T, SectionError> {
    let (kind, explicit) = kind_of::<T>(table)?;
    let mut own = toml::Table::new();
    let mut common = toml::Table::new();
    for (key, value) in table {
        if key == T::TAG {
            continue;
        }
        if T::common_fields().contains(&key.as_str()) {
            common.insert(key.clone(), value.clone());
        } else if T::variant_fields(kind).contains(&key.as_str()) {
            own.insert(key.clone(), value.clone());
        } else {
            return Err(misplaced::<T>(kind, explicit, key));
        }
    }
    T::build(kind, own, common).map_err(|mut e| {
        // serde names a missing key only in its message; say which variant needs it.
        if let Some(field) = e.message.strip_prefix("missing field `").and_then(|r| r.split('`').next()) {
            e.message = format!("{}; {} = \"{kind}\" needs `{field}`", e.message, T::TAG);
        }
        e
    })
}

/// serde's `Deserialize` for a tagged section, through [`resolve`].
pub fn deserialize<'de, T: Tagged, D: Deserializer<'de>>(deserializer: D) -> Result<T, D::Error> {
    let table = toml::Table::deserialize(deserializer)?;
    resolve(&table).map_err(de::Error::custom)
}

/// Drops the keys that do not apply to the section's variant: run directories written before sections were
/// typed hold every variant's keys at their defaults.
pub fn retain_applicable<T: Tagged>(table: &mut toml::Table) {
    if let Ok((kind, _)) = kind_of::<T>(table) {
        table.retain(|k, _| k == T::TAG || T::common_fields().contains(&k) || T::variant_fields(kind).contains(&k));
    }
}

/// Deserializes one half of a section, keeping the key path of any error.
pub fn part<T: DeserializeOwned>(table: toml::Table) -> Result<T, SectionError> {
    serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
        let path = e.path().to_string();
        SectionError { path: if path == "." { String::new() } else { path }, message: super::first_line(&e.inner().to_string()) }
    })
}

fn kind_of<T: Tagged>(table: &toml::Table) -> Result<(&'static str, bool), SectionError> {
    let tag_error = |message: String| SectionError { path: T::TAG.into(), message };
    match table.get(T::TAG) {
        None => match T::DEFAULT {
            Some(kind) => Ok((kind, false)),
            None => Err(SectionError { path: String::new(), message: format!("missing field `{}`: one of {}", T::TAG, quoted(T::KINDS, ", ")) }),
        },
        Some(toml::Value::String(s)) => match T::KINDS.iter().find(|k| **k == s) {
            Some(kind) => Ok((kind, true)),
            None => Err(tag_error(format!("unknown variant `{s}`, expected one of {}", backticked(T::KINDS)))),
        },
        Some(other) => Err(tag_error(format!("invalid type: {}, expected a string: one of {}", other.type_str(), quoted(T::KINDS, ", ")))),
    }
}

fn misplaced<T: Tagged>(kind: &str, explicit: bool, key: &str) -> SectionError {
    let owners: Vec<&str> = T::KINDS.iter().copied().filter(|k| T::variant_fields(k).contains(&key)).collect();
    let message = if owners.is_empty() {
        let mut expected = vec![T::TAG];
        expected.extend(T::common_fields());
        expected.extend(T::variant_fields(kind));
        format!("unknown field `{key}`, expected one of {}", backticked(&expected))
    } else {
        let implied = if explicit { String::new() } else { format!(" (`{}` is not set, so it is \"{kind}\")", T::TAG) };
        format!("`{key}` applies to {} = {}; {kind} has no `{key}`{implied}", T::TAG, quoted(&owners, " or "))
    };
    SectionError { path: key.into(), message }
}

fn quoted(items: &[&str], sep: &str) -> String {
    items.iter().map(|i| format!("{i:?}")).collect::<Vec<_>>().join(sep)
}

/// serde's spelling of a choice list, which "did you mean" reads.
fn backticked(items: &[&str]) -> String {
    items.iter().map(|i| format!("`{i}`")).collect::<Vec<_>>().join(", ")
}

/// The keys a derived `Deserialize` struct accepts, read from serde itself so that no list is kept by hand.
pub fn fields<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Probe<'a>(&'a mut &'static [&'static str]);
    impl<'de> Deserializer<'de> for Probe<'_> {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(self, _: &'static str, fields: &'static [&'static str], _: V) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("probed"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
            unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Probe(&mut fields));
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Two {
        a: u8,
        #[serde(rename = "bee")]
        b: u8,
    }

    #[test]
    fn fields_come_from_serde() {
        assert_eq!(fields::<Two>(), ["a", "bee"]);
    }
}
