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
const CREATE_RUN_FILES: &str = "mutation CreateRunFiles($entity: String!, $project: String!, $run: String!, $files: [String!]!) { createRunFiles(input: {entityName: $entity, projectName: $project, runName: $run, files: $files}) { runID uploadHeaders files { name uploadUrl } } }";

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

pub enum Msg {
    Row(Row),
    Output(String),
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
    pub fn start(ep: Endpoint, info: RunInfo) -> Online {
        let (tx, rx) = mpsc::channel();
        let handle = std::thread::Builder::new().name("bz-wandb-upload".into()).spawn(move || Uploader::new(ep, info).run(rx)).ok();
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
    summary: Option<String>,
}

/// The config as the W&B API takes it: `{"key": {"value": v}}`.
fn config_json(info: &RunInfo) -> String {
    let wrapped: serde_json::Map<String, Value> = info.config.iter().map(|(k, v)| (k.clone(), json!({ "value": v }))).collect();
    Value::Object(wrapped).to_string()
}

impl Uploader {
    fn new(ep: Endpoint, info: RunInfo) -> Uploader {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .user_agent(format!("bz-wandb/{}", env!("CARGO_PKG_VERSION")))
            .timeout_connect(Some(Duration::from_secs(15)))
            .timeout_global(Some(Duration::from_secs(120)))
            .http_status_as_error(false)
            .build()
            .into();
        let auth = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("api:{}", ep.api_key)));
        let (entity, project) = (info.entity.clone(), info.project.clone());
        Uploader { ep, info, agent, auth, entity, project, history: Vec::new(), history_sent: 0, output: Vec::new(), output_sent: 0, summary: None }
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
            files.insert("wandb-history.jsonl".into(), json!({ "offset": self.history_sent, "content": self.history[self.history_sent..] }));
        }
        if let Some(s) = &self.summary {
            files.insert("wandb-summary.json".into(), json!({ "offset": 0, "content": [s] }));
        }
        if self.output.len() > self.output_sent {
            files.insert("output.log".into(), json!({ "offset": self.output_sent, "content": self.output[self.output_sent..] }));
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
