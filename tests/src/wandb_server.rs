//! A stand-in W&B backend on 127.0.0.1 for the wandb plugin's tests: it answers the requests the wandb client
//! (and `wandb sync`) makes — GraphQL `UpsertBucket` and `CreateRunFiles`, `file_stream`, file uploads — records
//! every request, and can fail `file_stream` a given number of times. Every loop in it is bounded.

use crate::http::Listener;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request as received (body decoded from chunked and gzip encodings).
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub body: String,
    /// The body's bytes (file uploads are binary).
    pub raw: Vec<u8>,
    pub authorization: String,
    /// The status the server answered.
    pub status: u16,
}

impl Request {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
    /// The GraphQL operation name (from `operationName`, else the query's first word after `mutation`/`query`).
    pub fn operation(&self) -> Option<String> {
        let j = self.json();
        if let Some(op) = j["operationName"].as_str().filter(|s| !s.is_empty()) {
            return Some(op.to_string());
        }
        let q = j["query"].as_str()?;
        let mut words = q.split(|c: char| !c.is_alphanumeric() && c != '_').filter(|w| !w.is_empty());
        while let Some(w) = words.next() {
            if w == "mutation" || w == "query" {
                return words.next().map(str::to_string);
            }
        }
        None
    }
}

#[derive(Default)]
struct State {
    requests: Vec<Request>,
    fail_file_stream: usize,
    /// Artifacts created so far, and the latest id per collection (a new version's base).
    artifacts: usize,
    latest_artifact: std::collections::BTreeMap<String, String>,
    /// What the server holds per run name, for `RunResumeStatus`.
    runs: std::collections::BTreeMap<String, StoredRun>,
}

/// One run as the server keeps it: the config of its last upsert and the lines its file streams wrote.
#[derive(Default, Clone)]
struct StoredRun {
    config: String,
    history: Vec<Option<String>>,
    events: Vec<Option<String>>,
    log_lines: usize,
    summary: Option<String>,
}

impl StoredRun {
    /// Lines written at `offset` (a resent line replaces itself).
    fn write(lines: &mut Vec<Option<String>>, file: &Value) {
        let (Some(offset), Some(content)) = (file["offset"].as_u64(), file["content"].as_array()) else { return };
        for (i, line) in content.iter().enumerate().take(1_000_000) {
            let at = offset as usize + i;
            if lines.len() <= at {
                lines.resize(at + 1, None);
            }
            lines[at] = line.as_str().map(str::to_string);
        }
    }

    fn stream(&mut self, body: &Value) {
        let files = &body["files"];
        Self::write(&mut self.history, &files["wandb-history.jsonl"]);
        Self::write(&mut self.events, &files["wandb-events.jsonl"]);
        let log = &files["output.log"];
        if let (Some(offset), Some(content)) = (log["offset"].as_u64(), log["content"].as_array()) {
            self.log_lines = self.log_lines.max(offset as usize + content.len());
        }
        if let Some(s) = files["wandb-summary.json"]["content"].as_array().and_then(|c| c.last()).and_then(Value::as_str) {
            self.summary = Some(s.to_string());
        }
    }

    /// The bucket as `RunResumeStatus` returns it (strings holding JSON, as W&B's API does).
    fn bucket(&self, name: &str) -> Value {
        let config = parse_wandb_json(&self.config);
        let t = &config["_wandb"]["value"]["t"];
        let tail = |lines: &[Option<String>]| Value::String(Value::from(lines.iter().rev().take(1).flatten().cloned().collect::<Vec<_>>()).to_string());
        json!({
            "id": "YnVja2V0", "name": name, "displayName": name, "tags": [], "notes": null,
            "summaryMetrics": self.summary.clone().unwrap_or_else(|| "{}".into()),
            "logLineCount": self.log_lines, "historyLineCount": self.history.len(), "eventsLineCount": self.events.len(),
            "historyTail": tail(&self.history), "eventsTail": tail(&self.events), "config": self.config,
            "wandbConfig": if t.is_null() { Value::Null } else { Value::String(json!({ "t": t }).to_string()) },
        })
    }
}

pub struct WandbServer {
    listener: Listener,
    state: Arc<Mutex<State>>,
}

