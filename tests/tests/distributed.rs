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

/// The `prefix/*` numbers of a metrics.jsonl line or of `bz eval --json` output.
fn metrics_with(line: &serde_json::Value, prefix: &str) -> std::collections::BTreeMap<String, f64> {
    line.as_object().unwrap().iter().filter(|(k, _)| k.starts_with(prefix)).filter_map(|(k, v)| Some((k.clone(), v.as_f64()?))).collect()
}

/// `bz eval --json` of one process on a run's checkpoint.
fn eval_json(d: &Path, cfg: &str, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["eval", cfg, "--json"];
    all.extend_from_slice(args);
    let out = bz(d, &all);
    assert_eq!(out.code, 0, "{}", out.all());
    serde_json::from_str(out.stdout.trim()).unwrap()
}

/// Counts and the metrics made of them equal exactly; `loss` (and regression's sums) within 1e-9 relative: the
/// same per-batch values, added in another order.
fn assert_same_metrics(sharded: &std::collections::BTreeMap<String, f64>, single: &std::collections::BTreeMap<String, f64>, what: &str) {
    assert_eq!(sharded.keys().collect::<Vec<_>>(), single.keys().collect::<Vec<_>>(), "{what}");
    for (k, a) in sharded {
        let b = single[k];
        if ["loss", "mse", "mae", "r2"].iter().any(|m| k.ends_with(m)) {
            assert!((a - b).abs() <= 1e-9 * b.abs().max(1.0), "{what} {k}: 2 ranks {a}, 1 process {b}");
        } else {
            assert_eq!(*a, b, "{what} {k}");
        }
    }
}

