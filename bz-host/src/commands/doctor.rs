//! `bz doctor`: libtorch, CUDA, threads, memory, plugin directory and Python tools, what to check first when
//! something is off.

use super::exit::Status;
use anyhow::Result;
use clap::Args;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct DoctorArgs {}

impl DoctorArgs {
    pub fn run(self) -> Result<Status> {
        println!("bz              {} ({}, plugin API {})", env!("CARGO_PKG_VERSION"), bz_host::plugins::HOST_TARGET, bz_plugin_api::API_VERSION);
        libtorch();
        if bz_host::dist::available() {
            println!("distributed     gloo (c10d TCPStore + ProcessGroupGloo, CPU); torchrun or `bz train --nproc N`");
            // The shim builds Gloo groups only; on a CPU libtorch there is no NCCL to build one with anyway.
            let why = if option_env!("BZ_CUDA_LINKED").is_some() { "bz's c10d shim builds Gloo groups only" } else { "CPU libtorch" };
            println!("                nccl: not in this build ({why})");
        } else {
            println!("distributed     not in this build (gloo's headers were missing: scripts/setup --dist, touch bz-host/build.rs, rebuild)");
        }
        machine();
        let plugin_dir = bz_host::plugins::loader::plugin_dir(None);
        let plugins = std::fs::read_dir(&plugin_dir).map(|d| d.flatten().filter(|e| e.path().extension().is_some_and(|x| x == "so")).count()).ok();
        match plugins {
            Some(n) => println!("plugins         {} ({n} .so files)", plugin_dir.display()),
            None => println!("plugins         {} (does not exist yet)", plugin_dir.display()),
        }
        let venv = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/bz/venv/bin"));
        for tool in ["tensorboard", "wandb", "optuna"] {
            let found = find_tool(tool, venv.as_deref());
            println!(
                "{:<15} {}",
                tool,
                found.map(|p| p.display().to_string()).unwrap_or_else(|| { "not found (tests install it with scripts/setup --python)".into() })
            );
        }
        Ok(Status::Success)
    }
}

/// The libtorch this build links, and whether CUDA is in it.
fn libtorch() {
    let libtorch = option_env!("BZ_LIBTORCH_DIR").unwrap_or("(unknown: built without LIBTORCH)");
    let version = std::fs::read_to_string(Path::new(libtorch).join("version.py"))
        .ok()
        .and_then(|t| t.lines().find(|l| l.starts_with("__version__")).map(|l| l.split('\'').nth(1).unwrap_or("?").to_string()))
        .unwrap_or_else(|| "2.13.0 (required by tch 0.26)".into());
    println!("libtorch        {version} at {libtorch}");
    let linked = option_env!("BZ_CUDA_LINKED").is_some();
    let cuda = tch::Cuda::is_available();
    println!(
        "cuda            {} (CUDA {} into this build{})",
        if cuda { format!("{} device(s), cudnn {}", tch::Cuda::device_count(), tch::Cuda::cudnn_is_available()) } else { "not available".into() },
        if linked { "linked" } else { "not linked" },
        if linked { "" } else { "; `scripts/setup --cuda` then rebuild for GPUs" }
    );
}

/// Threads and memory.
fn machine() {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!(
        "threads         {} intra-op (libtorch default) · {cores} logical CPUs · MKL {} · OpenMP {}",
        tch::get_num_threads(),
        tch::utils::has_mkl(),
        tch::utils::has_openmp()
    );
    let mut sys = sysinfo::System::new();
    sys.refresh_memory();
    println!("memory          {:.1} GiB total, {:.1} GiB available", sys.total_memory() as f64 / 1073741824.0, sys.available_memory() as f64 / 1073741824.0);
}

fn find_tool(name: &str, venv: Option<&Path>) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).chain(venv.map(Path::to_path_buf)).map(|d| d.join(name)).find(|p| p.is_file())
}
