//! A small HTTP/1.1 file server on 127.0.0.1 for the installer tests, able to misbehave on purpose: close the
//! connection mid-body, send slowly, or answer with an error status. Every loop in it is bounded.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How the server answers a path.
#[derive(Debug, Clone)]
pub enum Behaviour {
    /// Announce the full length, send this many bytes, then close.
    CloseAfter(usize),
    /// Send the body in chunks of this size with a pause after each.
    Throttle { chunk: usize, pause: Duration },
    /// Answer with this status and no body.
    Status(u16),
    /// Answer 302 with this Location.
    Redirect(String),
}

#[derive(Default)]
struct State {
    rules: HashMap<String, Behaviour>,
    log: Vec<String>,
    /// The requests that carried an Authorization header, as "GET /path".
    with_auth: Vec<String>,
    /// When set, every request needs exactly this Authorization header (else 401).
    auth: Option<String>,
}

/// A loopback listener that hands every connection to `on_conn` on its own thread, until dropped (or for at
/// most [`MAX_LIFETIME`]). Both test servers stand on it.
pub struct Listener {
    pub port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// No test server lives longer than this, whatever happens to the test.
const MAX_LIFETIME: Duration = Duration::from_secs(600);

impl Listener {
    pub fn start(on_conn: impl Fn(TcpStream, u16) + Send + Sync + 'static) -> Listener {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let on_conn = Arc::new(on_conn);
        let thread = std::thread::spawn(move || {
            let start = Instant::now();
            while !stop2.load(Ordering::SeqCst) && start.elapsed() < MAX_LIFETIME {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let on_conn = on_conn.clone();
                        std::thread::spawn(move || on_conn(conn, port));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Listener { port, stop, thread: Some(thread) }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Serves the files under a directory until dropped.
pub struct Server {
    listener: Listener,
    state: Arc<Mutex<State>>,
}

impl Server {
    pub fn serve_dir(root: &Path) -> Server {
        let state = Arc::new(Mutex::new(State::default()));
        let (state2, root) = (state.clone(), root.to_path_buf());
        let listener = Listener::start(move |conn, _| {
            let _ = handle(conn, &root, &state2);
        });
        Server { listener, state }
    }

    /// `http://127.0.0.1:PORT/` + path.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{}", self.listener.port, path.trim_start_matches('/'))
    }

    /// Makes requests whose path ends with `suffix` behave so.
    pub fn set(&self, suffix: &str, b: Behaviour) {
        self.state.lock().expect("state").rules.insert(suffix.to_string(), b);
    }

    /// Requires HTTP Basic credentials on every request from now on.
    pub fn require_basic(&self, user: &str, password: &str) {
        use base64::Engine;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        self.state.lock().expect("state").auth = Some(format!("Basic {token}"));
    }

    pub fn clear(&self) {
        self.state.lock().expect("state").rules.clear();
    }

    /// The requests so far that carried credentials, as "GET /path".
    pub fn requests_with_auth(&self) -> Vec<String> {
        self.state.lock().expect("state").with_auth.clone()
    }

    /// Every request so far, as "GET /path".
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().expect("state").log.clone()
    }
}

fn handle(conn: TcpStream, root: &Path, state: &Mutex<State>) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    conn.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?).take(64 * 1024);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut authorization = None;
    for _ in 0..200 {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.trim().eq_ignore_ascii_case("authorization") {
                authorization = Some(v.trim().to_string());
            }
        }
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("/").to_string();
    let (rule, authorized) = {
        let mut s = state.lock().expect("state");
        s.log.push(format!("{method} {path}"));
        if authorization.is_some() {
            s.with_auth.push(format!("{method} {path}"));
        }
        let authorized = s.auth.is_none() || s.auth == authorization;
        (s.rules.iter().find(|(k, _)| path.ends_with(k.as_str())).map(|(_, b)| b.clone()), authorized)
    };
    let mut out = conn;
    if let Some(Behaviour::Redirect(to)) = &rule {
        return write!(out, "HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    }
    if !authorized {
        return write!(out, "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    }
    let file = local_path(root, &path).and_then(|p| std::fs::read(p).ok());
    let Some(body) = file else {
        return write!(out, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    };
    if let Some(Behaviour::Status(code)) = rule {
        return write!(out, "HTTP/1.1 {code} Test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    }
    write!(out, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n", body.len())?;
    if method == "HEAD" {
        return Ok(());
    }
    match rule {
        Some(Behaviour::CloseAfter(n)) => {
            out.write_all(&body[..n.min(body.len())])?;
            out.flush()?;
            out.shutdown(std::net::Shutdown::Both)
        }
        Some(Behaviour::Throttle { chunk, pause }) => {
            for c in body.chunks(chunk.max(1)) {
                out.write_all(c)?;
                out.flush()?;
                std::thread::sleep(pause);
            }
            Ok(())
        }
        _ => out.write_all(&body),
    }
}

/// The file a URL path names under `root`; nothing outside it.
fn local_path(root: &Path, url_path: &str) -> Option<PathBuf> {
    let rel = url_path.split('?').next()?.trim_start_matches('/');
    let mut p = root.to_path_buf();
    for seg in rel.split('/') {
        if seg.is_empty() || seg == "." || seg == ".." {
            if seg == ".." {
                return None;
            }
            continue;
        }
        p.push(seg);
    }
    p.is_file().then_some(p)
}
