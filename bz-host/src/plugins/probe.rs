//! Loading a plugin library in a child `bz` process: a library's initialisers run at load time, it can abort or
//! crash the process, and it can never be unloaded, so `list`, `info` and the installer look at libraries from a
//! child and read one JSON line back.

use super::loader::Metadata;
use serde_json::Value;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What the child printed for a library that loaded.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Probed {
    pub metadata: Metadata,
    pub default_config: Value,
    pub config_schema: Value,
    /// The target triple of the `bz` that loaded it (the library's own, since it loaded).
    pub target: String,
}

const LIMIT: Duration = Duration::from_secs(20);

/// Probes the library at `path` in a child `bz plugins probe` with every symbol bound at load
/// (`LD_BIND_NOW=1`, so a missing symbol fails now rather than mid-training), bounded in time.
/// The error is one line: the child's own error, or how it died.
pub fn probe_child(path: &Path) -> Result<Probed, String> {
    // /proc/self/exe runs this very binary even when its file was replaced since it started (an upgrade of bz
    // itself, a rebuild); current_exe() would name the new file, or one that no longer exists.
    let exe = match std::path::PathBuf::from("/proc/self/exe") {
        p if p.exists() => p,
        _ => std::env::current_exe().map_err(|e| format!("cannot find the bz executable: {e}"))?,
    };
    let mut child = Command::new(exe)
        .args(["plugins", "probe"])
        .arg(path)
        .env("LD_BIND_NOW", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start the probe: {e}"))?;
    // Readers on threads, so a chatty library cannot block the child on a full pipe.
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let t_out = std::thread::spawn(move || read_all(out.as_mut()));
    let t_err = std::thread::spawn(move || read_all(err.as_mut()));
    let start = Instant::now();
    let status = loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(s) => break s,
            None if start.elapsed() > LIMIT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("the probe did not finish in {} s", LIMIT.as_secs()));
            }
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    let out = t_out.join().unwrap_or_default();
    let err = t_err.join().unwrap_or_default();
    if status.success() {
        serde_json::from_str(out.trim()).map_err(|e| format!("unreadable probe output: {e}"))
    } else if let Some(line) = err.lines().find(|l| l.starts_with("error: ")) {
        Err(line.trim_start_matches("error: ").to_string())
    } else {
        Err(format!("the probe crashed ({status}); the library may abort or segfault when loaded"))
    }
}

fn read_all(r: Option<&mut impl Read>) -> String {
    let mut s = String::new();
    if let Some(r) = r {
        let _ = r.read_to_string(&mut s);
    }
    s
}
