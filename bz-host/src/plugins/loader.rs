//! Finding and loading plugin libraries, with one line (and a remedy) for every way that can fail.
//!
//! Libraries are loaded with `lib_header_from_path` + `init_root_module`, never `RootModule::load_from_file`,
//! which caches one module per interface type and would hand every later plugin the first one's functions.
//! Libraries are never unloaded (abi_stable's design); upgrades install a new file and rename it into place.

use bz_plugin_api::abi_stable::library::{lib_header_from_path, LibHeader, LibraryError};
use bz_plugin_api::{BzPluginMod_Ref, PluginMetadata};
use std::path::{Path, PathBuf};

/// Where plugins live: `--plugin-dir`, else `BZ_PLUGIN_DIR`, else `~/.bz/plugins`.
pub fn plugin_dir(cli: Option<&Path>) -> PathBuf {
    if let Some(d) = cli {
        return d.to_path_buf();
    }
    if let Some(d) = std::env::var_os("BZ_PLUGIN_DIR") {
        return PathBuf::from(d);
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".bz/plugins")).unwrap_or_else(|| PathBuf::from(".bz/plugins"))
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("plugin '{name}' is not installed: none of {looked} in {dir} (install it with `bz plugins install {name}`, or set --plugin-dir / BZ_PLUGIN_DIR)")]
    NotFound { name: String, dir: PathBuf, looked: String },
    #[error("plugin '{name}' is claimed by two files, {} and {}: remove one", a.display(), b.display())]
    Ambiguous { name: String, a: PathBuf, b: PathBuf },
    #[error("plugin '{name}': {} is not a loadable shared library ({reason}); reinstall it with `bz plugins install {name} --force`", path.display())]
    NotLibrary { name: String, path: PathBuf, reason: String },
    #[error("plugin '{name}': {} needs a symbol this system does not provide ({reason}); rebuild the plugin for this platform", path.display())]
    MissingSymbol { name: String, path: PathBuf, reason: String },
    #[error("plugin '{name}': {} is not a bz plugin (no plugin header); remove it or move it out of the plugin directory", path.display())]
    NotPlugin { name: String, path: PathBuf },
    #[error("plugin '{name}': {} was built with another abi_stable ({found}); rebuild it against bz-plugin-api {}", path.display(), bz_plugin_api::API_VERSION)]
    OtherAbiStable { name: String, path: PathBuf, found: String },
    #[error("plugin '{name}': {} was built for bz-plugin-api {found}; this bz speaks {}.x: install a compatible build (`bz plugins install {name}`)", path.display(), api_major())]
    ApiMajor { name: String, path: PathBuf, found: String },
    #[error("plugin '{name}': {} does not match this bz's plugin interface (bz-plugin-api {}); rebuild or update the plugin (run with -v for the layout report)", path.display(), bz_plugin_api::API_VERSION)]
    Layout { name: String, path: PathBuf, detail: String },
    #[error("plugin '{name}': {} failed to start: {reason}", path.display())]
    Constructor { name: String, path: PathBuf, reason: String },
    #[error("plugin '{name}': {} is the plugin '{found}'; rename the file or fix the config", path.display())]
    WrongName { name: String, path: PathBuf, found: String },
    #[error("plugin '{name}': {} is writable by group or others, so another user could replace the code bz runs: run `chmod go-w {}`", path.display(), path.display())]
    Writable { name: String, path: PathBuf },
    #[error("plugin '{name}': {} is owned by uid {owner}, not by you (uid {me}), who could replace the code bz runs: run `chown {me} {}` if you trust it, or remove it", path.display(), path.display())]
    Owner { name: String, path: PathBuf, owner: u32, me: u32 },
}

impl LoadError {
    /// The long report behind `-v` (abi_stable's layout dump), if there is one.
    pub fn detail(&self) -> Option<&str> {
        match self {
            LoadError::Layout { detail, .. } => Some(detail),
            _ => None,
        }
    }
}

