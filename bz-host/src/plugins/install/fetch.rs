//! Reading indexes and archives from `file://`, `http://` and `https://` URLs, hashing while streaming.

use super::store::hex;
use super::InstallError;
use sha2::Digest;
use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;
use url::Url;

fn agent() -> &'static ureq::Agent {
    static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
    AGENT.get_or_init(|| {
        ureq::Agent::config_builder()
            .user_agent(format!("bz/{}", env!("CARGO_PKG_VERSION")))
            .timeout_connect(Some(Duration::from_secs(15)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            // A stalled server fails the download instead of hanging it; a slow but live one is fine.
            .timeout_per_read(Some(Duration::from_secs(60)))
            .build()
            .into()
    })
}

/// Opens a URL for reading: the reader and the length when known.
fn open(url: &Url) -> Result<(Box<dyn Read>, Option<u64>), InstallError> {
    let fail = |reason: String| InstallError::Fetch { url: url.to_string(), reason };
    match url.scheme() {
        "file" => {
            let path = url.to_file_path().map_err(|_| fail("not a local file URL".into()))?;
            let f = File::open(&path).map_err(|e| fail(e.to_string()))?;
            let len = f.metadata().ok().map(|m| m.len());
            Ok((Box::new(f), len))
        }
        "http" | "https" => {
            let resp = agent().get(url.as_str()).call().map_err(|e| fail(http_error(e)))?;
            let len = resp.body().content_length();
            Ok((Box::new(resp.into_body().into_reader()), len))
        }
        other => Err(fail(format!("unsupported scheme {other:?}"))),
    }
}

fn http_error(e: ureq::Error) -> String {
    match e {
        ureq::Error::StatusCode(code) => format!("HTTP {code}"),
        other => other.to_string(),
    }
}

/// A whole small file (an index, a signature), refusing more than `limit` bytes.
pub fn get_small(url: &Url, limit: u64) -> Result<Vec<u8>, InstallError> {
    let (reader, _) = open(url)?;
    let mut buf = Vec::new();
    reader.take(limit + 1).read_to_end(&mut buf).map_err(|e| InstallError::Fetch { url: url.to_string(), reason: e.to_string() })?;
    if buf.len() as u64 > limit {
        return Err(InstallError::Fetch { url: url.to_string(), reason: format!("larger than {limit} bytes") });
    }
    Ok(buf)
}

/// What a download produced.
pub struct Downloaded {
    pub sha256: String,
    pub size: u64,
}

/// Streams `url` into `dest`, hashing it (sha256, and minisign's hash when a verifier is given) on the way.
/// Reads at most `expect` bytes plus one when the size is known, so a lying server cannot fill the disk; a
/// body that ends early, or runs long, is an error naming both sizes.
pub fn download(url: &Url, dest: &Path, expect: Option<u64>, max: u64, mut verifier: Option<&mut minisign_verify::StreamVerifier<'_>>, progress: bool) -> Result<Downloaded, InstallError> {
    let (reader, announced) = open(url)?;
    let fail = |reason: String| InstallError::Fetch { url: url.to_string(), reason };
    let cap = expect.unwrap_or(max);
    let mut reader = reader.take(cap + 1);
    let mut out = File::create(dest).map_err(|e| InstallError::io(dest, e))?;
    let total = expect.or(announced);
    let bar = progress_bar(total, url, progress);
    let mut h = sha2::Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let of = total.map(|t| format!(" of {t}")).unwrap_or_default();
                return Err(fail(format!("download failed after {size}{of} bytes: {e}")));
            }
        };
        h.update(&buf[..n]);
        if let Some(v) = verifier.as_deref_mut() {
            v.update(&buf[..n]);
        }
        out.write_all(&buf[..n]).map_err(|e| InstallError::io(dest, e))?;
        size += n as u64;
        if let Some(b) = &bar {
            b.set_position(size);
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    out.sync_all().map_err(|e| InstallError::io(dest, e))?;
    if let Some(want) = expect {
        if size != want {
            let how = if size < want { "ended early" } else { "is larger" };
            return Err(fail(format!("download {how}: got {size} bytes, the index says {want}")));
        }
    } else if size > max {
        return Err(fail(format!("larger than {max} bytes; refusing it")));
    }
    Ok(Downloaded { sha256: hex(&h.finalize()), size })
}

/// A bar on a terminal for downloads over 1 MiB; nothing otherwise.
fn progress_bar(total: Option<u64>, url: &Url, wanted: bool) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    let total = total?;
    if !wanted || total < (1 << 20) || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(total);
    let style = indicatif::ProgressStyle::with_template("{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(url.path_segments().and_then(|mut s| s.next_back()).unwrap_or("download").to_string());
    Some(bar)
}
