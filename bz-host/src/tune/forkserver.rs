//! Trials forked from a warm `bz` instead of started by exec. Loading libtorch runs its static initialisers
//! (operator registration): about 0.25 s of CPU per process, as long as a whole digits trial trains. `bz tune`
//! starts one `bz __trial-server` that pays it once and stays single-threaded; each trial is a `fork` of it that
//! runs `bz train …` in the copy. A trial is still its own process (a crash fails that trial only, a prune is a
//! SIGINT to it), and the copy is taken before any thread or tensor exists, so nothing is shared that could be
//! held by another thread at the fork.
//!
//! Protocol, one JSON object per line: `bz tune` writes `{"args": […], "env": [[k, v], …], "log": path}` to the
//! server's stdin; the server answers `{"started": pid}` (or `{"error": why}`) and, when a trial ends,
//! `{"exited": pid, "status": wait status}`. The server leaves when its stdin closes, and dies with `bz tune`
//! (PR_SET_PDEATHSIG), after which each trial gets SIGINT as its own parent's death, as exec'd trials do.

use super::trial::{die_with_parent, signal_on_parent_death};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::ffi::CString;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The hidden subcommand that runs [`serve`].
pub const SUBCOMMAND: &str = "__trial-server";

#[derive(Serialize, Deserialize)]
struct Request {
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Reply {
    Ready { ready: i32 },
    Started { started: i32 },
    Failed { error: String },
    Exited { exited: i32, status: i32 },
}

/// The server's loop: fork a trial per request, report each start and exit. `run` is the `bz` command line
/// (without the program name) as the binary runs it, returning the exit code.
pub fn serve(run: fn(Vec<String>) -> u8) -> Result<()> {
    let threads = std::fs::read_dir("/proc/self/task").map(|d| d.count()).unwrap_or(0);
    if threads != 1 {
        bail!("the trial server must be single-threaded to fork; it has {threads} threads");
    }
    // SAFETY: still single-threaded; a terminal's Ctrl-C reaches the trials, whose exits the server must report.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
    }
    name_process("bz-trial-server");
    send(&Reply::Ready { ready: std::process::id() as i32 })?;
    let mut stdin = BufReader::new(std::io::stdin().lock());
    let mut line = String::new();
    loop {
        report_exits()?;
        // Wait for a request (or a trial's end) unless one is already read ahead.
        let mut poll = libc::pollfd { fd: 0, events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        if stdin.buffer().is_empty() && unsafe { libc::poll(&mut poll, 1, 20) } <= 0 {
            continue;
        }
        line.clear();
        if stdin.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let reply = match serde_json::from_str::<Request>(&line) {
            Ok(request) => fork_trial(&request, run),
            Err(e) => Reply::Failed { error: format!("bad request: {e}") },
        };
        send(&reply)?;
    }
}

fn send(reply: &Reply) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", serde_json::to_string(reply)?)?;
    Ok(out.flush()?)
}

/// Reaps every ended trial and reports it.
fn report_exits() -> Result<()> {
    loop {
        let mut status = 0;
        // SAFETY: reaping our own children.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return Ok(());
        }
        send(&Reply::Exited { exited: pid, status })?;
    }
}

fn fork_trial(request: &Request, run: fn(Vec<String>) -> u8) -> Reply {
    let log = match std::fs::File::create(&request.log) {
        Ok(f) => f,
        Err(e) => return Reply::Failed { error: format!("cannot create {}: {e}", request.log.display()) },
    };
    let server = std::process::id() as i32;
    // SAFETY: the server is single-threaded (checked in `serve`), so the child may run anything.
    match unsafe { libc::fork() } {
        -1 => Reply::Failed { error: format!("fork: {}", std::io::Error::last_os_error()) },
        0 => {
            become_trial(server, &log, &request.env);
            crate::exit_code::exit_now(run(request.args.clone()))
        }
        pid => Reply::Started { started: pid },
    }
}

/// In the forked child: dies with the server as an exec'd trial dies with `bz tune`, writes to its log, takes
/// its environment and the default SIGINT back.
fn become_trial(server: i32, log: &std::fs::File, env: &[(String, String)]) {
    use std::os::fd::AsRawFd;
    // SAFETY: plain syscalls on valid descriptors in a single-threaded process.
    signal_on_parent_death(server as u32, libc::SIGINT);
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_DFL);
        let null = CString::new("/dev/null").unwrap_or_default();
        let fd = libc::open(null.as_ptr(), libc::O_RDONLY);
        if fd >= 0 {
            libc::dup2(fd, 0);
            libc::close(fd);
        }
        libc::dup2(log.as_raw_fd(), 1);
        libc::dup2(log.as_raw_fd(), 2);
    }
    for (k, v) in env {
        if k == "BZ_TUNE_TRIAL" {
            name_process(&format!("bz-trial-{v}"));
        }
        // SAFETY: single-threaded (see `serve`).
        unsafe { std::env::set_var(k, v) };
    }
}

