//! The installer tests' world: a HOME, a plugin dir, and a dist folder holding the fixture plugin as 0.3.0 and
//! 0.4.0, packed and signed by bz-package with a throwaway key; plus helpers to forge and inspect what bz installs.

use crate::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const TARGET: &str = "x86_64-unknown-linux-gnu";

pub fn debug_dir() -> PathBuf {
    bz_path().parent().unwrap().to_path_buf()
}

/// Runs bz-package (built beside bz) and asserts it succeeds.
pub fn package(args: &[&str]) -> String {
    let child = std::process::Command::new(debug_dir().join("bz-package"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn bz-package");
    let out = wait_limited(child, Duration::from_secs(120));
    assert_eq!(out.code, 0, "bz-package {args:?}:\n{}", out.all());
    out.stdout
}

/// A HOME, a plugin dir and a dist folder holding fixture 0.3.0 and 0.4.0, signed with `key`.
pub struct Env {
    pub tmp: tempfile::TempDir,
    pub pubkey: String,
}

impl Default for Env {
    fn default() -> Env {
        Env::new()
    }
}

impl Env {
    pub fn new() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("home")).unwrap();
        let p = |s: &str| tmp.path().join(s).display().to_string();
        package(&["keygen", "--out", &p("key")]);
        let dist = p("dist");
        for (so, dir) in [("libbz_fixture.so", "plugin"), ("libbz_fixture_next.so", "plugin-next")] {
            let so = debug_dir().join(so).display().to_string();
            let crate_dir = repo_root().join("tests/fixtures").join(dir).display().to_string();
            package(&["pack", "--so", &so, "--crate-dir", &crate_dir, "--dist", &dist, "--key", &p("key.key")]);
        }
        let pubkey = std::fs::read_to_string(tmp.path().join("key.pub")).unwrap().lines().last().unwrap().to_string();
        write_config(tmp.path(), "c.toml", CONFIG);
        let e = Env { tmp, pubkey };
        e.sign_index();
        e
    }
    /// Re-signs dist/index.json with the publisher's key (a new index version), as a publisher does after a change.
    pub fn sign_index(&self) {
        self.sign_index_with("key.key", None);
    }
    /// Signs with another key, or as of another time (`--now`, RFC 3339: 40 days ago makes an expired index).
    pub fn sign_index_with(&self, key: &str, now: Option<&str>) {
        let (dist, key) = (self.dist().display().to_string(), self.path(key).display().to_string());
        let mut args = vec!["sign-index", "--dist", &dist, "--key", &key];
        if let Some(t) = now {
            args.extend(["--now", t]);
        }
        package(&args);
    }
    pub fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }
    pub fn dist(&self) -> PathBuf {
        self.path("dist")
    }
    pub fn plugins(&self) -> PathBuf {
        self.path("plugins")
    }
    pub fn env(&self) -> Vec<(&'static str, PathBuf)> {
        vec![("HOME", self.path("home")), ("BZ_PLUGIN_DIR", self.plugins())]
    }
    pub fn bz(&self, args: &[&str]) -> Output {
        self.bz_with(args, &[])
    }
    pub fn bz_with(&self, args: &[&str], extra: &[(&str, &Path)]) -> Output {
        let env = self.env();
        let mut all: Vec<(&str, &Path)> = env.iter().map(|(k, v)| (*k, v.as_path())).collect();
        all.extend_from_slice(extra);
        bz_env(self.tmp.path(), args, &all, Duration::from_secs(120))
    }
    /// Runs bz and asserts the exit code, returning the output.
    pub fn ok(&self, args: &[&str]) -> Output {
        let out = self.bz(args);
        assert_eq!(out.code, 0, "bz {args:?}:\n{}", out.all());
        out
    }
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.bz(args);
        assert_ne!(out.code, 0, "bz {args:?} should fail:\n{}", out.all());
        let lines: Vec<&str> = out.stderr.lines().filter(|l| l.starts_with("error: ")).collect();
        assert_eq!(lines.len(), 1, "one error line expected:\n{}", out.stderr);
        lines[0].to_string()
    }
    pub fn add_index(&self, url: &str) {
        self.ok(&["plugins", "index", "add", "local", url, "--pubkey", &self.pubkey]);
    }
    /// Where `fixture.so` points, relative to the plugin dir.
    pub fn link(&self) -> Option<PathBuf> {
        std::fs::read_link(self.plugins().join("fixture.so")).ok()
    }
    pub fn installed_version(&self) -> Option<String> {
        let r = self.receipts();
        r["plugins"]["fixture"]["version"].as_str().map(str::to_string)
    }
    pub fn receipts(&self) -> Value {
        std::fs::read_to_string(self.plugins().join("installed.json")).map(|t| serde_json::from_str(&t).unwrap()).unwrap_or(Value::Null)
    }
    pub fn store_versions(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.plugins().join("store/fixture"))
            .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }
    pub fn staging_is_empty(&self) -> bool {
        std::fs::read_dir(self.plugins().join(".staging")).map(|mut d| d.next().is_none()).unwrap_or(true)
    }
    pub fn index(&self) -> Value {
        serde_json::from_str(&std::fs::read_to_string(self.dist().join("index.json")).unwrap()).unwrap()
    }
    /// Changes the index as its publisher would: written, then re-signed.
    pub fn set_index(&self, v: &Value) {
        // Versions only grow, even when an older copy of the index is written back.
        let mut v = v.clone();
        v["version"] = self.index()["version"].clone();
        self.set_index_unsigned(&v);
        self.sign_index();
    }
    /// Changes the index as someone without the key would: its signature no longer matches.
    pub fn set_index_unsigned(&self, v: &Value) {
        std::fs::write(self.dist().join("index.json"), serde_json::to_string_pretty(v).unwrap()).unwrap();
    }
    pub fn archive(&self, version: &str) -> PathBuf {
        self.dist().join(format!("fixture/{version}/bz-fixture-{version}-{TARGET}.tar.gz"))
    }
    /// Trains `c.toml` with the installed fixture plugin; the run's recorded events.
    pub fn train(&self, name: &str) -> Vec<Value> {
        self.ok(&["train", "c.toml", "--run-name", name]);
        read_jsonl(&self.path(&format!("runs/{name}/fixture-events.jsonl")))
    }
}

