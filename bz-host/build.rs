//! Bakes an rpath to libtorch's lib dir into `bz`, so it runs without LD_LIBRARY_PATH, and links CUDA when the
//! full (`scripts/setup --cuda`) install is present: without `--no-as-needed -ltorch` the linker drops
//! libtorch_cuda.so and CUDA is never detected (tch-rs #329, #907, #980).
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=BZ_CUDA");
    // The installer picks plugin builds for the triple bz itself was built for.
    println!("cargo:rustc-env=BZ_TARGET={}", std::env::var("TARGET").unwrap_or_default());
    default_channel();
    let Some(libtorch) = std::env::var_os("LIBTORCH").map(PathBuf::from) else {
        println!("cargo:warning=LIBTORCH is not set; run scripts/setup first");
        return;
    };
    // Through the link, so `scripts/setup --cuda` pointing .libtorch at another set reruns this script (lib/ holds
    // a few dozen files; the whole tree would be 15k files to scan on every build).
    println!("cargo:rerun-if-changed={}", libtorch.join("lib").display());
    // Resolve the .libtorch link so the binary keeps working wherever the repo is cloned.
    let libtorch = std::fs::canonicalize(&libtorch).unwrap_or(libtorch);
    let lib = libtorch.join("lib");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    println!("cargo:rustc-env=BZ_LIBTORCH_DIR={}", libtorch.display());
    autocast_shim(&libtorch);
    dist_shim(&libtorch);
    if want_cuda(&libtorch) {
        println!("cargo:rustc-link-search=native={}", lib.display());
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-ltorch");
        println!("cargo:rustc-env=BZ_CUDA_LINKED=1");
    }
}

/// Compiles the c10d bridge (src/dist/shim.cpp) when gloo's headers are at `<repo>/.gloo` (`scripts/setup --dist`),
/// and sets `cfg(bz_dist)`; without them bz builds without distributed training, saying so once here.
fn dist_shim(libtorch: &Path) {
    println!("cargo:rustc-check-cfg=cfg(bz_dist)");
    println!("cargo:rerun-if-changed=src/dist/shim.cpp");
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let gloo = manifest.parent().unwrap_or(&manifest).join(".gloo");
    // Watched only when present (see want_cuda); after a first `scripts/setup --dist`, the warning below says how
    // to make cargo look again.
    let config = gloo.join("gloo/config.h");
    if !config.exists() {
        println!(
            "cargo:warning=gloo's headers are not at {}: bz is built without distributed training; run scripts/setup --dist, then touch bz-host/build.rs",
            gloo.display()
        );
        return;
    }
    println!("cargo:rerun-if-changed={}", config.display());
    libtorch_cc(libtorch).include(gloo).define("GLOG_USE_GLOG_EXPORT", None).define("USE_C10D_GLOO", None).file("src/dist/shim.cpp").compile("bz_dist_shim");
    println!("cargo:rustc-cfg=bz_dist");
}

/// Compiles src/precision/autocast.cpp, the switch for CPU and CUDA autocast (`train.precision`); it needs only
/// libtorch's headers, so it is always built.
fn autocast_shim(libtorch: &Path) {
    println!("cargo:rerun-if-changed=src/precision/autocast.cpp");
    libtorch_cc(libtorch).file("src/precision/autocast.cpp").compile("bz_autocast_shim");
}

/// A C++ build against libtorch's headers, with the flags torch-sys uses for its own shim.
fn libtorch_cc(libtorch: &Path) -> cc::Build {
    let include = libtorch.join("include");
    // The ABI flag as torch-sys sets it for this libtorch, so std::string crosses into libtorch_cpu.so intact.
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    let cxx11_abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".to_owned());
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .pic(true)
        .warnings(false)
        // Debug info for libtorch's headers doubles the compile (~10 s to ~20 s) for a shim too thin to step through.
        .debug(false)
        .includes([include.clone(), include.join("torch/csrc/api/include")])
        .flag("-std=c++17")
        // libtorch's headers use C++20 bit-field initialisers that g++ accepts in C++17 with a warning per include.
        .flag_if_supported("-Wno-c++20-extensions")
        .define("_GLIBCXX_USE_CXX11_ABI", cxx11_abi.as_str());
    build
}

/// The plugin channel a release build carries: `BZ_CHANNEL_URL` and `BZ_CHANNEL_PUBKEY` at build time (the release
/// workflow sets both). Without a URL, a GitHub repository's release assets are the default; without a key there
/// is no default channel, because an index bz cannot verify is no channel (a source checkout makes its own).
fn default_channel() {
    println!("cargo:rerun-if-env-changed=BZ_CHANNEL_URL");
    println!("cargo:rerun-if-env-changed=BZ_CHANNEL_PUBKEY");
    let repo = std::env::var("CARGO_PKG_REPOSITORY").unwrap_or_default();
    let from_repo =
        repo.strip_prefix("https://github.com/").map(|r| format!("https://github.com/{}/releases/download/plugins/index.json", r.trim_end_matches('/')));
    let url = std::env::var("BZ_CHANNEL_URL").ok().filter(|u| !u.is_empty()).or(from_repo).unwrap_or_default();
    let key = std::env::var("BZ_CHANNEL_PUBKEY").unwrap_or_default();
    println!("cargo:rustc-env=BZ_CHANNEL_URL={url}");
    println!("cargo:rustc-env=BZ_CHANNEL_PUBKEY={}", key.trim());
}

/// `BZ_CUDA=1/0` forces the choice; otherwise CUDA is linked only when cuBLAS sits beside the PyPI torch package,
/// i.e. the full install, since linking libtorch_cuda.so without its dependencies makes a binary that cannot start.
fn want_cuda(libtorch: &Path) -> bool {
    match std::env::var("BZ_CUDA").as_deref() {
        Ok("1") => return true,
        Ok("0") => return false,
        _ => {}
    }
    // Watched only when present: cargo reruns a build script on every build while a watched file is missing.
    let cublas = libtorch.join("../nvidia/cu13/lib/libcublas.so.13");
    let present = cublas.exists();
    if present {
        println!("cargo:rerun-if-changed={}", cublas.display());
    }
    present
}
