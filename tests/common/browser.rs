//! Headless Chromium driven over the DevTools protocol (`tests/browser/cdp.py`, Debian's
//! python3-websocket): open a page, evaluate JavaScript in it, take a screenshot.
//! Chromium and the driver are killed by pid when the [`Browser`] drops.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Browser {
    driver: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    chromium: u32,
}

impl Browser {
    /// Chromium showing `url`.
    pub fn open(url: &str) -> Browser {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/cdp.py");
        // Debian's own Python: python3-websocket is installed for it.
        let mut driver = Command::new("/usr/bin/python3")
            .args([script, url])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the Chromium driver");
        let stdin = driver.stdin.take().unwrap();
        let mut stdout = BufReader::new(driver.stdout.take().unwrap());
        let mut first = String::new();
        stdout
            .read_line(&mut first)
            .expect("the driver's first line");
        let v: serde_json::Value = serde_json::from_str(&first)
            .unwrap_or_else(|e| panic!("the driver said {first:?}: {e}"));
        let chromium = v["pid"].as_u64().expect("Chromium's pid") as u32;
        Browser {
            driver,
            stdin,
            stdout,
            chromium,
        }
    }

    fn ask(&mut self, line: &str) -> serde_json::Value {
        writeln!(self.stdin, "{line}").expect("write to the driver");
        let mut answer = String::new();
        self.stdout.read_line(&mut answer).expect("read the driver");
        let v: serde_json::Value = serde_json::from_str(&answer)
            .unwrap_or_else(|e| panic!("the driver answered {answer:?} to {line}: {e}"));
        assert!(v.get("error").is_none(), "{line}: {v}");
        v["value"].clone()
    }

    /// The value of the JavaScript expression `js` (one line), awaited if a promise.
    pub fn eval(&mut self, js: &str) -> serde_json::Value {
        assert!(!js.contains('\n'), "one line of JavaScript");
        self.ask(&format!("eval {js}"))
    }

    /// Polls `js` until it is true, failing after `within`. An exception (the page not
    /// loaded yet, an element not there yet) counts as false.
    pub fn wait_for(&mut self, what: &str, within: Duration, js: &str) {
        let deadline = Instant::now() + within;
        let guarded =
            format!("(() => {{ try {{ return {js}; }} catch (e) {{ return false; }} }})()");
        while self.eval(&guarded) != serde_json::Value::Bool(true) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A PNG of the page at `path`.
    pub fn screenshot(&mut self, path: &std::path::Path) {
        self.ask(&format!("screenshot {}", path.display()));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.driver.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Whatever is left: Chromium's process group, then the driver.
        kill_group(self.chromium);
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// SIGKILL to the process group `pid` leads (Chromium's, started in a session of its
/// own), through `kill(1)`.
fn kill_group(pid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pid}")])
        .stderr(Stdio::null())
        .status();
}
