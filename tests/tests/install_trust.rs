//! The attacks a signed index and a careful transport stop, each one end to end against the real bz: an older or
//! expired signed index, a key rotation (once, and no way back), an artifact signed as another version, a
//! silent downgrade, an https→http redirect (a real TLS server: Python's ssl module, certificates by openssl),
//! ~/.netrc credentials sent to another port, a remote index pointing at local files, and an archive swapped
//! after it was checked.

use bz_e2e::http::Server;
use bz_e2e::install_env::*;
use bz_e2e::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn trust(e: &Env) -> Value {
    serde_json::from_str(&std::fs::read_to_string(e.plugins().join("trust.json")).unwrap()).unwrap()
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|err| panic!("{}: {err}", p.display()))
}

#[test]
fn an_older_or_an_expired_signed_index_is_refused() {
    let e = Env::new();
    e.add_index(e.dist().to_str().unwrap());
    let (idx, sig) = (e.dist().join("index.json"), e.dist().join("index.json.minisig"));
    let v1 = (read(&idx), read(&sig));
    // The publisher yanks 0.4.0 (index version 2), and bz sees that version.
    package(&["yank", "--dist", e.dist().to_str().unwrap(), "fixture", "0.4.0"]);
    e.sign_index();
    assert_eq!(e.index()["version"], 2);
    e.ok(&["plugins", "install", "fixture"]);
    assert_eq!(e.installed_version().as_deref(), Some("0.3.0"));
    let seen = trust(&e);
    let entry = seen["indexes"].as_object().unwrap().values().next().unwrap().clone();
    assert_eq!(entry["version"], 2, "{seen}");
    let v2 = (read(&idx), read(&sig));

    // A mirror (or a man in the middle) serves version 1 again, validly signed, where 0.4.0 is not yanked.
    std::fs::write(&idx, &v1.0).unwrap();
    std::fs::write(&sig, &v1.1).unwrap();
    let err = e.fails(&["plugins", "install", "fixture"]);
    assert!(err.contains("version 1 is older than version 2") && err.contains("rollback") && err.contains("nothing installed"), "{err}");
    assert_eq!(e.installed_version().as_deref(), Some("0.3.0"));

    // A feed frozen at a version whose signature has run out.
    std::fs::write(&idx, &v2.0).unwrap();
    std::fs::write(&sig, &v2.1).unwrap();
    let mut frozen = e.index();
    frozen["plugins"]["fixture"]["description"] = Value::from("frozen");
    e.set_index_unsigned(&frozen);
    // Signed 40 days ago, for 30 days.
    let then = chrono::Utc::now() - chrono::Duration::days(40);
    e.sign_index_with("key.key", Some(&then.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)));
    let err = e.fails(&["plugins", "install", "fixture@0.3.0"]);
    assert!(err.contains("expired at") && err.contains("up-to-date mirror"), "{err}");
    // Searching reads the same checks.
    let out = e.bz(&["plugins", "search"]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("expired at"), "{}", out.stderr);
}

