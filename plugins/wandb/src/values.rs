//! JSON as wandb writes it: like JSON, but NaN and the infinities are the bare tokens `NaN`, `Infinity` and
//! `-Infinity` (Python's `json.dumps`), which serde_json cannot produce.

use serde_json::Value;

/// A metric value: whole numbers as integers (as wandb shows `1`, not `1.0`), non-finite ones as tokens.
pub fn number(x: f64) -> String {
    if x.is_nan() {
        "NaN".into()
    } else if x.is_infinite() {
        if x > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        }
    } else if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        serde_json::to_string(&x).unwrap_or_else(|_| "NaN".into())
    }
}

/// Any JSON value (config entries), compact.
pub fn json(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

/// An object of already-encoded values, `{"k": <encoded>, …}`, keys in the given order.
pub fn object(items: &[(String, String)]) -> String {
    let mut s = String::from("{");
    for (i, (k, v)) in items.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&serde_json::to_string(k).unwrap_or_default());
        s.push(':');
        s.push_str(v);
    }
    s.push('}');
    s
}

/// wandb's JSON made readable by serde_json: the bare `NaN`, `Infinity` and `-Infinity` tokens outside
/// strings become `null`.
pub fn tokens_as_null(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let (mut in_string, mut escaped) = (false, false);
    let mut rest = s;
    while let Some(c) = rest.chars().next() {
        if in_string {
            (in_string, escaped) = (escaped || c != '"', !escaped && c == '\\');
        } else if c == '"' {
            in_string = true;
        } else if let Some(token) = ["-Infinity", "Infinity", "NaN"].iter().find(|t| rest.starts_with(**t)) {
            out.push_str("null");
            rest = &rest[token.len()..];
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_and_whole_numbers() {
        assert_eq!(number(f64::NAN), "NaN");
        assert_eq!(number(f64::INFINITY), "Infinity");
        assert_eq!(number(f64::NEG_INFINITY), "-Infinity");
        assert_eq!(number(3.0), "3");
        assert_eq!(number(0.25), "0.25");
        assert_eq!(tokens_as_null(r#"{"a":NaN,"b":[-Infinity,Infinity],"c":"NaN \" Infinity"}"#), r#"{"a":null,"b":[null,null],"c":"NaN \" Infinity"}"#);
        assert_eq!(object(&[("a/b".into(), "1".into()), ("c".into(), "NaN".into())]), r#"{"a/b":1,"c":NaN}"#);
    }
}