impl WandbServer {
    pub fn start() -> WandbServer {
        let state = Arc::new(Mutex::new(State::default()));
        let state2 = state.clone();
        let listener = Listener::start(move |conn, port| {
            let _ = serve(conn, port, &state2);
        });
        WandbServer { listener, state }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.listener.port)
    }

    /// Answers the next `n` file_stream requests with HTTP 500.
    pub fn fail_file_stream(&self, n: usize) {
        self.state.lock().expect("state").fail_file_stream = n;
    }

    pub fn requests(&self) -> Vec<Request> {
        self.state.lock().expect("state").requests.clone()
    }

    /// The file_stream requests that were accepted (HTTP 200), as JSON.
    pub fn file_streams(&self) -> Vec<Value> {
        self.requests().iter().filter(|r| r.path.ends_with("/file_stream") && r.status == 200).map(Request::json).collect()
    }

    /// The runs the server holds (names of upserted buckets).
    pub fn run_names(&self) -> Vec<String> {
        self.state.lock().expect("state").runs.keys().cloned().collect()
    }

    /// Every history line the server accepted, in offset order (a line sent twice is taken once).
    pub fn history(&self) -> Vec<Value> {
        let mut lines: Vec<Option<String>> = Vec::new();
        for fs in self.file_streams() {
            let h = &fs["files"]["wandb-history.jsonl"];
            let (Some(offset), Some(content)) = (h["offset"].as_u64(), h["content"].as_array()) else { continue };
            for (i, line) in content.iter().enumerate() {
                let at = offset as usize + i;
                if lines.len() <= at {
                    lines.resize(at + 1, None);
                }
                lines[at] = line.as_str().map(str::to_string);
            }
        }
        lines.into_iter().map(|l| l.map(|s| parse_wandb_json(&s)).unwrap_or(Value::Null)).collect()
    }
}

/// JSON with wandb's bare NaN/Infinity tokens, which serde_json refuses: they become strings.
pub fn parse_wandb_json(s: &str) -> Value {
    let fixed = s.replace(":NaN", ":\"NaN\"").replace(":-Infinity", ":\"-Infinity\"").replace(":Infinity", ":\"Infinity\"");
    serde_json::from_str(&fixed).unwrap_or(Value::Null)
}

fn read_body(reader: &mut impl BufRead, length: Option<usize>, chunked: bool) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    if chunked {
        for _ in 0..100_000 {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
            if n == 0 {
                let mut end = String::new();
                reader.read_line(&mut end)?;
                break;
            }
            let mut chunk = vec![0u8; n];
            reader.read_exact(&mut chunk)?;
            body.extend_from_slice(&chunk);
            let mut crlf = [0u8; 2];
            reader.read_exact(&mut crlf)?;
        }
    } else if let Some(n) = length {
        body.resize(n.min(64 << 20), 0);
        reader.read_exact(&mut body)?;
    }
    Ok(body)
}

fn serve(conn: TcpStream, port: u16, state: &Mutex<State>) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut out = conn;
    // Keep-alive: the Go client reuses connections; bounded number of requests per connection.
    for _ in 0..1000 {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let path = parts.next().unwrap_or("/").to_string();
        let (mut length, mut chunked, mut gzip, mut authorization) = (None, false, false, String::new());
        for _ in 0..200 {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
                break;
            }
            let (k, v) = h.split_once(':').unwrap_or((&h, ""));
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
            match k.as_str() {
                "content-length" => length = v.parse().ok(),
                "transfer-encoding" => chunked = v.to_ascii_lowercase().contains("chunked"),
                "content-encoding" => gzip = v.to_ascii_lowercase().contains("gzip"),
                "authorization" => authorization = v,
                _ => {}
            }
        }
        let raw = read_body(&mut reader, length, chunked)?;
        let raw = if gzip {
            let mut s = Vec::new();
            flate2::read::GzDecoder::new(&raw[..]).take(64 << 20).read_to_end(&mut s)?;
            s
        } else {
            raw
        };
        let body = String::from_utf8_lossy(&raw).into_owned();
        let mut req = Request { method: method.clone(), path: path.clone(), body, raw, authorization, status: 200 };
        let (status, reply) = answer(&req, port, state);
        req.status = status;
        state.lock().expect("state").requests.push(req);
        let text = reply.to_string();
        write!(out, "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{text}", text.len())?;
        out.flush()?;
    }
    Ok(())
}

