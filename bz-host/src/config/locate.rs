//! Where an error is: byte offsets of key paths in the document, line:col, and "did you mean".

use super::overrides::split_key;

/// Byte offset of `[plugins.<section>]`'s name, or of its `field`'s value.
pub(super) fn plugin_span<S>(doc: &toml_edit::Document<S>, section: &str, field: Option<&str>) -> Option<usize> {
    let plugins = doc.as_table().get("plugins")?.as_table_like()?;
    let (key, item) = plugins.get_key_value(section)?;
    match field {
        None => key.span().map(|s| s.start),
        Some(f) => {
            let (k, v) = item.as_table_like()?.get_key_value(f)?;
            v.span().or(k.span()).map(|s| s.start)
        }
    }
}

/// Byte offset of a key path in the document: the offending key for unknown-field errors, otherwise the value.
pub(super) fn span_of<S>(doc: &toml_edit::Document<S>, path: &str, message: &str) -> Option<usize> {
    let segments = split_key(path).ok()?;
    let mut node = Node::Item(doc.as_item());
    let mut best = None;
    let unknown = unknown_name(message);
    for (i, seg) in segments.iter().enumerate() {
        let (key, next) = node.table()?.get_key_value(&seg.name)?;
        best = key.span().map(|s| s.start).or(best);
        if i + 1 == segments.len() && unknown.as_deref() == Some(seg.name.as_str()) {
            return best;
        }
        node = Node::Item(next);
        best = node.start().or(best);
        for idx in &seg.indexes {
            node = node.index(*idx)?;
            best = node.start().or(best);
        }
    }
    // For "unknown field `x`" the path stops at the parent table: point at the unknown key itself.
    if let Some(name) = unknown {
        if let Some((k, _)) = node.table().and_then(|t| t.get_key_value(&name)) {
            return k.span().map(|s| s.start).or(best);
        }
    }
    best
}

/// A place in a toml_edit document: tables of either style and inline array elements.
#[derive(Clone, Copy)]
enum Node<'a> {
    Item(&'a toml_edit::Item),
    Table(&'a toml_edit::Table),
    Value(&'a toml_edit::Value),
}

impl<'a> Node<'a> {
    fn table(self) -> Option<&'a dyn toml_edit::TableLike> {
        match self {
            Node::Item(i) => i.as_table_like(),
            Node::Table(t) => Some(t),
            Node::Value(v) => v.as_inline_table().map(|t| t as &dyn toml_edit::TableLike),
        }
    }

    fn index(self, idx: usize) -> Option<Node<'a>> {
        match self {
            Node::Item(toml_edit::Item::ArrayOfTables(a)) => a.get(idx).map(Node::Table),
            Node::Item(toml_edit::Item::Value(toml_edit::Value::Array(a))) | Node::Value(toml_edit::Value::Array(a)) => a.get(idx).map(Node::Value),
            _ => None,
        }
    }

    fn start(self) -> Option<usize> {
        let span = match self {
            Node::Item(toml_edit::Item::Value(v)) | Node::Value(v) => v.span(),
            Node::Item(toml_edit::Item::Table(t)) | Node::Table(t) => t.span(),
            Node::Item(_) => None,
        };
        span.map(|s| s.start)
    }
}

fn unknown_name(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    Some(rest.split('`').next()?.to_string())
}

/// Adds "did you mean …?" to serde's "unknown field/variant `x`, expected one of `a`, `b`" messages.
pub(super) fn with_suggestion(message: &str) -> String {
    let Some((head, expected)) = message.split_once(", expected ") else {
        return message.to_string();
    };
    let Some(got) = head.split('`').nth(1) else {
        return message.to_string();
    };
    let choices: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    let best = choices.iter().map(|c| (strsim::jaro_winkler(got, c), *c)).filter(|(score, _)| *score >= 0.8).max_by(|a, b| a.0.total_cmp(&b.0));
    match best {
        Some((_, c)) => format!("{message}; did you mean `{c}`?"),
        None => message.to_string(),
    }
}

pub(super) fn first_line(s: &str) -> String {
    s.trim().lines().next().unwrap_or("").trim().to_string()
}

pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
    (line, col)
}