pub const CONFIG: &str = r#"
[run]
threads = 1
[data]
source = "digits"
[model]
layers = [{ type = "flatten" }, { type = "linear", out = 10 }]
[train]
epochs = 2
batch_size = 256
[plugins.fixture]
mode = "record"
"#;

/// The fixture version `bz plugins info` reports (through the probe, so what would load).
pub fn version_of(e: &Env) -> String {
    let out = e.ok(&["plugins", "info", "fixture"]);
    out.stdout.lines().find(|l| l.starts_with("version")).unwrap().split_whitespace().nth(1).unwrap().to_string()
}

pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let p = entry.path();
        if p.is_dir() {
            copy_tree(&p, &to.join(entry.file_name()));
        } else {
            std::fs::copy(&p, to.join(entry.file_name())).unwrap();
        }
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("x");
    std::fs::write(&f, bytes).unwrap();
    // The test venv's Python is the independent hasher.
    py(dir.path(), &format!("import hashlib; print(hashlib.sha256(open({:?}, 'rb').read()).hexdigest())", f.display().to_string())).trim().to_string()
}

/// Makes a .tar.gz with Python's tarfile (not our own writer), from (name, kind, data) entries.
pub fn python_tarball(dir: &Path, name: &str, entries: &[(&str, &str, &[u8])]) -> PathBuf {
    let out = dir.join(name);
    let mut script = format!("import tarfile, io\nt = tarfile.open({:?}, 'w:gz')\n", out.display().to_string());
    for (i, (path, kind, data)) in entries.iter().enumerate() {
        let f = dir.join(format!("entry{i}"));
        std::fs::write(&f, data).unwrap();
        match *kind {
            "file" => {
                script += &format!(
                    "d = open({:?}, 'rb').read()\ni = tarfile.TarInfo({path:?}); i.size = len(d); t.addfile(i, io.BytesIO(d))\n",
                    f.display().to_string()
                )
            }
            "symlink" => {
                script += &format!("i = tarfile.TarInfo({path:?}); i.type = tarfile.SYMTYPE; i.linkname = {:?}; t.addfile(i)\n", String::from_utf8_lossy(data))
            }
            _ => unreachable!(),
        }
    }
    script += "t.close()\n";
    py(dir, &script);
    out
}
