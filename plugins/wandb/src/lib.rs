//! The `wandb` plugin for bz: Weights & Biases runs, offline first, synced by the real wandb.
//!
//! ```toml
//! [plugins.wandb]
//! project = "digits"          # default: WANDB_PROJECT, else "bz"
//! entity = "my-team"          # default: WANDB_ENTITY, else the key's default entity
//! name = "baseline"           # default: the bz run name
//! tags = ["mlp"]              # default: WANDB_TAGS (comma-separated)
//! notes = "first try"
//! group = "sweep-1"           # default: WANDB_RUN_GROUP (a `bz tune` study groups its trials)
//! job_type = "train"
//! mode = "offline"            # offline | online | disabled; default: online when an API key is found, else offline
//! base_url = "https://api.wandb.ai"   # default: WANDB_BASE_URL; self-hosted servers
//! dir = "."                   # where `wandb/` goes; default: WANDB_DIR, else the run directory
//! log_every_n_steps = 10      # train/batch_loss every N steps (0: off)
//! retries = 7                 # online: retries per request (back-off 0.5 s, doubling, at most 30 s)
//! stats_every_s = 15          # system metrics (CPU %, RSS, memory) every N seconds, as wandb; 0: off
//! log_model = "best"          # best | last | all: checkpoints as versions of the `model-<run id>` artifact
//! resume = "allow"            # allow | must | never | auto; default: WANDB_RESUME, else allow under --resume
//! ```
//!
//! Offline, the run is `wandb/offline-run-<time>-<id>/` exactly as the wandb client writes it (`run-<id>.wandb` with
//! Run, Config, History, Summary and Exit records, and `files/`); `wandb sync` uploads it. Online, the same
//! directory is written and the records are streamed as they come from a background thread; a network failure
//! never stops training, and the directory is left for `wandb sync`. A failed or interrupted run gets its exit
//! code (W&B shows it as failed), never "finished".

pub mod artifact;
pub mod leveldb;
pub mod online;
pub mod proto;
pub mod resume;
pub mod run;
pub mod stats;
pub mod values;

use artifact::LogModel;
use bz_plugin_api::config::{self, ConfigType, PluginConfig};
use bz_plugin_api::payload::{CheckpointSaved, EpochEnd, EventPayload, RunEnd, RunStart};
use bz_plugin_api::{export_plugin, log, Callback, Directive, Event, EventKind, Host, Level, Plugin, PluginError, RunStatus};
use online::{Endpoint, Msg, Online};
use resume::ResumeMode;
use run::{Run, RunInfo};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `[plugins.wandb]`. Unset keys fall back to wandb's environment variables, as the wandb client does.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Default: WANDB_PROJECT, else "bz".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// Default: WANDB_ENTITY, else the key's default entity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entity: Option<String>,
    /// Default: the bz run name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Default: WANDB_TAGS (comma-separated).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// Default: WANDB_NOTES.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    /// Default: WANDB_RUN_GROUP (a `bz tune` study groups its trials).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Default: WANDB_JOB_TYPE.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_type: Option<String>,
    /// Default: WANDB_MODE, else online when an API key is found, else offline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// Default: WANDB_BASE_URL, else https://api.wandb.ai; for self-hosted servers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// Where `wandb/` goes. Default: WANDB_DIR, else the run directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
    /// Default: WANDB_RESUME, else "allow" for `bz train --resume` (the run id is in `<run dir>/wandb-run-id`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resume: Option<ResumeMode>,
    /// `train/batch_loss` every N steps; 0 turns it off.
    pub log_every_n_steps: u64,
    /// Online: retries per request (back-off 0.5 s, doubling, at most 30 s).
    pub retries: u64,
    /// System metrics (CPU, RSS, memory) every N seconds, as wandb samples them; 0 turns them off.
    pub stats_every_s: f64,
    /// Checkpoints as versions of the `model-<run id>` artifact: "best", "last" or "all"; default off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_model: Option<LogModel>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            project: None,
            entity: None,
            name: None,
            tags: None,
            notes: None,
            group: None,
            job_type: None,
            mode: None,
            base_url: None,
            dir: None,
            resume: None,
            log_every_n_steps: 10,
            retries: 7,
            stats_every_s: 15.0,
            log_model: None,
        }
    }
}

