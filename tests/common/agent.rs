//! Runs `fxprelay agent` with a generated file inside a network namespace, as an
//! operator would run it beside the servers. Stopped (SIGTERM, then SIGKILL) when
//! dropped, by its pid (`ip netns exec` execs the binary: the pid is the agent's).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct AgentProc {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl AgentProc {
    /// `fxprelay agent -c FILE` with `yaml` as FILE, inside `netns`.
    pub fn launch(yaml: &str, netns: &str) -> AgentProc {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("agent.yaml");
        std::fs::write(&config, yaml).expect("write agent config");
        let log = dir.path().join("agent.log");
        let child = Command::new("ip")
            .args(["netns", "exec", netns, env!("CARGO_BIN_EXE_fxprelay")])
            .arg("agent")
            .arg("-c")
            .arg(&config)
            .env("RUST_LOG", "fxprelay=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn fxprelay agent");
        AgentProc {
            child,
            log,
            _dir: dir,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, as a crash or an OOM kill would end it, and the exit reaped.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then up to `within` for the exit.
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        // SAFETY: a signal to the child this struct owns, by its pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        if self.terminate(Duration::from_secs(3)).is_none() {
            self.kill();
        }
    }
}
