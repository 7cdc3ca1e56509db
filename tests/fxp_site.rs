//! `SITE FXP` through a proxied session, driven by Python ftplib's `sendcmd` (a plain
//! client with no FXP support of its own) against two real servers that allow FXP.

mod common;

use std::process::Command;
use std::time::Duration;

use common::clients;
use common::peers::{self, FtpServer, ServerKind, ServerOptions};
use common::proxy::{ListenerSpec, Proxy};
use common::unique_loopback_ip;

fn fxp_server(kind: ServerKind) -> FtpServer {
    let mut opts = ServerOptions::new(unique_loopback_ip());
    opts.foreign_data = true;
    FtpServer::start(kind, opts)
}

/// Logs in through the proxy with ftplib and runs `commands`; a command ending in `+`
/// expects a preliminary reply and reads the final one too. Prints every reply.
fn ftplib_site(proxy: &Proxy, commands: &[&str]) -> clients::ClientResult {
    let script = r#"
import ftplib, sys
host, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
ftp = ftplib.FTP()
ftp.connect(host, port, timeout=60)
ftp.login(user, password)
for cmd in sys.argv[5:]:
    wait = cmd.endswith("+")
    cmd = cmd.rstrip("+")
    try:
        print(ftp.sendcmd(cmd))
        if wait:
            print(ftp.voidresp())
    except ftplib.Error as e:
        print("ERR", e)
ftp.quit()
"#;
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.arg("-c")
        .arg(script)
        .arg(proxy.addr.ip().to_string())
        .arg(proxy.addr.port().to_string())
        .arg(peers::USER)
        .arg(peers::PASS)
        .args(commands);
    clients::run(cmd, Duration::from_secs(90))
}

#[test]
fn site_fxp_put_get_status_help_and_failures() {
    let a = fxp_server(ServerKind::Vsftpd);
    let b = fxp_server(ServerKind::Pyftpdlib);
    let mut spec = ListenerSpec::new(a.addr);
    spec.data = "relay";
    let proxy = Proxy::start_with(
        unique_loopback_ip(),
        spec,
        &format!("fxp:\n  allow: [\"{}/32\"]\n", b.addr.ip()),
    );
    let to_b = format!(
        "SITE FXP TO ftp://{}:{}@{}/",
        peers::USER,
        peers::PASS,
        b.addr
    );

    let r = ftplib_site(
        &proxy,
        &[
            "FEAT",
            "HELP",
            &to_b,
            "SITE FXP PUT big.bin copy.bin+",
            "SITE FXP GET copy.bin back.bin+",
            "SITE FXP STATUS",
            "SITE FXP PUT missing.bin x.bin+",
        ],
    );
    assert!(r.ok(), "{r}\n{}", proxy.log());
    let out = &r.stdout;
    assert!(
        out.contains("SITE FXP"),
        "FEAT/HELP list the commands: {out}"
    );
    assert!(out.contains("200 FXP destination set to"), "{out}");
    assert!(
        !out.contains(&format!(":{}@", peers::PASS)),
        "password echoed: {out}"
    );
    assert!(
        out.contains("226 FXP copy done") && out.contains("by fxp"),
        "{out}"
    );
    assert!(
        std::fs::read(b.file("copy.bin")).unwrap() == peers::big_bin(),
        "A to B"
    );
    assert!(
        std::fs::read(a.file("back.bin")).unwrap() == peers::big_bin(),
        "B to A"
    );
    assert!(out.contains("Last copy: FXP copy done"), "{out}");
    let failure = out.lines().last().unwrap_or("");
    assert!(
        failure.starts_with("ERR 5") && failure.contains("missing.bin"),
        "the server's words: {out}"
    );
    // The servers moved the bytes; the proxy's data relay carried none.
    assert_eq!(proxy.metric("fxprelay_data_bytes_total", &[]), 0.0);

    // A destination outside fxp.allow is refused when the copy connects.
    let outside = format!(
        "SITE FXP TO ftp://x:y@{}:{}/",
        unique_loopback_ip(),
        b.addr.port()
    );
    let r = ftplib_site(&proxy, &[&outside, "SITE FXP PUT big.bin z.bin+"]);
    assert!(r.stdout.contains("not in fxp.allow"), "{r}");
}

/// Before login `SITE FXP` is refused by the proxy itself: never forwarded to the server,
/// and the destination's password never logged (the test proxy logs at debug level).
#[test]
fn site_fxp_before_login_is_refused_and_its_password_kept_secret() {
    let a = fxp_server(ServerKind::Vsftpd);
    let proxy = Proxy::start(unique_loopback_ip(), ListenerSpec::new(a.addr));
    let mut c = common::control::Control::connect(proxy.addr);
    c.expect(220);
    c.cmd_expect("SITE FXP TO ftp://bob:Sekr1tPw@127.0.0.1/", 530);
    c.cmd_expect(&format!("USER {}", peers::USER), 331);
    c.cmd_expect(&format!("PASS {}", peers::PASS), 230);
    c.cmd_expect("SITE FXP TO ftp://bob:Sekr1tPw@127.0.0.1/", 200);
    c.cmd_expect("QUIT", 221);
    let logs = format!("{}\n{}", proxy.log(), a.log());
    assert!(!logs.contains("Sekr1tPw"), "{logs}");
}
