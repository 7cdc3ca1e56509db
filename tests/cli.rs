//! The binary as an operator meets it: `check` verdicts and exit codes, `--help`.

use std::process::Command;

fn fxprelay(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_fxprelay"))
        .args(args)
        .output()
        .expect("run fxprelay");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn check(yaml: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, yaml).unwrap();
    fxprelay(&["check", "-c", path.to_str().unwrap()])
}

#[test]
fn shipped_config_checks_ok() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/fxprelay.yaml");
    let (ok, out) = fxprelay(&["check", "-c", path]);
    assert!(ok, "{out}");
    assert!(out.contains("OK"), "{out}");
    // The global flag works after the subcommand and before it.
    let (ok, _) = fxprelay(&["-c", path, "check"]);
    assert!(ok);
}

#[test]
fn bad_configs_fail_naming_key_and_line() {
    let cases = [
        (
            "listeners:\n  - name: a\n    bind: 127.0.0.1:2121\n    upstream: h:21\n    colour: red\n",
            &["line 5", "colour"][..],
        ),
        (
            "listeners:\n  - name: a\n    bind: 127.0.0.300:2121\n    upstream: h:21\n",
            &["line 3", "127.0.0.300:2121"][..],
        ),
        (
            "listeners:\n  - name: a\n    bind: 127.0.0.1:2121\n    upstream: h:21\n  - name: a\n    bind: 127.0.0.1:2122\n    upstream: h:21\n",
            &["line 5", "listeners[1].name", "duplicate"][..],
        ),
        (
            "listeners:\n  - name: a\n    bind: 127.0.0.1:2121\n    upstream: 192.168.1.10\n",
            &["line 4", "host:port"][..],
        ),
        ("listeners: []\n", &["listeners", "at least one"][..]),
    ];
    for (yaml, needles) in cases {
        let (ok, out) = check(yaml);
        assert!(!ok, "should fail:\n{yaml}");
        for n in needles {
            assert!(out.contains(n), "missing {n:?} in:\n{out}");
        }
    }
}

#[test]
fn missing_file_is_a_clear_error() {
    let (ok, out) = fxprelay(&["check", "-c", "/nonexistent/fxprelay.yaml"]);
    assert!(!ok);
    assert!(out.contains("cannot read config file"), "{out}");
}

#[test]
fn help_describes_commands() {
    let (ok, out) = fxprelay(&["--help"]);
    assert!(ok);
    for word in ["run", "check", "--config", "--log-format"] {
        assert!(out.contains(word), "{out}");
    }
}

#[test]
fn check_warns_expands_and_binds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    std::fs::write(
        &path,
        "listeners:\n  - name: a\n    bind: ${BIND}\n    upstream: h:21\n    data: passthrough\n    upstream_data: active\n",
    )
    .unwrap();
    let run = |args: &[&str], bind: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_fxprelay"))
            .args(args)
            .arg("-c")
            .arg(&path)
            .env("BIND", bind)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let (ok, out) = run(&["check"], "127.0.0.1:2121");
    assert!(ok, "{out}");
    assert!(
        out.contains("warning") && out.contains("`upstream_data` does nothing"),
        "{out}"
    );
    assert!(out.contains("2 warnings"), "{out}");
    // --bind tries the binds: a port another program holds fails.
    let (ok, out) = run(&["check", "--bind"], &format!("127.0.0.1:{port}"));
    assert!(!ok && out.contains("cannot bind listener `a`"), "{out}");
    let (ok, out) = run(&["config"], "127.0.0.1:2121");
    assert!(
        ok && out.contains("bind: 127.0.0.1:2121") && out.contains("idle_timeout: 15m"),
        "{out}"
    );
    drop(busy);
}

#[test]
fn a_misspelt_key_gets_a_suggestion_naming_the_file() {
    let (ok, out) = check(
        "listeners:\n  - name: a\n    bind: 127.0.0.1:2121\n    upstream: h:21\n    upstream_dat: active\n",
    );
    assert!(!ok);
    assert!(out.contains("did you mean `upstream_data`?"), "{out}");
    assert!(
        out.contains("c.yaml:5:5") && !out.contains("<input>"),
        "{out}"
    );
    assert_eq!(out.matches("unknown field").count(), 1, "{out}");
}
