//! TFRecord framing and event files.
//!
//! Each record is `u64 length | u32 masked crc32c(length) | data | u32 masked crc32c(data)`, little-endian.
//! The framing is written by hand (a dozen lines) rather than through the `tfrecord` crate, whose build pulls in
//! a hundred crates and a protobuf compiler step; the CRC is the `crc32c` crate's.

use crate::proto;
use prost::Message;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// TensorFlow's CRC mask: rotate right by 15 and add a constant, so a CRC over data holding CRCs stays strong.
pub fn masked_crc(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// Appends one framed record to `out`.
pub fn frame(out: &mut Vec<u8>, data: &[u8]) {
    let len = (data.len() as u64).to_le_bytes();
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
}

/// One event file: `events.out.tfevents.<10-digit secs>.<host>.<pid>.<n>.bz`, starting with the version event.
pub struct EventFile {
    out: BufWriter<File>,
    path: PathBuf,
    buf: Vec<u8>,
    encoded: Vec<u8>,
}

impl EventFile {
    pub fn create(dir: &Path, wall_time: f64) -> std::io::Result<EventFile> {
        std::fs::create_dir_all(dir)?;
        let host = hostname();
        let pid = std::process::id();
        // Zero-padded seconds: the files of a run are read in name order. `n` separates files made in the same
        // second by the same process (a resumed run in a test, say).
        let mut n = 0;
        let (file, path) = loop {
            let path = dir.join(format!("events.out.tfevents.{:010}.{host}.{pid}.{n}.bz", wall_time as u64));
            match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(f) => break (f, path),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
                Err(e) => return Err(e),
            }
        };
        let mut f = EventFile { out: BufWriter::with_capacity(1 << 16, file), path, buf: Vec::new(), encoded: Vec::new() };
        f.write(&proto::Event { wall_time, step: 0, what: Some(proto::What::FileVersion("brain.Event:2".into())) })?;
        f.flush()?;
        Ok(f)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn write(&mut self, event: &proto::Event) -> std::io::Result<()> {
        self.encoded.clear();
        event.encode(&mut self.encoded).map_err(std::io::Error::other)?;
        self.buf.clear();
        frame(&mut self.buf, &self.encoded);
        self.out.write_all(&self.buf)
    }

    /// Hands everything written so far to the OS: a reader (or a crash of this process) sees whole records.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').collect::<String>())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    // The mask spelled out as TensorFlow's Python writes it, to check the rotate in `masked_crc`.
    #[allow(clippy::manual_rotate)]
    fn crc32c_check_value_and_mask() {
        // The CRC-32C check value, and the masked CRC of an empty length field as TensorFlow writes it.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        let crc = crc32c::crc32c(b"123456789");
        assert_eq!(masked_crc(b"123456789"), ((crc >> 15) | (crc << 17)).wrapping_add(0xa282_ead8));
    }

    #[test]
    fn frames_have_length_crcs_and_data() {
        let mut out = Vec::new();
        frame(&mut out, b"abc");
        assert_eq!(out.len(), 8 + 4 + 3 + 4);
        assert_eq!(&out[..8], &3u64.to_le_bytes());
        assert_eq!(&out[8..12], &masked_crc(&3u64.to_le_bytes()).to_le_bytes());
        assert_eq!(&out[12..15], b"abc");
        assert_eq!(&out[15..], &masked_crc(b"abc").to_le_bytes());
    }
}
