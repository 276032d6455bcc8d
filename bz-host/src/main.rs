//! The `bz` command line: process setup, then one subcommand (see `commands/`), then one exit code (see
//! `commands::exit`: 0 success, 1 failure, 2 bad config or command line, 3 NaN/inf loss, 130 Ctrl-C).

use clap::Parser;

mod commands;

#[derive(Parser)]
#[command(name = "bz", version, about = "Train PyTorch models on libtorch from a TOML file")]
struct Cli {
    #[command(subcommand)]
    command: commands::Command,
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

/// A command line (without the program name) run in this process, as a forked trial runs `bz train …`.
fn run_args(args: Vec<String>) -> u8 {
    let argv = std::iter::once("bz".to_string()).chain(args);
    match Cli::try_parse_from(argv) {
        Ok(cli) => commands::exit::number(cli.command.run()),
        Err(e) => {
            let _ = e.print();
            bz_host::exit_code::BAD_INPUT
        }
    }
}

fn main() -> ! {
    // `exit_now` rather than returning: see there why libtorch's static destructors are skipped.
    tune_allocator();
    one_line_panics();
    let cli = Cli::parse();
    if cli.command.dies_on_closed_pipe() {
        // SAFETY: restores the default disposition of one signal before any other thread exists.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    bz_host::exit_code::exit_now(commands::exit::number(cli.command.run()))
}
