//! c10d through bz's shim, with real processes: two ranks on 127.0.0.1 all-reduce and broadcast known tensors and
//! must get exact results; a rank that never arrives or leaves early makes the other fail within the timeout.
//!
//! Each rank is this test binary run again with `--exact rank_main` and BZ_DIST_PROBE naming what it does, so the
//! same ranks run under torchrun too. A build without the shim fails these tests (run scripts/setup --dist).
use bz_host::dist::{self, ProcessGroup, Rendezvous};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use tch::{Kind, Tensor};

const PROBE: &str = "BZ_DIST_PROBE";
const PROBE_TIMEOUT_MS: &str = "BZ_DIST_PROBE_TIMEOUT_MS";

/// What a rank does, named by BZ_DIST_PROBE.
fn run_rank(mode: &str) -> Result<(), String> {
    let rendezvous = Rendezvous::from_env().map_err(|e| e.to_string())?;
    let timeout_ms: u64 = std::env::var(PROBE_TIMEOUT_MS).ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let mut group = ProcessGroup::connect(rendezvous, Duration::from_millis(timeout_ms)).map_err(|e| e.to_string())?;
    match mode {
        "collectives" => collectives(&mut group),
        // Joins, then goes away without a word: the other ranks' next collective must fail, not hang.
        "leave" => std::process::exit(0),
        // Joins, then stays away from the collectives without dying: the others must time out, not wait forever.
        "stall" => {
            std::thread::sleep(Duration::from_secs(120));
            Ok(())
        }
        other => Err(format!("unknown {PROBE} mode {other}")),
    }
}

fn collectives(group: &mut ProcessGroup) -> Result<(), String> {
    let (r, n) = (group.rank() as i64, group.world_size() as i64);
    let mut tensors = vec![
        Tensor::from_slice(&[1.5 * (r + 1) as f32, -(r as f32), 0.25]),
        (Tensor::arange(6, (Kind::Int64, tch::Device::Cpu)) + 100 * r).view([2, 3]),
        Tensor::full([10_000], (r + 1) as f64, (Kind::Double, tch::Device::Cpu)),
    ];
    // A view with gaps (the first two columns of a 2×3 matrix): Gloo reads memory as one dense block, so unless the
    // shim stages it the sums come out wrong, and different on each rank.
    let matrix = Tensor::arange(6, (Kind::Double, tch::Device::Cpu)).view([2, 3]) + r;
    tensors.push(matrix.narrow(1, 0, 2));
    group.all_reduce_sum(&mut tensors).map_err(|e| e.to_string())?;
    let triangle = n * (n + 1) / 2;
    let pairs = n * (n - 1) / 2;
    expect("f32 sum", &tensors[0], &[1.5 * triangle as f64, -(pairs as f64), 0.25 * n as f64])?;
    let ints: Vec<f64> = (0..6).map(|i| (n * i + 100 * pairs) as f64).collect();
    expect("i64 sum", &tensors[1].view([6]), &ints)?;
    expect("f64 sum", &tensors[2], &vec![triangle as f64; 10_000])?;
    let summed = |i: i64| (n * i + pairs) as f64;
    // The hidden column keeps this rank's own values.
    let columns = [summed(0), summed(1), (2 + r) as f64, summed(3), summed(4), (5 + r) as f64];
    expect("strided view sum", &matrix.view([6]), &columns)?;

    // The last rank as root, so a broadcast that silently kept rank 0's values would show; every other element, so
    // the view is strided.
    let root = group.world_size() - 1;
    let whole = Tensor::arange(8, (Kind::Float, tch::Device::Cpu)) * (r + 1);
    let mut mine = whole.view([4, 2]).select(1, 0);
    group.broadcast(&mut mine, root).map_err(|e| e.to_string())?;
    let odd = |i: i64| (i * (r + 1)) as f64;
    let want = [0.0, odd(1), 2.0 * n as f64, odd(3), 4.0 * n as f64, odd(5), 6.0 * n as f64, odd(7)];
    expect("broadcast", &whole, &want)?;
    group.barrier().map_err(|e| e.to_string())?;
    println!("rank {r} ok");
    Ok(())
}