/// What `top` and `/proc/PID/comm` show (at most 15 bytes): a forked trial keeps the server's command line.
fn name_process(name: &str) {
    let name = CString::new(&name.as_bytes()[..name.len().min(15)]).unwrap_or_default();
    // SAFETY: a valid NUL-terminated string.
    unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
}

/// `bz tune`'s end of a trial server.
pub struct ForkServer {
    child: Child,
    requests: ChildStdin,
    started: Receiver<std::result::Result<i32, String>>,
    exits: Arc<Mutex<HashMap<i32, i32>>>,
}

impl ForkServer {
    /// Starts `exe __trial-server`; dies with this process.
    pub fn start(exe: &Path) -> Result<ForkServer> {
        let mut cmd = Command::new(exe);
        cmd.arg(SUBCOMMAND).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null());
        die_with_parent(&mut cmd, libc::SIGKILL);
        let mut child = cmd.spawn().context("cannot start the trial server")?;
        let requests = child.stdin.take().context("no stdin")?;
        let replies = BufReader::new(child.stdout.take().context("no stdout")?);
        let (tx, started) = channel();
        let exits = Arc::new(Mutex::new(HashMap::new()));
        let seen = exits.clone();
        std::thread::Builder::new().name("bz-trial-server".into()).spawn(move || {
            // Bounded by the server's life: the loop ends when its stdout closes.
            for line in replies.lines().map_while(std::result::Result::ok) {
                match serde_json::from_str::<Reply>(&line) {
                    Ok(Reply::Ready { ready }) => drop(tx.send(Ok(ready))),
                    Ok(Reply::Started { started }) => {
                        // A pid the system reused: the earlier trial's exit is not this one's.
                        drop(seen.lock().map(|mut m| m.remove(&started)));
                        drop(tx.send(Ok(started)))
                    }
                    Ok(Reply::Failed { error }) => drop(tx.send(Err(error))),
                    Ok(Reply::Exited { exited, status }) => drop(seen.lock().map(|mut m| m.insert(exited, status))),
                    Err(_) => {}
                }
            }
        })?;
        // Loading libtorch takes a moment; a server that cannot serve exits, which ends the reader at once.
        match started.recv_timeout(Duration::from_secs(60)) {
            Ok(Ok(_)) => Ok(ForkServer { child, requests, started, exits }),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("the trial server did not start")
            }
        }
    }

    /// Forks a trial running `bz ARGS…` with `env` added, its output going to `log`.
    pub fn spawn(&mut self, args: Vec<String>, env: Vec<(String, String)>, log: &Path) -> Result<Forked> {
        let request = serde_json::to_string(&Request { args, env, log: log.to_path_buf() })?;
        writeln!(self.requests, "{request}").context("the trial server is gone")?;
        self.requests.flush()?;
        let pid = match self.started.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(pid)) => pid,
            Ok(Err(why)) => bail!("the trial server could not start a trial: {why}"),
            Err(_) => bail!("the trial server is gone"),
        };
        Ok(Forked { pid, exits: self.exits.clone() })
    }
}

impl Drop for ForkServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A trial forked by the server; its exit status comes from the server, which reaps it.
pub struct Forked {
    pid: i32,
    exits: Arc<Mutex<HashMap<i32, i32>>>,
}

impl Forked {
    pub fn id(&self) -> u32 {
        self.pid as u32
    }

    /// The exit status, once the server has reported it.
    pub fn try_wait(&self) -> Option<ExitStatus> {
        self.exits.lock().ok()?.get(&self.pid).copied().map(ExitStatus::from_raw)
    }

    /// SIGKILL unless it has ended, then waits (at most 10 s) for the server to report the exit.
    pub fn kill(&self) {
        if self.try_wait().is_some() {
            return;
        }
        // SAFETY: the server has not reported this pid reaped, so it is still this trial's.
        unsafe { libc::kill(self.pid, libc::SIGKILL) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && self.try_wait().is_none() {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
