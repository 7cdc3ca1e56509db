//! Hash verification of FXP copies against real servers: proftpd 1.3.8 with Debian's
//! `mod_digest` (`HASH` and `XSHA256`/...; the only server of the lab with hash
//! commands), and pyftpdlib given `HASH` or the legacy `X*` commands in Python by
//! `tests/peers/pyftpd.py` (as the second side, never alone). vsftpd and pure-ftpd have
//! no hash command: with them a copy falls back to `SIZE` and says so.

mod common;

use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::peers::{self, Digests, FtpServer, ServerKind, ServerOptions};
use common::unique_loopback_ip;
use fxprelay::fxp::digest::{Algorithm, Check};
use fxprelay::fxp::job::{Failure, FailureKind};
use fxprelay::fxp::{self, EngineOptions, FtpUrl, Method};

/// An FXP-friendly server with `digests`.
fn server(kind: ServerKind, digests: Digests, corrupt_uploads: bool) -> FtpServer {
    let mut opts = ServerOptions::new(unique_loopback_ip());
    opts.foreign_data = true;
    opts.digests = digests;
    opts.corrupt_uploads = corrupt_uploads;
    FtpServer::start(kind, opts)
}

fn url_text(s: &FtpServer, path: &str) -> String {
    format!("ftp://{}:{}@{}/{path}", s.user, s.pass, s.addr)
}

fn url(s: &FtpServer, path: &str) -> FtpUrl {
    FtpUrl::parse(&url_text(s, path)).unwrap()
}

/// EngineOptions for the tests, counting the retries the engine makes.
fn opts(retries: &Arc<AtomicU32>) -> EngineOptions {
    let seen = retries.clone();
    EngineOptions {
        timeout: Duration::from_secs(10),
        retries: 2,
        progress: Some(Arc::new(move |e: &fxp::FileEvent| {
            if let fxp::FileEvent::Retrying { .. } = e {
                seen.fetch_add(1, Ordering::Relaxed);
            }
            if let fxp::FileEvent::MethodFailed { .. } | fxp::FileEvent::Retrying { .. } = e {
                eprintln!("{e:?}");
            }
        })),
        ..EngineOptions::default()
    }
}

fn copy(src: &FtpUrl, dst: &FtpUrl, o: &EngineOptions) -> Result<fxp::Report, Failure> {
    let order = fxp::Order::File {
        src: src.clone(),
        dst: dst.clone(),
        skip_existing: false,
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(common::run_job(order, o.clone()))
        .outcome()
        .expect("a finished job has an outcome")
        .cloned()
}

fn logs(a: &FtpServer, b: &FtpServer) -> String {
    format!("{}\n{}", a.log(), b.log())
}

fn assert_big(path: &std::path::Path) {
    let got = std::fs::read(path).unwrap_or_default();
    assert!(
        got == peers::big_bin(),
        "{} differs: {} bytes",
        path.display(),
        got.len()
    );
}

/// Two proftpd servers with mod_digest: the copy is checked with SHA-512, the strongest
/// algorithm both list in `HASH`, each server hashing its own file.
#[test]
fn proftpd_to_proftpd_is_verified_with_sha512() {
    let a = server(ServerKind::Proftpd, Digests::Hash, false);
    let b = server(ServerKind::Proftpd, Digests::Hash, false);
    let retries = Arc::new(AtomicU32::new(0));
    let r = copy(&url(&a, "big.bin"), &url(&b, "copy.bin"), &opts(&retries))
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(&a, &b)));
    assert_eq!(r.method, Method::Fxp, "{r:?}");
    assert_eq!(r.verified, Check::Hash(Algorithm::Sha512), "{r:?}");
    assert_eq!(r.bytes, peers::BIG_LEN as u64);
    assert_big(&b.file("copy.bin"));
}

