//! The `.wandb` transaction log: a 7-byte header (`:W&B`, magic 0xBEE1, version 0), then LevelDB-log chunks in
//! 32 KiB blocks counted from offset 0. A chunk is `u32 crc | u16 length | u8 type | payload`, where the CRC is
//! plain CRC-32/IEEE over the type byte and the payload (wandb-core reads `.wandb` files with `CRCAlgoIEEE`).
//! A record that does not fit the block's rest is split into FIRST, MIDDLE… LAST chunks; a block's last < 7
//! bytes are zeros. Written by hand: no crate writes wandb's variant of the LevelDB log.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

pub const BLOCK: u64 = 32 * 1024;
const CHUNK_HEADER: u64 = 7;
const FULL: u8 = 1;
const FIRST: u8 = 2;
const MIDDLE: u8 = 3;
const LAST: u8 = 4;

pub struct LogWriter {
    out: BufWriter<File>,
    offset: u64,
}

impl LogWriter {
    pub fn create(path: &Path) -> std::io::Result<LogWriter> {
        let file = std::fs::OpenOptions::new().write(true).create_new(true).open(path)?;
        let mut w = LogWriter { out: BufWriter::with_capacity(1 << 16, file), offset: 0 };
        let mut header = b":W&B".to_vec();
        header.extend_from_slice(&0xBEE1u16.to_le_bytes());
        header.push(0);
        w.out.write_all(&header)?;
        w.offset = header.len() as u64;
        Ok(w)
    }

