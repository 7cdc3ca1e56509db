//! A real HAProxy (TCP mode) run from a config the test writes, logging each connection
//! (`option tcplog`) to a file. Killed when dropped.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command};

use super::wait_for;

pub struct Haproxy {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    /// Runs HAProxy with `frontends` (its `frontend`/`backend` sections) after TCP-mode
    /// defaults, and waits until `ready` accepts connections.
    pub fn start(frontends: &str, ready: SocketAddr) -> Haproxy {
        let dir = tempfile::tempdir().unwrap();
        let cfg = format!(
            "global\n  maxconn 400\n  log stdout format raw local0 info\n\
             defaults\n  mode tcp\n  log global\n  option tcplog\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n\
             {frontends}"
        );
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, &cfg).unwrap();
        let log = dir.path().join("haproxy.log");
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.path().join("haproxy.err")).unwrap())
            .spawn()
            .expect("haproxy (scripts/install-test-peers.sh installs it)");
        let mut h = Haproxy {
            child,
            log,
            _dir: dir,
        };
        wait_for("haproxy to listen", || {
            if let Ok(Some(status)) = h.child.try_wait() {
                let err = std::fs::read_to_string(h._dir.path().join("haproxy.err"));
                panic!(
                    "haproxy exited with {status}\n{cfg}\n{}",
                    err.unwrap_or_default()
                );
            }
            TcpStream::connect(ready).is_ok()
        });
        h
    }

    /// Every line HAProxy logged so far (one per finished connection).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        // Our own child, by its pid.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
