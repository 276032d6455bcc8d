//! Predictions as a safetensors file: `logits` `[N, outputs]` (a regression model's values) and, for
//! classification, `probabilities` `[N, classes]`, both f32, with the class labels in the metadata.
//!
//! A safetensors header gives every tensor's size before any data, and a streamed input's N is known only at the
//! end, so each tensor's rows go to an anonymous temporary file as they come and are copied behind the header at
//! the end: memory follows the batch size, not the input. The header is `safetensors`' own `Metadata`.

use super::output::{Labels, Sink};
use super::Batch;
use anyhow::{Context, Result};
use safetensors::tensor::{Dtype, Metadata, TensorInfo};
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Seek, Write};

/// One tensor's rows, spilled to a temporary file; its width is the first batch's.
struct Spill {
    name: &'static str,
    width: usize,
    rows: usize,
    file: BufWriter<File>,
}

impl Spill {
    fn new(name: &'static str) -> Result<Spill> {
        let file = tempfile::tempfile().context("cannot create a temporary file for the predictions")?;
        Ok(Spill { name, width: 0, rows: 0, file: BufWriter::new(file) })
    }

    fn push(&mut self, values: &[f32], rows: usize) -> Result<()> {
        if rows == 0 {
            return Ok(());
        }
        self.width = values.len() / rows;
        for v in values {
            self.file.write_all(&v.to_le_bytes())?;
        }
        self.rows += rows;
        Ok(())
    }

    fn bytes(&self) -> usize {
        self.rows * self.width * 4
    }
}

/// Collects batches, then writes the file with [`SafetensorsWriter::finish`].
pub struct SafetensorsWriter {
    logits: Spill,
    probabilities: Option<Spill>,
}

impl SafetensorsWriter {
    /// `classification`: whether there are probabilities to write.
    pub fn new(classification: bool) -> Result<SafetensorsWriter> {
        Ok(SafetensorsWriter { logits: Spill::new("logits")?, probabilities: classification.then(|| Spill::new("probabilities")).transpose()? })
    }
}

impl Sink for SafetensorsWriter {
    fn write(&mut self, batch: &Batch, _labels: &dyn Labels) -> Result<()> {
        self.logits.push(&batch.logits, batch.rows)?;
        if let (Some(spill), Some(p)) = (&mut self.probabilities, &batch.probabilities) {
            spill.push(p, batch.rows)?;
        }
        Ok(())
    }
}

impl SafetensorsWriter {
    /// Writes the header, then each tensor's data, to `out`.
    pub fn finish(self, out: &mut impl Write, labels: &dyn Labels) -> Result<()> {
        let spills: Vec<Spill> = std::iter::once(self.logits).chain(self.probabilities).collect();
        let mut infos = Vec::new();
        let mut offset = 0;
        for s in &spills {
            infos.push((s.name.to_string(), TensorInfo { dtype: Dtype::F32, shape: vec![s.rows, s.width], data_offsets: (offset, offset + s.bytes()) }));
            offset += s.bytes();
        }
        let mut meta = HashMap::from([("format".to_string(), "bz predictions".to_string())]);
        if labels.has_names() {
            let width = spills.last().map_or(0, |s| s.width);
            meta.insert("labels".into(), serde_json::to_string(&(0..width).map(|i| labels.label(i)).collect::<Vec<_>>())?);
        }
        let mut header = serde_json::to_vec(&Metadata::new(Some(meta), infos)?)?;
        header.resize(header.len().next_multiple_of(8), b' ');
        out.write_all(&(header.len() as u64).to_le_bytes())?;
        out.write_all(&header)?;
        for s in spills {
            let mut file = s.file.into_inner().map_err(|e| e.into_error())?;
            file.rewind()?;
            std::io::copy(&mut file, out)?;
        }
        Ok(())
    }
}