fn api_major() -> &'static str {
    bz_plugin_api::API_VERSION.split('.').next().unwrap_or("1")
}

/// Whether `s` is a plugin name: lower-case letters, digits, `-` and `_`. Names are all that ever reach the plugin
/// directory: a path (`../x`, `/tmp/evil`) can never be one.
pub fn is_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// The file names that may hold plugin `name`: what the installer writes (`name.so`) and what cargo builds.
fn candidates(name: &str) -> [String; 4] {
    let snake = name.replace('-', "_");
    [format!("{name}.so"), format!("lib{snake}.so"), format!("libbz_{snake}.so"), format!("libbz_plugin_{snake}.so")]
}

/// Finds plugin `name` in `dir`; two different files claiming it is an error.
pub fn find(dir: &Path, name: &str) -> Result<PathBuf, LoadError> {
    let mut found: Vec<PathBuf> = Vec::new();
    for c in candidates(name) {
        let p = dir.join(&c);
        if p.exists() {
            let real = std::fs::canonicalize(&p).unwrap_or_else(|_| p.clone());
            if !found.iter().any(|f| std::fs::canonicalize(f).map(|r| r == real).unwrap_or(false)) {
                found.push(p);
            }
        }
    }
    match found.len() {
        0 => Err(LoadError::NotFound { name: name.into(), dir: dir.into(), looked: candidates(name).join(", ") }),
        1 => {
            let path = found.remove(0);
            check_trusted(dir, &path, name)?;
            Ok(path)
        }
        _ => Err(LoadError::Ambiguous { name: name.into(), a: found[0].clone(), b: found[1].clone() }),
    }
}

/// As ssh does with `~/.ssh`: the plugin directory, the library and every directory from the plugin directory
/// down to it may not be writable by group or others, or owned by another user (root excepted), since any of
/// them could swap the code bz is about to run. A link the directory's owner put there may lead elsewhere (a
/// plugin author's own build); then the file it leads to and the directory holding it are held to the same rule.
fn check_trusted(dir: &Path, path: &Path, name: &str) -> Result<(), LoadError> {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mut checked = vec![dir.clone()];
    match real.strip_prefix(&dir) {
        Ok(inside) => {
            let mut at = dir.clone();
            for c in inside.components() {
                at.push(c);
                checked.push(at.clone());
            }
        }
        Err(_) => checked.extend(real.parent().map(Path::to_path_buf).into_iter().chain([real.clone()])),
    }
    checked.iter().try_for_each(|p| check_owner_and_mode(p, name))
}

fn check_owner_and_mode(path: &Path, name: &str) -> Result<(), LoadError> {
    use std::os::unix::fs::MetadataExt;
    let Ok(m) = std::fs::metadata(path) else {
        return Ok(());
    };
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if m.uid() != me && m.uid() != 0 {
        return Err(LoadError::Owner { name: name.into(), path: path.into(), owner: m.uid(), me });
    }
    // A sticky directory (/tmp) lets others add files but not replace ours; it is still refused, as ssh does.
    if m.mode() & 0o022 != 0 {
        return Err(LoadError::Writable { name: name.into(), path: path.into() });
    }
    Ok(())
}

/// A loaded plugin library.
pub struct Library {
    pub name: String,
    pub path: PathBuf,
    pub module: BzPluginMod_Ref,
    pub metadata: Metadata,
}

/// Plugin metadata as plain Rust values.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Metadata {
    pub name: String,
    pub version: String,
    pub description: String,
    pub kinds: Vec<String>,
    pub api_version: String,
}

impl From<PluginMetadata> for Metadata {
    fn from(m: PluginMetadata) -> Metadata {
        let mut kinds = Vec::new();
        if m.kinds & PluginMetadata::CALLBACK != 0 {
            kinds.push("callback".to_string());
        }
        if m.kinds & PluginMetadata::TUNER != 0 {
            kinds.push("tuner".to_string());
        }
        Metadata { name: m.name.into(), version: m.version.into(), description: m.description.into(), kinds, api_version: m.api_version.into() }
    }
}