    pub fn write_record(&mut self, data: &[u8]) -> std::io::Result<()> {
        let mut left = data;
        let mut first = true;
        loop {
            let in_block = BLOCK - self.offset % BLOCK;
            if in_block < CHUNK_HEADER {
                self.out.write_all(&[0u8; CHUNK_HEADER as usize][..in_block as usize])?;
                self.offset += in_block;
                continue;
            }
            let n = left.len().min((in_block - CHUNK_HEADER) as usize);
            let last = n == left.len();
            let kind = match (first, last) {
                (true, true) => FULL,
                (true, false) => FIRST,
                (false, true) => LAST,
                (false, false) => MIDDLE,
            };
            let mut h = crc32fast::Hasher::new();
            h.update(&[kind]);
            h.update(&left[..n]);
            self.out.write_all(&h.finalize().to_le_bytes())?;
            self.out.write_all(&(n as u16).to_le_bytes())?;
            self.out.write_all(&[kind])?;
            self.out.write_all(&left[..n])?;
            self.offset += CHUNK_HEADER + n as u64;
            left = &left[n..];
            first = false;
            if last {
                return Ok(());
            }
        }
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// The records of a `.wandb` file, in order, up to the first damage: a bad header, a checksum mismatch, a
/// chunk out of sequence or a truncated tail (what a killed process leaves) all end the list there, since
/// nothing after them can be trusted. Files over `max_bytes` are refused.
pub fn read_records(path: &Path, max_bytes: u64) -> std::io::Result<Vec<Vec<u8>>> {
    let len = std::fs::metadata(path)?.len();
    if len > max_bytes {
        return Err(std::io::Error::other(format!("{} is {len} bytes, over the {max_bytes} this reader accepts", path.display())));
    }
    let bytes = std::fs::read(path)?;
    let mut records = Vec::new();
    if bytes.len() < 7 || &bytes[..4] != b":W&B" || bytes[4..6] != 0xBEE1u16.to_le_bytes() || bytes[6] != 0 {
        return Ok(records);
    }
    let (mut off, mut partial): (usize, Option<Vec<u8>>) = (7, None);
    while off < bytes.len() {
        let in_block = BLOCK as usize - off % BLOCK as usize;
        if in_block < CHUNK_HEADER as usize {
            off += in_block;
            continue;
        }
        let Some(header) = bytes.get(off..off + CHUNK_HEADER as usize) else { break };
        let n = u16::from_le_bytes([header[4], header[5]]) as usize;
        let kind = header[6];
        let Some(payload) = bytes.get(off + CHUNK_HEADER as usize..off + CHUNK_HEADER as usize + n) else { break };
        let mut h = crc32fast::Hasher::new();
        h.update(&[kind]);
        h.update(payload);
        if h.finalize() != u32::from_le_bytes([header[0], header[1], header[2], header[3]]) {
            break;
        }
        off += CHUNK_HEADER as usize + n;
        match (kind, partial.as_mut()) {
            (FULL, None) => records.push(payload.to_vec()),
            (FIRST, None) => partial = Some(payload.to_vec()),
            (MIDDLE, Some(p)) => p.extend_from_slice(payload),
            (LAST, Some(p)) => {
                p.extend_from_slice(payload);
                records.extend(partial.take());
            }
            _ => break,
        }
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads the chunks back (the layout rules, not wandb's reader: the tests run the real one).
    fn chunks(bytes: &[u8]) -> Vec<(u8, usize)> {
        let mut out = Vec::new();
        let mut off = 7usize;
        while off < bytes.len() {
            let in_block = BLOCK as usize - off % BLOCK as usize;
            if in_block < 7 {
                assert!(bytes[off..off + in_block].iter().all(|b| *b == 0));
                off += in_block;
                continue;
            }
            let len = u16::from_le_bytes([bytes[off + 4], bytes[off + 5]]) as usize;
            let kind = bytes[off + 6];
            let mut h = crc32fast::Hasher::new();
            h.update(&[kind]);
            h.update(&bytes[off + 7..off + 7 + len]);
            assert_eq!(u32::from_le_bytes(bytes[off..off + 4].try_into().unwrap()), h.finalize());
            out.push((kind, len));
            off += 7 + len;
        }
        out
    }

    #[test]
    fn records_split_at_block_boundaries() {
        let path = std::env::temp_dir().join(format!("bz-wandb-leveldb-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let mut w = LogWriter::create(&path).unwrap();
        w.write_record(&[1u8; 100]).unwrap();
        w.write_record(&vec![2u8; 70_000]).unwrap();
        w.write_record(&[3u8; 10]).unwrap();
        w.flush().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..7], b":W&B\xe1\xbe\x00");
        let c = chunks(&bytes);
        assert_eq!(c[0], (FULL, 100));
        assert_eq!(c[1].0, FIRST);
        assert_eq!(c[2], (MIDDLE, BLOCK as usize - 7));
        assert_eq!(c[3].0, LAST);
        assert_eq!(c[1].1 + c[2].1 + c[3].1, 70_000);
        assert_eq!(c[4], (FULL, 10));
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn records_read_back_and_a_torn_tail_is_dropped() {
        let path = std::env::temp_dir().join(format!("bz-wandb-leveldb-read-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let mut w = LogWriter::create(&path).unwrap();
        let records: Vec<Vec<u8>> = vec![vec![1u8; 100], vec![2u8; 70_000], vec![3u8; 10]];
        for r in &records {
            w.write_record(r).unwrap();
        }
        w.flush().unwrap();
        assert_eq!(read_records(&path, 1 << 20).unwrap(), records);
        let full = std::fs::read(&path).unwrap();
        // A process killed inside the last record: the two whole ones come back.
        std::fs::write(&path, &full[..full.len() - 4]).unwrap();
        assert_eq!(read_records(&path, 1 << 20).unwrap(), records[..2].to_vec());
        // A flipped byte in the big record's second block: only what precedes it.
        let mut bad = full.clone();
        bad[BLOCK as usize + 100] ^= 1;
        std::fs::write(&path, &bad).unwrap();
        assert_eq!(read_records(&path, 1 << 20).unwrap(), records[..1].to_vec());
        assert!(read_records(&path, 100).is_err(), "over the size bound");
        let _ = std::fs::remove_file(&path);
    }
}
