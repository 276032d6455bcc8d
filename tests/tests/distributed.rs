//! Data-parallel training on c10d Gloo, 2 ranks on 127.0.0.1: `bz train --nproc 2` and torchrun (from the test
//! venv's torch) run the same job bit for bit; 2 ranks × batch 32 train the weights of 1 process × batch 64 (SGD
//! and Adam); a rank killed mid-run fails the job within a bounded time, and `--resume` then ends on the weights of
//! the uninterrupted run, bit for bit; Ctrl-C on one rank stops both at the same step.

use bz_e2e::*;
use std::path::Path;
use std::time::{Duration, Instant};

/// A digits MLP. No dropout: dropout masks differ across ranks by design. With `batchnorm`, a batch-norm layer,
/// which normalises each rank's own batch (as DDP without SyncBatchNorm), so it is left out where 2 × 32 must equal
/// 1 × 64.
fn config(optimizer: &str, batch: u32, epochs: u32, batchnorm: bool) -> String {
    let bn = if batchnorm { "{ type = \"batchnorm\" }, " } else { "" };
    format!(
        "[run]\nthreads = 1\n[data]\nsource = \"digits\"\nnormalize = true\n\
         [model]\nlayers = [{{ type = \"flatten\" }}, {{ type = \"linear\", out = 32 }}, {bn}{{ type = \"relu\" }}, {{ type = \"linear\", out = 10 }}]\n\
         [train]\nepochs = {epochs}\nbatch_size = {batch}\n[optimizer]\nname = \"{optimizer}\"\nlr = 0.01\n"
    )
}

/// Every tensor of a checkpoint's weights, as f32 values.
fn weights(dir: &Path, run: &str) -> Vec<(String, Vec<f32>)> {
    tensors(&dir.join(format!("runs/{run}/checkpoints/last/model.safetensors")))
        .into_iter()
        .map(|(name, (_, _, bytes))| (name, bytes.chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()))
        .collect()
}

fn max_diff(a: &[(String, Vec<f32>)], b: &[(String, Vec<f32>)]) -> f32 {
    a.iter()
        .zip(b)
        .flat_map(|((na, va), (nb, vb))| {
            assert_eq!(na, nb);
            va.iter().zip(vb).map(|(x, y)| (x - y).abs())
        })
        .fold(0.0, f32::max)
}

/// `bz train` with the ranks' scratch directories in `dir/tmp`.
fn train(dir: &Path, cfg: &str, run: &str, extra: &[&str]) -> Output {
    let mut args = vec!["train", cfg, "--run-name", run, "-q"];
    args.extend_from_slice(extra);
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    bz_env(dir, &args, &[("TMPDIR", &tmp)], Duration::from_secs(300))
}

#[test]
fn two_ranks_equal_one_process_with_the_global_batch_and_repeat_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for opt in ["sgd", "adam"] {
        // 1,438 training samples: 23 steps an epoch, 299 steps in all.
        write_config(d, "two.toml", &config(opt, 32, 13, false));
        write_config(d, "one.toml", &config(opt, 64, 13, false));
        for (cfg, run, extra) in [("one.toml", "one", &[][..]), ("two.toml", "two", &["--nproc", "2"][..]), ("two.toml", "again", &["--nproc", "2"][..])] {
            let out = train(d, cfg, &format!("{opt}-{run}"), extra);
            assert_eq!(out.code, 0, "{opt} {run}: {}", out.all());
        }
        let (one, two, again) = (weights(d, &format!("{opt}-one")), weights(d, &format!("{opt}-two")), weights(d, &format!("{opt}-again")));
        assert_eq!(two, again, "{opt}: two runs of the same 2-rank job differ");
        let diff = max_diff(&one, &two);
        assert!(diff <= 1e-5, "{opt}: 2 ranks × 32 differ from 1 × 64 by {diff} after 299 steps");
        // Only rank 0 wrote the run directory; the job's metrics count every rank's samples.
        let lines = epoch_lines(&d.join(format!("runs/{opt}-two")));
        assert_eq!(lines.len(), 13);
    }
    let leftovers: Vec<_> = std::fs::read_dir(d.join("tmp")).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(leftovers.is_empty(), "ranks left scratch directories: {leftovers:?}");
}

