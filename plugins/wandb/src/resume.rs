//! Which W&B run a bz run writes to, and where its history continues.
//!
//! A bz run keeps its W&B run id in `<run dir>/wandb-run-id`, so `bz train --resume` continues the same W&B run
//! (wandb's `resume = "allow"`). `WANDB_RUN_ID` names the id outright and `WANDB_RESUME` (or the `resume` key)
//! chooses wandb's meaning: `allow` continues the run when it exists, `must` fails when it does not, `never`
//! fails when it does (a resumed bz run then starts a new W&B run), and `auto` is `allow` (bz's `--resume` is
//! the "the previous process died" case that wandb's auto detects).
//!
//! W&B never rewrites history under resume: a row at or below the run's last `_step` is ignored ("steps must be
//! monotonically increasing"). So the rows a killed process logged after its last checkpoint stay, and the
//! resumed process, which replays those steps bit for bit, drops its copies: each step is logged once. The last
//! step comes from the run's earlier transaction logs (offline) and from the server (online, `RunResumeStatus`).

use crate::leveldb;
use crate::proto::{self, RecordType};
use prost::Message;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// wandb's `resume` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ResumeMode {
    /// Continue the run when it exists, else create it.
    Allow,
    /// Continue the run; fail when it does not exist.
    Must,
    /// Fail when the run exists.
    Never,
    /// As `allow`.
    Auto,
}

impl ResumeMode {
    /// `WANDB_RESUME` as wandb reads it (`true` is `auto`, `false` is unset).
    pub fn from_env(value: &str) -> Result<Option<ResumeMode>, String> {
        match value {
            "allow" => Ok(Some(ResumeMode::Allow)),
            "must" => Ok(Some(ResumeMode::Must)),
            "never" => Ok(Some(ResumeMode::Never)),
            "auto" | "true" => Ok(Some(ResumeMode::Auto)),
            "false" => Ok(None),
            other => Err(format!("WANDB_RESUME={other:?} is not one of allow, must, never, auto")),
        }
    }
}

/// The file in the bz run directory that holds the W&B run id.
pub const ID_FILE: &str = "wandb-run-id";

/// What decides the run id.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// `bz train --resume`.
    pub bz_resumed: bool,
    /// The id in `wandb-run-id`, if any.
    pub stored: Option<String>,
    /// `WANDB_RUN_ID`.
    pub env_id: Option<String>,
    /// The `resume` key, else `WANDB_RESUME`.
    pub mode: Option<ResumeMode>,
}

/// The run this process writes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub id: String,
    /// Continue an existing run of this id if there is one (the Run record's `resume`, wandb sync's cue).
    pub resume: bool,
    /// Fail when no run of this id exists (`must`) or when one does (`never` with a given id).
    pub must_exist: Option<bool>,
}

/// The id and mode: `WANDB_RUN_ID`, else the stored id for a resumed bz run (unless `never`), else `fresh`.
pub fn decide(i: &Inputs, fresh: impl FnOnce() -> String) -> Identity {
    let mode = i.mode.or(if i.bz_resumed { Some(ResumeMode::Allow) } else { None });
    let reused = match (&i.env_id, mode) {
        (Some(id), _) => Some(id.clone()),
        (None, Some(ResumeMode::Never)) => None,
        (None, _) if i.bz_resumed => i.stored.clone(),
        (None, _) => None,
    };
    let must_exist = match mode {
        Some(ResumeMode::Must) => Some(true),
        Some(ResumeMode::Never) if reused.is_some() => Some(false),
        _ => None,
    };
    let resume = reused.is_some() && matches!(mode, Some(ResumeMode::Allow | ResumeMode::Must | ResumeMode::Auto));
    Identity { id: reused.unwrap_or_else(fresh), resume, must_exist }
}