fn answer(req: &Request, port: u16, state: &Mutex<State>) -> (u16, Value) {
    if req.path.starts_with("/graphql") {
        let vars = req.json()["variables"].clone();
        return match req.operation().as_deref() {
            Some("UpsertBucket") => {
                if let Some(name) = vars["name"].as_str() {
                    let mut s = state.lock().expect("state");
                    let run = s.runs.entry(name.to_string()).or_default();
                    if let Some(config) = vars["config"].as_str() {
                        run.config = config.to_string();
                    }
                }
                let entity = vars["entity"].as_str().unwrap_or("bz-team").to_string();
                let project = vars["project"].as_str().unwrap_or("uncategorized").to_string();
                (
                    200,
                    json!({ "data": { "upsertBucket": { "bucket": {
                    "id": "YnVja2V0", "name": vars["name"], "displayName": vars["displayName"], "description": null,
                    "config": vars["config"], "sweepName": null, "historyLineCount": 0,
                    "project": { "id": "cHJvamVjdA", "name": project, "entity": { "id": "ZW50aXR5", "name": entity } } }, "inserted": true } } }),
                )
            }
            Some("CreateRunFiles") => {
                let files: Vec<Value> = vars["files"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(|f| json!({ "name": f, "uploadUrl": format!("http://127.0.0.1:{port}/upload/{}", f.as_str().unwrap_or("")) }))
                    .collect();
                (200, json!({ "data": { "createRunFiles": { "runID": "cnVu", "uploadHeaders": [], "files": files } } }))
            }
            Some("CreateArtifact") => {
                let mut s = state.lock().expect("state");
                s.artifacts += 1;
                let id = format!("QXJ0aWZhY3Q6{}", s.artifacts);
                let collection = vars["input"]["artifactCollectionName"].as_str().unwrap_or("").to_string();
                let latest = s.latest_artifact.insert(collection, id.clone()).map(|prev| json!({ "id": prev }));
                (
                    200,
                    json!({ "data": { "createArtifact": { "artifact": { "id": id, "state": "PENDING", "artifactSequence": { "latestArtifact": latest } } } } }),
                )
            }
            Some("CreateArtifactManifest") => {
                let id = vars["artifactID"].as_str().unwrap_or("");
                let file = json!({ "id": format!("{id}-manifest"), "uploadUrl": format!("http://127.0.0.1:{port}/upload/manifest/{id}"), "uploadHeaders": [] });
                (200, json!({ "data": { "createArtifactManifest": { "artifactManifest": { "id": format!("{id}-manifest"), "file": file } } } }))
            }
            Some("CreateArtifactFiles") => {
                // wandb 0.31 sends `input: {artifactFiles, storageLayout}`; older clients sent them as variables.
                let files = if vars["input"]["artifactFiles"].is_array() { &vars["input"]["artifactFiles"] } else { &vars["artifactFiles"] };
                let edges: Vec<Value> = files
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(|f| {
                        let (id, name) = (f["artifactID"].as_str().unwrap_or(""), f["name"].as_str().unwrap_or(""));
                        json!({ "node": { "storagePath": format!("{id}/{name}"), "uploadUrl": format!("http://127.0.0.1:{port}/upload/artifact/{id}/{name}"),
                                          "uploadHeaders": [], "uploadMultipartUrls": null, "artifact": { "id": id } } })
                    })
                    .collect();
                (200, json!({ "data": { "createArtifactFiles": { "files": { "edges": edges } } } }))
            }
            Some("CommitArtifact") => (200, json!({ "data": { "commitArtifact": { "artifact": { "id": vars["artifactID"], "digest": "" } } } })),
            Some("RunResumeStatus") => {
                let name = vars["name"].as_str().unwrap_or("");
                let bucket = state.lock().expect("state").runs.get(name).map(|r| r.bucket(name)).unwrap_or(Value::Null);
                let model = json!({ "id": "cHJvamVjdA", "name": vars["project"], "entity": { "id": "ZW50aXR5", "name": vars["entity"].as_str().unwrap_or("bz-team") }, "bucket": bucket });
                (200, json!({ "data": { "model": model } }))
            }
            _ => (200, json!({ "data": {} })),
        };
    }
    if req.path.ends_with("/file_stream") {
        let mut s = state.lock().expect("state");
        if s.fail_file_stream > 0 {
            s.fail_file_stream -= 1;
            return (500, json!({ "error": "test: failing on purpose" }));
        }
        // /files/<entity>/<project>/<run>/file_stream
        if let Some(name) = req.path.rsplit('/').nth(1) {
            s.runs.entry(name.to_string()).or_default().stream(&req.json());
        }
        return (200, json!({ "exitcode": null, "limits": {} }));
    }
    (200, json!({}))
}
