//! The `bz` command line.
//!
//! Exit codes: 0 success (also an early stop), 1 a failed run or command, 2 a bad config or command line,
//! 3 the loss became NaN/inf, 130 interrupted by Ctrl-C (a checkpoint was saved; `--resume` continues).

use anyhow::{Context, Result};
use bz_host::config::{self, ConfigError};
use bz_host::console::Verbosity;
use bz_host::train::{self, Interrupt, NonFiniteLoss, Outcome, Session, TrainOptions};
use clap::{Args, Parser, Subcommand};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;

mod plugins_cmd;

#[derive(Parser)]
#[command(name = "bz", version, about = "Train PyTorch models on libtorch from a TOML file")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct ConfigArgs {
    /// The run's TOML config (see `bz init`).
    config: PathBuf,
    /// Override any config key, e.g. `--set optimizer.lr=0.01 --set model.layers[1].out=128`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Where plugin libraries are (default: BZ_PLUGIN_DIR, else ~/.bz/plugins).
    #[arg(long, value_name = "DIR")]
    plugin_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model.
    Train {
        #[command(flatten)]
        cfg: ConfigArgs,
        /// Train for N epochs (same as --set train.epochs=N).
        #[arg(long)]
        epochs: Option<usize>,
        /// Continue the run from its `last` checkpoint.
        #[arg(long)]
        resume: bool,
        /// Run directory name under run.dir (default: run.name, else the config file's name).
        #[arg(long)]
        run_name: Option<String>,
        /// Only errors and the final line.
        #[arg(short, long)]
        quiet: bool,
        /// Every metric in the epoch lines.
        #[arg(short, long)]
        verbose: bool,
    },
    /// Search hyperparameters: runs `[tune]`'s trials as child `bz train` processes, with pruning.
    Tune {
        #[command(flatten)]
        cfg: ConfigArgs,
        /// Continue the study (it must exist).
        #[arg(long)]
        resume: bool,
        /// Study name (default: tune.study, else the config file's name).
        #[arg(long)]
        study: Option<String>,
        /// Storage URL (default: sqlite:///<run.dir>/<study>/study.db).
        #[arg(long)]
        storage: Option<String>,
        /// The study's total number of trials.
        #[arg(long)]
        n_trials: Option<u64>,
        /// Trials run at once by this worker.
        #[arg(long)]
        n_jobs: Option<usize>,
        /// Seconds after which no new trial starts.
        #[arg(long)]
        timeout: Option<f64>,
        /// Only errors and the final lines.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Check a config (keys, values, data, model shapes) without training.
    Validate {
        #[command(flatten)]
        cfg: ConfigArgs,
    },
    /// Evaluate a checkpoint on the validation (or training) split.
    Eval {
        #[command(flatten)]
        cfg: ConfigArgs,
        /// A checkpoint directory (default: the run's `best`, else `last`).
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// The run whose checkpoint to use (default: run.name, else the config file's name).
        #[arg(long)]
        run_name: Option<String>,
        #[arg(long, default_value = "val", value_parser = ["val", "train"])]
        split: String,
        /// Print the metrics as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Write a commented starter config.
    Init {
        #[arg(default_value = "bz.toml")]
        path: PathBuf,
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Show libtorch, CUDA, threads, plugin directory and Python tools: what to check first when something is off.
    Doctor,
    /// Built-in and installed plugins.
    Plugins {
        #[command(subcommand)]
        command: PluginsCommand,
    },
}

/// `--plugin-dir`, shared by the plugin commands.
#[derive(Args, Clone)]
struct DirArg {
    /// The plugin directory (default: BZ_PLUGIN_DIR, else ~/.bz/plugins).
    #[arg(long, value_name = "DIR")]
    plugin_dir: Option<PathBuf>,
}

/// Where plugins come from, shared by install, update and search.
#[derive(Args, Clone)]
struct IndexArgs {
    /// A configured index's name, or an index URL or path (default: BZ_PLUGIN_INDEX, else ~/.bz/config.toml).
    #[arg(long, value_name = "NAME|URL")]
    index: Option<String>,
    /// The minisign public key that signs the index's archives (default: the configured one, or BZ_PLUGIN_PUBKEY).
    #[arg(long, value_name = "KEY")]
    pubkey: Option<String>,
    /// Accept plain http:// to hosts other than this machine (readable and changeable on the way).
    #[arg(long)]
    allow_http: bool,
}

#[derive(Subcommand)]
enum PluginsCommand {
    /// Built-in, installed and unmanaged plugins, each library checked in a child process.
    List {
        #[command(flatten)]
        dir: DirArg,
    },
    /// One plugin's metadata, default configuration and install receipt.
    Info {
        name: String,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Install plugins: NAME, NAME@VERSION, INDEX/NAME, a local .tar.gz, an archive's URL, or a plugin crate's directory (built with cargo).
    Install {
        #[arg(required = true, value_name = "NAME[@VERSION]|ARCHIVE|URL")]
        what: Vec<String>,
        /// The archive's expected sha256 (for an archive or URL).
        #[arg(long, value_name = "HEX")]
        sha256: Option<String>,
        #[command(flatten)]
        index: IndexArgs,
        /// Reinstall the same version, replace an unmanaged file, or take a yanked version asked for by number.
        #[arg(long)]
        force: bool,
        /// Install an archive that no signature vouches for.
        #[arg(long)]
        allow_unsigned: bool,
        /// Let `install NAME` go to an older version than the installed one.
        #[arg(long)]
        allow_downgrade: bool,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Update installed plugins to their newest installable version (all unpinned ones when none is named).
    Update {
        names: Vec<String>,
        #[command(flatten)]
        index: IndexArgs,
        #[arg(long)]
        allow_unsigned: bool,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Remove installed plugins (link, receipt and stored versions).
    Remove {
        #[arg(required = true)]
        names: Vec<String>,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Go back to the version the last install or update replaced.
    Rollback {
        name: String,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Keep a plugin at its installed version: `update` skips it.
    Pin {
        name: String,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Let `update` move a pinned plugin again.
    Unpin {
        name: String,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Re-hash installed libraries against their receipts.
    Verify {
        #[command(flatten)]
        dir: DirArg,
    },
    /// Plugins in the configured indexes, with the newest version this bz can install.
    Search {
        term: Option<String>,
        #[command(flatten)]
        index: IndexArgs,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Configure plugin indexes (in ~/.bz/config.toml).
    Index {
        #[command(subcommand)]
        command: IndexCommand,
    },
    /// Scaffold a plugin crate that builds as is.
    New {
        name: String,
        /// Where to create it (default: ./bz-plugin-NAME).
        #[arg(long)]
        path: Option<PathBuf>,
    },
    /// Load one library and print its metadata as JSON (used by `list`, `info`, `validate` and `install` in a
    /// child process).
    #[command(hide = true)]
    Probe {
        path: PathBuf,
        /// Load it as this plugin (a library calling itself otherwise is an error); default: from the file name.
        #[arg(long)]
        name: Option<String>,
        /// Read a configuration (JSON) from stdin and print the plugin's `validate_config` verdict on it.
        #[arg(long)]
        config_stdin: bool,
    },
}

#[derive(Subcommand)]
enum IndexCommand {
    /// Add an index: a name, its URL or path, and the minisign public key that signs its archives.
    Add {
        name: String,
        url: String,
        #[arg(long, value_name = "KEY")]
        pubkey: Option<String>,
        /// Add it only when no index is configured yet (what the quick start does).
        #[arg(long)]
        if_none: bool,
        /// Accept plain http:// to hosts other than this machine.
        #[arg(long)]
        allow_http: bool,
    },
    /// Remove an index.
    Remove { name: String },
    /// The configured indexes.
    List,
}

/// glibc returns every large freed block to the OS (above a dynamic mmap threshold, or by trimming the heap top),
/// so the activations a training step frees are page-faulted back in on the next step: measured here as 1.5M
/// minor faults per CNN run and a 20-40% slower step at batch 256. A fixed 32 MiB mmap threshold (glibc's
/// maximum) and no trimming keep those blocks in the heap for reuse, for a little more resident memory.
/// A user's own MALLOC_* settings win.
fn tune_allocator() {
    if std::env::vars_os().any(|(k, _)| k.to_string_lossy().starts_with("MALLOC_")) {
        return;
    }
    // SAFETY: mallopt only adjusts allocator parameters; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// The last line of defence for "no user input ends in a Rust panic or a C++ backtrace": a panic that escaped every
/// check prints one line (the first line of its message, which for a libtorch error is libtorch's own reason)
/// instead of a Rust backtrace with a C++ one inside; `RUST_BACKTRACE=1` shows the whole report, for a bug report.
fn one_line_panics() {
    if std::env::var_os("RUST_BACKTRACE").is_some() {
        return;
    }
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload().downcast_ref::<String>().map(String::as_str).or_else(|| info.payload().downcast_ref::<&str>().copied()).unwrap_or("panic");
        // tch wraps libtorch's message, backtrace included, in a Debug string where newlines are `\n`.
        let first = payload.split('\n').next().unwrap_or(payload).split("\\n").next().unwrap_or(payload);
        let at = info.location().map(|l| format!(" ({}:{})", l.file(), l.line())).unwrap_or_default();
        eprintln!("error: {first}{at}; bz stopped here (run with RUST_BACKTRACE=1 for the full report)");
    }));
}

fn main() -> ExitCode {
    tune_allocator();
    one_line_panics();
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Train { .. }) {
        // `bz plugins list | head` ends quietly, as other Unix tools do, instead of panicking on a closed pipe.
        // Training keeps Rust's default (SIGPIPE ignored), so a plugin's socket to a closed peer is an error it
        // handles, not the death of the run.
        // SAFETY: restores the default disposition of one signal before any other thread exists.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let result = match cli.command {
        Command::Train { cfg, epochs, resume, run_name, quiet, verbose } => cmd_train(cfg, epochs, resume, run_name, quiet, verbose),
        Command::Validate { cfg } => cmd_validate(cfg),
        Command::Tune { cfg, resume, study, storage, n_trials, n_jobs, timeout, quiet } => {
            cmd_tune(cfg, resume, study, storage, n_trials, n_jobs, timeout, quiet)
        }
        Command::Eval { cfg, checkpoint, run_name, split, json } => cmd_eval(cfg, checkpoint, run_name, &split, json),
        Command::Init { path, force } => cmd_init(&path, force),
        Command::Doctor => cmd_doctor(),
        Command::Plugins { command } => plugins_cmd::run(command),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<ConfigError>().is_some() {
                ExitCode::from(2)
            } else if e.downcast_ref::<NonFiniteLoss>().is_some() {
                ExitCode::from(3)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

fn load(cfg: &ConfigArgs, extra: &[String]) -> Result<config::Loaded> {
    let mut set = cfg.set.clone();
    set.extend_from_slice(extra);
    Ok(config::load(&cfg.config, &set)?)
}

fn cmd_train(cfg: ConfigArgs, epochs: Option<usize>, resume: bool, run_name: Option<String>, quiet: bool, verbose: bool) -> Result<ExitCode> {
    let extra: Vec<String> = epochs.map(|n| format!("train.epochs={n}")).into_iter().collect();
    let loaded = load(&cfg, &extra)?;
    let interrupt = Interrupt::default();
    let handler = interrupt.clone();
    ctrlc::set_handler(move || {
        if handler.raise() {
            // A second Ctrl-C: the user does not want to wait for the checkpoint.
            std::process::exit(130);
        }
        eprintln!("\ninterrupt: saving a checkpoint after this batch (Ctrl-C again to quit at once)");
    })
    .context("cannot install the Ctrl-C handler")?;
    let verbosity = if quiet {
        Verbosity::Quiet
    } else if verbose {
        Verbosity::Verbose
    } else {
        Verbosity::Normal
    };
    let dir = bz_host::plugins::loader::plugin_dir(cfg.plugin_dir.as_deref());
    let prepared = bz_host::plugins::prepare(&loaded.config, &loaded.path, &dir, verbose)?;
    let mut dispatcher = bz_host::plugins::dispatcher(prepared, &loaded.config, verbosity, std::io::stdout().is_terminal())?;
    let outcome = train::train(&loaded, &TrainOptions { resume, run_name }, &mut dispatcher, &interrupt)?;
    Ok(match outcome {
        Outcome::Completed | Outcome::Stopped => ExitCode::SUCCESS,
        Outcome::Interrupted => ExitCode::from(130),
    })
}

#[allow(clippy::too_many_arguments)]
fn cmd_tune(
    cfg: ConfigArgs,
    resume: bool,
    study: Option<String>,
    storage: Option<String>,
    n_trials: Option<u64>,
    n_jobs: Option<usize>,
    timeout: Option<f64>,
    quiet: bool,
) -> Result<ExitCode> {
    let loaded = load(&cfg, &[])?;
    let text = std::fs::read_to_string(&cfg.config).with_context(|| format!("cannot read {}", cfg.config.display()))?;
    ctrlc::set_handler(|| {
        if bz_host::tune::TUNE_INTERRUPTED.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\ninterrupt: stopping the running trials and marking them failed (Ctrl-C again to quit at once)");
    })
    .context("cannot install the Ctrl-C handler")?;
    let opts = bz_host::tune::TuneOptions {
        resume,
        study,
        storage,
        n_trials,
        n_jobs,
        timeout,
        plugin_dir: std::fs::canonicalize(bz_host::plugins::loader::plugin_dir(cfg.plugin_dir.as_deref()))
            .unwrap_or_else(|_| bz_host::plugins::loader::plugin_dir(cfg.plugin_dir.as_deref())),
        sets: cfg.set.clone(),
        quiet,
    };
    Ok(match bz_host::tune::tune(&loaded, &text, &opts)? {
        bz_host::tune::TuneOutcome::Finished => ExitCode::SUCCESS,
        bz_host::tune::TuneOutcome::Interrupted => ExitCode::from(130),
    })
}

fn cmd_validate(cfg: ConfigArgs) -> Result<ExitCode> {
    let loaded = load(&cfg, &[])?;
    let dir = bz_host::plugins::loader::plugin_dir(cfg.plugin_dir.as_deref());
    let plugins = bz_host::plugins::validate_in_child(&loaded.config, &loaded.path, &dir)?;
    let Session { data, model, objective, .. } = Session::prepare(&loaded.config, &loaded.path)?;
    println!("{}: ok", loaded.path.display());
    println!(
        "data    {} · {} train / {} val samples · input {}",
        data.description,
        data.train.len(),
        data.val.len(),
        bz_host::fmt::fmt_shape(&data.input_shape)
    );
    println!("{}", model.summary());
    println!("metrics {}", objective.metric_names().join(", "));
    for p in &plugins {
        match &p.library {
            None => println!("plugin  {} (built in)", p.name),
            Some((version, path)) => println!("plugin  {} {version} ({})", p.name, path.display()),
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn cmd_eval(cfg: ConfigArgs, checkpoint: Option<PathBuf>, run_name: Option<String>, split: &str, json: bool) -> Result<ExitCode> {
    let loaded = load(&cfg, &[])?;
    let c = &loaded.config;
    let dir = match checkpoint {
        Some(p) => p,
        None => {
            let name = run_name.or_else(|| c.run.name.clone()).unwrap_or_else(|| loaded.stem.clone());
            let ckpts = c.run.dir.join(name).join("checkpoints");
            let best = ckpts.join("best");
            if best.exists() {
                best
            } else {
                ckpts.join("last")
            }
        }
    };
    if !dir.join("model.safetensors").exists() {
        anyhow::bail!("{} is not a checkpoint (no model.safetensors); train first or pass --checkpoint DIR", dir.display());
    }
    // A TorchScript model's buffers live only in the module the checkpoint saved, so evaluate that module.
    let mut c = c.clone();
    if c.model.torchscript.is_some() {
        c.model.torchscript = Some(std::fs::canonicalize(dir.join("model.pt")).with_context(|| format!("{} has no model.pt", dir.display()))?);
    }
    let c = &c;
    let Session { data, mut vs, model, objective, .. } = Session::prepare(c, &loaded.path)?;
    bz_host::checkpoint::load_model(&dir, &mut vs)?;
    let (set, name) = if split == "train" { (&data.train, "train") } else { (&data.val, "val") };
    if set.is_empty() {
        anyhow::bail!("the {name} split is empty (data.val_split = 0?)");
    }
    let val_bs = c.train.val_batch_size.unwrap_or(c.train.batch_size);
    let ev = bz_host::evaluate::evaluate(&model, &objective, set, val_bs, 0, name, |_, _| Ok(()))?;
    if json {
        let map: serde_json::Map<String, serde_json::Value> = ev.metrics.iter().map(|m| (m.key(), serde_json::json!(m.value))).collect();
        println!("{}", serde_json::Value::Object(map));
    } else {
        println!("checkpoint {}", std::fs::canonicalize(&dir).unwrap_or(dir).display());
        for m in &ev.metrics {
            println!("{:<24} {}", m.key(), bz_host::fmt::fmt_value(m.value));
        }
    }
    Ok(ExitCode::SUCCESS)
}

const STARTER: &str = include_str!("../../examples/digits.toml");

fn cmd_init(path: &Path, force: bool) -> Result<ExitCode> {
    if path.exists() && !force {
        anyhow::bail!("{} already exists; pass --force to overwrite it", path.display());
    }
    bz_host::atomic::write(path, STARTER.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
    println!("wrote {} · train it with `bz train {}`", path.display(), path.display());
    Ok(ExitCode::SUCCESS)
}

fn cmd_doctor() -> Result<ExitCode> {
    println!("bz              {} ({}, plugin API {})", env!("CARGO_PKG_VERSION"), bz_host::plugins::HOST_TARGET, bz_plugin_api::API_VERSION);
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
    Ok(ExitCode::SUCCESS)
}

fn find_tool(name: &str, venv: Option<&Path>) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).chain(venv.map(Path::to_path_buf)).map(|d| d.join(name)).find(|p| p.is_file())
}