impl PluginConfig for Config {
    fn check(&self) -> Result<(), PluginError> {
        let strings = [
            ("project", &self.project),
            ("entity", &self.entity),
            ("name", &self.name),
            ("notes", &self.notes),
            ("group", &self.group),
            ("job_type", &self.job_type),
            ("dir", &self.dir),
        ];
        if let Some((key, _)) = strings.iter().find(|(_, v)| v.as_deref() == Some("")) {
            return Err(config::key_error(key, "must be a non-empty string"));
        }
        if let Some(url) = self.base_url.as_deref().filter(|u| !u.starts_with("http://") && !u.starts_with("https://")) {
            return Err(config::key_error("base_url", format!("{url:?} must be an http:// or https:// URL")));
        }
        if !(self.stats_every_s == 0.0 || (self.stats_every_s >= 0.1 && self.stats_every_s <= 86_400.0)) {
            return Err(config::key_error("stats_every_s", format!("{} must be 0 (off) or between 0.1 and 86400 seconds", self.stats_every_s)));
        }
        if self.resume.is_none() {
            resume_mode(self)?;
        }
        if mode(self) == Mode::Online && api_key(&base_url(self)).is_none() {
            return Err(config::key_error("mode", format!("\"online\" needs an API key for {}: set WANDB_API_KEY or run `wandb login`", base_url(self))));
        }
        Ok(())
    }
}

/// Where a run goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Files that `wandb sync` uploads.
    Offline,
    /// The same files, streamed to the server as they are written.
    Online,
    /// No run at all.
    Disabled,
}

fn env(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.is_empty())
}

/// The API key as wandb finds it: WANDB_API_KEY, else `~/.netrc`'s entry for the server's host.
fn api_key(base_url: &str) -> Option<String> {
    if let Some(k) = env("WANDB_API_KEY") {
        return Some(k);
    }
    let host = base_url.split("://").nth(1)?.split(['/', ':']).next()?.to_string();
    let netrc = env("NETRC").map(PathBuf::from).or_else(|| env("HOME").map(|h| Path::new(&h).join(".netrc")))?;
    let file = std::fs::File::open(netrc).ok()?;
    let parsed = netrc::Netrc::parse(std::io::BufReader::new(file)).ok()?;
    parsed.hosts.into_iter().find(|(h, _)| *h == host).and_then(|(_, m)| m.password)
}

fn base_url(cfg: &Config) -> String {
    cfg.base_url.clone().or_else(|| env("WANDB_BASE_URL")).unwrap_or_else(|| "https://api.wandb.ai".into())
}

/// `mode` as configured, else WANDB_MODE, else online when a key is found.
fn mode(cfg: &Config) -> Mode {
    let from_env = || match env("WANDB_MODE").as_deref() {
        Some("online") => Some(Mode::Online),
        Some("offline") => Some(Mode::Offline),
        Some("disabled") => Some(Mode::Disabled),
        // wandb's older names ("dryrun", "run") and anything else: not online, as before.
        Some(_) => Some(Mode::Offline),
        None => None,
    };
    cfg.mode.or_else(from_env).unwrap_or_else(|| if api_key(&base_url(cfg)).is_some() { Mode::Online } else { Mode::Offline })
}

/// 8 characters of [a-z0-9], like wandb's run ids.
fn run_id() -> String {
    let mut bytes = [0u8; 8];
    let ok = std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes)).is_ok();
    if !ok {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0) ^ std::process::id() as u128;
        bytes = (t as u64).to_le_bytes();
    }
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    bytes.iter().map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char).collect()
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "localhost".into())
}

