//! idx and safetensors files to stream (`data.stream = true`): memory-mapped when opened, so the header is checked
//! against the file's length (by the same parsers as the in-memory path) and the targets read without reading the
//! features; then each sample is read with a positioned read at an offset checked against that length when its
//! batch is made, and converted by the same conversion the in-memory readers use.
//!
//! Samples are not copied out of the map: pages of a map count in the process's resident memory once touched, and a
//! fault maps the pages around it too (fault-around, 64 KiB), so a batch of 250 random samples made 16 MB of the
//! file resident (measured). Read into the batch's buffer, the file stays in the page cache, outside the process.

use super::formats::{self, DataError, IdxFile, Location, Task, IDX_IMAGES_HEADER};
use super::stream::{SampleReader, StreamSet};
use safetensors::{Dtype, SafeTensors};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `count` samples of `sample_bytes` each at `offset` in a file whose length was checked to hold them all.
struct Samples {
    path: PathBuf,
    file: File,
    offset: u64,
    sample_bytes: usize,
}

impl Samples {
    fn open(path: &Path, offset: usize, sample_bytes: usize) -> Result<Samples, DataError> {
        let file = File::open(path).map_err(|e| formats::read_error(path, e))?;
        Ok(Samples { path: path.to_owned(), file, offset: offset as u64, sample_bytes })
    }

    /// Sample `index`'s bytes. A file cut short since it was opened is an error, not a short sample.
    fn read(&self, index: usize, buf: &mut Vec<u8>) -> Result<(), DataError> {
        buf.resize(self.sample_bytes, 0);
        let at = self.offset + (index * self.sample_bytes) as u64;
        self.file.read_exact_at(buf, at).map_err(|e| formats::read_error(&self.path, e))
    }
}