/// The id stored in a bz run directory (8 to 64 characters of `[a-z0-9_-]`, else ignored).
pub fn read_id(run_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(run_dir.join(ID_FILE)).ok()?;
    let id = text.trim();
    let ok = (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    ok.then(|| id.to_string())
}

/// Writes the id through a temporary file and a rename, so a crash leaves the old id or the new one.
pub fn write_id(run_dir: &Path, id: &str) -> std::io::Result<()> {
    let tmp = run_dir.join(format!(".{ID_FILE}.tmp"));
    std::fs::write(&tmp, format!("{id}\n"))?;
    std::fs::rename(&tmp, run_dir.join(ID_FILE))
}

/// The earlier transaction logs of run `id` under a `wandb/` folder: `*-<id>/run-<id>.wandb`.
pub fn earlier_logs(root: &Path, id: &str) -> Vec<PathBuf> {
    let suffix = format!("-{id}");
    let mut logs: Vec<PathBuf> = std::fs::read_dir(root)
        .map(|d| d.flatten().map(|e| e.path()).filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().ends_with(&suffix))).collect())
        .unwrap_or_default();
    logs.retain(|d| d.join(format!("run-{id}.wandb")).is_file());
    logs.sort();
    logs.into_iter().map(|d| d.join(format!("run-{id}.wandb"))).collect()
}

/// Transaction logs larger than this are not scanned for their last step (a run logging every step for
/// millions of steps): the plugin then trusts the server or logs every step again.
const MAX_LOG_BYTES: u64 = 1 << 30;

/// The highest history step in these transaction logs, read up to any damage.
pub fn last_step(logs: &[PathBuf]) -> Option<u64> {
    let mut last = None;
    for log in logs {
        for bytes in leveldb::read_records(log, MAX_LOG_BYTES).unwrap_or_default() {
            if let Ok(proto::Record { record_type: Some(RecordType::History(h)), .. }) = proto::Record::decode(&bytes[..]) {
                let step = h.step.map_or(0, |s| s.num.max(0) as u64);
                last = last.max(Some(step));
            }
        }
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(i: Inputs) -> Identity {
        decide(&i, || "fresh123".into())
    }

    #[test]
    fn the_id_and_mode_follow_wandbs_meanings() {
        let stored = Some("abc12345".to_string());
        // A fresh bz run: a fresh W&B run, nothing to reconcile.
        assert_eq!(id(Inputs::default()), Identity { id: "fresh123".into(), resume: false, must_exist: None });
        // bz --resume: the stored id, allow.
        let resumed = Inputs { bz_resumed: true, stored: stored.clone(), ..Inputs::default() };
        assert_eq!(id(resumed.clone()), Identity { id: "abc12345".into(), resume: true, must_exist: None });
        // A resumed bz run whose directory has no id (W&B was added later): a new run.
        assert_eq!(id(Inputs { stored: None, ..resumed.clone() }).id, "fresh123");
        assert!(!id(Inputs { stored: None, ..resumed.clone() }).resume);
        // must: the run has to exist; never: a resumed bz run starts a new W&B run.
        assert_eq!(id(Inputs { mode: Some(ResumeMode::Must), ..resumed.clone() }).must_exist, Some(true));
        assert_eq!(id(Inputs { mode: Some(ResumeMode::Never), ..resumed.clone() }), Identity { id: "fresh123".into(), resume: false, must_exist: None });
        assert!(id(Inputs { mode: Some(ResumeMode::Auto), ..resumed.clone() }).resume);
        // WANDB_RUN_ID wins; with never it must not exist yet.
        let env = Inputs { env_id: Some("given".into()), ..Inputs::default() };
        assert_eq!(id(env.clone()), Identity { id: "given".into(), resume: false, must_exist: None });
        assert!(id(Inputs { mode: Some(ResumeMode::Allow), ..env.clone() }).resume);
        assert_eq!(id(Inputs { mode: Some(ResumeMode::Never), ..env }).must_exist, Some(false));
        // must without any id: nothing can exist, which start() reports.
        assert_eq!(id(Inputs { mode: Some(ResumeMode::Must), ..Inputs::default() }).must_exist, Some(true));
    }

    #[test]
    fn wandb_resume_values() {
        assert_eq!(ResumeMode::from_env("must"), Ok(Some(ResumeMode::Must)));
        assert_eq!(ResumeMode::from_env("true"), Ok(Some(ResumeMode::Auto)));
        assert_eq!(ResumeMode::from_env("false"), Ok(None));
        assert!(ResumeMode::from_env("sometimes").unwrap_err().contains("WANDB_RESUME=\"sometimes\""));
    }

    #[test]
    fn the_id_file_round_trips_and_junk_is_ignored() {
        let dir = std::env::temp_dir().join(format!("bz-wandb-id-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(read_id(&dir), None);
        write_id(&dir, "abc12345").unwrap();
        assert_eq!(read_id(&dir).as_deref(), Some("abc12345"));
        std::fs::write(dir.join(ID_FILE), "../../etc\n").unwrap();
        assert_eq!(read_id(&dir), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