/// The CLI between proftpd (mod_digest) and pyftpdlib with `HASH` (SHA-256 at most):
/// the summary line names the hash; the same servers with `--verify size` say `size`.
#[test]
fn cli_reports_a_verified_sha256() {
    let a = server(ServerKind::Proftpd, Digests::Hash, false);
    let b = server(ServerKind::Pyftpdlib, Digests::Hash, false);
    let (src, dst) = (url_text(&a, "big.bin"), url_text(&b, "copy.bin"));
    let (ok, out, err) = common::fxprelay_fxp(&[&src, &dst, "--log", "debug"]);
    assert!(ok, "{out}\n{err}\n{}", logs(&a, &b));
    assert!(
        out.contains("method fxp, 8388608 bytes") && out.contains("verified sha-256"),
        "{out}"
    );
    // Both servers were asked, each after selecting SHA-256.
    assert!(
        err.contains("OPTS HASH SHA-256") && err.contains("HASH copy.bin"),
        "{err}"
    );
    assert_big(&b.file("copy.bin"));
    let (ok, out, err) = common::fxprelay_fxp(&[&src, &dst, "--verify", "size"]);
    assert!(ok && out.contains("verified size"), "{out}\n{err}");
    // A tree: the summary counts the files per check.
    let dir = a.file("d");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("f.txt"), b"tree file\n").unwrap();
    let owner = std::fs::metadata(&a.root).unwrap();
    for p in [&dir, &dir.join("f.txt")] {
        std::os::unix::fs::chown(p, Some(owner.uid()), Some(owner.gid())).unwrap();
    }
    let (src, dst) = (url_text(&a, "d"), url_text(&b, "d2"));
    let (ok, out, err) = common::fxprelay_fxp(&[&src, &dst, "--recursive"]);
    assert!(ok && out.contains("verified: sha-256 1"), "{out}\n{err}");
}

/// proftpd answers `HASH`, the other server only `XSHA256`/`XMD5`/...: each is asked
/// its own way for the same algorithm.
#[test]
fn hash_on_one_side_and_xsha256_on_the_other() {
    let a = server(ServerKind::Pyftpdlib, Digests::Legacy, false);
    let b = server(ServerKind::Proftpd, Digests::Hash, false);
    let retries = Arc::new(AtomicU32::new(0));
    let r = copy(&url(&a, "big.bin"), &url(&b, "copy.bin"), &opts(&retries))
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(&a, &b)));
    assert_eq!(r.verified, Check::Hash(Algorithm::Sha256), "{r:?}");
    assert_big(&b.file("copy.bin"));
}

/// A destination that changes what it stored (same size, first byte flipped): proftpd's
/// SHA-256 of the source and the destination's differ; the file fails at once (no
/// retry would mend it), the mismatch named, and the copy kept under a new name.
#[test]
fn a_corrupted_copy_fails_and_is_kept_for_inspection() {
    let a = server(ServerKind::Proftpd, Digests::Hash, false);
    let b = server(ServerKind::Pyftpdlib, Digests::Hash, true);
    let retries = Arc::new(AtomicU32::new(0));
    let e = copy(&url(&a, "big.bin"), &url(&b, "copy.bin"), &opts(&retries))
        .expect_err("a corrupted copy must fail");
    let text = e.to_string();
    assert_eq!(e.kind, FailureKind::HashMismatch, "{text}");
    assert!(
        text.contains("sha-256 differs after the copy")
            && text.contains("kept as copy.bin.fxprelay-mismatch"),
        "{text}"
    );
    assert_eq!(retries.load(Ordering::Relaxed), 0, "{text}");
    assert!(!b.file("copy.bin").exists(), "the bad copy kept its name");
    let kept = std::fs::read(b.file("copy.bin.fxprelay-mismatch")).unwrap();
    assert_eq!(kept.len(), peers::BIG_LEN);
    assert_eq!(kept[0], peers::big_bin()[0] ^ 0xFF);
    assert_eq!(&kept[1..], &peers::big_bin()[1..]);
}

/// A hash takes as long as the server needs to read the file: bounded by `hash_timeout`,
/// not by the (shorter) `timeout` of every other step. Past it, the file fails as
/// unverified and the copy stays where it is.
#[test]
fn a_slow_hash_is_bounded_by_the_hash_timeout() {
    let a = server(ServerKind::Proftpd, Digests::Hash, false);
    let mut o = ServerOptions::new(unique_loopback_ip());
    o.foreign_data = true;
    o.digests = Digests::Hash;
    o.hash_delay = Some(Duration::from_secs(6));
    let b = FtpServer::start(ServerKind::Pyftpdlib, o);
    let retries = Arc::new(AtomicU32::new(0));
    let patient = EngineOptions {
        timeout: Duration::from_secs(3),
        hash_timeout: Duration::from_secs(60),
        ..opts(&retries)
    };
    let r = copy(&url(&a, "hello.txt"), &url(&b, "one.txt"), &patient)
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(&a, &b)));
    assert_eq!(r.verified, Check::Hash(Algorithm::Sha256), "{r:?}");
    let hasty = EngineOptions {
        hash_timeout: Duration::from_secs(1),
        ..patient
    };
    let e = copy(&url(&a, "hello.txt"), &url(&b, "two.txt"), &hasty)
        .expect_err("a hash past its timeout must fail the file");
    let text = e.to_string();
    assert!(
        e.kind == FailureKind::Unverified
            && text.contains("no answer within 1s")
            && text.contains("raise --hash-timeout")
            && text.contains("left in place"),
        "{text}"
    );
    assert_eq!(retries.load(Ordering::Relaxed), 0, "{text}");
    assert_eq!(std::fs::read(b.file("two.txt")).unwrap(), peers::HELLO);
}