thread_local! {
    /// Each worker's buffer for one sample's bytes.
    static BYTES: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// An IDX images file: samples of `rows * cols` bytes after the 16-byte header.
struct MappedIdx(Samples);

impl SampleReader for MappedIdx {
    fn read(&self, index: usize, out: &mut [f32]) -> Result<(), DataError> {
        BYTES.with_borrow_mut(|buf| {
            self.0.read(index, buf)?;
            formats::idx_pixels(buf, out);
            Ok(())
        })
    }
}

/// The IDX pair of `prefix` in `dir`, images mapped (they must not be gzipped), labels read.
pub fn idx_dir(dir: &Path, prefix: &str) -> Result<StreamSet, DataError> {
    let (images, labels) = formats::idx_paths(dir, prefix)?;
    let header = formats::parse_idx_header(&IdxFile::map(&images)?)?;
    let classes = formats::idx_labels_for(&images, &labels, header.count)?;
    // In bounds: the header's count, rows and cols were checked against the file's exact length.
    let reader = MappedIdx(Samples::open(&images, IDX_IMAGES_HEADER, header.rows * header.cols)?);
    Ok(StreamSet { reader: Arc::new(reader), shape: vec![1, header.rows, header.cols], targets: formats::Targets::Classes(classes), class_names: None })
}

/// A safetensors features tensor of `dtype`, `sample_len` values a sample.
struct MappedTensor {
    samples: Samples,
    key: String,
    dtype: Dtype,
    sample_len: usize,
}

impl SampleReader for MappedTensor {
    fn read(&self, index: usize, out: &mut [f32]) -> Result<(), DataError> {
        let path = &self.samples.path;
        let values = BYTES.with_borrow_mut(|buf| {
            self.samples.read(index, buf)?;
            formats::values_f32(path, &self.key, self.dtype, buf)
        })?;
        formats::check_finite(path, &self.key, &values, &format!("of the flattened tensor, in sample {index}"), index * self.sample_len)?;
        out.copy_from_slice(&values);
        Ok(())
    }
}

/// A safetensors file to stream: mapped to check the header and read the targets; the features left in the file.
pub fn safetensors(path: &Path, features_key: &str, targets_key: &str, task: Task) -> Result<StreamSet, DataError> {
    let map = formats::map_file(path)?;
    let (dtype, shape, targets, count, data) = {
        let file: SafeTensors = formats::parse_safetensors(path, &map)?;
        let (features, parts) = formats::safetensors_parts(path, &file, features_key, targets_key, task)?;
        (features.dtype(), parts.shape, parts.targets, parts.count, features.data().as_ptr_range())
    };
    // Where the tensor lies in the map, checked again here rather than trusted from the header's arithmetic.
    let offset = (data.start as usize).wrapping_sub(map.as_ptr() as usize);
    let len = (data.end as usize).wrapping_sub(data.start as usize);
    let sample_len: usize = shape.iter().product();
    let sample_bytes = sample_len.checked_mul(dtype.bitsize() / 8);
    let fits = sample_bytes.and_then(|b| b.checked_mul(count)).is_some_and(|total| total == len && offset.checked_add(len).is_some_and(|end| end <= map.len()));
    let (Some(sample_bytes), true) = (sample_bytes, fits) else {
        return Err(DataError::Invalid {
            path: path.to_owned(),
            at: Location::File,
            problem: format!("features tensor {features_key:?} does not lie inside the file as its shape says"),
            fix: "the file is damaged; write it again with the safetensors library".into(),
        });
    };
    let samples = Samples::open(path, offset, sample_bytes)?;
    let reader = MappedTensor { samples, key: features_key.to_owned(), dtype, sample_len };
    Ok(StreamSet { reader: Arc::new(reader), shape, targets, class_names: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A safetensors file of one header (as JSON) and `data` bytes.
    fn file(dir: &Path, header: &str, data: &[u8]) -> PathBuf {
        let path = dir.join("h.safetensors");
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend(header.as_bytes());
        bytes.extend(data);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn open(path: &Path) -> Result<StreamSet, DataError> {
        safetensors(path, "x", "y", Task::Classification)
    }

    #[test]
    fn a_mapped_safetensors_file_reads_as_the_in_memory_one() {
        let dir = tempfile::tempdir().unwrap();
        let x: Vec<u8> = [1.5f32, -2.0, 0.25, 8.0, 3.0, 4.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let y: Vec<u8> = [1i64, 0, 1].iter().flat_map(|v| v.to_le_bytes()).collect();
        let header = r#"{"x":{"dtype":"F32","shape":[3,2],"data_offsets":[0,24]},"y":{"dtype":"I64","shape":[3],"data_offsets":[24,48]}}"#;
        let path = file(dir.path(), header, &[x, y].concat());
        let set = open(&path).unwrap();
        let whole = formats::safetensors(&path, "x", "y", Task::Classification).unwrap();
        assert_eq!((set.shape.clone(), set.targets.clone()), (whole.shape.clone(), whole.targets.clone()));
        let mut out = vec![0f32; 2];
        for i in 0..3 {
            set.reader.read(i, &mut out).unwrap();
            assert_eq!(out, whole.features[i * 2..i * 2 + 2]);
        }
    }

    #[test]
    fn hostile_headers_are_one_line_errors() {
        let dir = tempfile::tempdir().unwrap();
        let y = r#""y":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}"#;
        let cases = [
            // Offsets past the end of the file.
            (format!(r#"{{"x":{{"dtype":"F32","shape":[1,2],"data_offsets":[8,4000]}},{y}}}"#), vec![0u8; 16]),
            // A shape whose size overflows.
            (format!(r#"{{"x":{{"dtype":"F32","shape":[4611686018427387904,4611686018427387904],"data_offsets":[8,16]}},{y}}}"#), vec![0u8; 16]),
            // Sizes that do not match the shape.
            (format!(r#"{{"x":{{"dtype":"F32","shape":[1,3],"data_offsets":[8,16]}},{y}}}"#), vec![0u8; 16]),
        ];
        for (header, data) in cases {
            let err = open(&file(dir.path(), &header, &data)).err().expect(&header).to_string();
            assert!(err.contains("is not a valid safetensors file") && !err.contains('\n'), "{header}: {err}");
        }
        // A header length beyond the file.
        let path = dir.path().join("long.safetensors");
        std::fs::write(&path, [u64::MAX.to_le_bytes().as_slice(), b"{}"].concat()).unwrap();
        assert!(open(&path).err().unwrap().to_string().contains("is not a valid safetensors file"));
        // Gzipped idx cannot be mapped; a truncated idx is refused before any sample is read.
        let idx = dir.path().join("train-images-idx3-ubyte");
        std::fs::write(dir.path().join("train-labels-idx1-ubyte"), [0u8, 0, 8, 1, 0, 0, 0, 2, 1, 2]).unwrap();
        std::fs::write(&idx, [&[0u8, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2][..], &[9u8; 7]].concat()).unwrap();
        let err = idx_dir(dir.path(), "train").err().unwrap().to_string();
        assert!(err.contains("is truncated: expected 24 bytes"), "{err}");
        std::fs::write(&idx, [0x1f, 0x8b, 8, 0]).unwrap();
        assert!(idx_dir(dir.path(), "train").err().unwrap().to_string().contains("is gzip-compressed, so it cannot be streamed"));
    }
}
