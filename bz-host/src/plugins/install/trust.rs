//! What bz remembers of every signed index it has trusted, so that a signature alone is not enough (in the
//! spirit of TUF): the highest index version seen (an older one is a rollback), and the key that signs it now
//! (after a rotation, the retired key is refused). Kept in `<plugin dir>/trust.json`, keyed by the key the user
//! configured for the index, so a mirror at another URL is held to the same history.

use super::InstallError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One index series, as last trusted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Seen {
    /// The highest `version` of a verified index.
    pub version: u64,
    /// The key that signs the index now: the configured one, or the last key it rotated to.
    pub key: String,
    /// Where it was last read (redacted) and when, for messages.
    pub url: String,
    pub seen_at: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    schema: u32,
    /// Configured key (base64 line) → what was seen.
    indexes: BTreeMap<String, Seen>,
}

/// The trust state of one plugin directory. Changes are kept in memory until [`Trust::save`], which commands
/// call under the plugin directory's lock.
pub struct Trust {
    path: PathBuf,
    state: State,
    dirty: bool,
}

impl Trust {
    pub fn load(plugin_dir: &Path) -> Result<Trust, InstallError> {
        let path = plugin_dir.join("trust.json");
        let damaged = |reason: String| InstallError::Receipts { path: path.clone(), reason };
        let state = match std::fs::read_to_string(&path) {
            Ok(text) => {
                let s: State = serde_json::from_str(&text).map_err(|e| damaged(e.to_string()))?;
                if s.schema != 1 {
                    return Err(damaged(format!("schema {} is newer than this bz understands (1); update bz", s.schema)));
                }
                s
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State { schema: 1, indexes: BTreeMap::new() },
            Err(e) => return Err(InstallError::io(&path, e)),
        };
        Ok(Trust { path, state, dirty: false })
    }

    /// What was seen of the index series the configured key `root` names.
    pub fn seen(&self, root: &str) -> Option<&Seen> {
        self.state.indexes.get(root)
    }

    pub fn record(&mut self, root: &str, seen: Seen) {
        if self.state.indexes.get(root) != Some(&seen) {
            self.state.indexes.insert(root.to_string(), seen);
            self.dirty = true;
        }
    }

    /// Writes the state when it changed. Its directory must exist (the plugin directory's lock made it).
    pub fn save(&mut self) -> Result<(), InstallError> {
        if !self.dirty {
            return Ok(());
        }
        let mut text = serde_json::to_string_pretty(&self.state).map_err(|e| InstallError::Receipts { path: self.path.clone(), reason: e.to_string() })?;
        text.push('\n');
        crate::atomic::write(&self.path, text.as_bytes()).map_err(|e| InstallError::io(&self.path, e))?;
        self.dirty = false;
        Ok(())
    }
}