#[test]
fn sharded_validation_and_test_reduce_to_the_metrics_of_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Digits: 359 validation samples in 7 batches of 52, the last one short: rank 0 evaluates batches 0-2, rank 1
    // batches 3-6. Batch norm: the checkpoint's buffers are those every rank validated with.
    write_config(d, "c.toml", &config("sgd", 32, 2, true).replace("batch_size = 32\n", "batch_size = 32\nval_batch_size = 52\n"));
    let out = train(d, "c.toml", "c", &["--nproc", "2"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let last = epoch_lines(&d.join("runs/c")).pop().unwrap();
    let cm: u64 = last["val/confusion_matrix"].as_array().unwrap().iter().flat_map(|r| r.as_array().unwrap()).map(|c| c.as_u64().unwrap()).sum();
    assert_eq!(cm, 359, "every validation sample counted once: {last}");
    let single = eval_json(d, "c.toml", &["--checkpoint", "runs/c/checkpoints/last"]);
    let sharded = metrics_with(&last, "val/");
    assert!(sharded.contains_key("val/top5_accuracy") && sharded.contains_key("val/f1_macro"), "{last}");
    assert_same_metrics(&sharded, &metrics_with(&single, "val/"), "digits validation");

    // The test split (60 samples, 4 batches of 16) at the end of a 2-rank run, against `bz eval --split test`.
    write_config(d, "s.toml", &fixtures::csv_with_test_split(d));
    let out = train(d, "s.toml", "s", &["--nproc", "2"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let test = test_line(&d.join("runs/s"));
    let single = eval_json(d, "s.toml", &["--run-name", "s", "--split", "test"]);
    assert_same_metrics(&metrics_with(&test, "test/"), &metrics_with(&single, "test/"), "test split");

    // Regression: 80 validation samples in 5 batches of 16; the ranks' running statistics merge in rank order.
    let mut text = String::new();
    for i in 0..400 {
        let x = (i as f64) / 100.0 - 2.0;
        let z = ((i * 37) % 11) as f64 / 5.0 - 1.0;
        text.push_str(&format!("{x},{},{z}\n", 3.0 * x - 2.0 * z + 1.0 + ((i * 13) % 7) as f64 * 0.1));
    }
    std::fs::write(d.join("r.csv"), text).unwrap();
    let regression = "[run]\nthreads = 1\n[data]\nsource = \"csv\"\npath = \"r.csv\"\nheader = false\ntarget = 1\ntask = \"regression\"\n\
                      [model]\nlayers = [{ type = \"linear\", out = 1 }]\n[train]\nepochs = 2\nbatch_size = 16\nloss = \"mse\"\n\
                      [optimizer]\nlr = 0.05\n";
    write_config(d, "r.toml", regression);
    let out = train(d, "r.toml", "r", &["--nproc", "2"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let last = epoch_lines(&d.join("runs/r")).pop().unwrap();
    let single = eval_json(d, "r.toml", &["--checkpoint", "runs/r/checkpoints/last"]);
    let sharded = metrics_with(&last, "val/");
    assert!(sharded.contains_key("val/r2"), "{last}");
    assert_same_metrics(&sharded, &metrics_with(&single, "val/"), "regression validation");
}

/// A digits CNN with a 2-d and a 1-d batch norm, as 2 ranks × 32 or 1 process × 64.
fn batchnorm_cnn(batch: u32, sync: bool) -> String {
    format!(
        "[run]\nthreads = 1\n[data]\nsource = \"digits\"\nnormalize = true\n\
         [model]\nlayers = [{{ type = \"reshape\", shape = [1, 8, 8] }}, {{ type = \"conv2d\", out = 4, kernel = 3 }}, {{ type = \"batchnorm\" }}, \
         {{ type = \"relu\" }}, {{ type = \"flatten\" }}, {{ type = \"linear\", out = 16 }}, {{ type = \"batchnorm\" }}, {{ type = \"relu\" }}, \
         {{ type = \"linear\", out = 10 }}]\n\
         [train]\nepochs = 3\nbatch_size = {batch}\nsync_batchnorm = {sync}\n[optimizer]\nname = \"sgd\"\nlr = 0.05\n"
    )
}

#[test]
fn sync_batchnorm_makes_two_ranks_train_like_one_process_with_the_global_batch() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // 1,438 training samples: 23 steps an epoch, 69 in all. In one process sync_batchnorm changes nothing.
    write_config(d, "one.toml", &batchnorm_cnn(64, true));
    write_config(d, "sync.toml", &batchnorm_cnn(32, true));
    write_config(d, "local.toml", &batchnorm_cnn(32, false));
    for (cfg, extra) in [("one.toml", &[][..]), ("sync.toml", &["--nproc", "2"][..]), ("local.toml", &["--nproc", "2"][..])] {
        let out = train(d, cfg, cfg.trim_end_matches(".toml"), extra);
        assert_eq!(out.code, 0, "{cfg}: {}", out.all());
    }
    let (one, sync, local) = (weights(d, "one"), weights(d, "sync"), weights(d, "local"));
    // Weights and the running statistics (buffers are in model.safetensors under torch's names).
    assert!(one.iter().any(|(n, _)| n.ends_with("running_var")), "{:?}", one.iter().map(|(n, _)| n).collect::<Vec<_>>());
    let diff = max_diff(&one, &sync);
    assert!(diff <= 1e-5, "sync_batchnorm: 2 ranks × 32 differ from 1 × 64 by {diff} after 69 steps");
    let apart = max_diff(&one, &local);
    assert!(apart > 1e-3, "per-rank batch norm should train differently from 1 × 64, but differs by only {apart}");
}

#[test]
fn doctor_lists_the_distributed_backends() {
    let dir = tempfile::tempdir().unwrap();
    let out = bz(dir.path(), &["doctor"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let line = out.stdout.lines().find(|l| l.starts_with("distributed")).unwrap_or_else(|| panic!("{}", out.stdout));
    assert!(line.contains("gloo (c10d TCPStore + ProcessGroupGloo"), "{line}");
    assert!(out.stdout.contains("nccl: not in this build (CPU libtorch)"), "{}", out.stdout);
}
