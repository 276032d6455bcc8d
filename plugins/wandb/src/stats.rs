//! System metrics as the wandb client samples them: every `stats_every_s` seconds a background thread reads the
//! process's CPU share, RSS and threads and the machine's memory from /proc, under wandb's keys (`cpu`,
//! `proc.memory.rssMB`, `proc.memory.percent`, `proc.cpu.threads`, `memory_percent`, `proc.memory.availableMB`;
//! W&B shows them as `system.…`). The samples wait in a channel until the plugin's next event writes them as
//! Stats records (and, online, `wandb-events.jsonl` lines); each keeps the time it was taken.
//!
//! `cpu` is the process's CPU time over the last interval as a percentage of the machine's cores (wandb's
//! normalisation), not the average since the start that psutil-style counters give.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

/// One sample: when, and `(key, value)` pairs.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub at: SystemTime,
    pub items: Vec<(String, f64)>,
}

/// The sampling thread; dropping it (or `stop`) ends it within one poll.
pub struct Sampler {
    stop: Option<Sender<()>>,
    samples: Receiver<Sample>,
    handle: Option<JoinHandle<()>>,
}

/// Samples kept waiting at most: a plugin that hears no event for hours drops the oldest beyond this.
const MAX_PENDING: usize = 10_000;

impl Sampler {
    pub fn start(every: Duration) -> Sampler {
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let (tx, rx) = mpsc::sync_channel::<Sample>(MAX_PENDING);
        let handle = std::thread::Builder::new()
            .name("bz-wandb-stats".into())
            .spawn(move || {
                let mut cpu = CpuClock::now();
                loop {
                    match stop_rx.recv_timeout(every) {
                        Err(RecvTimeoutError::Timeout) => {}
                        _ => return,
                    }
                    // A full queue drops this sample rather than block or grow.
                    let _ = tx.try_send(sample(&mut cpu));
                }
            })
            .ok();
        Sampler { stop: Some(stop_tx), samples: rx, handle }
    }

    /// The samples taken since the last call.
    pub fn drain(&self) -> Vec<Sample> {
        self.samples.try_iter().take(MAX_PENDING).collect()
    }

    /// Stops the thread (it is waiting on the stop channel, so this returns at once) and returns what is left.
    pub fn stop(&mut self) -> Vec<Sample> {
        self.stop = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.drain()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The process's CPU seconds at a moment.
struct CpuClock {
    at: Instant,
    cpu_s: Option<f64>,
}

impl CpuClock {
    fn now() -> CpuClock {
        CpuClock { at: Instant::now(), cpu_s: process_cpu_seconds() }
    }
}

fn sample(last: &mut CpuClock) -> Sample {
    let now = CpuClock::now();
    let mut items = Vec::new();
    let cores = std::thread::available_parallelism().map(|n| n.get() as f64).unwrap_or(1.0);
    if let (Some(a), Some(b)) = (last.cpu_s, now.cpu_s) {
        let wall = now.at.duration_since(last.at).as_secs_f64();
        if wall > 0.0 {
            items.push(("cpu".to_string(), 100.0 * (b - a).max(0.0) / wall / cores));
        }
    }
    *last = now;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let rss_kb = field_kb(&status, "VmRSS:");
    let total_kb = field_kb(&meminfo, "MemTotal:");
    let available_kb = field_kb(&meminfo, "MemAvailable:");
    if let Some(rss) = rss_kb {
        items.push(("proc.memory.rssMB".to_string(), rss / 1024.0));
        if let Some(total) = total_kb.filter(|t| *t > 0.0) {
            items.push(("proc.memory.percent".to_string(), 100.0 * rss / total));
        }
    }
    if let Some(threads) = field_kb(&status, "Threads:") {
        items.push(("proc.cpu.threads".to_string(), threads));
    }
    if let (Some(total), Some(available)) = (total_kb.filter(|t| *t > 0.0), available_kb) {
        items.push(("memory_percent".to_string(), 100.0 * (total - available) / total));
        items.push(("proc.memory.availableMB".to_string(), available / 1024.0));
    }
    Sample { at: SystemTime::now(), items }
}

/// The number after `name` on its line of a /proc file (kB for memory lines).
fn field_kb(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name)).and_then(|rest| rest.split_whitespace().next()).and_then(|v| v.parse().ok())
}

/// utime + stime of this process, from /proc/self/stat (fields 14 and 15, after the parenthesised name), in
/// seconds at the kernel's USER_HZ of 100.
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // after_name starts at field 3 (state): utime is field 14, stime field 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_has_wandbs_keys_with_plausible_values() {
        let mut clock = CpuClock::now();
        // Burn some CPU so the share is above zero.
        let t = Instant::now();
        let mut x = 0u64;
        while t.elapsed() < Duration::from_millis(50) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        assert_ne!(x, 1);
        let s = sample(&mut clock);
        let get = |k: &str| s.items.iter().find(|(key, _)| key == k).map(|(_, v)| *v).unwrap_or_else(|| panic!("{k} missing in {:?}", s.items));
        assert!(get("cpu") > 0.0 && get("cpu") <= 100.0 + 1e-9, "{}", get("cpu"));
        assert!(get("proc.memory.rssMB") > 1.0, "{}", get("proc.memory.rssMB"));
        assert!(get("proc.cpu.threads") >= 1.0);
        assert!((0.0..=100.0).contains(&get("memory_percent")));
        assert!(get("proc.memory.availableMB") > 0.0);
    }

    #[test]
    fn the_thread_samples_on_its_interval_and_stops_at_once() {
        let mut s = Sampler::start(Duration::from_millis(20));
        std::thread::sleep(Duration::from_millis(150));
        let t = Instant::now();
        let got = s.stop();
        assert!(t.elapsed() < Duration::from_millis(100), "stop took {:?}", t.elapsed());
        assert!((2..=8).contains(&got.len()), "{} samples in 150 ms at 20 ms", got.len());
        assert!(got.windows(2).all(|w| w[0].at <= w[1].at));
    }
}