fn expect(what: &str, got: &Tensor, want: &[f64]) -> Result<(), String> {
    let got = Vec::<f64>::try_from(got.to_kind(Kind::Double)).map_err(|e| e.to_string())?;
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: got {:?}, want {:?}", &got[..got.len().min(8)], &want[..want.len().min(8)]))
    }
}

/// The entry point of a rank; as a plain test (no BZ_DIST_PROBE) it does nothing.
#[test]
fn rank_main() {
    let Ok(mode) = std::env::var(PROBE) else { return };
    if let Err(e) = run_rank(&mode) {
        eprintln!("rank error: {e}");
        std::process::exit(3);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn require_shim() {
    assert!(dist::available(), "bz was built without the c10d shim: run scripts/setup --dist, touch bz-host/build.rs");
}

/// This binary again, running only `rank_main`.
fn rank_command(program: &Path, mode: &str, timeout: Duration) -> Command {
    let mut cmd = Command::new(program);
    if program == std::env::current_exe().unwrap() {
        cmd.args(["--exact", "rank_main", "--nocapture", "--test-threads=1"]);
    }
    cmd.env(PROBE, mode).env(PROBE_TIMEOUT_MS, timeout.as_millis().to_string());
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

struct Rank<'a> {
    rank: u32,
    world_size: u32,
    port: u16,
    mode: &'a str,
}

fn spawn(rank: &Rank, timeout: Duration) -> Child {
    command(rank, timeout).spawn().unwrap()
}

/// A rank's command with torchrun's variables for a job of our own on 127.0.0.1.
fn command(rank: &Rank, timeout: Duration) -> Command {
    let mut cmd = rank_command(&std::env::current_exe().unwrap(), rank.mode, timeout);
    cmd.env("RANK", rank.rank.to_string())
        .env("LOCAL_RANK", rank.rank.to_string())
        .env("WORLD_SIZE", rank.world_size.to_string())
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", rank.port.to_string())
        .env_remove("TORCHELASTIC_USE_AGENT_STORE")
        .env_remove("GLOO_SOCKET_IFNAME");
    cmd
}

/// Waits for `child` until `deadline`, killing it past that: a hang fails the test instead of stalling the suite.
fn finish(mut child: Child, deadline: Instant, what: &str) -> (Output, Duration) {
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            child.kill().ok();
            let output = child.wait_with_output().unwrap();
            panic!("{what} still running at the deadline (a hang); stderr:\n{}", String::from_utf8_lossy(&output.stderr));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = child.wait().unwrap();
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut stdout).unwrap();
    child.stderr.take().unwrap().read_to_end(&mut stderr).unwrap();
    (Output { status, stdout, stderr }, start.elapsed())
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn two_ranks_all_reduce_and_broadcast_exactly() {
    require_shim();
    let port = free_port();
    let timeout = Duration::from_secs(20);
    let children: Vec<Child> = (0..2).map(|rank| spawn(&Rank { rank, world_size: 2, port, mode: "collectives" }, timeout)).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    for (rank, child) in children.into_iter().enumerate() {
        let (output, _) = finish(child, deadline, &format!("rank {rank}"));
        let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
        assert!(output.status.success(), "rank {rank} failed: {stderr}");
        assert!(stdout.contains(&format!("rank {rank} ok")), "rank {rank} did not finish: {stdout}\n{stderr}");
    }
}

/// The one error line a failed rank printed.
fn rank_error(output: &Output) -> String {
    let stderr = text(&output.stderr);
    stderr.lines().find(|l| l.starts_with("rank error: ")).unwrap_or_else(|| panic!("no error line in:\n{stderr}")).to_owned()
}

#[test]
fn a_rank_that_never_arrives_fails_the_others_within_the_timeout() {
    require_shim();
    let timeout = Duration::from_secs(3);
    // Rank 0 alone serves a store nobody joins; rank 1 alone joins a store nobody serves.
    for rank in [0, 1] {
        let child = spawn(&Rank { rank, world_size: 2, port: free_port(), mode: "collectives" }, timeout);
        let (output, took) = finish(child, Instant::now() + Duration::from_secs(30), &format!("lonely rank {rank}"));
        assert_eq!(output.status.code(), Some(3), "rank {rank}: {}", text(&output.stderr));
        let error = rank_error(&output);
        assert!(error.contains("joining the process group:"), "rank {rank}: {error}");
        assert!(error.len() < 2000 && !error.contains("Exception raised from"), "rank {rank}: not one line: {error}");
        assert!(took < timeout + Duration::from_secs(10), "rank {rank} took {took:?} to give up");
        eprintln!("lonely rank {rank} gave up after {took:?}: {error}");
    }
}

#[test]
fn a_socket_interface_that_does_not_exist_is_one_error_naming_it() {
    require_shim();
    let mut cmd = command(&Rank { rank: 0, world_size: 1, port: free_port(), mode: "collectives" }, Duration::from_secs(5));
    let child = cmd.env("GLOO_SOCKET_IFNAME", "nosuch0").spawn().unwrap();
    let (output, _) = finish(child, Instant::now() + Duration::from_secs(30), "rank");
    assert_eq!(output.status.code(), Some(3), "{}", text(&output.stderr));
    let error = rank_error(&output);
    assert!(error.starts_with("rank error: joining the process group: GLOO_SOCKET_IFNAME=nosuch0: no usable"), "{error}");
}

#[test]
fn a_rank_that_leaves_fails_the_others_collective() {
    require_shim();
    let port = free_port();
    let timeout = Duration::from_secs(5);
    let staying = spawn(&Rank { rank: 0, world_size: 2, port, mode: "collectives" }, timeout);
    let leaving = spawn(&Rank { rank: 1, world_size: 2, port, mode: "leave" }, timeout);
    let deadline = Instant::now() + Duration::from_secs(40);
    let (left, _) = finish(leaving, deadline, "leaving rank");
    assert!(left.status.success(), "the leaving rank could not join: {}", text(&left.stderr));
    let (output, took) = finish(staying, deadline, "staying rank");
    assert_eq!(output.status.code(), Some(3), "{}", text(&output.stderr));
    let error = rank_error(&output);
    assert!(error.contains("all-reduce:"), "{error}");
    eprintln!("staying rank gave up after {took:?}: {error}");
}

#[test]
fn a_rank_that_stalls_fails_the_others_collective_within_the_timeout() {
    require_shim();
    let port = free_port();
    let timeout = Duration::from_secs(4);
    let staying = spawn(&Rank { rank: 0, world_size: 2, port, mode: "collectives" }, timeout);
    let mut stalling = spawn(&Rank { rank: 1, world_size: 2, port, mode: "stall" }, timeout);
    let (output, took) = finish(staying, Instant::now() + Duration::from_secs(60), "waiting rank");
    stalling.kill().ok();
    stalling.wait().ok();
    assert_eq!(output.status.code(), Some(3), "{}", text(&output.stderr));
    let error = rank_error(&output);
    assert!(error.contains("all-reduce:"), "{error}");
    // Joining takes a moment, the collective then waits its timeout, and tearing the group down waits for Gloo's own.
    assert!(took < 3 * timeout + Duration::from_secs(5), "the waiting rank took {took:?} to give up");
    eprintln!("waiting rank gave up after {took:?}: {error}");
}

/// The test venv's Python; torch comes into it through a .pth, without its console scripts, so torchrun is run as
/// `python -m torch.distributed.run` (what the torchrun script does).
fn venv_python() -> PathBuf {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    assert!(python.exists(), "no {}: run scripts/setup --python first", python.display());
    python
}

#[test]
fn torchrun_drives_two_ranks() {
    require_shim();
    let exe = std::env::current_exe().unwrap();
    let port = free_port().to_string();
    let mut cmd = rank_command(&venv_python(), "collectives", Duration::from_secs(20));
    cmd.args(["-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", &port, "--no-python"])
        .arg(&exe)
        .args(["--exact", "rank_main", "--nocapture", "--test-threads=1"])
        .env("OMP_NUM_THREADS", "1");
    for var in ["RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"] {
        cmd.env_remove(var);
    }
    let (output, _) = finish(cmd.spawn().unwrap(), Instant::now() + Duration::from_secs(120), "torchrun");
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert!(output.status.success(), "torchrun failed:\n{stdout}\n{stderr}");
    for rank in 0..2 {
        assert!(stdout.contains(&format!("rank {rank} ok")), "rank {rank} did not finish:\n{stdout}\n{stderr}");
    }
}
