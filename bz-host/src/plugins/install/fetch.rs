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
    let fail = |reason: String| InstallError::Fetch { url: redact(url), reason };
    match url.scheme() {
        "file" => {
            let path = url.to_file_path().map_err(|_| fail("not a local file URL".into()))?;
            let f = File::open(&path).map_err(|e| fail(e.to_string()))?;
            let len = f.metadata().ok().map(|m| m.len());
            Ok((Box::new(f), len))
        }
        "http" | "https" => {
            let (url, auth) = credentials(url);
            let mut req = agent().get(url.as_str());
            if let Some(a) = &auth {
                req = req.header("Authorization", a);
            }
            let resp = req.call().map_err(|e| fail(http_error(e, auth.is_some())))?;
            let len = resp.body().content_length();
            Ok((Box::new(resp.into_body().into_reader()), len))
        }
        other => Err(fail(format!("unsupported scheme {other:?}"))),
    }
}

fn http_error(e: ureq::Error, had_credentials: bool) -> String {
    match e {
        ureq::Error::StatusCode(code @ (401 | 403)) if !had_credentials => {
            format!("HTTP {code}: the server wants credentials; put them in ~/.netrc (machine HOST login USER password TOKEN) or in the URL")
        }
        ureq::Error::StatusCode(code @ (401 | 403)) => format!("HTTP {code}: the server refused the credentials from ~/.netrc or the URL"),
        ureq::Error::StatusCode(code) => format!("HTTP {code}"),
        other => other.to_string(),
    }
}

/// Basic credentials for a private index or artifact host, as curl and pip find them: `user:password@` in the
/// URL (taken out of the URL, so it is never printed), else the host's entry in `~/.netrc` (`NETRC` overrides
/// the path). ureq drops the header on redirects to other hosts.
fn credentials(url: &Url) -> (Url, Option<String>) {
    use base64::Engine;
    let basic = |user: &str, pass: &str| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}")));
    let mut clean = url.clone();
    if !url.username().is_empty() {
        let user = percent_decode(url.username());
        let pass = url.password().map(percent_decode).unwrap_or_default();
        let _ = clean.set_username("");
        let _ = clean.set_password(None);
        return (clean, Some(basic(&user, &pass)));
    }
    let host = url.host_str().unwrap_or_default();
    let path = std::env::var_os("NETRC").map(std::path::PathBuf::from).or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".netrc")));
    let entry = path
        .and_then(|p| File::open(p).ok())
        .and_then(|f| netrc::Netrc::parse(std::io::BufReader::new(f)).ok())
        .and_then(|n| n.hosts.into_iter().find(|(h, _)| h == host).map(|(_, m)| m));
    (clean, entry.map(|m| basic(&m.login, m.password.as_deref().unwrap_or(""))))
}

/// A URL as messages and receipts show it: without the password (or user) a private index may carry.
pub fn redact(url: &Url) -> String {
    let mut u = url.clone();
    if !u.username().is_empty() || u.password().is_some() {
        let _ = u.set_password(None);
        let _ = u.set_username("");
    }
    u.to_string()
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// A whole small file (an index, a signature), refusing more than `limit` bytes.
pub fn get_small(url: &Url, limit: u64) -> Result<Vec<u8>, InstallError> {
    let (reader, _) = open(url)?;
    let mut buf = Vec::new();
    reader.take(limit + 1).read_to_end(&mut buf).map_err(|e| InstallError::Fetch { url: redact(url), reason: e.to_string() })?;
    if buf.len() as u64 > limit {
        return Err(InstallError::Fetch { url: redact(url), reason: format!("larger than {limit} bytes") });
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
    let fail = |reason: String| InstallError::Fetch { url: redact(url), reason };
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
