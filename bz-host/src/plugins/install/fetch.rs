//! Reading indexes and archives from `file://`, `http://` and `https://` URLs, hashing while streaming, under one
//! transport policy:
//!
//! - `https://` everywhere; plain `http://` only to a loopback address or with `--allow-http`, and never after a
//!   redirect away from https;
//! - `file://` only when the user named a local index or archive: a remote index cannot point bz at local files;
//! - credentials (from the URL the user gave, or `~/.netrc`) go only to that URL's own scheme, host and port, and
//!   only over https or loopback; redirects are followed here, hop by hop, so each hop is checked;
//! - every URL that is printed or recorded goes through `crate::redact::url`.

use super::store::hex;
use super::InstallError;
use crate::redact;
use sha2::Digest;
use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;
use url::Url;

/// Redirects followed for one request; more is a loop or an attack.
const MAX_REDIRECTS: usize = 5;

/// Where a command's fetches may go: the URL the user named (an index, or an archive URL) and whether plain http
/// to other hosts than this machine is accepted.
#[derive(Debug, Clone)]
pub struct Transport {
    home: Url,
    allow_http: bool,
}

impl Transport {
    pub fn new(home: &Url, allow_http: bool) -> Transport {
        Transport { home: home.clone(), allow_http }
    }

    /// Whether bz may fetch `url` at all: checked for the user's own URL and for every URL an index names.
    pub fn check(&self, url: &Url) -> Result<(), String> {
        match url.scheme() {
            "https" => Ok(()),
            "http" if is_loopback(url) || self.allow_http => Ok(()),
            "http" => Err(format!(
                "plain http:// to {} can be read and changed on the way; use https://, or pass --allow-http to accept it",
                url.host_str().unwrap_or("?")
            )),
            "file" if self.home.scheme() == "file" => Ok(()),
            "file" => Err(format!("the index at {} is remote and may not point at a local file; refused", redact::url(&self.home))),
            other => Err(format!("unsupported scheme {other:?} (use https://, http:// or file://)")),
        }
    }

    /// Checks one redirect hop.
    fn check_redirect(&self, from: &Url, to: &Url) -> Result<(), String> {
        if from.scheme() == "https" && to.scheme() != "https" {
            return Err(format!("redirected from https to {} ({}); refused", to.scheme(), redact::url(to)));
        }
        if !matches!(to.scheme(), "http" | "https") {
            return Err(format!("redirected to {}; refused", redact::url(to)));
        }
        self.check(to)
    }

    /// The Authorization header for `url`: its own `user:password@`, else the home URL's, else `~/.netrc`'s entry
    /// for its host — the latter two only for the home URL's own origin, and only over https or loopback.
    fn credentials(&self, url: &Url) -> Option<String> {
        if !url.username().is_empty() {
            return Some(basic(&percent_decode(url.username()), &url.password().map(percent_decode).unwrap_or_default()));
        }
        let secure = url.scheme() == "https" || is_loopback(url);
        if !secure || url.origin() != self.home.origin() {
            return None;
        }
        if !self.home.username().is_empty() {
            return Some(basic(&percent_decode(self.home.username()), &self.home.password().map(percent_decode).unwrap_or_default()));
        }
        netrc_entry(url.host_str()?).map(|(login, password)| basic(&login, &password))
    }
}

/// 127.0.0.0/8, ::1 and `localhost`: traffic that never leaves this machine.
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

fn basic(user: &str, pass: &str) -> String {
    use base64::Engine;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}")))
}

/// The host's login and password in `~/.netrc` (`NETRC` overrides the path), as curl and pip read it.
fn netrc_entry(host: &str) -> Option<(String, String)> {
    let path =
        std::env::var_os("NETRC").map(std::path::PathBuf::from).or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".netrc")))?;
    let n = netrc::Netrc::parse(std::io::BufReader::new(File::open(path).ok()?)).ok()?;
    let (_, m) = n.hosts.into_iter().find(|(h, _)| h == host)?;
    Some((m.login, m.password.unwrap_or_default()))
}