#[test]
fn torchrun_runs_bz_as_it_runs_pytorch() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_config(d, "c.toml", &config("sgd", 32, 3, true));
    assert_eq!(train(d, "c.toml", "nproc", &["--nproc", "2"]).code, 0);
    let child = std::process::Command::new(python())
        .args(["-m", "torch.distributed.run", "--nproc-per-node", "2", "--no-python"])
        .arg(bz_path())
        .args(["train", "c.toml", "--run-name", "torchrun", "-q"])
        .current_dir(d)
        .env("OMP_NUM_THREADS", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_limited(child, Duration::from_secs(300));
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(weights(d, "torchrun"), weights(d, "nproc"), "torchrun and --nproc ran different jobs");
}

/// The launcher's child that is rank `rank` (from /proc: the parent pid and the RANK variable).
fn rank_pid(launcher: u32, rank: u32) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let ppid: u32 = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()?;
        let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
        let is_rank = env.split(|b| *b == 0).any(|v| v == format!("RANK={rank}").as_bytes());
        (ppid == launcher && is_rank).then_some(pid)
    })
}

/// Starts a long 2-rank run and waits until its first epoch line is written.
fn start_long_run(d: &Path, run: &str) -> std::process::Child {
    let child = bz_command(d, &["train", "long.toml", "--run-name", run, "--nproc", "2", "-q"], &[]).spawn().unwrap();
    let metrics = d.join(format!("runs/{run}/metrics.jsonl"));
    let start = Instant::now();
    while !std::fs::read_to_string(&metrics).is_ok_and(|t| t.contains("\"event\":\"epoch\"")) {
        assert!(start.elapsed() < Duration::from_secs(120), "no epoch finished in time");
        std::thread::sleep(Duration::from_millis(10));
    }
    child
}

#[test]
fn a_killed_rank_fails_the_job_and_resume_ends_where_the_straight_run_does() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_config(d, "long.toml", &config("adam", 16, 40, true));
    assert_eq!(train(d, "long.toml", "straight", &["--nproc", "2"]).code, 0);

    let child = start_long_run(d, "cut");
    let victim = rank_pid(child.id(), 1).expect("rank 1 of the launcher");
    let killed = Instant::now();
    assert!(std::process::Command::new("kill").args(["-KILL", &victim.to_string()]).status().unwrap().success());
    let out = wait_limited(child, Duration::from_secs(120));
    assert_ne!(out.code, 0, "{}", out.all());
    assert!(killed.elapsed() < Duration::from_secs(60), "the job took {:?} to fail", killed.elapsed());

    let out = train(d, "long.toml", "cut", &["--nproc", "2", "--resume"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(weights(d, "cut"), weights(d, "straight"), "resumed 2-rank run differs from the straight one");
}

#[test]
fn ctrl_c_on_one_rank_stops_both_at_the_same_step() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_config(d, "long.toml", &config("sgd", 16, 40, false));
    let child = start_long_run(d, "c");
    let rank1 = rank_pid(child.id(), 1).expect("rank 1 of the launcher");
    assert!(std::process::Command::new("kill").args(["-INT", &rank1.to_string()]).status().unwrap().success());
    let out = wait_limited(child, Duration::from_secs(120));
    assert_eq!(out.code, 130, "{}", out.all());
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join("runs/c/checkpoints/last/trainer.json")).unwrap()).unwrap();
    assert!(state["epoch"].as_u64().unwrap() < 40, "{state}");
    let out = train(d, "long.toml", "c", &["--nproc", "2", "--resume"]);
    assert_eq!(out.code, 0, "{}", out.all());
}

#[test]
fn a_non_finite_loss_stops_every_rank_with_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The loss diverges at epoch 3 on every rank; ranks learn it with the step's gradients and all stop there.
    write_config(d, "c.toml", &format!("[run]\nthreads = 1\n{DIVERGING}"));
    let out = train(d, "c.toml", "nan", &["--nproc", "2"]);
    assert_eq!(out.code, 3, "{}", out.all());
    assert!(out.stderr.contains("the training loss became") && out.stderr.contains("epoch 3"), "{}", out.stderr);
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join("runs/nan/checkpoints/last/trainer.json")).unwrap()).unwrap();
    assert_eq!(state["epoch"], 2, "{state}");
}