/// Refuses files that `dlopen` would map but that are not whole ELF libraries: a truncated library maps its
/// segments past the end of the file, and the first touch of them kills the process with SIGBUS instead of
/// returning an error.
fn check_elf(path: &Path, name: &str) -> Result<(), LoadError> {
    use object::{Object, ObjectSegment};
    let not_library = |reason: String| LoadError::NotLibrary { name: name.into(), path: path.into(), reason };
    let data = std::fs::read(path).map_err(|e| not_library(e.to_string()))?;
    let file = object::File::parse(&*data).map_err(|e| {
        if data.starts_with(b"\x7fELF") {
            not_library(format!("truncated or damaged: {e}"))
        } else {
            not_library("not an ELF file".into())
        }
    })?;
    for segment in file.segments() {
        let (offset, size) = segment.file_range();
        if offset.saturating_add(size) > data.len() as u64 {
            return Err(not_library(format!("truncated: {} bytes, but its segments need {}", data.len(), offset + size)));
        }
    }
    Ok(())
}

/// abi_stable opens libraries with lazy binding, so a function no library provides would fail only when first
/// called — fatally, in the middle of a run. Opening it first with every symbol bound turns that into a load
/// error. The handle is kept (libraries are never unloaded), so abi_stable's own open gets the same mapping.
fn bind_now(path: &Path, name: &str) -> Result<(), LoadError> {
    use libloading::os::unix::{Library as RawLib, RTLD_LOCAL, RTLD_NOW};
    // SAFETY: loading runs the library's initialisers; plugins are trusted code the user installed.
    match unsafe { RawLib::open(Some(path), RTLD_NOW | RTLD_LOCAL) } {
        Ok(lib) => {
            std::mem::forget(lib);
            Ok(())
        }
        Err(e) => Err(open_error(name, path, &e.to_string())),
    }
}

fn open_error(name: &str, path: &Path, message: &str) -> LoadError {
    let reason = first_line(message);
    let short = reason.rsplit(": ").next().unwrap_or(&reason).to_string();
    if reason.contains("undefined symbol") {
        LoadError::MissingSymbol { name: name.into(), path: path.into(), reason: format!("undefined symbol {short}") }
    } else {
        LoadError::NotLibrary { name: name.into(), path: path.into(), reason: short }
    }
}

/// Loads and checks the library at `path` that should be plugin `name`.
pub fn load(path: &Path, name: &str) -> Result<Library, LoadError> {
    // Every step opens the link's target, never the link: `bz plugins install` may swap the link meanwhile, and
    // the check, the bound open and abi_stable's open must all see the same (immutable) store file.
    let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    check_elf(&real, name)?;
    bind_now(&real, name)?;
    let header = lib_header_from_path(&real).map_err(|e| classify(name, path, e))?;
    let module = init_module(header, name, path)?;
    let metadata: Metadata = (module.metadata())().into();
    if super::api_compatible(&metadata.api_version).is_err() {
        return Err(LoadError::ApiMajor { name: name.into(), path: path.into(), found: metadata.api_version });
    }
    if metadata.name != name {
        return Err(LoadError::WrongName { name: name.into(), path: path.into(), found: metadata.name });
    }
    Ok(Library { name: name.into(), path: path.into(), module, metadata })
}

/// The root module, layout-checked. abi_stable accepts a library whose interface is as new as the host's or
/// newer, never older: a plugin built against bz-plugin-api 1.2 lacks the vtable entries that 1.3 added after
/// a `last_prefix_field` (`TunerFfi::tell_json`), and abi_stable refuses it as "too many fields". Exactly that
/// difference is safe, since abi_stable's prefix types carry their own field count, so the accessor of a missing
/// entry returns `None` and the trait object calls the method's default, which the interface crate wrote for
/// this. Any other difference is still refused.
fn init_module(header: &'static LibHeader, name: &str, path: &Path) -> Result<BzPluginMod_Ref, LoadError> {
    match header.init_root_module::<BzPluginMod_Ref>() {
        Err(LibraryError::AbiInstability(_)) if older_minor_of_this_interface(header) => {
            // SAFETY: the layouts differ only by entries missing at the end of bz-plugin-api's own prefix types
            // (checked just above), which abi_stable's accessors handle at run time.
            unsafe { header.init_root_module_with_unchecked_layout::<BzPluginMod_Ref>() }.map_err(|e| classify(name, path, e))
        }
        r => r.map_err(|e| classify(name, path, e)),
    }
}

