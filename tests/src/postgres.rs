//! A throwaway PostgreSQL server on 127.0.0.1 for the tune tests: Debian's binaries (installed by
//! `scripts/setup --postgres`), a fresh cluster in a temporary directory, trust authentication, fsync off. As root
//! the server runs as the `postgres` user (PostgreSQL refuses root). Stopped and deleted on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct PgServer {
    child: Child,
    _dir: tempfile::TempDir,
    pub url: String,
}

fn bin_dir() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().map(|e| e.path().join("bin")).filter(|p| p.join("postgres").exists()).collect())
        .unwrap_or_default();
    dirs.sort();
    dirs.pop().expect("PostgreSQL server binaries missing: run scripts/setup --postgres")
}

fn as_db_user(bin: &std::path::Path, root: bool) -> Command {
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    }
}

impl PgServer {
    pub fn start() -> PgServer {
        let bin = bin_dir();
        // SAFETY: getuid has no preconditions.
        let root = unsafe { getuid() } == 0;
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("data dir");
        if root {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
            let ok = Command::new("chown").args(["-R", "postgres:postgres"]).arg(&data).status().expect("chown").success();
            assert!(ok, "chown of the data directory failed");
        }
        let out = as_db_user(&bin.join("initdb"), root)
            .args(["-D"])
            .arg(&data)
            .args(["-A", "trust", "-U", "bz", "-E", "UTF8", "--no-sync"])
            .stdout(Stdio::null())
            .output()
            .expect("initdb");
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
        let child = as_db_user(&bin.join("postgres"), root)
            .arg("-D")
            .arg(&data)
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-k"])
            .arg(&data)
            .args(["-c", "fsync=off", "-c", "max_connections=50"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("postgres");
        let start = Instant::now();
        loop {
            let ready = Command::new(bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ready {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(60), "PostgreSQL did not start on 127.0.0.1:{port}");
            std::thread::sleep(Duration::from_millis(100));
        }
        let ok = Command::new(bin.join("createdb")).args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "bz", "bz"]).status().expect("createdb").success();
        assert!(ok, "createdb failed");
        PgServer { child, _dir: dir, url: format!("postgresql://bz@127.0.0.1:{port}/bz") }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        // SIGTERM: a smart shutdown; then make sure.
        // SAFETY: signalling our own child.
        unsafe { kill(self.child.id() as i32, 15) };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

extern "C" {
    fn getuid() -> u32;
    fn kill(pid: i32, sig: i32) -> i32;
}
