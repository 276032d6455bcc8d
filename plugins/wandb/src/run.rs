//! One W&B run on disk: `wandb/offline-run-<UTC time>-<id>/run-<id>.wandb` (online runs: `run-…`) plus `files/`,
//! written record by record and flushed at every epoch, as the wandb client lays it out, so that the real
//! `wandb sync` uploads it and `wandb leet inspect` reads it.

use crate::leveldb::LogWriter;
use crate::proto::{self, Item, RecordType};
use crate::values;
use prost::Message;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// What the Run record says.
#[derive(Debug, Clone, Default)]
pub struct RunInfo {
    pub id: String,
    pub entity: String,
    pub project: String,
    pub name: String,
    pub group: String,
    pub job_type: String,
    pub notes: String,
    pub tags: Vec<String>,
    pub host: String,
    /// The run's configuration, nested (`{"optimizer": {"lr": 0.01}, …}`).
    pub config: serde_json::Map<String, Value>,
    pub starting_step: u64,
    /// Continue an existing run of this id (see `resume`).
    pub resume: bool,
}

/// One finished history row: the JSON line for `wandb-history.jsonl` and the whole summary after it.
pub struct Row {
    pub history: String,
    pub summary: String,
}

pub struct Run {
    pub dir: PathBuf,
    pub info: RunInfo,
    log: LogWriter,
    num: i64,
    started: Instant,
    started_at: SystemTime,
    summary: Vec<(String, String)>,
    output: Vec<String>,
    pending: Option<(u64, Vec<(String, String)>)>,
    last_step: Option<u64>,
}

fn timestamp(t: SystemTime) -> proto::Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    proto::Timestamp { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 }
}

/// `YYYYMMDD_HHMMSS` in UTC, as in wandb's run directory names.
pub fn utc_stamp(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).format("%Y%m%d_%H%M%S").to_string()
}

/// `YYYY-MM-DDTHH:MM:SS.ffffff` in UTC, the prefix wandb gives console lines in `output.log`.
pub fn iso_micros(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
}

