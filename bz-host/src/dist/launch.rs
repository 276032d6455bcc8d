//! `bz train --nproc N`: starts N local ranks of this same command with torchrun's environment (RANK, WORLD_SIZE,
//! LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR=127.0.0.1, a free MASTER_PORT), for users without Python. A front, not a
//! second engine: the ranks join c10d exactly as under torchrun. If one rank fails, the others are stopped.

use anyhow::{Context, Result};
use std::process::{Child, Command, ExitStatus};
use std::time::Duration;

/// How often the launcher looks at its ranks.
const POLL: Duration = Duration::from_millis(50);
/// How long ranks get to end on their own after one failed (their collectives fail within moments when a peer is
/// gone) before they are killed.
const GRACE: Duration = Duration::from_secs(30);

/// How the job ended: every rank's exit code, in rank order (the first failure decides the launcher's).
pub struct Ended {
    pub codes: Vec<i32>,
}

impl Ended {
    /// 0 when every rank succeeded; else the first failed rank's code (130 if one was interrupted).
    pub fn code(&self) -> i32 {
        if self.codes.contains(&130) {
            return 130;
        }
        self.codes.iter().copied().find(|&c| c != 0).unwrap_or(0)
    }
}

/// Runs `args` (this executable's arguments) as `n` ranks and waits for all of them.
pub fn run(n: u32, args: &[String]) -> Result<Ended> {
    let exe = std::env::current_exe().context("cannot find the bz executable to start the ranks")?;
    let port = free_port()?;
    let mut children: Vec<Child> = Vec::new();
    for rank in 0..n {
        let child = Command::new(&exe)
            .args(args)
            .env("RANK", rank.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("WORLD_SIZE", n.to_string())
            .env("LOCAL_WORLD_SIZE", n.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .spawn();
        match child {
            Ok(c) => children.push(c),
            Err(e) => {
                stop(&mut children);
                return Err(e).with_context(|| format!("cannot start rank {rank}"));
            }
        }
    }
    wait_all(children)
}

/// Waits for every rank; once one fails, the rest get [`GRACE`] to end, then are killed.
fn wait_all(mut children: Vec<Child>) -> Result<Ended> {
    let mut codes: Vec<Option<i32>> = vec![None; children.len()];
    let mut failed_at: Option<std::time::Instant> = None;
    while codes.iter().any(Option::is_none) {
        for (i, c) in children.iter_mut().enumerate() {
            if codes[i].is_none() {
                if let Some(status) = c.try_wait().context("cannot wait for a rank")? {
                    let code = exit_code(status);
                    codes[i] = Some(code);
                    if code != 0 && failed_at.is_none() {
                        failed_at = Some(std::time::Instant::now());
                    }
                }
            }
        }
        if failed_at.is_some_and(|t| t.elapsed() > GRACE) {
            stop(&mut children);
        }
        std::thread::sleep(POLL);
    }
    Ok(Ended { codes: codes.into_iter().map(|c| c.unwrap_or(1)).collect() })
}

fn stop(children: &mut [Child]) {
    for c in children.iter_mut() {
        let _ = c.kill();
    }
}

/// A killed rank counts as failed (128 + signal, as a shell reports it).
fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// A loopback port free now, for rank 0's store (another process could take it before rank 0 binds it; torchrun's
/// standalone mode takes the same small risk).
fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).context("cannot find a free loopback port for the ranks' store")?;
    Ok(listener.local_addr()?.port())
}
