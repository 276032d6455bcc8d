//! Reading the samples to predict, a batch at a time, so memory follows the batch size and not the input's.

use super::InputError;
use crate::config::{Column, DataSource};
use anyhow::Result;
use std::io::Read;

/// A source of samples, read a batch at a time.
pub trait Samples {
    /// Appends up to `max` samples to `out`, flat; returns how many (0 at the end of the input).
    fn next_batch(&mut self, max: usize, out: &mut Vec<f32>) -> Result<usize>;

    /// What each sample of the last batch is written under (an image's path); `None`: samples are known by their
    /// order, as the input's rows.
    fn keys(&self) -> Option<&[String]> {
        None
    }
}

/// How the input CSV is laid out: the training config's CSV settings, or for other sources one flat sample per
/// headerless row.
#[derive(Debug, Clone)]
pub struct CsvLayout {
    pub header: bool,
    pub delimiter: u8,
    /// The training target column, which may be present (and is then skipped) or absent.
    pub target: Option<Column>,
    pub features: Option<Vec<Column>>,
}

impl CsvLayout {
    pub fn of(source: &DataSource) -> CsvLayout {
        match source {
            DataSource::Csv(c) => CsvLayout { header: c.header, delimiter: c.delimiter_byte(), target: Some(c.target.clone()), features: c.features.clone() },
            _ => CsvLayout { header: false, delimiter: b',', target: None, features: None },
        }
    }
}

/// Which fields of a row are the features, in the model's order.
struct Columns {
    width: usize,
    features: Vec<usize>,
    names: Option<Vec<String>>,
}

/// A CSV source of samples of `sample_len` features each.
pub struct CsvInput<R: Read> {
    reader: csv::Reader<R>,
    name: String,
    layout: CsvLayout,
    sample_len: usize,
    columns: Option<Columns>,
    record: csv::StringRecord,
}

impl<R: Read> CsvInput<R> {
    /// `name` is how errors refer to the input (a path, or `<stdin>`).
    pub fn new(source: R, name: String, layout: CsvLayout, sample_len: usize) -> Result<CsvInput<R>> {
        let reader = csv::ReaderBuilder::new().has_headers(layout.header).delimiter(layout.delimiter).flexible(true).trim(csv::Trim::All).from_reader(source);
        let mut input = CsvInput { reader, name, layout, sample_len, columns: None, record: csv::StringRecord::new() };
        if input.layout.header {
            let header = input.reader.headers().map(|h| h.iter().map(str::to_owned).collect::<Vec<_>>());
            let header = header.map_err(|e| input.csv_error(e))?;
            if !header.is_empty() {
                input.columns = Some(input.resolve(header.len(), Some(header), 1)?);
            }
        }
        Ok(input)
    }

    fn read_batch(&mut self, max: usize, out: &mut Vec<f32>) -> Result<usize> {
        let mut n = 0;
        while n < max {
            let mut record = std::mem::take(&mut self.record);
            let more = self.reader.read_record(&mut record).map_err(|e| self.csv_error(e))?;
            if !more {
                self.record = record;
                break;
            }
            let line = record.position().map_or(0, csv::Position::line);
            if self.columns.is_none() {
                self.columns = Some(self.resolve(record.len(), None, line)?);
            }
            self.parse_row(&record, line, out)?;
            self.record = record;
            n += 1;
        }
        Ok(n)
    }

    fn parse_row(&self, record: &csv::StringRecord, line: u64, out: &mut Vec<f32>) -> Result<()> {
        let columns = self.columns.as_ref().expect("resolved before the first row");
        if record.len() != columns.width {
            let reference = if columns.names.is_some() { "the header" } else { "the first row" };
            return Err(
                self.error(line, format!("has {} fields, but {reference} has {}: every row needs the same number of fields", record.len(), columns.width))
            );
        }
        for &i in &columns.features {
            let text = &record[i];
            match text.parse::<f32>() {
                Ok(v) if v.is_finite() => out.push(v),
                _ => {
                    let column = columns.names.as_ref().map_or_else(|| format!("column {i}"), |n| format!("column {:?}", n[i]));
                    return Err(self.error(line, format!("{column}: {text:?} is not a finite number; every feature must be numeric")));
                }
            }
        }
        Ok(())
    }

