//! Checkpoints as W&B model artifacts (`log_model`), recorded as the wandb client records `run.log_artifact`:
//! an Artifact record in the run's transaction log with a V1 manifest (each file's base64 MD5, its size and a
//! `local_path` to upload from), the manifest's MD5 digest, aliases and the epoch's metrics as metadata.
//! `wandb sync` uploads it; online, the uploader makes the same calls.
//!
//! The files are staged in the W&B run directory (`artifacts/<name>-<n>/`, hard links where the filesystem
//! allows, else copies), because bz prunes checkpoint directories that no link uses any more and the upload
//! may come much later.

use base64::Engine;
use md5::{Digest, Md5};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Which checkpoints become artifact versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogModel {
    /// Each checkpoint that is a new best, when it is saved.
    Best,
    /// The run's last checkpoint, once, when the run ends.
    Last,
    /// Every checkpoint, when it is saved.
    All,
}

/// The files of a checkpoint directory that make up the artifact, in this order; absent ones are skipped.
pub const FILES: [&str; 3] = ["model.safetensors", "model.pt", "trainer.json"];

/// A file larger than this is not uploaded (the artifact is skipped with a warning): W&B's single-request
/// upload limit is 5 GiB, and bz does not do multipart uploads.
pub const MAX_FILE_BYTES: u64 = 5 << 30;

/// The `wandb-artifact-manifest-v1` digest algorithm's header.
const DIGEST_HEADER: &[u8] = b"wandb-artifact-manifest-v1\n";

/// One manifest entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub path: String,
    /// Base64 of the file's MD5, as W&B stores it.
    pub digest: String,
    pub size: u64,
    /// The staged copy to upload from.
    pub local_path: PathBuf,
}

/// One artifact version as logged.
#[derive(Debug, Clone, PartialEq)]
pub struct Artifact {
    pub name: String,
    pub aliases: Vec<String>,
    /// The metadata as a JSON object text.
    pub metadata: String,
    pub entries: Vec<Entry>,
    /// Hex MD5 over the header and `path:digest\n` per entry sorted by path.
    pub digest: String,
    pub client_id: String,
    pub sequence_client_id: String,
}

/// Base64 MD5 and size of a file, read in blocks (never more than `MAX_FILE_BYTES`).
pub fn file_md5(path: &Path) -> std::io::Result<(String, u64)> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        if size > MAX_FILE_BYTES {
            return Err(std::io::Error::other(format!("{} is over {} bytes, the most bz uploads as one file", path.display(), MAX_FILE_BYTES)));
        }
        h.update(&buf[..n]);
    }
    Ok((base64::engine::general_purpose::STANDARD.encode(h.finalize()), size))
}

/// Base64 MD5 of bytes in memory.
pub fn bytes_md5(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Md5::digest(bytes))
}

/// The manifest digest wandb computes (`ArtifactManifestV1.digest`).
pub fn manifest_digest(entries: &[Entry]) -> String {
    let mut sorted: Vec<&Entry> = entries.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    let mut h = Md5::new();
    h.update(DIGEST_HEADER);
    for e in sorted {
        h.update(format!("{}:{}\n", e.path, e.digest).as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Stages a checkpoint's files in `staging` and describes them; digests and sizes are those of the staged
/// files, exactly what gets uploaded.
pub fn stage(checkpoint: &Path, staging: &Path) -> std::io::Result<Vec<Entry>> {
    std::fs::create_dir_all(staging)?;
    let mut entries = Vec::new();
    for name in FILES {
        let src = checkpoint.join(name);
        if !src.is_file() {
            continue;
        }
        let dst = staging.join(name);
        let _ = std::fs::remove_file(&dst);
        if std::fs::hard_link(&src, &dst).is_err() {
            std::fs::copy(&src, &dst)?;
        }
        let (digest, size) = file_md5(&dst)?;
        let local_path = std::fs::canonicalize(&dst)?;
        entries.push(Entry { path: name.to_string(), digest, size, local_path });
    }
    if entries.is_empty() {
        return Err(std::io::Error::other(format!("{} has none of {}", checkpoint.display(), FILES.join(", "))));
    }
    Ok(entries)
}

/// wandb's client ids: 128 characters of [a-z0-9].
pub fn client_id() -> String {
    let mut bytes = [0u8; 128];
    if std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)).is_err() {
        let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (seed.wrapping_mul(6364136223846793005).wrapping_add(i as u128 * 1442695040888963407) >> 64) as u8;
        }
    }
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    bytes.iter().map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference values come from the real wandb 0.31 client logging two files ("hello\n", `{"a":1}` + "\n")
    /// offline: entry digests `sZRqySSS0jR8YjW00mERhA==` and `RYj/N5e3jYGdhY+jvdgrCQ==`, manifest digest
    /// `e41ab24e593bab332b32f589bb826f53`.
    #[test]
    fn digests_match_the_wandb_clients() {
        let dir = std::env::temp_dir().join(format!("bz-wandb-art-{}", std::process::id()));
        let ckpt = dir.join("ckpt");
        std::fs::create_dir_all(&ckpt).unwrap();
        std::fs::write(ckpt.join("model.safetensors"), "hello\n").unwrap();
        std::fs::write(ckpt.join("trainer.json"), "{\"a\":1}\n").unwrap();
        std::fs::write(ckpt.join("optimizer.safetensors"), "not part of it").unwrap();
        let entries = stage(&ckpt, &dir.join("staged")).unwrap();
        let got: Vec<(&str, &str, u64)> = entries.iter().map(|e| (e.path.as_str(), e.digest.as_str(), e.size)).collect();
        assert_eq!(got, vec![("model.safetensors", "sZRqySSS0jR8YjW00mERhA==", 6), ("trainer.json", "RYj/N5e3jYGdhY+jvdgrCQ==", 8)]);
        assert_eq!(manifest_digest(&entries), "e41ab24e593bab332b32f589bb826f53");
        // The staged files outlive the checkpoint (bz prunes old ones).
        std::fs::remove_dir_all(&ckpt).unwrap();
        assert_eq!(std::fs::read_to_string(&entries[0].local_path).unwrap(), "hello\n");
        assert!(stage(&ckpt, &dir.join("again")).is_err());
        let _ = std::fs::remove_dir_all(&dir);
        let id = client_id();
        assert_eq!(id.len(), 128);
        assert_ne!(id, client_id());
    }
}
