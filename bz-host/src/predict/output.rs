//! Writing predictions: CSV or JSON lines (here) or safetensors (`safetensors_output`), to stdout or to a file that
//! appears only once it is complete.

use super::Batch;
use anyhow::{Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Jsonl,
    /// Logits and probabilities as tensors (`safetensors_output`).
    Safetensors,
}

impl Format {
    /// The format an output path's extension names.
    pub fn of(path: &Path) -> Result<Format, String> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("csv") => Ok(Format::Csv),
            Some("jsonl") => Ok(Format::Jsonl),
            Some("safetensors") => Ok(Format::Safetensors),
            _ => Err(format!("{}: the extension must be .csv, .jsonl or .safetensors (it picks the format)", path.display())),
        }
    }
}

/// One sample's prediction.
pub enum Prediction {
    /// Class ids with their probabilities, most likely first (top-k).
    Classes(Vec<(usize, f32)>),
    /// Regression outputs.
    Values(Vec<f32>),
}

/// A class label as the user knows it: a CSV's string, else the class number.
pub trait Labels {
    fn label(&self, id: usize) -> String;
    fn has_names(&self) -> bool;
}

/// Where a batch's predictions go.
pub trait Sink {
    fn write(&mut self, batch: &Batch, labels: &dyn Labels) -> Result<()>;
}

/// Writes predictions as text, a line per sample; the header (CSV) follows from the first prediction.
pub struct Writer<W: Write> {
    out: W,
    format: Format,
    header_done: bool,
}

impl<W: Write> Writer<W> {
    /// `format` is CSV or JSON lines.
    pub fn new(out: W, format: Format) -> Writer<W> {
        debug_assert!(format != Format::Safetensors, "safetensors is written by SafetensorsWriter");
        Writer { out, format, header_done: false }
    }

    /// One sample's line; `key` first (a `path` field) when the input has keys.
    fn line(&mut self, p: &Prediction, key: Option<&str>, labels: &dyn Labels) -> Result<()> {
        if self.format == Format::Jsonl {
            let mut line = json_line(p, labels);
            if let (Some(key), Some(obj)) = (key, line.as_object_mut()) {
                let rest = std::mem::take(obj);
                obj.insert("path".into(), key.into());
                obj.extend(rest);
            }
            writeln!(self.out, "{line}")?;
            return Ok(());
        }
        self.csv_row(p, key, labels)
    }

    fn csv_row(&mut self, p: &Prediction, key: Option<&str>, labels: &dyn Labels) -> Result<()> {
        let mut fields: Vec<String> = key.map(str::to_string).into_iter().collect();
        match p {
            Prediction::Classes(top) => fields.extend(top.iter().flat_map(|(id, prob)| [labels.label(*id), prob.to_string()])),
            Prediction::Values(v) => fields.extend(v.iter().map(f32::to_string)),
        }
        if !self.header_done {
            self.header_done = true;
            let mut header: Vec<String> = key.map(|_| "path".to_string()).into_iter().collect();
            header.extend::<Vec<String>>(match p {
                Prediction::Classes(top) => (1..=top.len())
                    .flat_map(|k| if k == 1 { ["label".to_string(), "probability".to_string()] } else { [format!("label_{k}"), format!("probability_{k}")] })
                    .collect(),
                Prediction::Values(v) if v.len() == 1 => vec!["value".to_string()],
                Prediction::Values(v) => (0..v.len()).map(|i| format!("value_{i}")).collect(),
            });
            write_csv_record(&mut self.out, &header)?;
        }
        write_csv_record(&mut self.out, &fields)
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

impl<W: Write> Sink for Writer<W> {
    fn write(&mut self, batch: &Batch, labels: &dyn Labels) -> Result<()> {
        let keys = batch.keys.as_deref();
        batch.predictions.iter().enumerate().try_for_each(|(i, p)| self.line(p, keys.and_then(|k| k.get(i)).map(String::as_str), labels))
    }
}

fn write_csv_record(out: &mut impl Write, fields: &[String]) -> Result<()> {
    let mut w = csv::WriterBuilder::new().from_writer(Vec::new());
    w.write_record(fields)?;
    out.write_all(&w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?)?;
    Ok(())
}

/// An f32 as JSON with its own shortest digits (`0.6819192`), not those of the f64 it widens to.
fn json_f32(v: f32) -> serde_json::Value {
    v.to_string().parse::<f64>().map_or(serde_json::Value::Null, serde_json::Value::from)
}

fn json_line(p: &Prediction, labels: &dyn Labels) -> serde_json::Value {
    let label = |id: usize| if labels.has_names() { serde_json::json!(labels.label(id)) } else { serde_json::json!(id) };
    match p {
        Prediction::Classes(top) => {
            let (id, prob) = top[0];
            let mut obj = serde_json::json!({ "label": label(id), "probability": json_f32(prob) });
            if top.len() > 1 {
                obj["top_k"] = top.iter().map(|(id, prob)| serde_json::json!({ "label": label(*id), "probability": json_f32(*prob) })).collect();
            }
            obj
        }
        Prediction::Values(v) if v.len() == 1 => serde_json::json!({ "value": json_f32(v[0]) }),
        Prediction::Values(v) => serde_json::json!({ "values": v.iter().map(|x| json_f32(*x)).collect::<Vec<_>>() }),
    }
}

/// A file written under a temporary name in its directory and renamed over `path` only by [`OutputFile::commit`]:
/// an error part-way leaves no partial file behind (the temporary is removed when dropped).
pub struct OutputFile {
    tmp: tempfile::NamedTempFile,
    path: PathBuf,
}

impl OutputFile {
    pub fn create(path: &Path) -> Result<OutputFile> {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let tmp = tempfile::NamedTempFile::new_in(dir).with_context(|| format!("cannot create a file in {}", dir.display()))?;
        // What `std::fs::write` gives under the usual umask, not the temporary's 0600.
        tmp.as_file().set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
        Ok(OutputFile { tmp, path: path.to_path_buf() })
    }

    pub fn file(&mut self) -> &mut std::fs::File {
        self.tmp.as_file_mut()
    }

    pub fn commit(self) -> Result<()> {
        self.tmp.as_file().sync_all()?;
        let dir = self.path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
        self.tmp.persist(&self.path).map_err(|e| anyhow::anyhow!("cannot write {}: {}", self.path.display(), e.error))?;
        crate::atomic::sync_dir(&dir);
        Ok(())
    }
}
