//! Images from an MNIST-style IDX images file (gzipped or not), streamed a batch at a time and scaled to `[0, 1]`
//! as training scales them.

use super::input::Samples;
use super::InputError;
use crate::data::formats::{GZIP_MAGIC, IDX_IMAGES_HEADER, IDX_IMAGES_MAGIC};
use anyhow::Result;
use flate2::read::MultiGzDecoder;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

pub struct IdxInput {
    reader: Box<dyn Read>,
    name: String,
    count: u64,
    next: u64,
    sample_len: usize,
    bytes: Vec<u8>,
}

impl IdxInput {
    /// Whether a path names an IDX images file (`…-images-idx3-ubyte[.gz]`).
    pub fn is_idx(path: &Path) -> bool {
        path.file_name().is_some_and(|n| n.to_string_lossy().contains("idx3"))
    }

    pub fn open(path: &Path, sample_len: usize) -> Result<IdxInput> {
        let name = path.display().to_string();
        let bad = |message: String| -> anyhow::Error { InputError { source_name: name.clone(), line: None, message }.into() };
        let mut file = File::open(path).map_err(|e| bad(format!("cannot open: {e}")))?;
        let mut magic = [0u8; 2];
        let gzipped = file.read_exact(&mut magic).is_ok() && magic == GZIP_MAGIC;
        file.seek(SeekFrom::Start(0))?;
        // Multi-member gzip as training reads it (`gzip -c a b > c` is one valid file of both).
        let mut reader: Box<dyn Read> = if gzipped { Box::new(BufReader::new(MultiGzDecoder::new(file))) } else { Box::new(BufReader::new(file)) };
        let mut header = [0u8; IDX_IMAGES_HEADER];
        reader.read_exact(&mut header).map_err(|_| bad(format!("is not an IDX images file (shorter than its {IDX_IMAGES_HEADER}-byte header)")))?;
        if header[..4] != IDX_IMAGES_MAGIC.to_be_bytes() {
            return Err(bad("is not an IDX images file (magic 2051); pass the `-images-idx3-ubyte` file".into()));
        }
        let field = |i: usize| u32::from_be_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]) as u64;
        let (count, rows, cols) = (field(4), field(8), field(12));
        if rows * cols != sample_len as u64 {
            return Err(bad(format!("holds {rows}x{cols} images; the model takes {sample_len} pixels per image")));
        }
        Ok(IdxInput { reader, name, count, next: 0, sample_len, bytes: Vec::new() })
    }
}

impl Samples for IdxInput {
    fn next_batch(&mut self, max: usize, out: &mut Vec<f32>) -> Result<usize> {
        let n = (self.count - self.next).min(max as u64) as usize;
        if n == 0 {
            return Ok(0);
        }
        self.bytes.resize(n * self.sample_len, 0);
        if self.reader.read_exact(&mut self.bytes).is_err() {
            let message = format!("ends before image {} of the {} its header announces (cut off, or not gzip-complete)", self.next + 1, self.count);
            return Err(InputError { source_name: self.name.clone(), line: None, message }.into());
        }
        out.extend(self.bytes.iter().map(|&p| f32::from(p) / 255.0));
        self.next += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn reads_gzipped_images_in_batches_and_names_a_cut_off_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut raw = vec![0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 1, 0, 0, 0, 2];
        raw.extend([0, 255, 51, 102, 255, 0]);
        let p = dir.path().join("t-images-idx3-ubyte.gz");
        let mut gz = flate2::write::GzEncoder::new(File::create(&p).unwrap(), flate2::Compression::fast());
        gz.write_all(&raw).unwrap();
        gz.finish().unwrap();
        assert!(IdxInput::is_idx(&p));
        let mut input = IdxInput::open(&p, 2).unwrap();
        let mut out = Vec::new();
        while input.next_batch(2, &mut out).unwrap() > 0 {}
        assert_eq!(out, vec![0.0, 1.0, 0.2, 0.4, 1.0, 0.0]);
        assert!(IdxInput::open(&p, 3).err().unwrap().to_string().contains("1x2 images; the model takes 3"));

        let cut = dir.path().join("cut-images-idx3-ubyte");
        std::fs::write(&cut, &raw[..19]).unwrap();
        let mut input = IdxInput::open(&cut, 2).unwrap();
        assert!(input.next_batch(8, &mut out).unwrap_err().to_string().contains("ends before image 1 of the 3"));
    }
}
