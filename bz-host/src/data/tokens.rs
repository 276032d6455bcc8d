//! `[data.tokens]`: a CSV column of token ids for sequence models. Each cell holds integer ids separated by spaces;
//! a sequence keeps its first `max_len` ids and is right-padded with `padding_id` to `max_len`, so every sample is
//! `[max_len]` ids and its length is where the padding starts (the model's masks follow from the embedding's
//! `padding_idx`). No real token may use the padding id, or it would be masked out as padding.

use super::formats::{self, ColumnRef, CsvSpec, DataError, Location, RawSet};
use std::fs::File;
use std::path::Path;

/// Ids above this are refused: the samples hold f32, which is exact for integers up to 2^24.
pub const MAX_TOKEN_ID: u32 = 1 << 24;

/// How to read a token CSV: the target as any CSV's (`csv.features` is not used), plus the token column.
pub struct TokenSpec<'a> {
    pub csv: CsvSpec<'a>,
    pub column: ColumnRef,
    pub max_len: usize,
    pub padding_id: u32,
}

/// The fields of a row that are read.
struct Columns {
    width: usize,
    tokens: usize,
    target: usize,
    tokens_name: String,
    target_name: String,
}

/// Reads a token CSV: features `[N, max_len]` (ids as f32), targets as [`formats::csv`] reads them.
pub fn read(path: &Path, spec: &TokenSpec) -> Result<RawSet, DataError> {
    let file = File::open(path).map_err(|e| formats::read_error(path, e))?;
    let mut reader =
        csv::ReaderBuilder::new().has_headers(spec.csv.has_header).delimiter(spec.csv.delimiter).flexible(true).trim(csv::Trim::All).from_reader(file);
    let header: Option<Vec<String>> = match spec.csv.has_header {
        true => Some(reader.headers().map_err(|e| formats::csv_error(path, e))?.iter().map(str::to_owned).collect()),
        false => None,
    };
    let mut columns: Option<Columns> = None;
    let (mut features, mut labels) = (Vec::new(), Vec::new());
    for record in reader.records() {
        let record = record.map_err(|e| formats::csv_error(path, e))?;
        let line = record.position().map_or(0, csv::Position::line);
        let c = match &mut columns {
            Some(c) => &*c,
            empty => &*empty.insert(resolve(path, spec, header.as_ref().map_or(record.len(), Vec::len), header.as_deref())?),
        };
        if record.len() != c.width {
            let problem = format!("has {} fields, but {} has {}", record.len(), if header.is_some() { "the header" } else { "the first row" }, c.width);
            return Err(formats::invalid(
                path,
                Location::Line(line),
                problem,
                "every row needs the same number of fields; look for a missing or extra delimiter",
            ));
        }
        let at = || Location::Cell { line, column: c.tokens_name.clone() };
        parse_tokens(&record[c.tokens], spec, &mut features).map_err(|(problem, fix)| formats::invalid(path, at(), problem, fix))?;
        labels.push((line, record[c.target].to_owned()));
    }
    let Some(c) = columns.filter(|_| !labels.is_empty()) else {
        return Err(formats::invalid(path, Location::File, "has no data rows".into(), "give a CSV file with a row per sequence"));
    };
    let (targets, class_names) = formats::csv_targets(path, &c.target_name, &spec.csv, &labels)?;
    Ok(RawSet { features, shape: vec![spec.max_len], targets, class_names })
}

fn resolve(path: &Path, spec: &TokenSpec, width: usize, header: Option<&[String]>) -> Result<Columns, DataError> {
    let tokens = formats::resolve_column(path, &spec.column, width, header, "tokens")?;
    let target = formats::resolve_column(path, &spec.csv.target, width, header, "target")?;
    let name = |i: usize| header.and_then(|h| h.get(i)).map_or_else(|| format!("index {i}"), |n| format!("{n:?}"));
    if tokens == target {
        return Err(formats::invalid(path, Location::Line(1), format!("has the tokens and the target in one column, {}", name(tokens)), "name two columns"));
    }
    Ok(Columns { width, tokens, target, tokens_name: name(tokens), target_name: name(target) })
}

/// Appends one sequence, padded to `max_len`; a bad one is (problem, fix).
fn parse_tokens(cell: &str, spec: &TokenSpec, out: &mut Vec<f32>) -> Result<(), (String, String)> {
    let start = out.len();
    for text in cell.split_ascii_whitespace().take(spec.max_len) {
        let id = text.parse::<u32>().ok().filter(|&id| id <= MAX_TOKEN_ID);
        let Some(id) = id else {
            return Err((format!("token {text:?} is not a token id"), format!("token ids are integers from 0 to {MAX_TOKEN_ID}, separated by spaces")));
        };
        if id == spec.padding_id {
            return Err((
                format!("token {id} is the padding id, which only padding may use"),
                "renumber the tokens, or set data.tokens.padding_id to an id no token uses".into(),
            ));
        }
        out.push(id as f32);
    }
    if out.len() == start {
        return Err(("holds no tokens".into(), "drop rows with empty sequences".into()));
    }
    out.resize(start + spec.max_len, spec.padding_id as f32);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use formats::{Targets, Task};

    fn read_text(text: &str, max_len: usize) -> Result<RawSet, DataError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.csv");
        std::fs::write(&path, text).unwrap();
        let spec = TokenSpec { csv: CsvSpec::new(ColumnRef::Name("label".into()), Task::Classification), column: "text".into(), max_len, padding_id: 0 };
        read(&path, &spec).map_err(|e| match e {
            // Messages without the temporary folder.
            DataError::Invalid { at, problem, fix, .. } => DataError::Invalid { path: "t.csv".into(), at, problem, fix },
            other => other,
        })
    }

    #[test]
    fn sequences_are_padded_and_truncated_to_max_len() {
        let set = read_text("text,label\n3 1 4,a\n1 5 9 2 6,b\n7,a\n", 4).unwrap();
        assert_eq!(set.shape, vec![4]);
        assert_eq!(set.features, vec![3.0, 1.0, 4.0, 0.0, 1.0, 5.0, 9.0, 2.0, 7.0, 0.0, 0.0, 0.0]);
        assert_eq!(set.targets, Targets::Classes(vec![0, 1, 0]));
        assert_eq!(set.class_names, Some(vec!["a".to_string(), "b".to_string()]));
    }

    #[test]
    fn a_bad_token_names_the_line_column_and_token() {
        let err = |text: &str| read_text(text, 4).unwrap_err().to_string();
        assert_eq!(
            err("text,label\n3 1,a\n2 x7 1,b\n"),
            "t.csv, line 3, column \"text\": token \"x7\" is not a token id; token ids are integers from 0 to 16777216, separated by spaces"
        );
        assert!(err("text,label\n3 0 1,a\n").starts_with("t.csv, line 2, column \"text\": token 0 is the padding id"), "{}", err("text,label\n3 0 1,a\n"));
        assert!(err("text,label\n-1,a\n").contains("token \"-1\" is not a token id"));
        assert!(err("text,label\n99999999,a\n").contains("token \"99999999\""));
        assert!(err("text,label\n ,a\n").contains("line 2, column \"text\": holds no tokens"));
        assert!(err("words,label\n1,a\n").contains("no tokens column named \"text\""));
    }
}