/// Whether every layout difference between this bz's interface and the library's is a prefix type of
/// bz-plugin-api that has fewer trailing fields in the library (an older 1.x that lacks later methods).
fn older_minor_of_this_interface(header: &LibHeader) -> bool {
    use bz_plugin_api::abi_stable::abi_stability::abi_checking::{check_layout_compatibility, AbiInstability};
    use bz_plugin_api::abi_stable::type_layout::{TLData, TLFieldOrFunction};
    use bz_plugin_api::abi_stable::StableAbi;
    let Some(found) = header.layout() else { return false };
    let Err(errors) = check_layout_compatibility(<BzPluginMod_Ref as StableAbi>::LAYOUT, found) else { return false };
    // abi_stable also lists each enclosing type, with no error of its own, on the way to the one that differs.
    errors.errors.iter().any(|e| !e.errs.is_empty())
        && errors.errors.iter().filter(|e| !e.errs.is_empty()).all(|e| {
            let layout = match e.stack_trace.last().map(|ef| &ef.expected) {
                Some(TLFieldOrFunction::Field(f)) => f.layout(),
                Some(TLFieldOrFunction::Function(_)) => return false,
                None => errors.interface,
            };
            let ours = layout.package().as_str() == "bz-plugin-api" && matches!(layout.data(), TLData::PrefixType(_));
            ours && e.errs.iter().all(|x| match x {
                AbiInstability::FieldCountMismatch(ef) | AbiInstability::Size(ef) => ef.expected > ef.found,
                _ => false,
            })
        })
}

fn classify(name: &str, path: &Path, e: LibraryError) -> LoadError {
    let (name, path) = (name.to_string(), path.to_path_buf());
    match e {
        LibraryError::OpenError { err, .. } => open_error(&name, &path, &err.to_string()),
        LibraryError::GetSymbolError { .. } => LoadError::NotPlugin { name, path },
        LibraryError::InvalidAbiHeader(h) => LoadError::OtherAbiStable { name, path, found: format!("abi_stable ABI {}.{}", h.abi_major, h.abi_minor) },
        LibraryError::InvalidCAbi { .. } => LoadError::OtherAbiStable { name, path, found: "a different C ABI".into() },
        LibraryError::IncompatibleVersionNumber { actual_version, .. } => LoadError::ApiMajor { name, path, found: actual_version.to_string() },
        LibraryError::ParseVersionError(e) => LoadError::ApiMajor { name, path, found: format!("an unreadable version ({e})") },
        LibraryError::AbiInstability(e) => {
            let detail = e.to_string();
            // abi_stable reports a different interface *version* as a layout error; say so plainly.
            match detail.split("incompatible package versions").nth(1) {
                Some(rest) => {
                    let found = rest.split("Found:").nth(1).map(|f| first_line(f).trim().to_string()).unwrap_or_else(|| "another version".into());
                    LoadError::ApiMajor { name, path, found }
                }
                None => LoadError::Layout { name, path, detail },
            }
        }
        LibraryError::RootModule { err, .. } => LoadError::Constructor { name, path, reason: first_line(&err.to_string()) },
        LibraryError::Many(errs) => match errs.into_iter().next() {
            Some(e) => classify(&name, &path, e),
            None => LoadError::Layout { name, path, detail: "unknown error".into() },
        },
    }
}

fn first_line(s: &str) -> String {
    s.trim().lines().next().unwrap_or("").trim().to_string()
}
