//! Samples from a safetensors file, read a batch at a time by seeking into its features tensor, so memory follows
//! the batch size and not the file's size.

use super::input::Samples;
use super::InputError;
use anyhow::Result;
use safetensors::tensor::{Dtype, Metadata};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// A header larger than this is not one of a sample file (safetensors itself caps it at 100 MB).
const MAX_HEADER: u64 = 100 << 20;

pub struct SafetensorsInput {
    file: File,
    name: String,
    /// F32, F64 or U8: the element types a features tensor may have.
    dtype: Dtype,
    /// Where the tensor's data starts in the file, its sample count, and the next sample to read.
    start: u64,
    count: u64,
    next: u64,
    sample_len: usize,
    bytes: Vec<u8>,
}

impl SafetensorsInput {
    /// Opens `path` and finds tensor `key` of shape `[N, ...]` with `sample_len` values per sample. The header is
    /// read and checked by safetensors' own `Metadata` (contiguous offsets, sizes that match dtype and shape, no
    /// overflow); the data is then read a batch at a time, never whole.
    pub fn open(path: &Path, key: &str, sample_len: usize) -> Result<SafetensorsInput> {
        let name = path.display().to_string();
        let bad = |message: String| -> anyhow::Error { InputError { source_name: name.clone(), line: None, message }.into() };
        let mut file = File::open(path).map_err(|e| bad(format!("cannot open: {e}")))?;
        let file_len = file.metadata()?.len();
        let mut len = [0u8; 8];
        file.read_exact(&mut len).map_err(|_| bad("is not a safetensors file (shorter than its 8-byte header length)".into()))?;
        let header_len = u64::from_le_bytes(len);
        if header_len > MAX_HEADER || 8 + header_len > file_len {
            return Err(bad(format!("is not a safetensors file (a header of {header_len} bytes in a file of {file_len})")));
        }
        let mut header = vec![0u8; header_len as usize];
        file.read_exact(&mut header)?;
        let meta: Metadata = serde_json::from_slice(&header).map_err(|e| bad(format!("has a damaged header: {e}")))?;
        if (8 + header_len).checked_add(meta.data_len() as u64).is_none_or(|end| end > file_len) {
            return Err(bad(format!("its header describes {} bytes of data, more than the file holds", meta.data_len())));
        }
        let Some(info) = meta.info(key) else {
            let mut names: Vec<String> = meta.tensors().into_keys().collect();
            names.sort();
            return Err(bad(format!("has no tensor {key:?} (it has {names:?}); store the samples under {key:?}, shape [N, ...]")));
        };
        if !matches!(info.dtype, Dtype::F32 | Dtype::F64 | Dtype::U8) {
            return Err(bad(format!("tensor {key:?} is {:?}; bz predict reads F32, F64 or U8", info.dtype)));
        }
        let (&count, rest) = info.shape.split_first().ok_or_else(|| bad(format!("tensor {key:?} is a scalar; store one sample per row, shape [N, ...]")))?;
        // The shape's product is bounded by the data length Metadata checked, so it cannot overflow.
        let per_sample: usize = rest.iter().product();
        if per_sample != sample_len {
            return Err(bad(format!("tensor {key:?} has shape {:?}: {per_sample} values per sample, the model takes {sample_len}", info.shape)));
        }
        let start = 8 + header_len + info.data_offsets.0 as u64;
        Ok(SafetensorsInput { file, name, dtype: info.dtype, start, count: count as u64, next: 0, sample_len, bytes: Vec::new() })
    }
}

impl Samples for SafetensorsInput {
    fn next_batch(&mut self, max: usize, out: &mut Vec<f32>) -> Result<usize> {
        let n = (self.count - self.next).min(max as u64) as usize;
        if n == 0 {
            return Ok(0);
        }
        let row = self.sample_len * self.dtype.bitsize() / 8;
        self.file.seek(SeekFrom::Start(self.start + self.next * row as u64))?;
        self.bytes.resize(n * row, 0);
        self.file.read_exact(&mut self.bytes).map_err(|e| InputError { source_name: self.name.clone(), line: None, message: format!("cannot read: {e}") })?;
        let before = out.len();
        match self.dtype {
            Dtype::F32 => out.extend(self.bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
            Dtype::F64 => out.extend(self.bytes.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32)),
            Dtype::U8 => out.extend(self.bytes.iter().map(|&b| b as f32)),
            other => anyhow::bail!("{}: tensor of {other:?}", self.name),
        }
        if let Some(i) = out[before..].iter().position(|v| !v.is_finite()) {
            let sample = self.next + (i / self.sample_len) as u64;
            return Err(InputError {
                source_name: self.name.clone(),
                line: None,
                message: format!("sample {sample} holds a value that is not a finite number"),
            }
            .into());
        }
        self.next += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &Path, header: &str, data: &[u8]) -> std::path::PathBuf {
        let p = dir.join("in.safetensors");
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend(header.as_bytes());
        bytes.extend(data);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn reads_batches_and_refuses_hostile_headers() {
        let dir = tempfile::tempdir().unwrap();
        let p = file(dir.path(), r#"{"x":{"dtype":"U8","shape":[3,2],"data_offsets":[0,6]}}"#, &[1, 2, 3, 4, 5, 6]);
        let mut input = SafetensorsInput::open(&p, "x", 2).unwrap();
        let mut out = Vec::new();
        assert_eq!(input.next_batch(2, &mut out).unwrap(), 2);
        assert_eq!(input.next_batch(2, &mut out).unwrap(), 1);
        assert_eq!(input.next_batch(2, &mut out).unwrap(), 0);
        assert_eq!(out, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);

        let err = |header: &str, data: &[u8]| SafetensorsInput::open(&file(dir.path(), header, data), "x", 2).err().unwrap().to_string();
        assert!(err(r#"{"x":{"dtype":"U8","shape":[3,2],"data_offsets":[0,600]}}"#, &[0; 6]).contains("damaged header: invalid shape, data type, or offset"));
        assert!(err(r#"{"x":{"dtype":"U8","shape":[3,2],"data_offsets":[18446744073709551609,18446744073709551615]}}"#, &[0; 6]).contains("invalid offset"));
        assert!(err(r#"{"x":{"dtype":"U8","shape":[4611686018427387904,2],"data_offsets":[0,6]}}"#, &[0; 6]).contains("overflow"));
        assert!(err(r#"{"x":{"dtype":"U8","shape":[30,2],"data_offsets":[0,60]}}"#, &[0; 6]).contains("more than the file holds"));
        assert!(err(r#"{"x":{"dtype":"I64","shape":[3,2],"data_offsets":[0,48]}}"#, &[0; 48]).contains("F32, F64 or U8"));
        assert!(err(r#"{"y":{"dtype":"U8","shape":[3,2],"data_offsets":[0,6]}}"#, &[0; 6]).contains("has no tensor \"x\""));
        assert!(err("not json", &[]).contains("damaged header"));
        let huge = dir.path().join("huge.safetensors");
        std::fs::write(&huge, u64::MAX.to_le_bytes()).unwrap();
        assert!(SafetensorsInput::open(&huge, "x", 2).err().unwrap().to_string().contains("not a safetensors file"));
    }
}
