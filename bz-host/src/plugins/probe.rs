//! Loading a plugin library in a child `bz` process: a library's initialisers run at load time, it can abort or
//! crash the process, and it can never be unloaded, so `list`, `info`, `validate` and the installer look at
//! libraries from a child and read one JSON line back.
//!
//! The child runs in its own process group, killed as a whole when the child exits or at the time limit:
//! whatever the library started (a helper, a sleeper) would otherwise keep the pipes open, and the installer,
//! which holds the plugin directory's lock, would wait for it.

use super::loader::Metadata;
use serde_json::Value;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// What the child printed for a library that loaded.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Probed {
    pub metadata: Metadata,
    pub default_config: Value,
    pub config_schema: Value,
    /// The target triple of the `bz` that loaded it (the library's own, since it loaded).
    pub target: String,
    /// The plugin's verdict on the configuration it was given (`bz plugins probe --config-stdin`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked: Option<Checked>,
}

/// What a plugin's `validate_config` said.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Checked {
    /// The validated configuration, as the plugin's JSON text.
    Valid(String),
    /// The plugin's message.
    Rejected(String),
}

/// Why a probe gave no `Probed`; each one line.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The child's own `error:` line: a load error, word for word.
    #[error("{0}")]
    Reported(String),
    #[error("the probe did not finish in {0} s; the library hangs when loaded")]
    TimedOut(u64),
    #[error("the probe crashed ({0}); the library may abort or segfault when loaded")]
    Crashed(ExitStatus),
    #[error("cannot start the probe: {0}")]
    Spawn(std::io::Error),
    #[error("unreadable probe output: {0}")]
    Output(String),
}

const LIMIT: Duration = Duration::from_secs(20);
/// How long the output may take to arrive once the group is dead; only a process that left the group (setsid)
/// can hold the pipes past that, and the child's own output is in them already.
const DRAIN: Duration = Duration::from_secs(2);
/// Per stream; a library that prints more gets the rest discarded (the JSON line is the last one).
const MAX_OUTPUT: usize = 1 << 20;

/// Probes the library at `path` in a child `bz plugins probe` with every symbol bound at load
/// (`LD_BIND_NOW=1`, so a missing symbol fails now rather than mid-training), bounded in time.
/// The error is one line: the child's own error, or how it died.
pub fn probe_child(path: &Path) -> Result<Probed, String> {
    run(path, None, None).map_err(|e| e.to_string())
}

/// `probe_child` that loads the library as plugin `name` (the loader's name check included) and has the
/// plugin validate `config` (JSON) in the child; the verdict is in `Probed::checked`.
pub fn probe_config(path: &Path, name: &str, config: &str) -> Result<Probed, ProbeError> {
    run(path, Some(name), Some(config))
}

fn run(path: &Path, name: Option<&str>, config: Option<&str>) -> Result<Probed, ProbeError> {
    // /proc/self/exe runs this very binary even when its file was replaced since it started (an upgrade of bz
    // itself, a rebuild); current_exe() would name the new file, or one that no longer exists.
    let exe = match std::path::PathBuf::from("/proc/self/exe") {
        p if p.exists() => p,
        _ => std::env::current_exe().map_err(ProbeError::Spawn)?,
    };
    let mut cmd = Command::new(exe);
    cmd.args(["plugins", "probe"]).arg(path).env("LD_BIND_NOW", "1").stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
    if let Some(n) = name {
        cmd.arg("--name").arg(n);
    }
    // The config goes through stdin, not argv: other users can read a command line, and configs hold tokens.
    cmd.stdin(if config.is_some() { Stdio::piped() } else { Stdio::null() });
    if config.is_some() {
        cmd.arg("--config-stdin");
    }
    // SAFETY: prctl and getppid are async-signal-safe. A bz killed mid-probe takes the probe with it rather
    // than leaving a hung library running (its group is ours to kill only while we live).
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if libc::getppid() == 1 {
                return Err(std::io::Error::other("bz exited"));
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(ProbeError::Spawn)?;
    let rx = readers(&mut child);
    if let (Some(text), Some(mut stdin)) = (config.map(str::to_owned), child.stdin.take()) {
        // On a thread, not joined: a library that never reads stdin must not block us on a full pipe.
        std::thread::spawn(move || {
            let _ = stdin.write_all(text.as_bytes());
        });
    }
    let status = wait_then_kill_group(&mut child, LIMIT);
    let (out, err) = drain(&rx, Instant::now() + DRAIN);
    let Some(status) = status else { return Err(ProbeError::TimedOut(LIMIT.as_secs())) };
    if status.success() {
        let line = out.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
        serde_json::from_str(line.trim()).map_err(|e| ProbeError::Output(e.to_string()))
    } else if let Some(line) = err.lines().rev().find(|l| l.starts_with("error: ")) {
        // The last one: bz prints its error as it exits, after anything the library wrote.
        Err(ProbeError::Reported(line.trim_start_matches("error: ").to_string()))
    } else {
        Err(ProbeError::Crashed(status))
    }
}

/// Reader threads for stdout (0) and stderr (1), so a chatty library cannot block the child on a full pipe.
/// Each sends its chunks and then `None` at end of file.
fn readers(child: &mut Child) -> mpsc::Receiver<(usize, Option<Vec<u8>>)> {
    let (tx, rx) = mpsc::channel();
    let streams: [Option<Box<dyn Read + Send>>; 2] =
        [child.stdout.take().map(|r| Box::new(r) as Box<dyn Read + Send>), child.stderr.take().map(|r| Box::new(r) as Box<dyn Read + Send>)];
    for (i, mut stream) in streams.into_iter().enumerate() {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut sent = 0;
            let mut buf = [0u8; 8192];
            while let Some(r) = stream.as_mut() {
                let n = match r.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n.min(MAX_OUTPUT - sent),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                };
                sent += n;
                // Past the cap, reading on (and dropping) keeps the child from blocking on a full pipe.
                if n > 0 && tx.send((i, Some(buf[..n].to_vec()))).is_err() {
                    break;
                }
            }
            let _ = tx.send((i, None));
        });
    }
    rx
}

/// Waits for the child to exit, at most `limit`, then kills its whole process group. The group is killed while
/// the child is still a zombie (waitid with WNOWAIT), so its id cannot have been reused by then.
/// `None`: the limit was reached.
fn wait_then_kill_group(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let pid = child.id() as libc::pid_t;
    let start = Instant::now();
    let exited = loop {
        // SAFETY: a zeroed siginfo_t is valid; waitid only writes into it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, libc::WEXITED | libc::WNOHANG | libc::WNOWAIT) };
        // SAFETY: si_pid is set by waitid (0 while the child runs).
        if r != 0 || unsafe { info.si_pid() } != 0 {
            break true;
        }
        if start.elapsed() > limit {
            break false;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    // SAFETY: the group is the child's own (process_group(0)), and the child is not reaped yet.
    unsafe { libc::kill(-pid, libc::SIGKILL) };
    let status = child.wait().ok();
    if exited {
        status
    } else {
        None
    }
}

/// The two streams' output, until both end or `deadline`.
fn drain(rx: &mpsc::Receiver<(usize, Option<Vec<u8>>)>, deadline: Instant) -> (String, String) {
    let mut bufs = [Vec::new(), Vec::new()];
    let mut open = 2;
    while open > 0 {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok((i, Some(chunk))) => bufs[i].extend_from_slice(&chunk),
            Ok((_, None)) => open -= 1,
            Err(_) => break,
        }
    }
    let [out, err] = bufs;
    (String::from_utf8_lossy(&out).into_owned(), String::from_utf8_lossy(&err).into_owned())
}
