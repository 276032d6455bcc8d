//! Attacks on the installer and the probe child: archives that make tar allocate, libraries that leave processes
//! behind holding the probe's pipes, and configs that would make `bz validate` run a library inside bz.

use bz_e2e::install_env::*;
use bz_e2e::*;
use std::path::Path;
use std::time::{Duration, Instant};

/// Writes a gzip whose tar stream starts with an extension header (`kind` x, g, L or K) declaring `pax_size` bytes (all zeros, written in
/// 1 MiB chunks so Python stays small), then a normal plugin.toml; runs `bz plugins install` on it and reports
/// the exit code, stderr and the peak RSS of bz (KiB), which is the largest child Python waited for.
const BOMB: &str = r#"
import gzip, json, os, resource, subprocess, sys
out, bz, env_json, pax_size, kind = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]

def header(name, kind, size):
    h = bytearray(512)
    h[0:len(name)] = name.encode()
    h[100:108] = b"0000644\0"
    h[108:116] = b"0000000\0"
    h[116:124] = b"0000000\0"
    h[124:136] = b"%011o\0" % size
    h[136:148] = b"00000000000\0"
    h[148:156] = b" " * 8
    h[156] = ord(kind)
    h[257:265] = b"ustar\x0000"
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)

toml = b'name = "fixture"\nversion = "0.3.0"\nplugin_api = "1.0.0"\ntarget = "x86_64-unknown-linux-gnu"\nlibrary = "x.so"\n'
with gzip.open(out, "wb", compresslevel=1) as f:
    f.write(header("./PaxHeaders/plugin.toml", kind, pax_size))
    chunk = bytes(1 << 20)
    left = pax_size
    while left > 0:
        f.write(chunk[:min(left, len(chunk))])
        left -= len(chunk)
    f.write(bytes(-pax_size % 512))
    f.write(header("plugin.toml", "0", len(toml)))
    f.write(toml + bytes(-len(toml) % 512))
    f.write(bytes(1024))

