//! `bz plugins install` and friends end to end: real archives made by bz-package from the fixture plugin (built
//! as 0.3.0 and 0.4.0), signed with a throwaway minisign key, served by a `file://` index and by an HTTP server
//! on 127.0.0.1 that can misbehave; hostile archives made with Python's tarfile.

use bz_e2e::http::{Behaviour, Server};
use bz_e2e::install_env::*;
use bz_e2e::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[test]
fn install_upgrade_rollback_and_remove_over_http() {
    let e = Env::new();
    let server = Server::serve_dir(&e.dist());
    e.add_index(&server.url("/"));
    // INDEX/NAME@VERSION names the index explicitly.
    let out = e.ok(&["plugins", "install", "local/fixture@0.3.0"]);
    assert!(out.stdout.contains("installed fixture 0.3.0 · signature verified"), "{}", out.stdout);
    assert_eq!(e.link(), Some(PathBuf::from("store/fixture/0.3.0/libbz_fixture.so")));
    assert_eq!(version_of(&e), "0.3.0");
    let r = e.receipts();
    assert_eq!(r["plugins"]["fixture"]["source"]["kind"], "index");
    assert_eq!(r["plugins"]["fixture"]["signed_by"], e.pubkey.as_str());
    assert_eq!(r["plugins"]["fixture"]["archive_sha256"], e.index()["plugins"]["fixture"]["versions"][0]["artifacts"][0]["sha256"]);
    // The plugin works: a run records its events through it.
    let ev = e.train("one");
    assert_eq!(ev.last().unwrap()["status"], "completed");
    let reqs = server.requests();
    for want in [
        "GET /index.json",
        "GET /fixture/0.3.0/bz-fixture-0.3.0-x86_64-unknown-linux-gnu.tar.gz.minisig",
        "GET /fixture/0.3.0/bz-fixture-0.3.0-x86_64-unknown-linux-gnu.tar.gz",
    ] {
        assert!(reqs.iter().any(|r| r == want), "{want} not in {reqs:?}");
    }

    // Upgrade to the newest; the old version stays in the store for rollback.
    let out = e.ok(&["plugins", "install", "fixture"]);
    assert!(out.stdout.contains("installed fixture 0.4.0 (replaces 0.3.0"), "{}", out.stdout);
    assert_eq!(e.link(), Some(PathBuf::from("store/fixture/0.4.0/libbz_fixture_next.so")));
    assert_eq!(version_of(&e), "0.4.0");
    assert_eq!(e.store_versions(), ["0.3.0", "0.4.0"]);
    let out = e.ok(&["plugins", "install", "fixture"]);
    assert!(out.stdout.contains("fixture 0.4.0 is already installed"), "{}", out.stdout);
    let list = e.ok(&["plugins", "list"]).stdout;
    assert!(list.lines().any(|l| l.starts_with("fixture") && l.contains("0.4.0") && l.contains("ok") && l.contains("index 'local'")), "{list}");
    assert!(e.ok(&["plugins", "verify"]).stdout.contains("ok       fixture 0.4.0"));

    let out = e.ok(&["plugins", "rollback", "fixture"]);
    assert!(out.stdout.contains("back to 0.3.0"), "{}", out.stdout);
    assert_eq!(version_of(&e), "0.3.0");
    assert_eq!(e.installed_version().as_deref(), Some("0.3.0"));
    e.ok(&["plugins", "verify"]);
    let ev = e.train("two");
    assert_eq!(ev.last().unwrap()["status"], "completed");

    let out = e.ok(&["plugins", "remove", "fixture"]);
    assert!(out.stdout.contains("removed fixture 0.3.0"), "{}", out.stdout);
    assert_eq!(e.link(), None);
    assert!(!e.plugins().join("store/fixture").exists());
    assert_eq!(e.receipts()["plugins"], serde_json::json!({}));
    let out = e.bz(&["train", "c.toml", "--run-name", "three"]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("plugin 'fixture' is not installed") && out.stderr.contains("bz plugins install fixture"), "{}", out.stderr);
    assert!(e.staging_is_empty());
}