/// The resolved bz config (TOML) as nested JSON, the W&B config.
fn config_from_toml(text: &str) -> serde_json::Map<String, Value> {
    match toml::from_str::<toml::Table>(text) {
        Ok(t) => match serde_json::to_value(t) {
            Ok(Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        },
        Err(_) => serde_json::Map::new(),
    }
}

/// What a resumed W&B run already holds.
#[derive(Default)]
struct Earlier {
    last_step: Option<u64>,
    server: Option<online::ServerRun>,
}

/// The `resume` key, else `WANDB_RESUME`.
fn resume_mode(cfg: &Config) -> Result<Option<ResumeMode>, PluginError> {
    match (cfg.resume, env("WANDB_RESUME")) {
        (Some(m), _) => Ok(Some(m)),
        (None, Some(v)) => ResumeMode::from_env(&v).map_err(PluginError::config),
        (None, None) => Ok(None),
    }
}

struct WandbRun {
    cfg: Config,
    run: Option<Run>,
    online: Option<Online>,
    sampler: Option<stats::Sampler>,
    /// The checkpoint this epoch saved, until EPOCH_END brings its metrics (and, for `last`, until the end).
    checkpoint: Option<Pending>,
    /// Artifact versions logged so far, for staging folder names.
    artifacts: u32,
    ended: bool,
}

/// A checkpoint waiting to become an artifact version.
struct Pending {
    path: PathBuf,
    is_best: bool,
    metadata: serde_json::Map<String, Value>,
}

fn io(dir: &Path, e: std::io::Error) -> PluginError {
    PluginError::new(PluginError::IO, format!("{}: {e}", dir.display()))
}

impl WandbRun {
    fn start(&mut self, e: &Event<'_>) -> Result<(), PluginError> {
        let p = RunStart::from_event(e).unwrap_or_default();
        let cfg = &self.cfg;
        let run_dir = PathBuf::from(if p.run_dir.is_empty() { "." } else { &p.run_dir });
        let root = cfg.dir.as_ref().map(PathBuf::from).or_else(|| env("WANDB_DIR").map(PathBuf::from)).unwrap_or(run_dir.clone()).join("wandb");
        let inputs = resume::Inputs { bz_resumed: p.resumed, stored: resume::read_id(&run_dir), env_id: env("WANDB_RUN_ID"), mode: resume_mode(cfg)? };
        let identity = resume::decide(&inputs, run_id);
        let info = self.run_info(&p, &identity, e.global_step);
        let online = mode(cfg) == Mode::Online;
        let endpoint = if online { Some(self.endpoint()?) } else { None };
        let before = self.earlier_state(&root, &identity, &info, endpoint.as_ref())?;
        let mut run = Run::create(&root, info.clone(), online).map_err(|err| io(&root, err))?;
        if identity.resume {
            run.continue_after(before.last_step);
            run.seed_summary(before.server.as_ref().map(|s| &s.summary));
        }
        resume::write_id(&run_dir, &info.id).map_err(|err| io(&run_dir, err))?;
        if let Some(ep) = endpoint {
            self.online = Some(Online::start(ep, info, before.server.as_ref().filter(|_| identity.resume)));
        }
        if self.cfg.stats_every_s > 0.0 {
            self.sampler = Some(stats::Sampler::start(Duration::from_secs_f64(self.cfg.stats_every_s)));
        }
        let how =
            if identity.resume { format!(", continuing after step {}", before.last_step.map_or("none".into(), |s| s.to_string())) } else { String::new() };
        log!(Level::Info, "{} run {} in {}{how}", if online { "online" } else { "offline" }, run.info.id, run.dir.display());
        self.run = Some(run);
        Ok(())
    }

    fn run_info(&self, p: &RunStart, identity: &resume::Identity, step: u64) -> RunInfo {
        let cfg = &self.cfg;
        let s = |v: &Option<String>, env_key: &str| v.clone().or_else(|| env(env_key)).unwrap_or_default();
        let tags: Vec<String> = match &cfg.tags {
            Some(tags) => tags.clone(),
            None => env("WANDB_TAGS").map(|t| t.split(',').map(|x| x.trim().to_string()).filter(|x| !x.is_empty()).collect()).unwrap_or_default(),
        };
        let mut config = config_from_toml(&p.config);
        config.insert("bz".into(), json!({ "run_name": p.run_name, "params": p.params, "device": p.device, "seed": p.seed, "resumed": p.resumed }));
        RunInfo {
            id: identity.id.clone(),
            entity: s(&cfg.entity, "WANDB_ENTITY"),
            project: cfg.project.clone().or_else(|| env("WANDB_PROJECT")).unwrap_or_else(|| "bz".into()),
            name: cfg.name.clone().or_else(|| p.run_name.clone()).unwrap_or_else(|| "bz".into()),
            group: s(&cfg.group, "WANDB_RUN_GROUP"),
            job_type: s(&cfg.job_type, "WANDB_JOB_TYPE"),
            notes: s(&cfg.notes, "WANDB_NOTES"),
            tags,
            host: hostname(),
            config,
            starting_step: step,
            resume: identity.resume,
        }
    }

    fn endpoint(&self) -> Result<Endpoint, PluginError> {
        let base = base_url(&self.cfg);
        let key = api_key(&base).ok_or_else(|| PluginError::config("mode = \"online\" needs an API key: set WANDB_API_KEY or run `wandb login`"))?;
        let attempts = u32::try_from(self.cfg.retries).unwrap_or(u32::MAX).saturating_add(1);
        Ok(Endpoint { base_url: base, api_key: key, interval: Duration::from_secs(2), attempts, backoff: Duration::from_millis(500) })
    }

    /// What the run already has (earlier transaction logs here; online, the server), and the `must`/`never`
    /// checks against it: one line naming the run and what to do when they fail.
    fn earlier_state(&self, root: &Path, identity: &resume::Identity, info: &RunInfo, ep: Option<&Endpoint>) -> Result<Earlier, PluginError> {
        if !identity.resume && identity.must_exist.is_none() {
            return Ok(Earlier::default());
        }
        let logs = resume::earlier_logs(root, &identity.id);
        let server = match ep {
            None => None,
            Some(ep) => match online::resume_status(ep, info) {
                Ok(s) => s,
                Err(why) if identity.must_exist.is_some() => {
                    return Err(PluginError::new(PluginError::IO, format!("cannot tell whether W&B run {} exists: {why}", identity.id)))
                }
                Err(why) => {
                    log!(Level::Warn, "cannot ask W&B where run {} stands ({why}); continuing after the local logs", identity.id);
                    None
                }
            },
        };
        let exists = if ep.is_some() { server.is_some() } else { !logs.is_empty() };
        let where_ = if ep.is_some() { format!("on {}", base_url(&self.cfg)) } else { format!("in {}", root.display()) };
        match identity.must_exist {
            Some(true) if !exists => {
                return Err(PluginError::config(format!(
                "resume = \"must\" (WANDB_RESUME): there is no W&B run {} {where_} to resume; set WANDB_RUN_ID to an existing run or use resume = \"allow\"",
                identity.id
            )))
            }
            Some(false) if exists => {
                return Err(PluginError::config(format!(
                    "resume = \"never\" (WANDB_RESUME): W&B run {} already exists {where_}; unset WANDB_RUN_ID for a new run or use resume = \"allow\"",
                    identity.id
                )))
            }
            _ => {}
        }
        let last_step = resume::last_step(&logs).max(server.as_ref().and_then(|s| s.last_step));
        Ok(Earlier { last_step, server })
    }

    fn log(&mut self, step: u64, items: Vec<(String, String)>, commit: bool) -> Result<(), PluginError> {
        let Some(run) = self.run.as_mut() else { return Ok(()) };
        let dir = run.dir.clone();
        let mut rows = Vec::new();
        rows.extend(run.log(step, items).map_err(|e| io(&dir, e))?);
        if commit {
            rows.extend(run.commit().map_err(|e| io(&dir, e))?);
        }
        if !rows.is_empty() {
            // Every row reaches the file as the wandb client writes it: what a killed run logged is there to sync.
            run.flush().map_err(|e| io(&dir, e))?;
        }
        if let Some(o) = &self.online {
            for r in rows {
                o.send(Msg::Row(r));
            }
        }
        Ok(())
    }

    /// The system-metrics samples taken since the last event, as Stats records (and online, events lines).
    fn write_stats(&mut self, samples: Vec<stats::Sample>) -> Result<(), PluginError> {
        let Some(run) = self.run.as_mut() else { return Ok(()) };
        if samples.is_empty() {
            return Ok(());
        }
        let dir = run.dir.clone();
        for s in &samples {
            let line = run.stats(s).map_err(|e| io(&dir, e))?;
            if let Some(o) = &self.online {
                o.send(Msg::Event(line));
            }
        }
        run.flush().map_err(|e| io(&dir, e))
    }

    fn epoch_end(&mut self, e: &Event<'_>) -> Result<(), PluginError> {
        let s = EpochEnd::from_event(e).unwrap_or_default().summary;
        let mut items: Vec<(String, String)> = e.split_metrics().map(|(key, v)| (key, values::number(v))).collect();
        items.push(("epoch".into(), e.epoch.to_string()));
        for (name, v) in [("lr", s.lr), ("time/epoch_s", s.epoch_time_s), ("time/samples_per_s", s.samples_per_s)] {
            items.push((name.into(), values::number(v)));
        }
        let line = format!("epoch {} · {}", e.epoch, e.split_metrics().map(|(key, v)| format!("{key} {v:.4}")).collect::<Vec<_>>().join(" · "));
        self.log(e.global_step, items, true)?;
        if let Some(run) = self.run.as_mut() {
            let dir = run.dir.clone();
            run.output(&line).map_err(|err| io(&dir, err))?;
            run.flush().map_err(|err| io(&dir, err))?;
        }
        if let Some(o) = &self.online {
            o.send(Msg::Output(format!("{} {line}", run::iso_micros(std::time::SystemTime::now()))));
        }
        if let Some(p) = self.checkpoint.as_mut() {
            p.metadata = e.split_metrics().map(|(k, v)| (k, json!(v))).collect();
            p.metadata.insert("epoch".into(), json!(e.epoch));
            p.metadata.insert("step".into(), json!(e.global_step));
        }
        let now = match self.cfg.log_model {
            Some(LogModel::All) => true,
            Some(LogModel::Best) => self.checkpoint.as_ref().is_some_and(|p| p.is_best),
            _ => false,
        };
        if now {
            if let Some(p) = self.checkpoint.take() {
                self.log_artifact(&p)?;
            }
        }
        Ok(())
    }

    /// A checkpoint as the next version of `model-<run id>`: staged, described, recorded (and queued online).
    /// A checkpoint that cannot be staged (gone, or a file over the size bound) is skipped with a warning.
    fn log_artifact(&mut self, p: &Pending) -> Result<(), PluginError> {
        let Some(run) = self.run.as_mut() else { return Ok(()) };
        let name = format!("model-{}", run.info.id);
        let staging = run.dir.join("artifacts").join(format!("{name}-{}", self.artifacts));
        let entries = match artifact::stage(&p.path, &staging) {
            Ok(e) => e,
            Err(why) => {
                log!(Level::Warn, "checkpoint {} not logged as an artifact: {why}", p.path.display());
                return Ok(());
            }
        };
        self.artifacts += 1;
        // The wandb client keeps aliases in a set (any order); sorted here.
        let aliases: Vec<String> = if p.is_best { vec!["best".into(), "latest".into()] } else { vec!["latest".into()] };
        let a = artifact::Artifact {
            name,
            aliases,
            metadata: Value::Object(p.metadata.clone()).to_string(),
            digest: artifact::manifest_digest(&entries),
            entries,
            client_id: artifact::client_id(),
            sequence_client_id: artifact::client_id(),
        };
        let dir = run.dir.clone();
        run.artifact(&a).map_err(|e| io(&dir, e))?;
        if let Some(o) = &self.online {
            o.send(Msg::Artifact(a));
        }
        Ok(())
    }

    /// Exit record, files, and the end of the upload; once.
    /// `summary`: values only the run summary gets (`best`, the test split's metrics).
    fn end(&mut self, exit_code: i32, summary: Vec<(String, f64)>) -> Result<(), PluginError> {
        if self.ended {
            return Ok(());
        }
        self.ended = true;
        let rest = self.sampler.take().map(|mut s| s.stop()).unwrap_or_default();
        self.write_stats(rest)?;
        if self.cfg.log_model == Some(LogModel::Last) {
            if let Some(p) = self.checkpoint.take() {
                self.log_artifact(&p)?;
            }
        }
        let Some(mut run) = self.run.take() else { return Ok(()) };
        let dir = run.dir.clone();
        // The pending row first (it goes online too), then the summary-only values after it.
        let last = run.commit().map_err(|e| io(&dir, e))?;
        if !summary.is_empty() {
            run.summarize(summary.into_iter().map(|(k, v)| (k, values::number(v))).collect()).map_err(|e| io(&dir, e))?;
        }
        run.finish(exit_code).map_err(|e| io(&dir, e))?;
        let Some(mut online) = self.online.take() else {
            log!(Level::Info, "offline run saved in {}: upload it with `wandb sync {}`", dir.display(), dir.display());
            return Ok(());
        };
        if let Some(r) = last {
            online.send(Msg::Row(r));
        }
        online.send(Msg::Summary(run.summary_json()));
        let files =
            ["config.yaml", "wandb-summary.json", "wandb-metadata.json", "output.log"].iter().map(|n| (n.to_string(), dir.join("files").join(n))).collect();
        match online.finish(exit_code, files, Duration::from_secs(180)) {
            Ok(url) => log!(Level::Info, "synced {url}"),
            Err(why) => {
                // Named offline-run-… so that `wandb sync` picks it up.
                let offline = dir.with_file_name(format!("offline-{}", dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()));
                let kept = if std::fs::rename(&dir, &offline).is_ok() { offline } else { dir };
                log!(Level::Warn, "upload to W&B failed ({why}); the run is saved in {}: upload it with `wandb sync {}`", kept.display(), kept.display());
            }
        }
        Ok(())
    }
}

impl Callback for WandbRun {
    fn subscriptions(&self) -> Vec<EventKind> {
        let mut k = vec![EventKind::RUN_START, EventKind::EPOCH_END, EventKind::RUN_END];
        if self.cfg.log_every_n_steps > 0 {
            k.push(EventKind::TRAIN_BATCH_END);
        }
        if self.cfg.log_model.is_some() {
            k.push(EventKind::CHECKPOINT_SAVED);
        }
        k
    }

    fn on_event(&mut self, e: &Event<'_>) -> Result<Directive, PluginError> {
        let samples = self.sampler.as_ref().map(|s| s.drain()).unwrap_or_default();
        self.write_stats(samples)?;
        match e.kind {
            EventKind::RUN_START => self.start(e)?,
            EventKind::TRAIN_BATCH_END if e.global_step.is_multiple_of(self.cfg.log_every_n_steps.max(1)) => {
                if let Some(loss) = e.metric("train", "loss") {
                    self.log(e.global_step, vec![("train/batch_loss".into(), values::number(loss))], false)?;
                }
            }
            EventKind::CHECKPOINT_SAVED => {
                if let Some(c) = CheckpointSaved::from_event(e) {
                    let metadata = serde_json::Map::from_iter([("step".to_string(), json!(e.global_step))]);
                    self.checkpoint = Some(Pending { path: PathBuf::from(c.path), is_best: c.is_best, metadata });
                }
            }
            EventKind::EPOCH_END => self.epoch_end(e)?,
            EventKind::RUN_END => {
                let (code, best) = RunEnd::from_event(e).map_or((0, None), |end| (end.exit_code, end.best));
                // The test split's metrics come with RUN_END, after the last logged row: summary only.
                let mut summary: Vec<(String, f64)> = best.map(|b| ("best".to_string(), b)).into_iter().collect();
                summary.extend(e.split_metrics());
                self.end(code, summary)?;
            }
            _ => {}
        }
        Ok(Directive::NONE)
    }

    fn finish(&mut self, status: RunStatus) -> Result<(), PluginError> {
        let code = match status {
            RunStatus::FAILED => 1,
            RunStatus::INTERRUPTED => 130,
            _ => 0,
        };
        self.end(code, Vec::new())
    }
}

pub struct WandbPlugin;

impl Plugin for WandbPlugin {
    const NAME: &'static str = "wandb";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "Weights & Biases runs: offline files `wandb sync` uploads, or online streaming";

    const CONFIG: ConfigType = ConfigType::of::<Config>();

    fn create_callback(_host: Host, config: Value) -> Result<Option<Box<dyn Callback>>, PluginError> {
        let cfg = Config::parse(&config)?;
        if mode(&cfg) == Mode::Disabled {
            return Ok(None);
        }
        Ok(Some(Box::new(WandbRun { cfg, run: None, online: None, sampler: None, checkpoint: None, artifacts: 0, ended: false })))
    }
}

export_plugin!(WandbPlugin);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_errors_name_the_key() {
        let err = |v: Value| WandbPlugin::validate_config(&v).unwrap_err().message.to_string();
        assert!(err(json!({ "mode": "sometimes" })).starts_with("`mode`: unknown value `sometimes`"));
        assert!(err(json!({ "projct": "x" })).starts_with("`projct`: unknown key; did you mean `project`?"));
        assert_eq!(err(json!({ "tags": "a" })), "`tags`: invalid type: string \"a\", expected a list");
        assert_eq!(err(json!({ "group": "" })), "`group`: must be a non-empty string");
        assert_eq!(err(json!({ "base_url": "ftp://x" })), "`base_url`: \"ftp://x\" must be an http:// or https:// URL");
        assert!(err(json!({ "retries": 1.5 })).starts_with("`retries`: invalid type: floating point"));
        assert_eq!(WandbPlugin::validate_config(&json!({ "mode": "offline", "project": "p" })).unwrap()["project"], "p");
    }

    #[test]
    fn defaults_and_schema_are_as_documented() {
        assert_eq!(WandbPlugin::default_config(), json!({ "log_every_n_steps": 10, "retries": 7, "stats_every_s": 15.0 }));
        let schema = WandbPlugin::config_schema();
        assert_eq!(schema["additionalProperties"], false);
        assert_eq!(schema["properties"].as_object().unwrap().len(), 15);
        assert!(schema.to_string().contains("\"disabled\""), "{schema}");
    }

    #[test]
    fn the_key_comes_from_netrc_for_the_servers_host() {
        let dir = std::env::temp_dir().join(format!("bz-wandb-netrc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let netrc = dir.join("netrc");
        std::fs::write(&netrc, "machine example.org\n  login user\n  password other\nmachine api.wandb.ai\n  login user\n  password k123\n").unwrap();
        // Env is process-wide: this is the only test that sets these.
        std::env::remove_var("WANDB_API_KEY");
        std::env::set_var("NETRC", &netrc);
        assert_eq!(api_key("https://api.wandb.ai").as_deref(), Some("k123"));
        assert_eq!(api_key("http://example.org:8080/").as_deref(), Some("other"));
        assert_eq!(api_key("https://nowhere.invalid"), None);
        std::env::remove_var("NETRC");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn run_ids_look_like_wandbs() {
        let id = run_id();
        assert_eq!(id.len(), 8);
        assert!(id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
    }
}