    /// Finds the feature fields in a row of `width` fields; the target column, if present, is skipped.
    fn resolve(&self, width: usize, names: Option<Vec<String>>, line: u64) -> Result<Columns> {
        let n = self.sample_len;
        let find = |c: &Column| -> Option<usize> {
            match c {
                Column::Index(i) => (*i < width).then_some(*i),
                Column::Name(name) => names.as_ref()?.iter().position(|h| h == name),
            }
        };
        let features: Vec<usize> = match &self.layout.features {
            Some(list) => {
                let found: Option<Vec<usize>> = list.iter().map(find).collect();
                found.ok_or_else(|| self.error(line, format!("lacks a feature column the model was trained on ({})", describe(list))))?
            }
            None => {
                let target = match &self.layout.target {
                    Some(t @ Column::Name(_)) => find(t),
                    Some(t @ Column::Index(_)) if width == n + 1 => find(t),
                    _ => None,
                };
                (0..width).filter(|i| Some(*i) != target).collect()
            }
        };
        if features.len() != n {
            let with_target = if self.layout.target.is_some() { format!(" (or {} with the target column)", n + 1) } else { String::new() };
            return Err(self.error(line, format!("has {width} fields, expected {n} feature values per row{with_target}")));
        }
        Ok(Columns { width, features, names })
    }

    fn error(&self, line: u64, message: String) -> anyhow::Error {
        InputError { source_name: self.name.clone(), line: Some(line), message }.into()
    }

    fn csv_error(&self, e: csv::Error) -> anyhow::Error {
        let line = e.position().map(csv::Position::line);
        let message = match e.kind() {
            csv::ErrorKind::Utf8 { .. } => "is not valid UTF-8; save the input as UTF-8".to_string(),
            _ => format!("is not readable as CSV: {e}"),
        };
        InputError { source_name: self.name.clone(), line, message }.into()
    }
}

impl<R: Read> Samples for CsvInput<R> {
    fn next_batch(&mut self, max: usize, out: &mut Vec<f32>) -> Result<usize> {
        self.read_batch(max, out)
    }
}

fn describe(list: &[Column]) -> String {
    list.iter()
        .map(|c| match c {
            Column::Index(i) => i.to_string(),
            Column::Name(n) => format!("{n:?}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str, layout: CsvLayout) -> Result<Vec<f32>> {
        let mut input = CsvInput::new(text.as_bytes(), "in.csv".into(), layout, 2)?;
        let mut out = Vec::new();
        while input.read_batch(1, &mut out)? > 0 {}
        Ok(out)
    }

    fn csv(target: Column) -> CsvLayout {
        CsvLayout { header: true, delimiter: b',', target: Some(target), features: None }
    }

    #[test]
    fn the_target_column_is_skipped_when_present() {
        let by_name = || csv(Column::Name("y".into()));
        assert_eq!(read("a,y,b\n1,cat,2\n3,dog,4\n", by_name()).unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(read("a,b\n1,2\n", by_name()).unwrap(), vec![1.0, 2.0]);
        let headerless = CsvLayout { header: false, ..csv(Column::Index(0)) };
        assert_eq!(read("cat,1,2\n", headerless.clone()).unwrap(), vec![1.0, 2.0]);
        assert_eq!(read("1,2\n", headerless).unwrap(), vec![1.0, 2.0]);
        let listed = CsvLayout { features: Some(vec![Column::Name("b".into()), Column::Name("a".into())]), ..by_name() };
        assert_eq!(read("a,b\n1,2\n", listed).unwrap(), vec![2.0, 1.0]);
    }

    #[test]
    fn bad_rows_name_the_line_and_what_was_expected() {
        let err = |text: &str| read(text, csv(Column::Name("y".into()))).unwrap_err().to_string();
        assert_eq!(err("a,b\n1,2\n1,x\n"), "in.csv:3: column \"b\": \"x\" is not a finite number; every feature must be numeric");
        assert_eq!(err("a,b\n1,2\n1\n"), "in.csv:3: has 1 fields, but the header has 2: every row needs the same number of fields");
        assert_eq!(err("a,b,c\n1,2,3\n"), "in.csv:1: has 3 fields, expected 2 feature values per row (or 3 with the target column)");
        assert!(err("a,b\n1,NaN\n").contains("not a finite number"));
    }
}