impl Run {
    /// Creates the run directory under `root` (a `wandb/` folder) and writes the header, run and environment
    /// records.
    pub fn create(root: &Path, info: RunInfo, online: bool) -> std::io::Result<Run> {
        let started_at = SystemTime::now();
        let prefix = if online { "run" } else { "offline-run" };
        // A resumed run's next process can start within the same second as the last one ended: the next free
        // second keeps both directories (wandb sync orders them by the Run record's start time).
        let name = |s: u64| format!("{prefix}-{}-{}", utc_stamp(started_at + std::time::Duration::from_secs(s)), info.id);
        let free = (0..100)
            .map(name)
            .find(|n| !root.join(n).exists())
            .ok_or_else(|| std::io::Error::other("100 run directories of this id start in the same second"))?;
        let dir = root.join(free);
        std::fs::create_dir_all(dir.join("files"))?;
        let log = LogWriter::create(&dir.join(format!("run-{}.wandb", info.id)))?;
        let mut run =
            Run { dir, info, log, num: 0, started: Instant::now(), started_at, summary: Vec::new(), output: Vec::new(), pending: None, last_step: None };
        run.record(RecordType::Header(proto::HeaderRecord {
            version_info: Some(proto::VersionInfo { producer: format!("bz-wandb {}", env!("CARGO_PKG_VERSION")), min_consumer: "0.70.0".into() }),
        }))?;
        let i = &run.info;
        let config = proto::ConfigRecord { update: i.config.iter().map(|(k, v)| Item::new(k, values::json(v))).collect() };
        let record = proto::RunRecord {
            run_id: i.id.clone(),
            entity: i.entity.clone(),
            project: i.project.clone(),
            config: Some(config),
            run_group: i.group.clone(),
            job_type: i.job_type.clone(),
            display_name: i.name.clone(),
            notes: i.notes.clone(),
            tags: i.tags.clone(),
            host: i.host.clone(),
            starting_step: i.starting_step as i64,
            start_time: Some(timestamp(started_at)),
            resumed: false,
            resume: i.resume,
        };
        run.record(RecordType::Run(record))?;
        let env = proto::EnvironmentRecord {
            os: format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH),
            started_at: Some(timestamp(started_at)),
            args: std::env::args().skip(1).collect::<Vec<_>>().join(" "),
            program: "bz".into(),
            root: std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default(),
            host: run.info.host.clone(),
            executable: std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_default(),
            cpu_count: std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1),
            cpu_count_logical: std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1),
        };
        run.record(RecordType::Environment(env))?;
        run.log.flush()?;
        Ok(run)
    }

    /// Rows at or below `step` are dropped: the run already has them (see `resume`).
    pub fn continue_after(&mut self, step: Option<u64>) {
        self.last_step = self.last_step.max(step);
    }

    /// The summary a resumed run already has on the server; this run's values go over it.
    pub fn seed_summary(&mut self, summary: Option<&serde_json::Map<String, Value>>) {
        for (k, v) in summary.into_iter().flatten().filter(|(k, _)| !k.starts_with("_wandb")) {
            if !self.summary.iter().any(|(sk, _)| sk == k) {
                self.summary.push((k.clone(), values::json(v)));
            }
        }
    }

    pub fn wandb_file(&self) -> PathBuf {
        self.dir.join(format!("run-{}.wandb", self.info.id))
    }

    fn record(&mut self, record_type: RecordType) -> std::io::Result<()> {
        self.num += 1;
        let bytes = proto::Record { num: self.num, record_type: Some(record_type) }.encode_to_vec();
        self.log.write_record(&bytes)
    }

    pub fn runtime(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Adds values at `step`; values at the same step go into one history row (wandb needs `_step` to grow).
    pub fn log(&mut self, step: u64, items: Vec<(String, String)>) -> std::io::Result<Option<Row>> {
        let done = match &mut self.pending {
            Some((s, row)) if *s == step => {
                for (k, v) in items {
                    match row.iter_mut().find(|(rk, _)| *rk == k) {
                        Some(slot) => slot.1 = v,
                        None => row.push((k, v)),
                    }
                }
                return Ok(None);
            }
            _ => self.commit()?,
        };
        self.pending = Some((step, items));
        Ok(done)
    }

    /// Writes the pending row as a summary update and a history record.
    pub fn commit(&mut self) -> std::io::Result<Option<Row>> {
        let Some((step, mut items)) = self.pending.take() else { return Ok(None) };
        if self.last_step.is_some_and(|l| step <= l) {
            // A step at or before one already written (a resumed run repeating a step): wandb would drop it.
            return Ok(None);
        }
        self.last_step = Some(step);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
        items.push(("_step".into(), step.to_string()));
        items.push(("_runtime".into(), values::number(self.runtime())));
        items.push(("_timestamp".into(), values::number(now)));
        for (k, v) in &items {
            match self.summary.iter_mut().find(|(sk, _)| sk == k) {
                Some(slot) => slot.1 = v.clone(),
                None => self.summary.push((k.clone(), v.clone())),
            }
        }
        let to_items = |items: &[(String, String)]| items.iter().map(|(k, v)| Item::new(k, v.clone())).collect::<Vec<_>>();
        self.record(RecordType::Summary(proto::SummaryRecord { update: to_items(&items) }))?;
        self.record(RecordType::History(proto::HistoryRecord { item: to_items(&items), step: Some(proto::HistoryStep { num: step as i64 }) }))?;
        Ok(Some(Row { history: values::object(&items), summary: values::object(&self.summary) }))
    }

    /// A console line (the epoch summary bz prints), uploaded as `output.log`.
    pub fn output(&mut self, line: &str) -> std::io::Result<()> {
        self.output.push(line.to_string());
        self.record(RecordType::OutputRaw(proto::OutputRawRecord { output_type: 1, timestamp: Some(timestamp(SystemTime::now())), line: format!("{line}\n") }))
    }

    /// A system-metrics sample as a Stats record; returns its `wandb-events.jsonl` line (keys `system.…`,
    /// `_wandb`, `_timestamp`, `_runtime`, as wandb-core streams them).
    pub fn stats(&mut self, sample: &crate::stats::Sample) -> std::io::Result<String> {
        let item = sample.items.iter().map(|(k, v)| proto::StatsItem { key: k.clone(), value_json: values::number(*v) }).collect();
        self.record(RecordType::Stats(proto::StatsRecord { stats_type: 0, timestamp: Some(timestamp(sample.at)), item }))?;
        let at = sample.at.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
        let runtime = sample.at.duration_since(self.started_at).map(|d| d.as_secs_f64()).unwrap_or(0.0);
        let mut line: Vec<(String, String)> = sample.items.iter().map(|(k, v)| (format!("system.{k}"), values::number(*v))).collect();
        line.push(("_wandb".into(), "true".into()));
        line.push(("_timestamp".into(), values::number(at)));
        line.push(("_runtime".into(), values::number(runtime)));
        Ok(values::object(&line))
    }

    /// An artifact version, as the wandb client records `run.log_artifact` (type "model").
    pub fn artifact(&mut self, a: &crate::artifact::Artifact) -> std::io::Result<()> {
        let contents = a
            .entries
            .iter()
            .map(|e| proto::ArtifactManifestEntry {
                path: e.path.clone(),
                digest: e.digest.clone(),
                size: e.size as i64,
                local_path: e.local_path.display().to_string(),
            })
            .collect();
        let manifest = proto::ArtifactManifest {
            version: 1,
            storage_policy: "wandb-storage-policy-v1".into(),
            storage_policy_config: vec![proto::StoragePolicyConfigItem { key: "storageLayout".into(), value_json: "\"V2\"".into() }],
            contents,
        };
        let record = proto::ArtifactRecord {
            run_id: self.info.id.clone(),
            project: self.info.project.clone(),
            entity: String::new(),
            r#type: "model".into(),
            name: a.name.clone(),
            digest: a.digest.clone(),
            metadata: a.metadata.clone(),
            aliases: a.aliases.clone(),
            manifest: Some(manifest),
            finalize: true,
            client_id: a.client_id.clone(),
            sequence_client_id: a.sequence_client_id.clone(),
            digest_algorithm: "MANIFEST_MD5".into(),
        };
        self.record(RecordType::Artifact(record))?;
        self.log.flush()
    }

    /// Extra summary values (not history), e.g. the best value.
    pub fn summarize(&mut self, items: Vec<(String, String)>) -> std::io::Result<()> {
        for (k, v) in &items {
            match self.summary.iter_mut().find(|(sk, _)| sk == k) {
                Some(slot) => slot.1 = v.clone(),
                None => self.summary.push((k.clone(), v.clone())),
            }
        }
        self.record(RecordType::Summary(proto::SummaryRecord { update: items.into_iter().map(|(k, v)| Item::new(&k, v)).collect() }))
    }

    pub fn summary_json(&self) -> String {
        values::object(&self.summary)
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.log.flush()
    }

    /// The exit record (a non-zero code makes W&B show the run as failed), then `files/`.
    pub fn finish(&mut self, exit_code: i32) -> std::io::Result<()> {
        self.commit()?;
        let runtime = self.runtime() as i32;
        self.record(RecordType::Exit(proto::RunExitRecord { exit_code, runtime }))?;
        self.log.flush()?;
        self.write_files()
    }

    /// `files/`: config.yaml, wandb-summary.json, wandb-metadata.json and output.log, as the wandb client
    /// leaves them (`wandb sync` regenerates the first three from the records when it uploads).
    pub fn write_files(&self) -> std::io::Result<()> {
        let files = self.dir.join("files");
        let mut yaml = String::new();
        // JSON is YAML: each value in flow style under `value:`, the layout of wandb's config.yaml.
        for (k, v) in &self.info.config {
            yaml.push_str(&format!("{}:\n  value: {}\n", values::json(&Value::String(k.clone())), values::json(v)));
        }
        std::fs::write(files.join("config.yaml"), yaml)?;
        std::fs::write(files.join("wandb-summary.json"), self.summary_json())?;
        let start = timestamp(self.started_at);
        let meta = serde_json::json!({
            "os": format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH),
            "host": self.info.host,
            "program": "bz",
            "args": std::env::args().skip(1).collect::<Vec<_>>(),
            "startedAt": format!("{}", start.seconds),
            "executable": std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_default(),
        });
        std::fs::write(files.join("wandb-metadata.json"), serde_json::to_string_pretty(&meta).unwrap_or_default())?;
        let mut out = self.output.join("\n");
        out.push('\n');
        std::fs::write(files.join("output.log"), out)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_stamps() {
        use std::time::{Duration, UNIX_EPOCH};
        assert_eq!(super::utc_stamp(UNIX_EPOCH), "19700101_000000");
        // 2026-11-24 19:43:39 UTC
        assert_eq!(super::utc_stamp(UNIX_EPOCH + Duration::from_secs(1_795_549_419)), "20261124_194339");
        assert_eq!(super::iso_micros(UNIX_EPOCH + Duration::from_micros(1_795_549_419_000_042)), "2026-11-24T19:43:39.000042");
    }
}
