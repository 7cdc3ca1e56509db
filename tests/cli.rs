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

/// The shipped config with only the forward listener's `bind` opened to other hosts is
/// an open FTP relay: `check` still passes (the file is valid) but says so, naming the
/// listener, and the unchanged file draws no such warning.
#[test]
fn check_warns_when_the_shipped_forward_listener_is_opened_to_other_hosts() {
    let shipped = include_str!("../config/fxprelay.yaml");
    let (ok, out) = check(shipped);
    assert!(ok && !out.contains("open FTP relay"), "{out}");
    let opened = shipped.replace("bind: 127.0.0.1:2122", "bind: 0.0.0.0:2122");
    assert_ne!(opened, shipped, "the shipped forward listener's bind moved");
    let (ok, out) = check(&opened);
    assert!(ok, "{out}");
    assert!(
        out.contains("open FTP relay") && out.contains("`forward`"),
        "{out}"
    );
}

/// The image's config passes `check` without a warning once its token is given, and
/// refuses to load without one (an open API is not a default).
#[test]
fn the_docker_config_checks_without_warnings() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docker/fxprelay.yaml");
    let run = |token: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_fxprelay"));
        cmd.args(["check", "-c", path])
            .env_remove("FXPRELAY_ADMIN_TOKEN");
        if let Some(t) = token {
            cmd.env("FXPRELAY_ADMIN_TOKEN", t);
        }
        let out = cmd.output().expect("run fxprelay");
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    };
    let (ok, out) = run(Some("t0ken"));
    assert!(ok && !out.contains("warning"), "{out}");
    let (ok, out) = run(None);
    assert!(!ok && out.contains("FXPRELAY_ADMIN_TOKEN"), "{out}");
}