env = {k: v for k, v in os.environ.items() if k not in ("BZ_PLUGIN_INDEX", "BZ_PLUGIN_PUBKEY", "BZ_CONFIG", "BZ_PLUGIN_DIR")}
env.update(json.loads(env_json))
p = subprocess.run([bz, "plugins", "install", out, "--allow-unsigned"], env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
print(json.dumps({"code": p.returncode, "stderr": p.stderr, "maxrss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"#;

fn bomb(e: &Env, pax_size: u64, kind: &str) -> serde_json::Value {
    let script = e.path("bomb.py");
    std::fs::write(&script, BOMB).unwrap();
    let env: serde_json::Map<String, serde_json::Value> = e.env().into_iter().map(|(k, v)| (k.to_string(), v.display().to_string().into())).collect();
    let archive = e.path("bomb.tar.gz").display().to_string();
    let child = std::process::Command::new(python())
        .arg(&script)
        .args([&archive, &bz_path().display().to_string(), &serde_json::Value::Object(env).to_string(), &pax_size.to_string(), kind])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_limited(child, Duration::from_secs(180));
    assert_eq!(out.code, 0, "{}", out.all());
    serde_json::from_str(out.stdout.trim()).unwrap()
}

fn nothing_installed(e: &Env) {
    assert!(e.staging_is_empty(), "staging left behind");
    assert!(e.receipts().is_null(), "{}", e.receipts());
    assert!(e.link().is_none() && e.store_versions().is_empty(), "something was installed");
}

#[test]
fn a_huge_pax_header_is_refused_before_it_is_read() {
    let e = Env::new();
    let start = Instant::now();
    let r = bomb(&e, 1 << 30, "x");
    let stderr = r["stderr"].as_str().unwrap();
    assert_ne!(r["code"], 0, "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains("a PAX header of 1073741824 bytes (limit 64 KiB)"), "{stderr}");
    // A failing install of a small archive peaks near 120 MiB (a debug bz with libtorch); reading the header took 1.2 GiB.
    let rss_mib = r["maxrss_kib"].as_u64().unwrap() >> 10;
    assert!(rss_mib < 400, "bz peaked at {rss_mib} MiB");
    nothing_installed(&e);
    eprintln!("bomb: bz peaked at {rss_mib} MiB; {:?} in all", start.elapsed());
}

#[test]
fn long_names_and_many_extension_headers_are_bounded() {
    let e = Env::new();
    let r = bomb(&e, 128 << 10, "L");
    let stderr = r["stderr"].as_str().unwrap();
    assert_ne!(r["code"], 0, "{stderr}");
    assert!(stderr.contains("a GNU long-name header of 131072 bytes (limit 64 KiB); refused"), "{stderr}");
    nothing_installed(&e);

    // 150 files with long names are 300 headers: each name takes a PAX header, and each header is an entry.
    let archive = e.path("many.tar.gz");
    let script = format!(
        "import tarfile, io\nt = tarfile.open({:?}, 'w:gz', format=tarfile.PAX_FORMAT)\nfor i in range(150):\n    i = tarfile.TarInfo('n' * 120 + str(i)); t.addfile(i, io.BytesIO(b''))\nt.close()\n",
        archive.display().to_string()
    );
    py(e.tmp.path(), &script);
    let err = e.fails(&["plugins", "install", archive.to_str().unwrap(), "--allow-unsigned"]);
    assert!(err.contains("more than 256 entries (extension headers included)"), "{err}");
    nothing_installed(&e);
}

/// The pids of processes whose command line is exactly `args`.
fn processes(args: &[&str]) -> Vec<u32> {
    let want: Vec<u8> = args.iter().flat_map(|a| a.bytes().chain([0])).collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|d| d.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want))
        .collect()
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn a_helper_left_behind_by_the_library_does_not_hold_up_the_install() {
    let e = Env::new();
    let archive = e.archive("0.3.0");
    let start = Instant::now();
    // The library starts `sleep 317` holding the probe's stdout and stderr; the old probe read them to the end.
    let out = e.bz_with(&["plugins", "install", archive.to_str().unwrap(), "--allow-unsigned"], &[("BZ_FIXTURE_SLEEPER", Path::new("317"))]);
    let took = start.elapsed();
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stdout.contains("installed fixture 0.3.0"), "{}", out.stdout);
    assert!(took < Duration::from_secs(60), "the install took {took:?}");
    assert_eq!(processes(&["sleep", "317"]), Vec::<u32>::new(), "the probe's leftovers are killed");
    eprintln!("install with a sleeper: {took:?}");
    // Modes set by the unpacker, not left to the umask.
    let dir = e.plugins().join("store/fixture/0.3.0");
    assert_eq!((mode(&dir), mode(&dir.join("plugin.toml")), mode(&dir.join("libbz_fixture.so"))), (0o755, 0o644, 0o755));
}

#[test]
fn a_library_that_never_returns_is_killed_at_the_limit_with_its_helpers() {
    let e = Env::new();
    let archive = e.archive("0.3.0");
    let start = Instant::now();
    let env = [("BZ_FIXTURE_SLEEPER", Path::new("319")), ("BZ_FIXTURE_HANG", Path::new("600"))];
    let out = e.bz_with(&["plugins", "install", archive.to_str().unwrap(), "--allow-unsigned"], &env);
    let took = start.elapsed();
    assert_ne!(out.code, 0, "{}", out.all());
    let lines: Vec<&str> = out.stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(lines.len(), 1, "{}", out.stderr);
    assert!(lines[0].contains("plugin 'fixture': the library does not load: the probe did not finish in 20 s"), "{}", out.stderr);
    assert!(took < Duration::from_secs(40), "the install took {took:?}");
    assert_eq!(processes(&["sleep", "319"]), Vec::<u32>::new(), "the probe's group is killed");
    assert!(processes(&[&bz_path().display().to_string(), "plugins", "probe"]).is_empty());
    nothing_installed(&e);
    eprintln!("install of a hanging library: {took:?}");
}

/// Installs fixture 0.3.0 into the Env's plugin dir.
fn install_fixture(e: &Env) {
    let archive = e.archive("0.3.0");
    e.ok(&["plugins", "install", archive.to_str().unwrap(), "--allow-unsigned"]);
}

#[test]
fn validate_runs_the_plugin_in_a_child_not_in_bz() {
    let e = Env::new();
    install_fixture(&e);
    let pidfile = e.path("pid");
    let env = e.env();
    let mut all: Vec<(&str, &Path)> = env.iter().map(|(k, v)| (*k, v.as_path())).collect();
    all.push(("BZ_FIXTURE_PIDFILE", &pidfile));
    let child = bz_command(e.tmp.path(), &["validate", "c.toml"], &all).spawn().unwrap();
    let bz_pid = child.id();
    let out = wait_limited(child, Duration::from_secs(120));
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stdout.contains("plugin  fixture 0.3.0 ("), "{}", out.stdout);
    let plugin_pid: u32 = std::fs::read_to_string(&pidfile).expect("validate_config ran").trim().parse().unwrap();
    assert_ne!(plugin_pid, bz_pid, "validate_config ran inside `bz validate`");

    // The plugin's verdict is still a config error naming the section (exit 2), one line.
    for (section, want) in [("bogus = 1", "unknown key `bogus`"), ("mode = 42", "`mode` = 42 is not one of")] {
        write_config(e.tmp.path(), "bad.toml", &CONFIG.replace("mode = \"record\"", section));
        let out = e.bz(&["validate", "bad.toml"]);
        assert_eq!(out.code, 2, "{}", out.all());
        let lines: Vec<&str> = out.stderr.lines().filter(|l| l.starts_with("error: ")).collect();
        assert_eq!(lines.len(), 1, "{}", out.stderr);
        assert!(lines[0].contains("`plugins.fixture`") && lines[0].contains(want), "{}", out.stderr);
    }
    // A library that does not load gives the loader's own line, from the child.
    std::fs::write(e.plugins().join("truncated.so"), &std::fs::read(debug_dir().join("libbz_fixture.so")).unwrap()[..4096]).unwrap();
    write_config(e.tmp.path(), "broken.toml", &CONFIG.replace("[plugins.fixture]", "[plugins.truncated]").replace("mode = \"record\"", ""));
    let err = e.fails(&["validate", "broken.toml"]);
    assert!(err.contains("plugin 'truncated':") && err.contains("is not a loadable shared library (truncated"), "{err}");
}
