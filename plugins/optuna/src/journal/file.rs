//! The journal file as Optuna's `JournalFileBackend` keeps it: one JSON object per line, appended (and fsynced)
//! under `JournalFileSymlinkLock`, read incrementally from a byte offset. The lock is the same file, `<path>.lock`,
//! a symbolic link created atomically (works on NFS), forcibly released when the journal has not changed for the
//! grace period, and released by renaming it to a unique name first, so Python workers and bz workers exclude
//! each other.
//!
//! Python's `json` writes non-finite floats as the bare tokens `NaN`, `Infinity` and `-Infinity`, which
//! serde_json neither writes nor reads: [`num`] writes them, and the reader turns them into sentinel strings that
//! [`float`] reads back.

use serde_json::Value;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// The longest line read: Optuna's lines are small (a template trial with every param is a few KB).
pub const MAX_LINE: u64 = 16 << 20;
/// The largest journal read (a bound on memory for an untrusted file; about a million trials).
pub const MAX_FILE: u64 = 1 << 30;
/// `JournalFileSymlinkLock`'s default grace period: a lock whose journal has not changed for this long is stale.
const GRACE: Duration = Duration::from_secs(30);
/// How long a worker waits for the lock before giving up with an error (Optuna waits for ever).
const LOCK_WAIT: Duration = Duration::from_secs(600);

const NAN: &str = "\u{0}NaN";
const INF: &str = "\u{0}Infinity";
const NEG_INF: &str = "\u{0}-Infinity";

/// A float as Python's `json.dumps` writes it (bare `NaN` / `Infinity` / `-Infinity` for non-finite values).
pub fn num(x: f64) -> String {
    if x.is_nan() {
        "NaN".into()
    } else if x == f64::INFINITY {
        "Infinity".into()
    } else if x == f64::NEG_INFINITY {
        "-Infinity".into()
    } else {
        serde_json::Value::from(x).to_string()
    }
}

/// A float field as the reader left it: a number, or a non-finite token's sentinel.
pub fn float(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) if s == NAN => Some(f64::NAN),
        Value::String(s) if s == INF => Some(f64::INFINITY),
        Value::String(s) if s == NEG_INF => Some(f64::NEG_INFINITY),
        _ => None,
    }
}