#[test]
fn a_key_rotation_is_followed_once_and_the_old_key_is_retired() {
    let e = Env::new();
    e.add_index(e.dist().to_str().unwrap());
    e.ok(&["plugins", "install", "fixture@0.3.0"]);
    let root = trust(&e)["indexes"].as_object().unwrap().keys().next().unwrap().clone();
    assert_eq!(root, e.pubkey);

    // The publisher names a next key, vouched for by the current one, and signs the index with the new key.
    package(&["keygen", "--out", e.path("key2").to_str().unwrap()]);
    let key2 = std::fs::read_to_string(e.path("key2.pub")).unwrap().lines().last().unwrap().to_string();
    package(&[
        "rotate-key",
        "--dist",
        e.dist().to_str().unwrap(),
        "--key",
        e.path("key.key").to_str().unwrap(),
        "--next",
        e.path("key2.pub").to_str().unwrap(),
    ]);
    e.sign_index_with("key2.key", None);
    let out = e.ok(&["plugins", "install", "fixture"]);
    assert!(out.stderr.contains("its key rotated") && out.stdout.contains("installed fixture 0.4.0"), "{}", out.all());
    assert_eq!(trust(&e)["indexes"][&root]["key"], key2.as_str());
    // Once: the next command says nothing of it.
    let out = e.ok(&["plugins", "install", "fixture"]);
    assert!(!out.stderr.contains("rotated"), "{}", out.stderr);

    // The retired key can no longer sign this index, even with a newer version.
    let mut idx = e.index();
    idx["plugins"]["fixture"]["description"] = Value::from("signed with the retired key");
    e.set_index_unsigned(&idx);
    e.sign_index_with("key.key", None);
    let err = e.fails(&["plugins", "install", "fixture@0.3.0"]);
    assert!(err.contains("rotated out"), "{err}");

    // A machine that only knows the first key follows the rotation from the index itself.
    e.sign_index_with("key2.key", None);
    let fresh = e.path("fresh-plugins");
    let out = e.bz_with(&["plugins", "install", "fixture"], &[("BZ_PLUGIN_DIR", &fresh)]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stderr.contains("its key rotated"), "{}", out.stderr);

    // A rotation vouched for by a key nobody trusts is no rotation: someone with keys 3 and 4 rewrites the index.
    for k in ["key3", "key4"] {
        package(&["keygen", "--out", e.path(k).to_str().unwrap()]);
    }
    std::fs::remove_file(e.dist().join("index.json.minisig")).unwrap();
    let (dist, key3, key4) = (e.dist().display().to_string(), e.path("key3.key").display().to_string(), e.path("key4.pub").display().to_string());
    package(&["rotate-key", "--dist", &dist, "--key", &key3, "--next", &key4]);
    e.sign_index_with("key4.key", None);
    let err = e.fails(&["plugins", "install", "fixture@0.3.0"]);
    assert!(err.contains("bad signature"), "{err}");
}

#[test]
fn an_archive_signed_as_another_version_is_refused() {
    let e = Env::new();
    e.add_index(e.dist().to_str().unwrap());
    // The index (signed) maps fixture 0.4.0 to the archive and signature of 0.3.0: every byte is validly signed,
    // but the signature says what it was signed as.
    let mut idx = e.index();
    idx["plugins"]["fixture"]["versions"][1]["artifacts"][0] = idx["plugins"]["fixture"]["versions"][0]["artifacts"][0].clone();
    e.set_index(&idx);
    let err = e.fails(&["plugins", "install", "fixture@0.4.0"]);
    assert!(err.contains("its signature is for version 0.3.0, not 0.4.0"), "{err}");
    assert_eq!(e.link(), None);
    assert!(e.staging_is_empty());
}

#[test]
fn install_never_downgrades_silently_and_honours_sha256_for_index_installs() {
    let e = Env::new();
    e.add_index(e.dist().to_str().unwrap());
    e.ok(&["plugins", "install", "fixture"]);
    assert_eq!(e.installed_version().as_deref(), Some("0.4.0"));
    package(&["yank", "--dist", e.dist().to_str().unwrap(), "fixture", "0.4.0"]);
    e.sign_index();
    let err = e.fails(&["plugins", "install", "fixture"]);
    assert!(err.contains("fixture 0.4.0 is installed") && err.contains("install fixture@0.3.0 or pass --allow-downgrade"), "{err}");
    assert_eq!(e.installed_version().as_deref(), Some("0.4.0"));
    assert!(e.ok(&["plugins", "update"]).stdout.contains("fixture 0.4.0 is up to date"));
    let out = e.ok(&["plugins", "install", "fixture", "--allow-downgrade"]);
    assert!(out.stdout.contains("installed fixture 0.3.0 (replaces 0.4.0"), "{}", out.stdout);

    let sha = e.index()["plugins"]["fixture"]["versions"][1]["artifacts"][0]["sha256"].as_str().unwrap().to_string();
    let err = e.fails(&["plugins", "install", "fixture@0.4.0", "--force", "--sha256", &"0".repeat(64)]);
    assert!(err.contains(&format!("sha256 is {sha}")), "{err}");
    assert_eq!(e.installed_version().as_deref(), Some("0.3.0"));
    e.ok(&["plugins", "install", "fixture@0.4.0", "--force", "--sha256", &sha]);
    assert_eq!(e.installed_version().as_deref(), Some("0.4.0"));
}