/// A key made by root (`0600 root`) that the proxy's own user cannot read: `check`, run
/// as that user, says "permission denied", who it runs as, and points at the `key:`
/// line; a key passed as a systemd credential is found through `$CREDENTIALS_DIRECTORY`.
#[test]
fn a_key_the_proxy_user_cannot_read_is_named_at_its_key_line() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let c = rcgen::generate_simple_self_signed(vec!["proxy.test".into()]).unwrap();
    let (cert, key) = (dir.path().join("proxy.crt"), dir.path().join("proxy.key"));
    std::fs::write(&cert, c.cert.pem()).unwrap();
    std::fs::write(&key, c.signing_key.serialize_pem()).unwrap();
    std::fs::set_permissions(&cert, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = dir.path().join("fxprelay.yaml");
    std::fs::write(
        &config,
        format!(
            "listeners:\n  - name: a\n    bind: 127.0.0.1:2121\n    upstream: h:21\n    data: relay\n    tls:\n      client:\n        mode: explicit\n        cert: ${{CREDENTIALS_DIRECTORY:-{dir}}}/proxy.crt\n        key: ${{CREDENTIALS_DIRECTORY:-{dir}}}/proxy.key\n",
            dir = dir.path().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let as_nobody = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_fxprelay"))
        .args(["check", "-c"])
        .arg(&config)
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .expect("setpriv (util-linux)");
    let text = String::from_utf8_lossy(&as_nobody.stderr);
    assert!(!as_nobody.status.success(), "{text}");
    assert!(
        text.contains("line 10: `listeners[0].tls.client.key`")
            && text.contains("permission denied: the proxy runs as uid 65534")
            && text.contains("LoadCredential="),
        "{text}"
    );
    // systemd copies credentials readable for the service's user into a directory of
    // their own: the same file, found through the variable.
    let creds = tempfile::tempdir().unwrap();
    std::fs::set_permissions(creds.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for f in ["proxy.crt", "proxy.key"] {
        let to = creds.path().join(f);
        std::fs::copy(dir.path().join(f), &to).unwrap();
        std::os::unix::fs::chown(&to, Some(65534), Some(65534)).unwrap();
    }
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_fxprelay"))
        .args(["check", "-c"])
        .arg(&config)
        .env("CREDENTIALS_DIRECTORY", creds.path())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && text.contains("OK"), "{text}");
}

/// `run` says once that it starts (version, config file, listeners), and an error that
/// stops it is printed once.
#[test]
fn run_says_it_starts_and_a_fatal_error_once() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(
        &path,
        format!(
            "admin:\n  bind: 127.0.0.1:0\nlisteners:\n  - name: a\n    bind: \"{}\"\n    upstream: h\n",
            busy.local_addr().unwrap()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fxprelay"))
        .args(["run", "-c"])
        .arg(&path)
        .env_remove("RUST_LOG")
        .output()
        .expect("run fxprelay");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("fxprelay starting")
            && err.contains(env!("CARGO_PKG_VERSION"))
            && err.contains(&format!("config={}", path.display()))
            && err.contains("listeners=1"),
        "{err}"
    );
    assert_eq!(err.matches("cannot bind listener `a`").count(), 1, "{err}");
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
            "listeners:\n  - name: a\n    bind: 127.0.0.1:2121\n    upstream: 192.168.1.10:ftp\n",
            &["line 4", "port"][..],
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

/// `-c` is offered by the commands that read the configuration and by no other; the log
/// options by the commands that log.
#[test]
fn each_command_offers_only_its_own_options() {
    for command in ["run", "check", "config", "healthcheck", "status"] {
        let (ok, out) = fxprelay(&[command, "--help"]);
        assert!(ok && out.contains("--config"), "{command}: {out}");
    }
    for command in ["fxp", "man", "completions"] {
        let (ok, out) = fxprelay(&[command, "--help"]);
        assert!(ok && !out.contains("--config"), "{command}: {out}");
    }
    // The log options where something logs, and nowhere else.
    for command in ["run", "check", "config", "fxp"] {
        let (ok, out) = fxprelay(&[command, "--help"]);
        assert!(ok && out.contains("--log-format"), "{command}: {out}");
    }
    for command in ["man", "completions", "healthcheck", "status"] {
        let (ok, out) = fxprelay(&[command, "--help"]);
        assert!(ok && !out.contains("--log"), "{command}: {out}");
    }
}

/// `man --dir` writes the main page and one per command, each naming its command, so
/// the main page's SEE ALSO points at pages that exist.
#[test]
fn man_writes_a_page_per_command() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = fxprelay(&["man", "--dir", dir.path().to_str().unwrap()]);
    assert!(ok, "{out}");
    let main = std::fs::read_to_string(dir.path().join("fxprelay.1")).unwrap();
    for command in [
        "run",
        "check",
        "config",
        "healthcheck",
        "completions",
        "man",
        "fxp",
        "agent",
    ] {
        let page = dir.path().join(format!("fxprelay-{command}.1"));
        let text = std::fs::read_to_string(&page).unwrap_or_else(|e| panic!("{page:?}: {e}"));
        assert!(
            text.contains(&format!(".TH fxprelay-{command}")),
            "{page:?}"
        );
        assert!(
            main.contains(&format!("fxprelay\\-{command}")),
            "main page lacks {command}"
        );
    }
    // fxprelay.yaml(5): every key of README's configuration reference, with its default.
    let yaml = std::fs::read_to_string(dir.path().join("fxprelay.yaml.5")).unwrap();
    assert!(yaml.starts_with(".TH fxprelay.yaml 5"), "{yaml}");
    let readme = include_str!("../README.md");
    let reference = readme
        .split("\n## Configuration reference\n")
        .nth(1)
        .unwrap();
    let reference = reference.split("\n## ").next().unwrap();
    let keys: Vec<&str> = reference
        .lines()
        .filter_map(|l| l.strip_prefix("| `")?.split('`').next())
        .collect();
    assert!(keys.len() > 40, "{keys:?}");
    for key in keys {
        assert!(
            yaml.contains(&format!(".TP\n\\fB{key}\\fR\nDefault: ")),
            "{key} missing"
        );
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

/// `fxprelay fxp` runs outside any proxy and has no agent links: a URL naming an agent
/// is refused before anything is connected, with where such a copy can be ordered.
#[test]
fn the_cli_refuses_a_url_naming_an_agent() {
    let out = Command::new(env!("CARGO_BIN_EXE_fxprelay"))
        .args([
            "fxp",
            "ftp://u:p@10.0.0.5/a.bin?via=site-a",
            "ftp://u:p@127.0.0.99:1/b.bin",
        ])
        .output()
        .expect("run fxprelay");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("agent site-a") && err.contains("/api/v1/transfers"),
        "{err}"
    );
}
