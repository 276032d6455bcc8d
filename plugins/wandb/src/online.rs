//! Online mode: the run is created with GraphQL `UpsertBucket`, history, summary and console lines are streamed
//! to `file_stream` in batches from a background thread, files are uploaded through `CreateRunFiles`, and the
//! last `file_stream` request marks the run complete with its exit code — the requests the wandb client makes.
//! Every request is retried with exponential back-off; when the server stays unreachable the thread gives up,
//! training goes on, and the run directory (which always holds the whole transaction log) is left for
//! `wandb sync`.

use crate::run::{Row, RunInfo};
use base64::Engine;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const UPSERT_BUCKET: &str = "mutation UpsertBucket($id: String, $name: String, $project: String, $entity: String, $groupName: String, $description: String, $displayName: String, $notes: String, $commit: String, $config: JSONString, $host: String, $debug: Boolean, $program: String, $repo: String, $jobType: String, $state: String, $sweep: String, $tags: [String!], $summaryMetrics: JSONString) { upsertBucket(input: {id: $id, name: $name, groupName: $groupName, modelName: $project, entityName: $entity, description: $description, displayName: $displayName, notes: $notes, config: $config, commit: $commit, host: $host, debug: $debug, jobProgram: $program, jobRepo: $repo, jobType: $jobType, state: $state, sweep: $sweep, tags: $tags, summaryMetrics: $summaryMetrics}) { bucket { id name displayName description config sweepName project { id name entity { id name } } historyLineCount } inserted } }";
const RUN_RESUME_STATUS: &str = "query RunResumeStatus($project: String, $entity: String, $name: String!) { model(name: $project, entityName: $entity) { id name entity { id name } bucket(name: $name, missingOk: true) { id name summaryMetrics displayName logLineCount historyLineCount eventsLineCount historyTail eventsTail config tags notes wandbConfig(keys: [\"t\"]) } } }";
const CREATE_RUN_FILES: &str = "mutation CreateRunFiles($entity: String!, $project: String!, $run: String!, $files: [String!]!) { createRunFiles(input: {entityName: $entity, projectName: $project, runName: $run, files: $files}) { runID uploadHeaders files { name uploadUrl } } }";

const CREATE_ARTIFACT: &str = "mutation CreateArtifact($input: CreateArtifactInput!) { createArtifact(input: $input) { artifact { id state artifactSequence { latestArtifact { id } } } } }";
const CREATE_ARTIFACT_MANIFEST: &str = "mutation CreateArtifactManifest($artifactID: ID!, $baseArtifactID: ID, $name: String!, $digest: String!, $entityName: String!, $projectName: String!, $runName: String!, $manifestType: ArtifactManifestType!, $includeUpload: Boolean!) { createArtifactManifest(input: {artifactID: $artifactID, baseArtifactID: $baseArtifactID, name: $name, digest: $digest, entityName: $entityName, projectName: $projectName, runName: $runName, type: $manifestType}) { artifactManifest { id file { id uploadUrl @include(if: $includeUpload) uploadHeaders @include(if: $includeUpload) } } } }";
const CREATE_ARTIFACT_FILES: &str = "mutation CreateArtifactFiles($input: CreateArtifactFilesInput!) { createArtifactFiles(input: $input) { files { edges { node { storagePath uploadUrl uploadHeaders uploadMultipartUrls { uploadID uploadUrlParts { partNumber uploadUrl } } artifact { id } } } } } }";
const COMMIT_ARTIFACT: &str = "mutation CommitArtifact($artifactID: ID!) { commitArtifact(input: {artifactID: $artifactID}) { artifact { id digest } } }";

/// Where and as whom.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub base_url: String,
    pub api_key: String,
    /// Pause between `file_stream` batches.
    pub interval: Duration,
    /// Attempts per request before giving up, and the first back-off (doubling, at most 30 s).
    pub attempts: u32,
    pub backoff: Duration,
}

/// Where an existing run stands on the server (`RunResumeStatus`): the stream continues at these offsets.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServerRun {
    pub history_lines: u64,
    pub log_lines: u64,
    pub events_lines: u64,
    /// `_step` of the last history line.
    pub last_step: Option<u64>,
    pub summary: serde_json::Map<String, Value>,
}