/// The CA certificates in `SSL_CERT_FILE` (a PEM bundle, as OpenSSL-based tools read it) replace the built-in
/// Mozilla roots: for a company's own CA, or a test server. Unset: the built-in roots. Set but unreadable, or
/// holding no certificate: an error, since falling back silently would hide why the company's server fails.
fn custom_roots() -> Result<Option<ureq::tls::RootCerts>, String> {
    let Some(path) = std::env::var_os("SSL_CERT_FILE") else { return Ok(None) };
    let shown = std::path::Path::new(&path).display().to_string();
    let pem = std::fs::read(&path).map_err(|e| format!("SSL_CERT_FILE={shown}: {e}; point it at a PEM bundle of CA certificates, or unset it"))?;
    let certs: Vec<_> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        return Err(format!("SSL_CERT_FILE={shown} holds no PEM certificate; point it at a bundle of CA certificates, or unset it"));
    }
    Ok(Some(ureq::tls::RootCerts::Specific(std::sync::Arc::new(certs))))
}

fn agent() -> Result<&'static ureq::Agent, String> {
    static AGENT: OnceLock<Result<ureq::Agent, String>> = OnceLock::new();
    AGENT
        .get_or_init(|| {
            let tls = match custom_roots()? {
                Some(roots) => ureq::tls::TlsConfig::builder().root_certs(roots).build(),
                None => ureq::tls::TlsConfig::default(),
            };
            Ok(ureq::Agent::config_builder()
                .tls_config(tls)
                .user_agent(format!("bz/{}", env!("CARGO_PKG_VERSION")))
                .timeout_connect(Some(Duration::from_secs(15)))
                .timeout_recv_response(Some(Duration::from_secs(60)))
                // A stalled server fails the download instead of hanging it; a slow but live one is fine.
                .timeout_per_read(Some(Duration::from_secs(60)))
                // Redirects are followed in `open_http`, so every hop passes the transport policy.
                .max_redirects(0)
                .http_status_as_error(false)
                .build()
                .into())
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Opens a URL for reading: the reader and the length when known.
fn open(url: &Url, t: &Transport) -> Result<(Box<dyn Read>, Option<u64>), InstallError> {
    let fail = |reason: String| InstallError::Fetch { url: redact::url(url), reason };
    t.check(url).map_err(fail)?;
    match url.scheme() {
        "file" => {
            let path = url.to_file_path().map_err(|_| fail("not a local file URL".into()))?;
            let f = File::open(&path).map_err(|e| fail(e.to_string()))?;
            let len = f.metadata().ok().map(|m| m.len());
            Ok((Box::new(f), len))
        }
        _ => open_http(url, t),
    }
}

fn open_http(url: &Url, t: &Transport) -> Result<(Box<dyn Read>, Option<u64>), InstallError> {
    let mut current = url.clone();
    for _ in 0..=MAX_REDIRECTS {
        let fail = |reason: String| InstallError::Fetch { url: redact::url(&current), reason };
        let auth = t.credentials(&current);
        let mut clean = current.clone();
        let _ = clean.set_username("");
        let _ = clean.set_password(None);
        let mut req = agent().map_err(fail)?.get(clean.as_str());
        if let Some(a) = &auth {
            req = req.header("Authorization", a);
        }
        let resp = req.call().map_err(|e| fail(e.to_string()))?;
        let code = resp.status().as_u16();
        if (300..400).contains(&code) {
            let location = resp.headers().get("location").and_then(|l| l.to_str().ok()).ok_or_else(|| fail(format!("HTTP {code} without a Location")))?;
            let next = current.join(location).map_err(|e| fail(format!("HTTP {code} to a bad Location ({e})")))?;
            t.check_redirect(&current, &next).map_err(fail)?;
            current = next;
            continue;
        }
        if code >= 400 {
            return Err(fail(http_error(code, auth.is_some())));
        }
        let len = resp.body().content_length();
        return Ok((Box::new(resp.into_body().into_reader()), len));
    }
    Err(InstallError::Fetch { url: redact::url(url), reason: format!("more than {MAX_REDIRECTS} redirects") })
}

fn http_error(code: u16, had_credentials: bool) -> String {
    match code {
        401 | 403 if !had_credentials => {
            format!("HTTP {code}: the server wants credentials; put them in ~/.netrc (machine HOST login USER password TOKEN) or in the URL")
        }
        401 | 403 => {
            format!("HTTP {code}: the server refused the credentials from ~/.netrc or the URL")
        }
        code => format!("HTTP {code}"),
    }
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// A whole small file (an index, a signature), refusing more than `limit` bytes.
pub fn get_small(url: &Url, limit: u64, t: &Transport) -> Result<Vec<u8>, InstallError> {
    let (reader, _) = open(url, t)?;
    let mut buf = Vec::new();
    reader.take(limit + 1).read_to_end(&mut buf).map_err(|e| InstallError::Fetch { url: redact::url(url), reason: e.to_string() })?;
    if buf.len() as u64 > limit {
        return Err(InstallError::Fetch { url: redact::url(url), reason: format!("larger than {limit} bytes") });
    }
    Ok(buf)
}

/// What a download produced.
pub struct Downloaded {
    pub sha256: String,
    pub size: u64,
}

/// How much to read and how to show it.
pub struct Limits {
    /// The exact size an index promised: reading stops one byte past it, and any other size is an error.
    pub expect: Option<u64>,
    /// The most bytes accepted when no size was promised.
    pub max: u64,
    pub progress: bool,
}

/// Streams `url` into `dest`, hashing it (sha256, and minisign's hash when a verifier is given) on the way.
/// Reads at most `expect` bytes plus one when the size is known, so a lying server cannot fill the disk; a
/// body that ends early, or runs long, is an error naming both sizes.
pub fn download(
    url: &Url,
    dest: &Path,
    limits: &Limits,
    t: &Transport,
    mut verifier: Option<&mut minisign_verify::StreamVerifier<'_>>,
) -> Result<Downloaded, InstallError> {
    let (reader, announced) = open(url, t)?;
    let fail = |reason: String| InstallError::Fetch { url: redact::url(url), reason };
    let cap = limits.expect.unwrap_or(limits.max);
    let mut reader = reader.take(cap + 1);
    let mut out = File::create(dest).map_err(|e| InstallError::io(dest, e))?;
    let total = limits.expect.or(announced);
    let bar = progress_bar(total, url, limits.progress);
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
    if let Some(want) = limits.expect {
        if size != want {
            let how = if size < want { "ended early" } else { "is larger" };
            return Err(fail(format!("download {how}: got {size} bytes, the index says {want}")));
        }
    } else if size > limits.max {
        return Err(fail(format!("larger than {} bytes; refusing it", limits.max)));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn transport_policy() {
        let remote = Transport::new(&u("https://idx.invalid/index.json"), false);
        assert!(remote.check(&u("https://cdn.invalid/a.tar.gz")).is_ok());
        assert!(remote.check(&u("http://cdn.invalid/a.tar.gz")).unwrap_err().contains("--allow-http"));
        assert!(remote.check(&u("http://127.0.0.1:8080/a.tar.gz")).is_ok());
        assert!(remote.check(&u("file:///etc/passwd")).unwrap_err().contains("may not point at a local file"));
        assert!(Transport::new(&u("https://idx.invalid/"), true).check(&u("http://cdn.invalid/a")).is_ok());
        assert!(remote.check_redirect(&u("https://idx.invalid/a"), &u("http://127.0.0.1/a")).unwrap_err().contains("from https to http"));
        let local = Transport::new(&u("file:///srv/index.json"), false);
        assert!(local.check(&u("file:///srv/a.tar.gz")).is_ok());
    }

    #[test]
    fn credentials_stay_with_their_origin() {
        let t = Transport::new(&u("https://bob:pw@idx.invalid/index.json"), false);
        assert!(t.credentials(&u("https://idx.invalid/a.tar.gz")).is_some());
        assert!(t.credentials(&u("https://idx.invalid:8443/a.tar.gz")).is_none());
        assert!(t.credentials(&u("https://other.invalid/a.tar.gz")).is_none());
        let plain = Transport::new(&u("http://bob:pw@idx.invalid/index.json"), true);
        assert!(plain.credentials(&u("http://idx.invalid/a.tar.gz")).is_none(), "never the home's credentials over plain http");
    }
}
