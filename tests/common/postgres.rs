//! A real PostgreSQL server (Debian's `postgresql` package) in a temporary data
//! directory, on its own loopback address and port, run as the `postgres` user (it
//! refuses root) and stopped by pid: the state store's fleet tests share one.

use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Postgres {
    child: Option<Child>,
    pub ip: Ipv4Addr,
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
    uid: u32,
    gid: u32,
    _tmp: tempfile::TempDir,
}

/// The newest installed server's `bin/` (`/usr/lib/postgresql/N/bin`).
fn bin_dir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("postgresql (scripts/install-test-peers.sh installs it)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("postgres").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("a PostgreSQL server in /usr/lib/postgresql")
}

/// The `postgres` user's uid and gid.
fn postgres_user() -> (u32, u32) {
    let out = Command::new("id")
        .args(["-u", "postgres"])
        .output()
        .unwrap();
    let uid = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let out = Command::new("id")
        .args(["-g", "postgres"])
        .output()
        .unwrap();
    let gid = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    (uid, gid)
}

impl Postgres {
    /// initdb (trust authentication on loopback), start, and create database `db`.
    pub fn start(db: &str) -> Postgres {
        let tmp = tempfile::Builder::new()
            .prefix("fxp-pg-")
            .tempdir()
            .unwrap();
        let (uid, gid) = postgres_user();
        std::os::unix::fs::chown(tmp.path(), Some(uid), Some(gid)).unwrap();
        let dir = tmp.path().join("data");
        let bin = bin_dir();
        let out = Command::new(bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&dir)
            .current_dir(tmp.path())
            .uid(uid)
            .gid(gid)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ip = super::unique_loopback_ip();
        let port = super::free_port(ip.into());
        let mut pg = Postgres {
            child: None,
            ip,
            port,
            dir,
            bin,
            uid,
            gid,
            _tmp: tmp,
        };
        pg.run();
        pg.psql("postgres", &format!("CREATE DATABASE {db}"));
        pg
    }

    fn run(&mut self) {
        let log = self.dir.parent().unwrap().join("postgres.log");
        let child = Command::new(self.bin.join("postgres"))
            .arg("-D")
            .arg(&self.dir)
            .args(["-h", &self.ip.to_string(), "-p", &self.port.to_string(), "-k"])
            .arg(self.dir.parent().unwrap())
            // Fast enough for tests, and no fsync of a throwaway cluster.
            .args(["-c", "fsync=off", "-c", "max_connections=200"])
            .current_dir(self.dir.parent().unwrap())
            .uid(self.uid)
            .gid(self.gid)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("postgres");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.ready() {
            assert!(
                Instant::now() < deadline,
                "postgres did not come up:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn ready(&self) -> bool {
        Command::new(self.bin.join("pg_isready"))
            .args([
                "-q",
                "-h",
                &self.ip.to_string(),
                "-p",
                &self.port.to_string(),
            ])
            .status()
            .is_ok_and(|s| s.success())
    }

    /// `postgres://postgres@IP:PORT/db`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@{}:{}/{db}", self.ip, self.port)
    }

    /// Runs `sql` in `db` with psql; its output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-h", &self.ip.to_string(), "-p", &self.port.to_string()])
            .args([
                "-U",
                "postgres",
                "-d",
                db,
                "-v",
                "ON_ERROR_STOP=1",
                "-tAc",
                sql,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `pg_dump` of `db`, as text.
    pub fn dump(&self, db: &str) -> Vec<u8> {
        let out = Command::new(self.bin.join("pg_dump"))
            .args(["-h", &self.ip.to_string(), "-p", &self.port.to_string()])
            .args(["-U", "postgres", db])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_dump: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// Stops the server (fast shutdown: clients are disconnected) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if child.try_wait().ok().flatten().is_some() {
                    return;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Starts it again on the same data directory, address and port.
    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(
            self.dir
                .parent()
                .unwrap_or(Path::new("/"))
                .join("postgres.log"),
        )
        .unwrap_or_default()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}