/// Reads the `RunResumeStatus` answer as wandb-core does: a run exists when its bucket is there and its
/// `wandbConfig` has the `t` key (a run that was only created ahead of time, as a sweep does, has not started).
pub fn server_run(data: &Value) -> Option<ServerRun> {
    let bucket = data["model"]["bucket"].as_object()?;
    let wandb_config: Value = serde_json::from_str(bucket.get("wandbConfig")?.as_str()?).ok()?;
    wandb_config.get("t")?;
    let count = |k: &str| bucket.get(k).and_then(Value::as_u64).unwrap_or(0);
    let tail: Vec<String> = bucket.get("historyTail").and_then(Value::as_str).and_then(|t| serde_json::from_str(t).ok()).unwrap_or_default();
    let last_step = tail.last().and_then(|l| serde_json::from_str::<Value>(&crate::values::tokens_as_null(l)).ok()).and_then(|row| row["_step"].as_u64());
    let summary = bucket.get("summaryMetrics").and_then(Value::as_str).and_then(|s| serde_json::from_str(&crate::values::tokens_as_null(s)).ok());
    Some(ServerRun {
        history_lines: count("historyLineCount"),
        log_lines: count("logLineCount"),
        events_lines: count("eventsLineCount"),
        last_step,
        summary: match summary {
            Some(Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        },
    })
}

/// Asks the server whether run `info.id` exists and where it stands (one request, retried as any other).
pub fn resume_status(ep: &Endpoint, info: &RunInfo) -> Result<Option<ServerRun>, String> {
    let up = Uploader::new(ep.clone(), info.clone(), None);
    let nonempty = |s: &str| if s.is_empty() { Value::Null } else { Value::String(s.to_string()) };
    let vars = json!({ "project": info.project, "entity": nonempty(&info.entity), "name": info.id });
    Ok(server_run(&up.graphql(RUN_RESUME_STATUS, "RunResumeStatus", vars)?))
}

pub enum Msg {
    Row(Row),
    Output(String),
    /// A `wandb-events.jsonl` line (system metrics).
    Event(String),
    /// An artifact version to create, upload and commit.
    Artifact(crate::artifact::Artifact),
    /// The whole summary after values that are not history (e.g. the best value).
    Summary(String),
    /// Upload these files from `files/`, send the rest and the exit code.
    Finish {
        exit_code: i32,
        files: Vec<(String, PathBuf)>,
    },
}

pub struct Online {
    tx: Option<Sender<Msg>>,
    handle: Option<JoinHandle<Result<String, String>>>,
}

impl Online {
    /// Starts the upload thread; `resumed`: the run exists on the server and the stream continues after it.
    pub fn start(ep: Endpoint, info: RunInfo, resumed: Option<&ServerRun>) -> Online {
        let (tx, rx) = mpsc::channel();
        let uploader = Uploader::new(ep, info, resumed);
        let handle = std::thread::Builder::new().name("bz-wandb-upload".into()).spawn(move || uploader.run(rx)).ok();
        Online { tx: Some(tx), handle }
    }

    /// Queues a message; nothing blocks on the network here.
    pub fn send(&self, m: Msg) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(m);
        }
    }

    /// Sends the end and waits (at most `wait`) for the uploader: Ok(the run's URL) or why it failed.
    pub fn finish(&mut self, exit_code: i32, files: Vec<(String, PathBuf)>, wait: Duration) -> Result<String, String> {
        self.send(Msg::Finish { exit_code, files });
        self.tx = None;
        let Some(handle) = self.handle.take() else { return Err("the upload thread did not start".into()) };
        let start = Instant::now();
        while !handle.is_finished() {
            if start.elapsed() > wait {
                return Err(format!("the upload did not finish within {} s", wait.as_secs()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        handle.join().unwrap_or_else(|_| Err("the upload thread panicked".into()))
    }
}

struct Uploader {
    ep: Endpoint,
    info: RunInfo,
    agent: ureq::Agent,
    auth: String,
    entity: String,
    project: String,
    history: Vec<String>,
    history_sent: usize,
    output: Vec<String>,
    output_sent: usize,
    events: Vec<String>,
    events_sent: usize,
    /// Lines the server already has (a resumed run): offsets count from there.
    history_base: u64,
    output_base: u64,
    events_base: u64,
    summary: Option<String>,
}

/// The config as the W&B API takes it: `{"key": {"value": v}}`.
fn config_json(info: &RunInfo) -> String {
    let wrapped: serde_json::Map<String, Value> = info.config.iter().map(|(k, v)| (k.clone(), json!({ "value": v }))).collect();
    let mut wrapped = wrapped;
    // wandb marks a started run by `_wandb.t` (its telemetry) in the config; resuming looks for it.
    wrapped.insert("_wandb".into(), json!({ "value": { "t": { "bz": env!("CARGO_PKG_VERSION") } } }));
    Value::Object(wrapped).to_string()
}

impl Uploader {
    fn new(ep: Endpoint, info: RunInfo, resumed: Option<&ServerRun>) -> Uploader {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .user_agent(format!("bz-wandb/{}", env!("CARGO_PKG_VERSION")))
            .timeout_connect(Some(Duration::from_secs(15)))
            .timeout_global(Some(Duration::from_secs(120)))
            .http_status_as_error(false)
            .build()
            .into();
        let auth = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("api:{}", ep.api_key)));
        let (entity, project) = (info.entity.clone(), info.project.clone());
        Uploader {
            ep,
            info,
            agent,
            auth,
            entity,
            project,
            history: Vec::new(),
            history_sent: 0,
            output: Vec::new(),
            output_sent: 0,
            events: Vec::new(),
            events_sent: 0,
            history_base: resumed.map_or(0, |r| r.history_lines),
            output_base: resumed.map_or(0, |r| r.log_lines),
            events_base: resumed.map_or(0, |r| r.events_lines),
            summary: None,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{}", self.ep.base_url.trim_end_matches('/'), path.trim_start_matches('/'))
    }

    /// POSTs JSON with retries: transport errors, 429 and 5xx are retried with back-off, other statuses fail.
    fn post(&self, url: &str, body: &Value) -> Result<Value, String> {
        let text = body.to_string();
        let mut delay = self.ep.backoff;
        let mut last = String::new();
        for attempt in 1..=self.ep.attempts.max(1) {
            let result = self.agent.post(url).header("Authorization", &self.auth).header("Content-Type", "application/json").send(text.as_str());
            match result {
                Ok(mut resp) => {
                    let status = resp.status().as_u16();
                    let body = resp.body_mut().read_to_string().unwrap_or_default();
                    if (200..300).contains(&status) {
                        return Ok(serde_json::from_str(&body).unwrap_or(Value::Null));
                    }
                    last = format!("HTTP {status} from {url}: {}", body.chars().take(200).collect::<String>());
                    if status != 429 && status < 500 {
                        return Err(last);
                    }
                }
                Err(e) => last = format!("{url}: {e}"),
            }
            if attempt < self.ep.attempts {
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
        Err(format!("{last} (gave up after {} attempts)", self.ep.attempts))
    }

    fn graphql(&self, query: &str, operation: &str, variables: Value) -> Result<Value, String> {
        let resp = self.post(&self.url("graphql"), &json!({ "operationName": operation, "query": query, "variables": variables }))?;
        if let Some(errors) = resp.get("errors").filter(|e| e.as_array().is_some_and(|a| !a.is_empty())) {
            return Err(format!("{operation}: {errors}"));
        }
        Ok(resp["data"].clone())
    }

    fn upsert(&mut self) -> Result<(), String> {
        let i = &self.info;
        let nonempty = |s: &str| if s.is_empty() { Value::Null } else { Value::String(s.to_string()) };
        let vars = json!({
            "name": i.id, "project": i.project, "entity": nonempty(&i.entity), "groupName": nonempty(&i.group),
            "displayName": i.name, "notes": nonempty(&i.notes), "tags": i.tags, "config": config_json(i),
            "host": i.host, "jobType": nonempty(&i.job_type), "program": "bz",
        });
        let data = self.graphql(UPSERT_BUCKET, "UpsertBucket", vars)?;
        let project = &data["upsertBucket"]["bucket"]["project"];
        if let Some(p) = project["name"].as_str() {
            self.project = p.to_string();
        }
        if let Some(e) = project["entity"]["name"].as_str() {
            self.entity = e.to_string();
        }
        if self.entity.is_empty() {
            return Err("the server did not say which entity the run belongs to; set `entity`".into());
        }
        Ok(())
    }

    fn stream_url(&self) -> String {
        self.url(&format!("files/{}/{}/{}/file_stream", self.entity, self.project, self.info.id))
    }

    /// One `file_stream` request with everything not yet acknowledged; `end` adds the completion fields.
    fn stream(&mut self, end: Option<(i32, Vec<String>)>) -> Result<(), String> {
        let mut files = serde_json::Map::new();
        if self.history.len() > self.history_sent {
            files.insert(
                "wandb-history.jsonl".into(),
                json!({ "offset": self.history_base + self.history_sent as u64, "content": self.history[self.history_sent..] }),
            );
        }
        if self.events.len() > self.events_sent {
            files.insert(
                "wandb-events.jsonl".into(),
                json!({ "offset": self.events_base + self.events_sent as u64, "content": self.events[self.events_sent..] }),
            );
        }
        if let Some(s) = &self.summary {
            files.insert("wandb-summary.json".into(), json!({ "offset": 0, "content": [s] }));
        }
        if self.output.len() > self.output_sent {
            files.insert("output.log".into(), json!({ "offset": self.output_base + self.output_sent as u64, "content": self.output[self.output_sent..] }));
        }
        if files.is_empty() && end.is_none() {
            return Ok(());
        }
        let mut body = json!({ "files": files });
        if let Some((code, uploaded)) = end {
            body["complete"] = json!(true);
            body["exitcode"] = json!(code);
            body["uploaded"] = json!(uploaded);
        }
        self.post(&self.stream_url(), &body)?;
        self.history_sent = self.history.len();
        self.output_sent = self.output.len();
        self.events_sent = self.events.len();
        Ok(())
    }

    fn upload_files(&self, files: &[(String, PathBuf)]) -> Result<Vec<String>, String> {
        if files.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        let data =
            self.graphql(CREATE_RUN_FILES, "CreateRunFiles", json!({ "entity": self.entity, "project": self.project, "run": self.info.id, "files": names }))?;
        let headers: Vec<(String, String)> = data["createRunFiles"]["uploadHeaders"]
            .as_array()
            .map(|a| a.iter().filter_map(|h| h.as_str()?.split_once(':').map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))).collect())
            .unwrap_or_default();
        let mut uploaded = Vec::new();
        for f in data["createRunFiles"]["files"].as_array().into_iter().flatten() {
            let (Some(name), Some(url)) = (f["name"].as_str(), f["uploadUrl"].as_str()) else { continue };
            let Some((_, path)) = files.iter().find(|(n, _)| n == name) else { continue };
            let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let mut req = self.agent.put(url);
            for (k, v) in &headers {
                req = req.header(k, v);
            }
            let resp = req.send(&bytes[..]).map_err(|e| format!("upload of {name}: {e}"))?;
            if !resp.status().is_success() {
                return Err(format!("upload of {name}: HTTP {}", resp.status().as_u16()));
            }
            uploaded.push(name.to_string());
        }
        Ok(uploaded)
    }

    /// PUTs bytes to an upload URL with the server's headers (`Name: value` strings).
    fn put(&self, url: &str, headers: &Value, body: impl ureq::AsSendBody, what: &str) -> Result<(), String> {
        let mut req = self.agent.put(url);
        for h in headers.as_array().into_iter().flatten().filter_map(Value::as_str) {
            if let Some((k, v)) = h.split_once(':') {
                req = req.header(k.trim(), v.trim());
            }
        }
        let resp = req.send(body).map_err(|e| format!("upload of {what}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("upload of {what}: HTTP {}", resp.status().as_u16()));
        }
        Ok(())
    }

    /// An artifact version, as wandb-core saves one: CreateArtifact; CreateArtifactManifest (no upload yet);
    /// CreateArtifactFiles and a PUT per file the server lacks; the manifest (with each file's birth artifact)
    /// through CreateArtifactManifest with its digest and a PUT; CommitArtifact. A version the server already
    /// has (same digest: state COMMITTED) is not uploaded again.
    fn save_artifact(&self, a: &crate::artifact::Artifact) -> Result<(), String> {
        let aliases: Vec<Value> = a.aliases.iter().map(|al| json!({ "artifactCollectionName": a.name, "alias": al })).collect();
        let input = json!({
            "entityName": self.entity, "projectName": self.project, "artifactTypeName": "model", "artifactCollectionName": a.name,
            "runName": self.info.id, "digest": a.digest, "digestAlgorithm": "MANIFEST_MD5", "aliases": aliases, "metadata": a.metadata,
            "enableDigestDeduplication": true, "clientID": a.client_id, "sequenceClientID": a.sequence_client_id,
        });
        let created = &self.graphql(CREATE_ARTIFACT, "CreateArtifact", json!({ "input": input }))?["createArtifact"]["artifact"];
        let id = created["id"].as_str().ok_or("CreateArtifact: no artifact id in the answer")?.to_string();
        match created["state"].as_str() {
            Some("COMMITTED") => return Ok(()),
            Some("PENDING" | "DELETED") => {}
            other => return Err(format!("CreateArtifact: unexpected state {other:?}")),
        }
        let base = created["artifactSequence"]["latestArtifact"]["id"].clone();
        let manifest_vars = |digest: &str, include_upload: bool| {
            json!({ "artifactID": id, "baseArtifactID": base, "name": "wandb_manifest.json", "digest": digest, "entityName": self.entity,
                    "projectName": self.project, "runName": self.info.id, "manifestType": "FULL", "includeUpload": include_upload })
        };
        let manifest =
            &self.graphql(CREATE_ARTIFACT_MANIFEST, "CreateArtifactManifest", manifest_vars("", false))?["createArtifactManifest"]["artifactManifest"];
        let manifest_id = manifest["id"].as_str().ok_or("CreateArtifactManifest: no manifest id")?.to_string();
        let specs: Vec<Value> =
            a.entries.iter().map(|e| json!({ "artifactID": id, "name": e.path, "md5": e.digest, "artifactManifestID": manifest_id })).collect();
        let files = self.graphql(CREATE_ARTIFACT_FILES, "CreateArtifactFiles", json!({ "input": { "artifactFiles": specs, "storageLayout": "V2" } }))?;
        let edges = files["createArtifactFiles"]["files"]["edges"].as_array().cloned().unwrap_or_default();
        if edges.len() != a.entries.len() {
            return Err(format!("CreateArtifactFiles: {} upload URLs for {} files", edges.len(), a.entries.len()));
        }
        let mut contents = serde_json::Map::new();
        for (e, edge) in a.entries.iter().zip(&edges) {
            let node = &edge["node"];
            if let Some(url) = node["uploadUrl"].as_str() {
                let failed = |err: std::io::Error| format!("{}: {err}", e.local_path.display());
                if crate::artifact::file_md5(&e.local_path).map_err(failed)? != (e.digest.clone(), e.size) {
                    return Err(format!("{} changed since it was logged", e.local_path.display()));
                }
                let file = std::fs::File::open(&e.local_path).map_err(failed)?;
                self.put(url, &node["uploadHeaders"], file, &e.path)?;
            }
            let mut entry = json!({ "digest": e.digest, "size": e.size, "local_path": e.local_path.display().to_string(), "skip_cache": false });
            if let Some(birth) = node["artifact"]["id"].as_str() {
                entry["birthArtifactID"] = json!(birth);
            }
            contents.insert(e.path.clone(), entry);
        }
        let body = json!({ "version": 1, "storagePolicy": "wandb-storage-policy-v1", "storagePolicyConfig": { "storageLayout": "V2" }, "contents": contents })
            .to_string();
        let digest = crate::artifact::bytes_md5(body.as_bytes());
        let upload = &self.graphql(CREATE_ARTIFACT_MANIFEST, "CreateArtifactManifest", manifest_vars(&digest, true))?["createArtifactManifest"]
            ["artifactManifest"]["file"];
        let url = upload["uploadUrl"].as_str().ok_or("CreateArtifactManifest: no upload URL for the manifest")?;
        self.put(url, &upload["uploadHeaders"], body.as_bytes(), "wandb_manifest.json")?;
        self.graphql(COMMIT_ARTIFACT, "CommitArtifact", json!({ "artifactID": id }))?;
        Ok(())
    }

    fn run(mut self, rx: Receiver<Msg>) -> Result<String, String> {
        self.upsert()?;
        let mut last = Instant::now();
        loop {
            let wait = self.ep.interval.saturating_sub(last.elapsed());
            match rx.recv_timeout(wait) {
                Ok(Msg::Row(r)) => {
                    self.history.push(r.history);
                    self.summary = Some(r.summary);
                }
                Ok(Msg::Output(line)) => self.output.push(line),
                Ok(Msg::Event(line)) => self.events.push(line),
                Ok(Msg::Artifact(a)) => self.save_artifact(&a)?,
                Ok(Msg::Summary(s)) => self.summary = Some(s),
                Ok(Msg::Finish { exit_code, files }) => {
                    self.stream(None)?;
                    let uploaded = self.upload_files(&files)?;
                    self.stream(Some((exit_code, uploaded)))?;
                    return Ok(self.url(&format!("{}/{}/runs/{}", self.entity, self.project, self.info.id)));
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Err("the run ended without finishing the upload".into()),
            }
            if last.elapsed() >= self.ep.interval {
                self.stream(None)?;
                last = Instant::now();
            }
        }
    }
}
