//! The console at the admin address, in a real browser (headless Chromium): a real lftp
//! download through the proxy and a running FXP job show up and their bytes grow between
//! two reads of the page's DOM; the token form lets the page use a token-guarded API;
//! the page's "End" button ends the lftp session; a reload's new upstream shows; an
//! operator's ban shows and the page lifts it.
//! `FXPRELAY_CONSOLE_SCREENSHOT=PATH` keeps the screenshot (README's picture).

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::browser::Browser;
use common::peers::{self, FtpServer, ServerKind, ServerOptions};
use common::proxy::{ListenerSpec, Proxy, http};
use common::{unique_loopback_ip, wait_for};

const TOKEN: &str = "console-t0ken";

/// Both the session's and the job's byte counts as the page shows them now.
const READ: &str = "[Number(document.querySelector('#sessions tbody tr[data-session-id]')?.dataset.bytes || -1), Number(document.querySelector('#transfers tbody tr[data-transfer-id]')?.dataset.bytesDone || -1)]";

#[test]
fn the_console_shows_a_live_session_and_job_and_ends_the_session() {
    // 8 MiB at 256 KiB/s from `a`: both transfers run for half a minute.
    let server = |throttle| {
        let mut opts = ServerOptions::new(unique_loopback_ip());
        opts.foreign_data = true;
        opts.throttle = throttle;
        FtpServer::start(ServerKind::Pyftpdlib, opts)
    };
    let (a, b) = (server(Some(256 * 1024)), server(None));
    let extra = format!(
        "defense:\n  enabled: true\nfxp:\n  allow: [\"{}/32\", \"{}/32\"]\n",
        a.addr.ip(),
        b.addr.ip()
    );
    let mut spec = ListenerSpec::new(a.addr).relay(&[]);
    spec.admin_token = Some(TOKEN);
    let proxy = Proxy::start_with(unique_loopback_ip(), spec, &extra);

    // A real client downloading through the proxy.
    let dir = tempfile::tempdir().unwrap();
    let mut lftp = Command::new("lftp")
        .arg("-c")
        .arg(format!(
            "set net:max-retries 1; set ftp:passive-mode yes; open -u {},{} ftp://{}; get {} -o {}",
            peers::USER,
            peers::PASS,
            proxy.addr,
            peers::BIG_NAME,
            dir.path().join("got.bin").display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start lftp");
    // And a job between the two servers.
    let job = format!(
        r#"{{"source": "ftp://{u}:{p}@{a}/{big}", "destination": "ftp://{u}:{p}@{b}/copy.bin"}}"#,
        u = peers::USER,
        p = peers::PASS,
        a = a.addr,
        b = b.addr,
        big = peers::BIG_NAME,
    );
    let (status, resp) = http(proxy.admin, "POST", "/api/v1/transfers", Some(TOKEN), &job);
    assert_eq!(status, 202, "{resp}");

    let mut page = Browser::open(&format!("http://{}/", proxy.admin));
    // The API wants the token: the page asks for it.
    page.wait_for(
        "the token form",
        Duration::from_secs(20),
        "!document.querySelector('#auth').hidden",
    );
    page.eval(&format!(
        "document.querySelector('#token').value = '{TOKEN}'; document.querySelector('#auth form').requestSubmit(); true"
    ));
    page.wait_for(
        "the session's transfer and the job on the page",
        Duration::from_secs(20),
        &format!("{READ}.every(n => n > 0)"),
    );
    let first = page.eval(READ);
    page.wait_for(
        "both counts to grow on the page",
        Duration::from_secs(20),
        &format!("(([s, j]) => s > {} && j > {})({READ})", first[0], first[1]),
    );
    let row = page.eval("document.querySelector('#sessions tbody tr[data-session-id]').innerText");
    let row = row.as_str().unwrap_or_default().to_owned();
    assert!(
        row.contains(peers::USER) && row.contains("RETR") && row.contains(peers::BIG_NAME),
        "{row}"
    );
    let listeners = page.eval("document.querySelector('#listeners tbody').innerText");
    assert!(
        listeners
            .as_str()
            .unwrap_or_default()
            .contains(&a.addr.to_string()),
        "{listeners}"
    );
    let shot = std::env::var_os("FXPRELAY_CONSOLE_SCREENSHOT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| dir.path().join("console.png"));
    page.screenshot(&shot);
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );

    // `fxprelay status` prints the same in a terminal, with the token from the config
    // file; without a token it says which one it needs.
    let status = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_fxprelay"))
            .arg("status")
            .args(args)
            .env_remove("FXPRELAY_ADMIN_TOKEN")
            .output()
            .expect("run fxprelay status");
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    };
    let (ok, out) = status(&["-c", proxy.config.to_str().unwrap()]);
    assert!(ok, "{out}");
    for needle in [
        "SESSIONS (1)",
        &format!("RETR {}", peers::BIG_NAME),
        "FXP TRANSFERS (1)",
        "running",
        &a.addr.to_string(),
    ] {
        assert!(out.contains(needle), "{needle} missing:\n{out}");
    }
    let (ok, out) = status(&["--admin", &proxy.admin.to_string()]);
    assert!(
        !ok && out.contains("401") && out.contains("admin.token"),
        "{out}"
    );

    // The page's End button ends the client's session: lftp loses its connection, the
    // API and the page forget the session.
    let id = page
        .eval("document.querySelector('#sessions tbody tr[data-session-id]').dataset.sessionId");
    let id = id.as_str().expect("a session id").to_owned();
    page.eval(&format!(
        "document.querySelector('button[data-end=\"{id}\"]').click(); true"
    ));
    wait_for("the session to end", || {
        let (_, body) = http(proxy.admin, "GET", "/api/v1/sessions", Some(TOKEN), "");
        body.contains("\"sessions\":[]")
    });
    page.wait_for(
        "the page to drop the session",
        Duration::from_secs(10),
        "document.querySelectorAll('#sessions tbody tr').length === 0",
    );
    wait_for("lftp to give up", || matches!(lftp.try_wait(), Ok(Some(_))));
    assert!(
        proxy.log().contains("an operator ended the session"),
        "{}",
        proxy.log()
    );

    // A reload's new upstream shows on the page (and in the API).
    let config = std::fs::read_to_string(&proxy.config).unwrap();
    std::fs::write(
        &proxy.config,
        config.replace(&a.addr.to_string(), &b.addr.to_string()),
    )
    .unwrap();
    proxy.reload();
    page.wait_for(
        "the reloaded upstream on the page",
        Duration::from_secs(20),
        &format!(
            "document.querySelector('#listeners tbody').innerText.includes('{}')",
            b.addr
        ),
    );
    // An operator's ban shows, and the page's Lift button lifts it.
    let (status, resp) = http(
        proxy.admin,
        "POST",
        "/api/v1/bans",
        Some(TOKEN),
        r#"{"address": "192.0.2.77", "duration": "1h"}"#,
    );
    assert_eq!(status, 201, "{resp}");
    page.wait_for(
        "the ban on the page",
        Duration::from_secs(10),
        "document.querySelector('#bans tbody').innerText.includes('192.0.2.77')",
    );
    page.eval("document.querySelector('button[data-lift=\"192.0.2.77\"]').click(); true");
    wait_for("the ban lifted", || {
        let (_, body) = http(proxy.admin, "GET", "/api/v1/bans", Some(TOKEN), "");
        !body.contains("192.0.2.77")
    });

    // The job runs on; cancel it from the page too.
    page.eval("document.querySelector('#transfers button[data-cancel]').click(); true");
    page.wait_for(
        "the job cancelled on the page",
        Duration::from_secs(20),
        "document.querySelector('#transfers tbody').innerText.includes('cancelled')",
    );
    let _ = lftp.kill();
    let _ = lftp.wait();
}