/// `--on-mismatch delete` through the CLI: exit 1, the reason on stderr, no copy left.
#[test]
fn cli_deletes_a_mismatching_copy_when_asked() {
    let a = server(ServerKind::Proftpd, Digests::Hash, false);
    let b = server(ServerKind::Pyftpdlib, Digests::Hash, true);
    let (src, dst) = (url_text(&a, "hello.txt"), url_text(&b, "copy.txt"));
    let (ok, out, err) = common::fxprelay_fxp(&[&src, &dst, "--on-mismatch", "delete"]);
    assert!(!ok, "{out}\n{err}");
    assert!(
        err.contains("sha-256 differs after the copy") && err.contains("was deleted"),
        "{err}"
    );
    assert!(!b.file("copy.txt").exists() && !b.file("copy.txt.fxprelay-mismatch").exists());
}

/// vsftpd has no hash command: against proftpd the copy is checked with `SIZE`, and the
/// report says so; `--verify hash` refuses before anything is copied, naming what each
/// server offers.
#[test]
fn without_a_common_hash_the_size_is_checked() {
    let a = server(ServerKind::Proftpd, Digests::Hash, false);
    let b = server(ServerKind::Vsftpd, Digests::None, false);
    let retries = Arc::new(AtomicU32::new(0));
    let r = copy(&url(&a, "big.bin"), &url(&b, "copy.bin"), &opts(&retries))
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(&a, &b)));
    assert_eq!(r.verified, Check::Size, "{r:?}");
    assert_big(&b.file("copy.bin"));

    let (src, dst) = (url_text(&a, "big.bin"), url_text(&b, "copy.bin"));
    let (ok, out, err) = common::fxprelay_fxp(&[&src, &dst, "--verify", "size"]);
    assert!(ok && out.contains(", verified size"), "{out}\n{err}");
    let (ok, out, err) = common::fxprelay_fxp(&[&src, &dst, "--verify", "none"]);
    assert!(ok && out.contains(", not verified"), "{out}\n{err}");

    let (src, dst) = (url_text(&a, "hello.txt"), url_text(&b, "other.txt"));
    let (ok, out, err) = common::fxprelay_fxp(&[&src, &dst, "--verify", "hash"]);
    assert!(!ok, "{out}\n{err}");
    assert!(
        err.contains("no hash algorithm both servers compute")
            && err.contains("sha-512")
            && err.contains("no hash command"),
        "{err}"
    );
    assert!(
        !b.file("other.txt").exists(),
        "copied despite --verify hash"
    );
}

/// The API's job view says which check was made, and `options.verify` is honoured.
#[test]
fn the_api_job_view_names_the_check() {
    use common::proxy::{ListenerSpec, Proxy, http};
    let a = server(ServerKind::Proftpd, Digests::Hash, false);
    let b = server(ServerKind::Proftpd, Digests::Hash, false);
    let extra = format!(
        "fxp:\n  allow: [\"{}/32\", \"{}/32\"]\n",
        a.addr.ip(),
        b.addr.ip()
    );
    let proxy = Proxy::start_with(unique_loopback_ip(), ListenerSpec::new(a.addr), &extra);
    let api = proxy.admin;
    let order = |dst: &str, verify: &str| {
        let body = format!(
            r#"{{"source": "{}", "destination": "{}", "options": {{"verify": "{verify}"}}}}"#,
            url_text(&a, "big.bin"),
            url_text(&b, dst)
        );
        let (status, resp) = http(api, "POST", "/api/v1/transfers", None, &body);
        assert!(status / 100 == 2, "{status} {resp}");
        let id = resp
            .split("\"id\":")
            .nth(1)
            .and_then(|r| r.split([',', '}']).next())
            .unwrap()
            .trim()
            .trim_matches('"')
            .to_owned();
        let path = format!("/api/v1/transfers/{id}");
        let mut view = String::new();
        common::wait_for("the transfer to end", || {
            view = http(api, "GET", &path, None, "").1;
            view.contains("\"state\":\"done\"") || view.contains("\"state\":\"failed\"")
        });
        view
    };
    let v = order("one.bin", "auto");
    assert!(
        v.contains("\"state\":\"done\"") && v.contains("\"verified\":\"sha-512\""),
        "{v}"
    );
    let v = order("two.bin", "size");
    assert!(v.contains("\"verified\":\"size\""), "{v}");
    assert_big(&b.file("one.bin"));
}
