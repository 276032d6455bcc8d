//! What the loader trusts: only plugin names from a config (never paths), only libraries inside the plugin
//! directory, and only files and directories nobody else can write (as ssh treats ~/.ssh).

use bz_e2e::install_env::*;
use bz_e2e::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// The 1-based line of the first line of `text` that contains `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).expect("needle in text") + 1
}

#[test]
fn plugin_sections_and_libraries_are_names_never_paths() {
    let e = Env::new();
    let cases = [
        ("[plugins.\"../x\"]\nmode = \"record\"\n", "[plugins.", "`plugins.\"../x\"`: \"../x\" is not a plugin name"),
        ("[plugins.evil]\nlibrary = \"/tmp/evil\"\n", "library =", "`plugins.evil.library`: \"/tmp/evil\" is not a plugin name"),
        ("[plugins.up]\nlibrary = \"../../lib/x\"\n", "library =", "`plugins.up.library`: \"../../lib/x\" is not a plugin name"),
    ];
    for (section, at, want) in cases {
        let text = format!("{CONFIG}{section}").replace("[plugins.fixture]\nmode = \"record\"\n", "");
        write_config(e.tmp.path(), "bad.toml", &text);
        for cmd in ["validate", "train"] {
            let out = e.bz(&[cmd, "bad.toml"]);
            assert_eq!(out.code, 2, "{cmd} {section}: {}", out.all());
            let line = out.stderr.lines().find(|l| l.starts_with("error: ")).unwrap_or_default();
            assert!(line.contains(&format!("bad.toml:{}:", line_of(&text, at))) && line.contains(want), "{cmd}: {line}");
        }
    }
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn a_plugin_directory_others_can_write_is_refused_with_the_chmod_to_run() {
    let e = Env::new();
    e.add_index(e.dist().to_str().unwrap());
    e.ok(&["plugins", "install", "fixture@0.3.0"]);
    let store_dir = e.plugins().join("store/fixture/0.3.0");
    for (dir, mode) in [(e.plugins(), 0o775), (store_dir.clone(), 0o757), (store_dir.join("libbz_fixture.so"), 0o775)] {
        let before = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        chmod(&dir, mode);
        let out = e.bz(&["train", "c.toml"]);
        assert_ne!(out.code, 0, "{}", out.all());
        let real = std::fs::canonicalize(&dir).unwrap();
        assert!(
            out.stderr.contains(&format!("{} is writable by group or others", real.display()))
                && out.stderr.contains(&format!("run `chmod go-w {}`", real.display())),
            "{}",
            out.stderr
        );
        assert!(!e.path("runs/c").exists(), "nothing may run before the check");
        chmod(&dir, before);
    }
    // Owned by another user (the tests run as root in CI, which may hand a file to anyone; elsewhere skip this).
    let lib = store_dir.join("libbz_fixture.so");
    let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&lib).unwrap());
    if std::os::unix::fs::chown(&lib, Some(54321), None).is_ok() {
        let out = e.bz(&["train", "c.toml"]);
        assert_ne!(out.code, 0, "{}", out.all());
        assert!(out.stderr.contains("is owned by uid 54321, not by you"), "{}", out.stderr);
        std::os::unix::fs::chown(&lib, Some(owner), None).unwrap();
    }
    e.train("fine");
}

#[test]
fn a_library_linked_from_elsewhere_is_held_to_the_same_rule() {
    let e = Env::new();
    let (plugins, build) = (e.path("linked"), e.path("build"));
    for d in [&plugins, &build] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::copy(debug_dir().join("libbz_fixture.so"), build.join("libbz_fixture.so")).unwrap();
    std::os::unix::fs::symlink(build.join("libbz_fixture.so"), plugins.join("fixture.so")).unwrap();
    // A plugin author's link to their own build works…
    let out = e.bz_with(&["train", "c.toml", "--run-name", "linked"], &[("BZ_PLUGIN_DIR", &plugins)]);
    assert_eq!(out.code, 0, "{}", out.all());
    // …and stops working when others can write where it leads.
    chmod(&build, 0o777);
    let out = e.bz_with(&["train", "c.toml", "--run-name", "shared"], &[("BZ_PLUGIN_DIR", &plugins)]);
    assert_ne!(out.code, 0, "{}", out.all());
    let real = std::fs::canonicalize(&build).unwrap();
    assert!(out.stderr.contains(&format!("{} is writable by group or others", real.display())), "{}", out.stderr);
}