#[test]
fn a_file_index_and_a_copied_mirror_work_without_a_server() {
    let e = Env::new();
    // BZ_PLUGIN_INDEX and BZ_PLUGIN_PUBKEY instead of a config file, as CI would set them.
    let key = e.path("key.pub");
    let out = e.bz_with(&["plugins", "install", "fixture@0.3.0"], &[("BZ_PLUGIN_INDEX", &e.dist()), ("BZ_PLUGIN_PUBKEY", Path::new(&e.pubkey))]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(version_of(&e), "0.3.0");
    // A copy of the folder is a mirror: every URL in the index is relative.
    let mirror = e.path("mirror");
    copy_tree(&e.dist(), &mirror);
    std::fs::remove_dir_all(e.dist()).unwrap();
    let url = format!("file://{}/", mirror.display());
    let out = e.ok(&["plugins", "install", "fixture", "--index", &url, "--pubkey", &std::fs::read_to_string(&key).unwrap()]);
    assert!(out.stdout.contains("installed fixture 0.4.0"), "{}", out.stdout);
    assert_eq!(version_of(&e), "0.4.0");
    let r = e.receipts();
    assert!(r["plugins"]["fixture"]["source"]["url"].as_str().unwrap().starts_with(&format!("file://{}", mirror.display())), "{r}");
}

#[test]
fn a_corrupt_archive_or_a_forged_one_is_refused_and_the_old_install_kept() {
    let e = Env::new();
    e.add_index(e.dist().to_str().unwrap());
    e.ok(&["plugins", "install", "fixture@0.3.0"]);
    let before = e.receipts();

    // A flipped byte: same size, other hash.
    let archive = e.archive("0.4.0");
    let good = std::fs::read(&archive).unwrap();
    let mut bad = good.clone();
    bad[good.len() / 2] ^= 0xff;
    std::fs::write(&archive, &bad).unwrap();
    let err = e.fails(&["plugins", "install", "fixture"]);
    assert!(
        err.contains("sha256 is")
            && err.contains(&format!("expected {}", e.index()["plugins"]["fixture"]["versions"][1]["artifacts"][0]["sha256"].as_str().unwrap())),
        "{err}"
    );
    assert!(err.contains("nothing installed"), "{err}");
    assert_eq!(e.receipts(), before);
    assert_eq!(e.link(), Some(PathBuf::from("store/fixture/0.3.0/libbz_fixture.so")));
    assert_eq!(e.store_versions(), ["0.3.0"]);
    assert!(e.staging_is_empty());

    // Someone who can change the index but not the key: the hash and size match the forged archive,
    // the signature does not.
    let mut idx = e.index();
    idx["plugins"]["fixture"]["versions"][1]["artifacts"][0]["sha256"] = Value::from(sha256_hex(&bad));
    e.set_index_unsigned(&idx);
    let err = e.fails(&["plugins", "install", "fixture"]);
    assert!(err.contains("bad signature: index.json was not signed"), "{err}");
    assert_eq!(e.receipts(), before);
    // Even with the index re-signed by its publisher, the archive's own signature does not match the bytes.
    e.set_index(&idx);
    let err = e.fails(&["plugins", "install", "fixture"]);
    assert!(err.contains("bad signature") && err.contains("fixture 0.4.0"), "{err}");
    assert_eq!(e.receipts(), before);

    // The right bytes signed by another key.
    std::fs::write(&archive, &good).unwrap();
    let other = e.path("other");
    package(&["keygen", "--out", other.to_str().unwrap()]);
    let dist2 = e.path("dist2");
    let so = debug_dir().join("libbz_fixture_next.so");
    package(&[
        "pack",
        "--so",
        so.to_str().unwrap(),
        "--crate-dir",
        repo_root().join("tests/fixtures/plugin-next").to_str().unwrap(),
        "--dist",
        dist2.to_str().unwrap(),
        "--key",
        e.path("other.key").to_str().unwrap(),
    ]);
    let sig = format!("fixture/0.4.0/bz-fixture-0.4.0-{TARGET}.tar.gz.minisig");
    std::fs::copy(dist2.join(&sig), e.dist().join(&sig)).unwrap();
    idx["plugins"]["fixture"]["versions"][1]["artifacts"][0]["sha256"] = Value::from(sha256_hex(&good));
    e.set_index(&idx);
    let err = e.fails(&["plugins", "install", "fixture"]);
    assert!(err.contains("bad signature") || err.contains("signature"), "{err}");
    assert_eq!(e.receipts(), before);
    assert!(e.staging_is_empty());
}

#[test]
fn unsigned_indexes_need_allow_unsigned() {
    let e = Env::new();
    e.ok(&["plugins", "index", "add", "plain", e.dist().to_str().unwrap()]);
    let err = e.fails(&["plugins", "install", "fixture"]);
    assert!(err.contains("has no public key") && err.contains("--allow-unsigned"), "{err}");
    assert_eq!(e.link(), None);
    let out = e.ok(&["plugins", "install", "fixture", "--allow-unsigned"]);
    assert!(out.stdout.contains("installed fixture 0.4.0 · unsigned"), "{}", out.stdout);
    assert_eq!(e.receipts()["plugins"]["fixture"]["signed_by"], Value::Null);
    // A signed index whose artifact lost its signature.
    e.ok(&["plugins", "index", "remove", "plain"]);
    e.add_index(e.dist().to_str().unwrap());
    let mut idx = e.index();
    idx["plugins"]["fixture"]["versions"][0]["artifacts"][0].as_object_mut().unwrap().remove("minisig");
    e.set_index(&idx);
    let err = e.fails(&["plugins", "install", "fixture@0.3.0"]);
    assert!(err.contains("has no signature"), "{err}");
}

#[test]
fn resolution_explains_targets_api_versions_yanks_and_names() {
    let e = Env::new();
    e.add_index(e.dist().to_str().unwrap());
    let pristine = e.index();

    // 0.4.0 only for another platform: the newest installable is 0.3.0; asking for 0.4.0 says why not.
    let mut idx = pristine.clone();
    idx["plugins"]["fixture"]["versions"][1]["artifacts"][0]["target"] = Value::from("aarch64-unknown-linux-gnu");
    e.set_index(&idx);
    let err = e.fails(&["plugins", "install", "fixture@0.4.0"]);
    assert!(err.contains(&format!("0.4.0: no build for {TARGET} (builds: aarch64-unknown-linux-gnu)")), "{err}");
    let search = e.ok(&["plugins", "search"]).stdout;
    assert!(search.lines().any(|l| l.starts_with("fixture") && l.contains("0.3.0")), "{search}");

    // 0.4.0 built against another plugin API major.
    let mut idx = pristine.clone();
    idx["plugins"]["fixture"]["versions"][1]["plugin_api"] = Value::from("2.0.0");
    e.set_index(&idx);
    let err = e.fails(&["plugins", "install", "fixture@0.4.0"]);
    assert!(err.contains("0.4.0: needs bz-plugin-api 2.x; this bz speaks 1.x"), "{err}");
    e.ok(&["plugins", "install", "fixture"]);
    assert_eq!(e.installed_version().as_deref(), Some("0.3.0"));
    e.ok(&["plugins", "remove", "fixture"]);

    // Yanked: skipped unless asked for by number with --force.
    e.set_index(&pristine);
    package(&["yank", "--dist", e.dist().to_str().unwrap(), "fixture", "0.4.0"]);
    e.sign_index();
    e.ok(&["plugins", "install", "fixture"]);
    assert_eq!(e.installed_version().as_deref(), Some("0.3.0"));
    let err = e.fails(&["plugins", "install", "fixture@0.4.0"]);
    assert!(err.contains("0.4.0: yanked (--force installs it anyway)"), "{err}");
    e.ok(&["plugins", "install", "fixture@0.4.0", "--force"]);
    assert_eq!(e.installed_version().as_deref(), Some("0.4.0"));

    // Names and versions that do not exist.
    let err = e.fails(&["plugins", "install", "fixtur"]);
    assert!(err.contains("plugin 'fixtur' is not in index 'local'; did you mean 'fixture'?"), "{err}");
    let err = e.fails(&["plugins", "install", "fixture@9.9.9"]);
    assert!(err.contains("no version 9.9.9 (versions: 0.4.0, 0.3.0)"), "{err}");
    let err = e.fails(&["plugins", "install", "early_stopping"]);
    assert!(err.contains("built into bz"), "{err}");
}

#[test]
fn pinned_plugins_stay_put_until_unpinned() {
    let e = Env::new();
    e.add_index(e.dist().to_str().unwrap());
    e.ok(&["plugins", "install", "fixture@0.3.0"]);
    e.ok(&["plugins", "pin", "fixture"]);
    let out = e.ok(&["plugins", "update"]);
    assert!(out.stdout.contains("nothing to update"), "{}", out.stdout);
    let err = e.fails(&["plugins", "update", "fixture"]);
    assert!(err.contains("pinned at 0.3.0") && err.contains("bz plugins unpin fixture"), "{err}");
    // install without a version keeps the pinned one.
    let out = e.ok(&["plugins", "install", "fixture"]);
    assert!(out.stdout.contains("fixture 0.3.0 is already installed"), "{}", out.stdout);
    assert_eq!(e.installed_version().as_deref(), Some("0.3.0"));
    e.ok(&["plugins", "unpin", "fixture"]);
    let out = e.ok(&["plugins", "update"]);
    assert!(out.stdout.contains("installed fixture 0.4.0 (replaces 0.3.0"), "{}", out.stdout);
    let out = e.ok(&["plugins", "update"]);
    assert!(out.stdout.contains("fixture 0.4.0 is up to date"), "{}", out.stdout);
    assert_eq!(version_of(&e), "0.4.0");
}

#[test]
fn an_interrupted_download_installs_nothing_and_cleans_staging() {
    let e = Env::new();
    let server = Server::serve_dir(&e.dist());
    e.add_index(&server.url("/"));
    e.ok(&["plugins", "install", "fixture@0.3.0"]);
    let before = e.receipts();
    let size = std::fs::metadata(e.archive("0.4.0")).unwrap().len() as usize;
    server.set("0.4.0-x86_64-unknown-linux-gnu.tar.gz", Behaviour::CloseAfter(size / 2));
    let err = e.fails(&["plugins", "install", "fixture"]);
    assert!(err.contains("bz-fixture-0.4.0") && (err.contains("ended early") || err.contains("download failed after")), "{err}");
    assert_eq!(e.receipts(), before);
    assert_eq!(e.link(), Some(PathBuf::from("store/fixture/0.3.0/libbz_fixture.so")));
    assert_eq!(e.store_versions(), ["0.3.0"]);
    assert!(e.staging_is_empty());
    // An error status is one line too, and the server recovering makes the same command work.
    server.set("0.4.0-x86_64-unknown-linux-gnu.tar.gz", Behaviour::Status(503));
    let err = e.fails(&["plugins", "install", "fixture"]);
    assert!(err.contains("HTTP 503"), "{err}");
    server.clear();
    e.ok(&["plugins", "install", "fixture"]);
    assert_eq!(version_of(&e), "0.4.0");
}

#[test]
fn two_concurrent_installs_take_turns_on_the_lock() {
    let e = Env::new();
    let server = Server::serve_dir(&e.dist());
    e.add_index(&server.url("/"));
    // ~4 MB in 64 KiB chunks, 15 ms apart: the first install holds the lock for about a second.
    server.set("0.3.0-x86_64-unknown-linux-gnu.tar.gz", Behaviour::Throttle { chunk: 64 << 10, pause: Duration::from_millis(15) });
    let env = e.env();
    let env: Vec<(&str, &Path)> = env.iter().map(|(k, v)| (*k, v.as_path())).collect();
    let first = bz_command(e.tmp.path(), &["plugins", "install", "fixture@0.3.0"], &env).spawn().unwrap();
    let archive = "GET /fixture/0.3.0/bz-fixture-0.3.0-x86_64-unknown-linux-gnu.tar.gz";
    let start = Instant::now();
    while !server.requests().iter().any(|r| r == archive) {
        assert!(start.elapsed() < Duration::from_secs(60), "the first install never downloaded");
        std::thread::sleep(Duration::from_millis(10));
    }
    let second = bz_command(e.tmp.path(), &["plugins", "install", "fixture@0.3.0"], &env).spawn().unwrap();
    let a = wait_limited(first, Duration::from_secs(120));
    let b = wait_limited(second, Duration::from_secs(120));
    assert_eq!(a.code, 0, "{}", a.all());
    assert_eq!(b.code, 0, "{}", b.all());
    assert!(a.stdout.contains("installed fixture 0.3.0"), "{}", a.all());
    assert!(b.stderr.contains("waiting for another bz"), "{}", b.all());
    assert!(b.stdout.contains("fixture 0.3.0 is already installed"), "{}", b.all());
    assert_eq!(server.requests().iter().filter(|r| *r == archive).count(), 1);
    assert_eq!(e.store_versions(), ["0.3.0"]);
    assert!(e.staging_is_empty());
    e.ok(&["plugins", "verify"]);
}

#[test]
fn upgrading_while_a_run_uses_the_old_library_leaves_the_run_intact() {
    let e = Env::new();
    e.add_index(e.dist().to_str().unwrap());
    e.ok(&["plugins", "install", "fixture@0.3.0"]);
    // 8 epochs with a 250 ms pause in each: the run is still going when the upgrade is done.
    write_config(e.tmp.path(), "slow.toml", &CONFIG.replace("epochs = 2", "epochs = 8").replace("mode = \"record\"", "mode = \"record\"\ndelay_ms = 250"));
    let env = e.env();
    let env: Vec<(&str, &Path)> = env.iter().map(|(k, v)| (*k, v.as_path())).collect();
    let run = bz_command(e.tmp.path(), &["train", "slow.toml", "--run-name", "slow"], &env).spawn().unwrap();
    let pid = run.id();
    let events = e.path("runs/slow/fixture-events.jsonl");
    wait_for_file(&events, Duration::from_secs(60), "the run never started its plugin");
    let maps = || std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    assert!(maps().contains("store/fixture/0.3.0/libbz_fixture.so"), "the run maps {}", maps());
    let out = e.ok(&["plugins", "install", "fixture"]);
    assert!(out.stdout.contains("installed fixture 0.4.0"), "{}", out.stdout);
    // Still mapped, same file, not replaced underneath.
    let m = maps();
    let lib: Vec<&str> = m.lines().filter(|l| l.contains("libbz_fixture")).collect();
    assert!(!lib.is_empty() && lib.iter().all(|l| l.ends_with("store/fixture/0.3.0/libbz_fixture.so")), "{m}");
    assert!(!read_jsonl_so_far(&events).iter().any(|ev| ev["kind"] == "FINISH"), "the run finished before the upgrade: make it slower");
    let done = wait_limited(run, Duration::from_secs(120));
    assert_eq!(done.code, 0, "{}", done.all());
    let ev = read_jsonl(&events);
    assert_eq!(ev.iter().filter(|v| v["kind"] == "EPOCH_END").count(), 8);
    assert_eq!(ev.last().unwrap()["status"], "completed");
    // The next run gets the new library.
    assert_eq!(version_of(&e), "0.4.0");
    let ev = e.train("after");
    assert_eq!(ev.last().unwrap()["status"], "completed");
}

#[test]
fn hostile_or_broken_archives_are_refused() {
    let e = Env::new();
    let lib = std::fs::read(debug_dir().join("libbz_fixture.so")).unwrap();
    let api = plugin_api_version();
    let manifest = format!("name = \"fixture\"\nversion = \"0.3.0\"\nplugin_api = \"{api}\"\ntarget = \"{TARGET}\"\nlibrary = \"libbz_fixture.so\"\n");
    let work = e.path("work");
    std::fs::create_dir_all(&work).unwrap();
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str, &'a [u8])>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "dotdot.tar.gz",
            vec![("plugin.toml", "file", manifest.as_bytes()), ("libbz_fixture.so", "file", &lib), ("../evil.so", "file", b"x")],
            "points outside the archive",
        ),
        ("abs.tar.gz", vec![("/tmp/evil.so", "file", b"x")], "points outside the archive"),
        (
            "link.tar.gz",
            vec![("plugin.toml", "file", manifest.as_bytes()), ("libbz_fixture.so", "symlink", b"/etc/passwd")],
            "is a symbolic link, not a plain file",
        ),
        ("nomanifest.tar.gz", vec![("libbz_fixture.so", "file", &lib)], "has no plugin.toml"),
        (
            "notalib.tar.gz",
            vec![("plugin.toml", "file", manifest.as_bytes()), ("libbz_fixture.so", "file", b"not an ELF file at all")],
            "the library does not load",
        ),
    ];
    for (name, entries, want) in &cases {
        let archive = python_tarball(&work, name, entries);
        let err = e.fails(&["plugins", "install", archive.to_str().unwrap(), "--allow-unsigned"]);
        assert!(err.contains(want), "{name}: {err}");
        assert!(err.contains("nothing installed"), "{name}: {err}");
        assert_eq!(e.link(), None, "{name}");
        assert!(e.staging_is_empty(), "{name}");
    }
    assert!(!e.plugins().join("evil.so").exists() && !e.path("evil.so").exists());

    // plugin.toml says 0.9.0, the library is 0.3.0: the probe tells.
    let lying =
        python_tarball(&work, "lying.tar.gz", &[("plugin.toml", "file", manifest.replace("0.3.0", "0.9.0").as_bytes()), ("libbz_fixture.so", "file", &lib)]);
    let err = e.fails(&["plugins", "install", lying.to_str().unwrap(), "--allow-unsigned"]);
    assert!(err.contains(&format!("the library is fixture 0.3.0 (plugin_api {api}), plugin.toml says fixture 0.9.0")), "{err}");

    // A local archive needs something to vouch for it.
    let good = e.archive("0.3.0");
    let err = e.fails(&["plugins", "install", good.to_str().unwrap()]);
    assert!(err.contains("--sha256") && err.contains("--allow-unsigned"), "{err}");
    let err = e.fails(&["plugins", "install", good.to_str().unwrap(), "--sha256", &"0".repeat(64)]);
    assert!(err.contains("sha256 is"), "{err}");
    let sha = e.index()["plugins"]["fixture"]["versions"][0]["artifacts"][0]["sha256"].as_str().unwrap().to_string();
    e.ok(&["plugins", "install", good.to_str().unwrap(), "--sha256", &sha]);
    assert_eq!(version_of(&e), "0.3.0");
    // And its signature beside it, with --pubkey.
    let next = e.archive("0.4.0");
    e.ok(&["plugins", "install", next.to_str().unwrap(), "--pubkey", &e.pubkey]);
    assert_eq!(e.receipts()["plugins"]["fixture"]["signed_by"], e.pubkey.as_str());
    assert_eq!(e.receipts()["plugins"]["fixture"]["source"]["kind"], "archive");
}

