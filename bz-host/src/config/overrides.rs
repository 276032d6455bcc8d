//! `--set a.b[2].c=value`: overrides applied to the config's table before it is typed.

/// Applies `a.b[2].c=value` to the table; the value is TOML (`0.1`, `true`, `"x"`, `[1, 2]`) or else a bare string.
/// Returns the key path in the same spelling serde_path_to_error uses.
pub fn apply_override(table: &mut toml::Table, item: &str) -> Result<String, String> {
    let (key, raw) = item.split_once('=').ok_or("expected key=value, e.g. --set optimizer.lr=0.01")?;
    let key = key.trim();
    let raw = raw.trim();
    let value = match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t.remove("v").ok_or("no value")?,
        Err(_) => toml::Value::String(raw.to_string()),
    };
    let segments = split_key(key)?;
    let mut cur = table;
    let mut normalized = String::new();
    for (i, seg) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        if !normalized.is_empty() {
            normalized.push('.');
        }
        normalized.push_str(&seg.name);
        if seg.indexes.is_empty() {
            if last {
                cur.insert(seg.name.clone(), value.clone());
                return Ok(normalized);
            }
            let entry = cur.entry(seg.name.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
            cur = entry.as_table_mut().ok_or_else(|| format!("`{normalized}` is not a table"))?;
            continue;
        }
        let mut v = cur.get_mut(&seg.name).ok_or_else(|| format!("`{normalized}` is not in the config, so it cannot be indexed"))?;
        for (j, idx) in seg.indexes.iter().enumerate() {
            normalized.push_str(&format!("[{idx}]"));
            let arr = v.as_array_mut().ok_or_else(|| format!("`{normalized}`: not a list"))?;
            let len = arr.len();
            v = arr.get_mut(*idx).ok_or_else(|| format!("index {idx} is out of range (the list has {len} entries)"))?;
            if last && j + 1 == seg.indexes.len() {
                *v = value.clone();
                return Ok(normalized);
            }
        }
        cur = v.as_table_mut().ok_or_else(|| format!("`{normalized}` is not a table"))?;
    }
    Err("empty key".into())
}

/// One dotted part of a key path, with the list indexes after its name.
pub(super) struct Segment {
    pub name: String,
    pub indexes: Vec<usize>,
}

/// Splits `a.b[2]."x.y".c` into its parts; a double-quoted part may hold dots (`tune.params."optimizer.lr"`).
pub(super) fn split_key(key: &str) -> Result<Vec<Segment>, String> {
    if key.is_empty() {
        return Err("empty key".into());
    }
    let mut parts = vec![String::new()];
    let mut quoted = false;
    for c in key.chars() {
        if c == '.' && !quoted {
            parts.push(String::new());
            continue;
        }
        if c == '"' {
            quoted = !quoted;
        }
        if let Some(last) = parts.last_mut() {
            last.push(c);
        }
    }
    if quoted {
        return Err(format!("unclosed quote in {key:?}"));
    }
    parts.iter().map(|part| segment(part, key)).collect()
}

fn segment(part: &str, key: &str) -> Result<Segment, String> {
    let (name, rest) = match part.strip_prefix('"') {
        Some(q) => q.split_once('"').map(|(n, r)| (n, (!r.is_empty()).then_some(r))).ok_or_else(|| format!("bad key {key:?}"))?,
        None => part.split_once('[').map(|(n, r)| (n, Some(r))).unwrap_or((part, None)),
    };
    if name.is_empty() {
        return Err(format!("bad key {key:?}"));
    }
    let mut indexes = Vec::new();
    if let Some(rest) = rest {
        let rest = if rest.starts_with('[') { rest.to_string() } else { format!("[{rest}") };
        for idx in rest.split('[').skip(1) {
            let n = idx.strip_suffix(']').and_then(|n| n.parse().ok()).ok_or_else(|| format!("bad index in {key:?}"))?;
            indexes.push(n);
        }
    }
    Ok(Segment { name: name.to_string(), indexes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_parts_keep_their_dots() {
        let s = split_key("tune.params.\"model.layers[1].out\".low").unwrap();
        let names: Vec<&str> = s.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["tune", "params", "model.layers[1].out", "low"]);
        let s = split_key("model.layers[1][2].out").unwrap();
        assert_eq!(s[1].indexes, [1, 2]);
        assert!(split_key("a.\"b").is_err());
        assert!(split_key("a..b").is_err());
    }
}
