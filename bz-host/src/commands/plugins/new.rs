//! Scaffolding a plugin crate that builds as is.

use super::inspect::api_major;
use crate::commands::exit::Status;
use anyhow::{bail, Context, Result};
use bz_host::plugins::{loader, BUILTINS};
use std::path::{Path, PathBuf};

pub fn new(name: &str, path: Option<PathBuf>) -> Result<Status> {
    if !loader::is_name(name) {
        bail!("plugin name {name:?}: use lower-case letters, digits, '-' and '_'");
    }
    if BUILTINS.iter().any(|(n, _)| *n == name) {
        bail!("{name:?} is a built-in plugin's name; choose another");
    }
    let dir = path.unwrap_or_else(|| PathBuf::from(format!("bz-plugin-{name}")));
    if dir.exists() {
        bail!("{} already exists; choose another --path", dir.display());
    }
    // Inside a bz checkout the scaffold uses the checkout's bz-plugin-api; elsewhere the published crate.
    let local_api = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bz-plugin-api");
    let api_dep = match std::fs::canonicalize(&local_api) {
        Ok(p) => format!("{{ path = {:?} }}", p.display().to_string()),
        Err(_) => format!("\"{}\"", api_major(bz_plugin_api::API_VERSION)),
    };
    let crate_name = format!("bz_{}", name.replace('-', "_"));
    let cargo = format!(
        "[package]\nname = \"{crate_name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n# A standalone crate, even when created inside another workspace.\n[workspace]\n\n[lib]\ncrate-type = [\"cdylib\", \"rlib\"]\n\n[dependencies]\nbz-plugin-api = {api_dep}\nserde = {{ version = \"1\", features = [\"derive\"] }}\nserde_json = \"1\"\nschemars = \"1\"\n"
    );
    let lib = template().replace("PLUGIN_NAME", name);
    std::fs::create_dir_all(dir.join("src")).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(dir.join("Cargo.toml"), cargo)?;
    std::fs::write(dir.join("src/lib.rs"), lib)?;
    std::fs::write(dir.join(".gitignore"), "/target\n")?;
    println!(
        "created {} · build and install it with `bz plugins install {}` (cargo build --release, then into {})",
        dir.display(),
        dir.display(),
        loader::plugin_dir(None).display()
    );
    Ok(Status::Success)
}

/// bz-plugin-api's `scaffold` example, which builds and runs its test with that crate: the one copy of the text.
const EXAMPLE: &str = include_str!("../../../../bz-plugin-api/examples/scaffold.rs");

/// The scaffold's `src/lib.rs`: [`EXAMPLE`] less what only an example needs (its note on itself in the crate docs,
/// and its empty `main` with the comment above it).
fn template() -> String {
    let mut kept: Vec<&str> = Vec::new();
    let (mut in_note, mut after_main) = (false, false);
    for line in EXAMPLE.lines() {
        if line.starts_with("//! (") {
            in_note = true;
            if kept.last() == Some(&"//!") {
                kept.pop();
            }
        }
        if in_note {
            in_note = !line.ends_with(".)");
        } else if line == "fn main() {}" {
            while kept.last().is_some_and(|l| l.starts_with("// ")) {
                kept.pop();
            }
            after_main = true;
        } else if after_main && line.is_empty() {
            after_main = false;
        } else {
            kept.push(line);
        }
    }
    kept.join("\n") + "\n"
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_template_is_the_example_without_what_only_an_example_needs() {
        let t = super::template();
        assert!(t.starts_with("//! The PLUGIN_NAME plugin for bz: logs the validation loss each epoch and stops below `target`.\n\nuse "), "{t}");
        assert!(!t.contains("fn main") && !t.contains("example"), "{t}");
        assert!(
            t.contains("const CONFIG: ConfigType = ConfigType::of::<Config>();") && t.contains("\n}\n\nexport_plugin!(ThisPlugin);\n\n#[cfg(test)]"),
            "{t}"
        );
    }
}