#[test]
fn verify_finds_a_modified_library_and_a_reinstall_repairs_it() {
    let e = Env::new();
    e.add_index(e.dist().to_str().unwrap());
    e.ok(&["plugins", "install", "fixture@0.3.0"]);
    let lib = e.plugins().join("store/fixture/0.3.0/libbz_fixture.so");
    let mut bytes = std::fs::read(&lib).unwrap();
    bytes.extend_from_slice(b"tampered");
    std::fs::write(&lib, &bytes).unwrap();
    let out = e.bz(&["plugins", "verify"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stdout.contains("FAILED   fixture 0.3.0: MODIFIED"), "{}", out.stdout);
    // An unmanaged file is listed as such.
    std::fs::copy(debug_dir().join("libbz_fixture_next.so"), e.plugins().join("other.so")).unwrap();
    assert!(e.bz(&["plugins", "verify"]).stdout.contains("unmanaged"));
    std::fs::remove_file(e.plugins().join("other.so")).unwrap();
    // A file of the same name put there by hand is not taken over without --force.
    e.ok(&["plugins", "remove", "fixture"]);
    std::fs::copy(debug_dir().join("libbz_fixture.so"), e.plugins().join("fixture.so")).unwrap();
    let err = e.fails(&["plugins", "install", "fixture@0.3.0"]);
    assert!(err.contains("fixture.so exists and was not installed by `bz plugins install`"), "{err}");
    std::fs::rename(e.plugins().join("fixture.so"), e.plugins().join("libbz_fixture.so")).unwrap();
    let err = e.fails(&["plugins", "install", "fixture@0.3.0"]);
    assert!(err.contains("libbz_fixture.so also provides 'fixture'"), "{err}");
    std::fs::rename(e.plugins().join("libbz_fixture.so"), e.plugins().join("fixture.so")).unwrap();
    e.ok(&["plugins", "install", "fixture@0.3.0", "--force"]);
    assert_eq!(e.link(), Some(PathBuf::from("store/fixture/0.3.0/libbz_fixture.so")));
    // Damage it again: installing the same version notices and replaces it.
    std::fs::write(&lib, &bytes).unwrap();
    let out = e.ok(&["plugins", "install", "fixture@0.3.0"]);
    assert!(out.stdout.contains("installed fixture 0.3.0"), "{}", out.stdout);
    e.ok(&["plugins", "verify"]);
}

#[test]
fn configuration_and_network_errors_are_one_line() {
    let e = Env::new();
    let err = e.fails(&["plugins", "install", "fixture"]);
    assert!(err.contains("no plugin index is configured") && err.contains("bz plugins index add"), "{err}");
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let err = e.fails(&["plugins", "install", "fixture", "--index", &format!("http://127.0.0.1:{port}/")]);
    assert!(err.contains(&format!("http://127.0.0.1:{port}/index.json")), "{err}");
    let server = Server::serve_dir(&e.dist());
    let err = e.fails(&["plugins", "install", "fixture", "--index", &server.url("/nothing/")]);
    assert!(err.contains("HTTP 404"), "{err}");
    std::fs::create_dir_all(e.path("home/.bz")).unwrap();
    std::fs::write(e.path("home/.bz/config.toml"), "[[plugin_index]]\nname = \"x\"\nurll = \"http://127.0.0.1/\"\n").unwrap();
    let err = e.fails(&["plugins", "search"]);
    assert!(err.contains(".bz/config.toml:3:1") && err.contains("urll"), "{err}");
    std::fs::write(e.path("home/.bz/config.toml"), "[[plugin_index]]\nname = \"x\"\nurl = \"ftp://127.0.0.1/\"\n").unwrap();
    let err = e.fails(&["plugins", "search"]);
    assert!(err.contains("plugin_index[0] (x): url: unsupported scheme \"ftp\""), "{err}");
    std::fs::write(e.path("home/.bz/config.toml"), "").unwrap();
    let err = e.fails(&["plugins", "index", "add", "k", e.dist().to_str().unwrap(), "--pubkey", "not-a-key"]);
    assert!(err.contains("not a minisign public key"), "{err}");
    std::fs::create_dir_all(e.plugins()).unwrap();
    std::fs::write(e.plugins().join("installed.json"), "{not json").unwrap();
    let err = e.fails(&["plugins", "install", "fixture", "--index", e.dist().to_str().unwrap()]);
    assert!(err.contains("installed.json") && err.contains("move it away"), "{err}");
}

#[test]
fn package_plugins_script_makes_an_index_that_installs() {
    let e = Env::new();
    let out_dir = e.path("pkg-dist");
    let package_plugins = || {
        let child = without_test_env(&mut std::process::Command::new(repo_root().join("scripts/package-plugins")))
            .args(["--debug", "--key", e.path("key.key").to_str().unwrap(), "--out", out_dir.to_str().unwrap(), "tests/fixtures/plugin"])
            .current_dir(repo_root())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let out = wait_limited(child, Duration::from_secs(600));
        assert_eq!(out.code, 0, "{}", out.all());
        (std::fs::read(out_dir.join("index.json")).unwrap(), std::fs::read_to_string(out_dir.join("index.json.minisig")).expect("the script signs the index"))
    };
    let (index, index_sig) = package_plugins();
    let idx: Value = serde_json::from_slice(&index).unwrap();
    assert_eq!((idx["schema"].as_u64(), idx["version"].as_u64()), (Some(2), Some(1)));
    let expires = idx["expires"].as_str().unwrap();
    assert!(index_sig.contains(&format!("trusted comment: bz-index version=1 expires={expires}\n")), "{index_sig}");
    let art = &idx["plugins"]["fixture"]["versions"][0]["artifacts"][0];
    assert_eq!(art["target"], TARGET);
    let art_sig = std::fs::read_to_string(out_dir.join(art["minisig"].as_str().unwrap())).unwrap();
    let comment = format!("trusted comment: bz-plugin name=fixture version=0.3.0 target={TARGET} sha256={}\n", art["sha256"].as_str().unwrap());
    assert!(art_sig.contains(&comment), "{art_sig}");
    // Unchanged sources: the same archive, so no new index version and no new signature.
    assert_eq!(package_plugins(), (index, index_sig));
    let server = Server::serve_dir(&out_dir);
    e.add_index(&server.url("/"));
    e.ok(&["plugins", "install", "fixture"]);
    assert_eq!(version_of(&e), "0.3.0");
    let ev = e.train("packaged");
    assert_eq!(ev.last().unwrap()["status"], "completed");
}

#[test]
fn a_private_index_takes_credentials_from_the_url_or_netrc_and_never_records_them() {
    let e = Env::new();
    let server = Server::serve_dir(&e.dist());
    server.require_basic("alice", "s3cr3t");
    let err = e.fails(&["plugins", "install", "fixture@0.3.0", "--index", &server.url("/"), "--pubkey", &e.pubkey]);
    assert!(err.contains("HTTP 401") && err.contains(".netrc"), "{err}");
    // In the URL: used, and neither printed nor written anywhere.
    let with_user = server.url("/").replace("http://", "http://alice:s3cr3t@");
    let out = e.ok(&["plugins", "install", "fixture@0.3.0", "--index", &with_user, "--pubkey", &e.pubkey]);
    assert!(!out.all().contains("s3cr3t"));
    assert!(!std::fs::read_to_string(e.plugins().join("installed.json")).unwrap().contains("s3cr3t"));
    let wrong = server.url("/").replace("http://", "http://alice:nope@");
    let err = e.fails(&["plugins", "install", "fixture", "--index", &wrong, "--pubkey", &e.pubkey]);
    assert!(err.contains("HTTP 401") && err.contains("refused the credentials") && !err.contains("nope"), "{err}");
    // From ~/.netrc, the way curl and pip read it.
    std::fs::write(e.path("home/.netrc"), "machine 127.0.0.1\n  login alice\n  password s3cr3t\n").unwrap();
    let out = e.ok(&["plugins", "install", "fixture", "--index", &server.url("/"), "--pubkey", &e.pubkey]);
    assert!(out.stdout.contains("installed fixture 0.4.0"), "{}", out.stdout);
}

#[test]
fn a_crate_directory_that_does_not_build_installs_nothing() {
    let e = Env::new();
    let dir = e.path("broken-plugin");
    std::fs::create_dir_all(dir.join("src")).unwrap();
    // An edition cargo does not know: it refuses the manifest at once, before compiling anything.
    std::fs::write(
        dir.join("Cargo.toml"),
        "[package]\nname = \"broken\"\nversion = \"0.1.0\"\nedition = \"1999\"\n[workspace]\n[lib]\ncrate-type = [\"cdylib\"]\n",
    )
    .unwrap();
    std::fs::write(dir.join("src/lib.rs"), "").unwrap();
    let err = e.fails(&["plugins", "install", dir.to_str().unwrap()]);
    assert!(err.contains("cargo build failed") && err.contains("nothing installed"), "{err}");
    assert!(e.staging_is_empty());
    assert_eq!(e.receipts(), Value::Null);
}