/// One line of JSON, accepting Python's non-finite tokens outside strings.
pub fn parse_line(line: &[u8]) -> Result<Value, String> {
    match serde_json::from_slice(line) {
        Ok(v) => Ok(v),
        Err(e) if contains(line, b"NaN") || contains(line, b"Infinity") => serde_json::from_slice(&sentinels(line)).map_err(|_| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The line with each bare `NaN`, `Infinity`, `-Infinity` (outside strings) replaced by its sentinel string.
fn sentinels(line: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(line.len() + 32);
    let (mut in_str, mut escaped, mut i) = (false, false, 0);
    while i < line.len() {
        let b = line[i];
        if in_str {
            out.push(b);
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        let token = [("-Infinity", "\"\\u0000-Infinity\""), ("Infinity", "\"\\u0000Infinity\""), ("NaN", "\"\\u0000NaN\"")]
            .into_iter()
            .find(|(t, _)| line[i..].starts_with(t.as_bytes()));
        if let Some((t, s)) = token {
            out.extend_from_slice(s.as_bytes());
            i += t.len();
            continue;
        }
        in_str = b == b'"';
        out.push(b);
        i += 1;
    }
    out
}

/// A line read: its 1-based number in the file and its JSON.
#[derive(Debug)]
pub struct Line {
    pub number: u64,
    pub value: Value,
}

/// The journal file, with how far this worker has read it.
pub struct JournalFile {
    path: PathBuf,
    lock: PathBuf,
    /// Bytes of complete lines read so far (a torn last line is read again next time).
    offset: u64,
    lines: u64,
}

impl JournalFile {
    /// Opens (creating) the journal at `path`.
    pub fn open(path: &Path) -> Result<JournalFile, String> {
        OpenOptions::new().create(true).append(true).open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut lock = path.as_os_str().to_owned();
        lock.push(".lock");
        Ok(JournalFile { path: path.to_path_buf(), lock: PathBuf::from(lock), offset: 0, lines: 0 })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The complete lines appended since the last call, in order. A final line without its newline (a write
    /// under way) is left for the next call, as Optuna does; any other unreadable line is an error naming it.
    pub fn read_new(&mut self) -> Result<Vec<Line>, String> {
        let at = |n: u64, why: String| format!("{}:{n}: {why}", self.path.display());
        let f = File::open(&self.path).map_err(|e| format!("{}: {e}", self.path.display()))?;
        let size = f.metadata().map_err(|e| format!("{}: {e}", self.path.display()))?.len();
        if size > MAX_FILE {
            return Err(format!("{}: the journal is {size} bytes, over bz's limit of {MAX_FILE}: start a new study file", self.path.display()));
        }
        if size < self.offset {
            return Err(format!("{}: the journal shrank from {} to {size} bytes while in use: it was replaced or truncated", self.path.display(), self.offset));
        }
        let mut r = BufReader::new(f);
        r.seek(SeekFrom::Start(self.offset)).map_err(|e| format!("{}: {e}", self.path.display()))?;
        // Only what was there when we looked: a writer may be appending meanwhile.
        let mut r = r.take(size - self.offset);
        let mut out = Vec::new();
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let n = (&mut r).take(MAX_LINE + 1).read_until(b'\n', &mut buf).map_err(|e| format!("{}: {e}", self.path.display()))?;
            if n == 0 {
                break;
            }
            let number = self.lines + 1;
            if buf.last() != Some(&b'\n') {
                if n as u64 > MAX_LINE {
                    return Err(at(number, format!("a line longer than {MAX_LINE} bytes")));
                }
                break;
            }
            let value = parse_line(&buf).map_err(|e| at(number, format!("not a journal operation ({e})")))?;
            out.push(Line { number, value });
            self.offset += n as u64;
            self.lines = number;
        }
        Ok(out)
    }

    /// Appends `lines` (each one JSON object, no newline) in one write, flushed to disk; the caller holds the lock
    /// (see [`JournalFile::lock`]).
    pub fn append(&self, _lock: &Lock, lines: &[String]) -> Result<(), String> {
        let mut text = lines.join("\n");
        text.push('\n');
        let mut f = OpenOptions::new().append(true).open(&self.path).map_err(|e| format!("{}: {e}", self.path.display()))?;
        f.write_all(text.as_bytes()).and_then(|()| f.sync_all()).map_err(|e| format!("{}: {e}", self.path.display()))
    }

    /// Takes the journal's lock until the guard is dropped, so that what the holder reads is still true when it
    /// appends.
    pub fn lock(&self) -> Result<Lock, String> {
        self.acquire()?;
        Ok(Lock { path: self.lock.clone() })
    }

    /// `JournalFileSymlinkLock.acquire`: create the link; while it exists, back off (1 ms doubling to 1 s), and
    /// break it when the journal it points to has not changed for the grace period.
    fn acquire(&self) -> Result<(), String> {
        // An absolute target: Python stats the link (following it) to see whether the holder is alive.
        let target = std::fs::canonicalize(&self.path).unwrap_or_else(|_| self.path.clone());
        let started = Instant::now();
        let mut sleep = Duration::from_millis(1);
        let (mut seen, mut changed) = (None::<SystemTime>, Instant::now());
        loop {
            match std::os::unix::fs::symlink(&target, &self.lock) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(format!("{}: cannot take the journal's lock: {e}", self.lock.display())),
            }
            if started.elapsed() > LOCK_WAIT {
                return Err(format!(
                    "{}: the journal's lock stayed taken for {} s: is a worker stuck? (delete the lock file if none runs)",
                    self.lock.display(),
                    LOCK_WAIT.as_secs()
                ));
            }
            // Python's workers link a relative target, which can dangle: then the link's own time stands in.
            let mtime = std::fs::metadata(&self.lock).or_else(|_| std::fs::symlink_metadata(&self.lock)).and_then(|m| m.modified());
            if let Ok(m) = mtime {
                if seen != Some(m) {
                    (seen, changed) = (Some(m), Instant::now());
                }
                if changed.elapsed() > GRACE && release(&self.lock).is_ok() {
                    sleep = Duration::from_millis(1);
                }
            }
            std::thread::sleep(sleep);
            sleep = (sleep * 2).min(Duration::from_secs(1));
        }
    }
}

/// The journal's lock, held until dropped.
pub struct Lock {
    path: PathBuf,
}

impl Drop for Lock {
    fn drop(&mut self) {
        // Optuna raises when its lock was taken from it (held past the grace period); what was appended is in the
        // journal either way, so the operation's own result stands.
        let _ = release(&self.path);
    }
}

/// `JournalFileSymlinkLock.release`: rename to a unique name (only one of several releasers can), then delete.
fn release(lock: &Path) -> std::io::Result<()> {
    let mut unique = lock.as_os_str().to_owned();
    unique.push(format!("{}.rename", uuid4()));
    std::fs::rename(lock, &unique)?;
    std::fs::remove_file(&unique)
}

/// A random UUID (version 4), as Python's `uuid.uuid4()` prints it.
pub fn uuid4() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_non_finite_tokens_read_back_outside_strings_only() {
        let v = parse_line(br#"{"a":NaN,"b":[Infinity,-Infinity,1.5],"s":"NaN Infinity \" NaN"}"#).unwrap();
        assert!(float(&v["a"]).unwrap().is_nan());
        assert_eq!(float(&v["b"][0]), Some(f64::INFINITY));
        assert_eq!(float(&v["b"][1]), Some(f64::NEG_INFINITY));
        assert_eq!(float(&v["b"][2]), Some(1.5));
        assert_eq!(v["s"], "NaN Infinity \" NaN");
        assert_eq!(float(&v["s"]), None);
        assert_eq!(num(f64::NAN), "NaN");
        assert_eq!(num(-f64::INFINITY), "-Infinity");
        assert_eq!(num(0.25), "0.25");
        assert!(parse_line(b"{\"a\":NaNa}").is_err());
    }

    #[test]
    fn a_torn_last_line_waits_and_a_bad_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.log");
        let mut j = JournalFile::open(&path).unwrap();
        std::fs::write(&path, "{\"op_code\":1}\n{\"op_co").unwrap();
        let lines = j.read_new().unwrap();
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].number, 1);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"de\":2}\nnot json\n").unwrap();
        let err = j.read_new().unwrap_err();
        assert!(err.ends_with("j.log:3: not a journal operation (expected ident at line 1 column 2)"), "{err}");
        // The good line before the bad one was taken.
        assert_eq!(j.lines, 2);
    }

    #[test]
    fn the_lock_is_a_symlink_beside_the_journal_and_is_gone_after_use() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.log");
        let j = JournalFile::open(&path).unwrap();
        let lock = j.lock().unwrap();
        let link = std::fs::read_link(dir.path().join("j.log.lock")).unwrap();
        assert_eq!(link, std::fs::canonicalize(&path).unwrap());
        j.append(&lock, &["{}".into()]).unwrap();
        drop(lock);
        assert!(!dir.path().join("j.log.lock").exists());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{}\n");
    }
}