/// A CA and a certificate for 127.0.0.1 signed by it, made by the openssl command: (ca.pem, leaf.pem, leaf.key).
fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let out =
            Command::new("openssl").args(args).current_dir(dir).stdin(Stdio::null()).output().expect("openssl (Debian's openssl package) must be installed");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=bz test CA",
    ]);
    run(&["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=127.0.0.1"]);
    std::fs::write(dir.join("leaf.ext"), "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n").unwrap();
    run(&["x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "leaf.pem", "-days", "2", "-extfile", "leaf.ext"]);
    (dir.join("ca.pem"), dir.join("leaf.pem"), dir.join("leaf.key"))
}

/// Python's TLS server over `root`; killed when dropped.
struct Https {
    child: std::process::Child,
    port: u16,
}

impl Https {
    fn start(dir: &Path, root: &Path) -> Https {
        let (_, leaf, key) = certificates(dir);
        let port_file = dir.join("https.port");
        let script = repo_root().join("tests/py/https_server.py");
        let child = Command::new(python())
            .arg(script)
            .args([&leaf, &key, root, &port_file])
            .arg("120")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // The server writes the file by rename, so it exists only whole.
        wait_for_file(&port_file, Duration::from_secs(30), "the https server did not start");
        let port = std::fs::read_to_string(&port_file).unwrap().trim().parse().unwrap();
        Https { child, port }
    }
}

impl Drop for Https {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_redirect_from_https_to_http_is_refused() {
    let e = Env::new();
    let certs = e.path("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let https = Https::start(&certs, &e.dist());
    let plain = Server::serve_dir(&e.dist());
    let ca = certs.join("ca.pem");
    let install = |index: &str, version: &str| {
        e.bz_with(&["plugins", "install", &format!("fixture@{version}"), "--index", index, "--pubkey", &e.pubkey], &[("SSL_CERT_FILE", &ca)])
    };
    // Control: https redirected to https works (the CA comes from SSL_CERT_FILE).
    let out = install(&format!("https://127.0.0.1:{}/to-https/index.json", https.port), "0.3.0");
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(e.installed_version().as_deref(), Some("0.3.0"));
    // https redirected to plain http, even to this machine, is refused before any request goes there.
    let out =
        install(&format!("https://127.0.0.1:{}/to-http/{}/index.json", https.port, plain.url("/").trim_end_matches('/').rsplit(':').next().unwrap()), "0.4.0");
    assert_ne!(out.code, 0, "{}", out.all());
    assert!(out.stderr.contains("redirected from https to http"), "{}", out.stderr);
    assert!(plain.requests().is_empty(), "{:?}", plain.requests());
    assert_eq!(e.installed_version().as_deref(), Some("0.3.0"));
    // A CA file that cannot be read is said so, not silently replaced by the built-in roots.
    let out = e.bz_with(
        &["plugins", "install", "fixture@0.4.0", "--index", &format!("https://127.0.0.1:{}/files/index.json", https.port), "--pubkey", &e.pubkey],
        &[("SSL_CERT_FILE", &certs.join("missing.pem"))],
    );
    let errors: Vec<&str> = out.stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert!(out.code != 0 && errors.len() == 1 && errors[0].contains("SSL_CERT_FILE=") && errors[0].contains("missing.pem"), "{}", out.all());
    let out = e.bz_with(
        &["plugins", "install", "fixture@0.4.0", "--index", &format!("https://127.0.0.1:{}/files/index.json", https.port), "--pubkey", &e.pubkey],
        &[("SSL_CERT_FILE", &certs.join("leaf.ext"))],
    );
    assert!(out.code != 0 && out.stderr.contains("holds no PEM certificate"), "{}", out.all());
    // Without the CA, the server is not trusted at all.
    let out = e.bz(&["plugins", "install", "fixture@0.4.0", "--index", &format!("https://127.0.0.1:{}/files/index.json", https.port), "--pubkey", &e.pubkey]);
    assert_ne!(out.code, 0, "{}", out.all());
}

#[test]
fn plain_http_to_another_host_needs_allow_http() {
    let e = Env::new();
    // Refused before any connection: nothing leaves the machine.
    let err = e.fails(&["plugins", "install", "fixture", "--index", "http://bz-index.invalid/", "--pubkey", &e.pubkey]);
    assert!(err.contains("plain http://") && err.contains("--allow-http"), "{err}");
}

#[test]
fn netrc_credentials_go_only_to_their_own_port() {
    let e = Env::new();
    let index = Server::serve_dir(&e.dist());
    let other = Server::serve_dir(&e.dist());
    index.require_basic("alice", "s3cr3t");
    other.require_basic("alice", "s3cr3t");
    // The index's artifacts live on the same host, another port: another origin.
    let mut idx = e.index();
    for v in idx["plugins"]["fixture"]["versions"].as_array_mut().unwrap() {
        for a in v["artifacts"].as_array_mut().unwrap() {
            let (u, s) = (a["url"].as_str().unwrap().to_string(), a["minisig"].as_str().unwrap().to_string());
            a["url"] = Value::from(other.url(&u));
            a["minisig"] = Value::from(other.url(&s));
        }
    }
    e.set_index(&idx);
    std::fs::write(e.path("home/.netrc"), "machine 127.0.0.1\n  login alice\n  password s3cr3t\n").unwrap();
    let err = e.fails(&["plugins", "install", "fixture@0.3.0", "--index", &index.url("/"), "--pubkey", &e.pubkey]);
    assert!(err.contains("HTTP 401"), "{err}");
    assert!(!index.requests_with_auth().is_empty(), "the index itself gets the credentials");
    assert!(!other.requests().is_empty() && other.requests_with_auth().is_empty(), "another port got credentials: {:?}", other.requests_with_auth());
    assert_eq!(e.link(), None);
}

#[test]
fn a_remote_index_cannot_point_at_local_files() {
    let e = Env::new();
    let server = Server::serve_dir(&e.dist());
    let mut idx = e.index();
    let a = &mut idx["plugins"]["fixture"]["versions"][0]["artifacts"][0];
    let (u, s) = (a["url"].as_str().unwrap().to_string(), a["minisig"].as_str().unwrap().to_string());
    a["url"] = Value::from(format!("file://{}", e.dist().join(u).display()));
    a["minisig"] = Value::from(format!("file://{}", e.dist().join(s).display()));
    e.set_index(&idx);
    let err = e.fails(&["plugins", "install", "fixture@0.3.0", "--index", &server.url("/"), "--pubkey", &e.pubkey]);
    assert!(err.contains("is remote and may not point at a local file"), "{err}");
    assert_eq!(e.link(), None);
    // The same index read from a local folder may.
    e.ok(&["plugins", "install", "fixture@0.3.0", "--index", e.dist().to_str().unwrap(), "--pubkey", &e.pubkey]);
}

/// Serves `payloads[i]` to the i-th reader that opens the fifo at `path` (a Python writer in the test venv),
/// for at most 60 s: a file whose content changes every time it is opened.
fn changing_file(path: &Path, payloads: &[&Path]) -> std::process::Child {
    let fifo = path.display().to_string();
    let files: Vec<String> = payloads.iter().map(|p| p.display().to_string()).collect();
    let script = format!(
        "import os, time\nos.mkfifo({fifo:?})\nend = time.time() + 60\nfor name in {files:?}:\n    while True:\n        try:\n            fd = os.open({fifo:?}, os.O_WRONLY | os.O_NONBLOCK)\n            break\n        except OSError:\n            if time.time() > end: raise SystemExit(0)\n            time.sleep(0.005)\n    os.set_blocking(fd, True)\n    try:\n        os.write(fd, open(name, 'rb').read())\n    except BrokenPipeError:\n        pass\n    os.close(fd)\n    time.sleep(0.2)  # the reader sees EOF and closes before the next open is served\n"
    );
    let file = path.with_extension("py");
    std::fs::write(&file, script).unwrap();
    let child = Command::new(python()).arg(&file).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::inherit()).spawn().unwrap();
    wait_for_file(path, Duration::from_secs(30), "the fifo never appeared");
    child
}

#[test]
fn an_archive_swapped_after_it_was_checked_is_never_installed() {
    let e = Env::new();
    let good = e.archive("0.3.0");
    let sha = e.index()["plugins"]["fixture"]["versions"][0]["artifacts"][0]["sha256"].as_str().unwrap().to_string();
    // The first open of the path yields the archive the hash vouches for, every later one another archive.
    let path = e.path("swap.tar.gz");
    let mut writer = changing_file(&path, &[&good, &e.archive("0.4.0"), &e.archive("0.4.0")]);
    let out = e.bz(&["plugins", "install", path.to_str().unwrap(), "--sha256", &sha]);
    let _ = writer.kill();
    let _ = writer.wait();
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(e.installed_version().as_deref(), Some("0.3.0"));
    assert_eq!(e.receipts()["plugins"]["fixture"]["archive_sha256"], sha.as_str());
    e.ok(&["plugins", "verify"]);
    assert_eq!(version_of(&e), "0.3.0");
}

/// Where `fixture.so` leads, if to a complete library: its sha256.
fn linked_library_hash(e: &Env) -> Option<String> {
    let target = e.plugins().join(e.link()?);
    let bytes = std::fs::read(&target).ok()?;
    (!bytes.is_empty()).then(|| sha256_hex(&bytes))
}

#[test]
fn a_forced_reinstall_killed_at_any_step_leaves_a_working_plugin() {
    let e = Env::new();
    e.add_index(e.dist().to_str().unwrap());
    e.ok(&["plugins", "install", "fixture@0.3.0"]);
    let lib = linked_library_hash(&e).unwrap();
    for step in ["placed", "swapped", "recorded"] {
        let out = e.bz_with(&["plugins", "install", "fixture@0.3.0", "--force"], &[("BZ_CRASH_AT", Path::new(step))]);
        assert_eq!(out.code, -1, "{step}: bz should have been killed there:\n{}", out.all());
        // At that instant and after, the link leads to a complete copy of the library.
        assert_eq!(linked_library_hash(&e).as_deref(), Some(lib.as_str()), "{step}");
        let ev = e.train(&format!("after-{step}"));
        assert_eq!(ev.last().unwrap()["status"], "completed", "{step}");
        // The next install repairs what the kill left (a link ahead of its receipt, an unpruned copy).
        e.ok(&["plugins", "install", "fixture@0.3.0"]);
        e.ok(&["plugins", "verify"]);
        assert_eq!(e.store_versions().len(), 1, "{step}: {:?}", e.store_versions());
    }
    // And while forced reinstalls run back to back, a reader never finds the link without a library.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (plugins, stop2) = (e.plugins(), stop.clone());
    let watcher = std::thread::spawn(move || {
        let mut misses = 0;
        let start = Instant::now();
        while !stop2.load(std::sync::atomic::Ordering::SeqCst) && start.elapsed() < Duration::from_secs(120) {
            if std::fs::metadata(plugins.join("fixture.so")).map(|m| m.len() == 0).unwrap_or(true) {
                misses += 1;
            }
        }
        misses
    });
    for _ in 0..5 {
        e.ok(&["plugins", "install", "fixture@0.3.0", "--force"]);
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(watcher.join().unwrap(), 0, "the link pointed at nothing during a reinstall");
}

#[test]
fn the_user_config_is_0600_when_new_and_keeps_its_mode_when_rewritten() {
    use std::os::unix::fs::PermissionsExt;
    let e = Env::new();
    let config = e.path("home/.bz/config.toml");
    let mode = || std::fs::metadata(&config).unwrap().permissions().mode() & 0o777;
    e.ok(&["plugins", "index", "add", "a", e.dist().to_str().unwrap(), "--pubkey", &e.pubkey]);
    assert_eq!(mode(), 0o600, "a new config may hold credentials");
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o640)).unwrap();
    e.ok(&["plugins", "index", "add", "b", e.dist().to_str().unwrap(), "--pubkey", &e.pubkey]);
    assert_eq!(mode(), 0o640);
    e.ok(&["plugins", "index", "remove", "a"]);
    assert_eq!(mode(), 0o640);
    // --if-none adds nothing once an index is configured, and says so.
    let out = e.ok(&["plugins", "index", "add", "c", e.dist().to_str().unwrap(), "--pubkey", &e.pubkey, "--if-none"]);
    assert!(out.stdout.contains("kept your configured indexes (b)"), "{}", out.stdout);
}
