//! The state store (issue 23) with real processes and real servers: FXP jobs committed
//! to SQLite survive `kill -9` of the proxy and finish after a restart from where the
//! destination's files end; the store holds no password in clear; a store written by a
//! newer release is refused at start.

mod common;

use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use common::peers::{self, FtpServer, ServerKind, ServerOptions};
use common::proxy::{ListenerSpec, Proxy, http};
use common::{payload, unique_loopback_ip, wait_for, wait_for_within};

/// The job as JSON.
fn job_json(api: SocketAddr, id: &str) -> serde_json::Value {
    let (status, body) = http(api, "GET", &format!("/api/v1/transfers/{id}"), None, "");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// A job's id from the answer to its `POST`.
fn submitted(api: SocketAddr, body: &str) -> String {
    let (status, resp) = http(api, "POST", "/api/v1/transfers", None, body);
    assert_eq!(status, 202, "{resp}");
    let v: serde_json::Value = serde_json::from_str(&resp).unwrap();
    v["id"].as_str().unwrap().to_owned()
}

/// A throttled pyftpdlib source (256 KiB/s) and a destination, both allowing FXP.
fn slow_pair() -> (FtpServer, FtpServer) {
    let server = |throttle| {
        let mut opts = ServerOptions::new(unique_loopback_ip());
        opts.foreign_data = true;
        opts.throttle = throttle;
        FtpServer::start(ServerKind::Pyftpdlib, opts)
    };
    (server(Some(256 * 1024)), server(None))
}

/// The `fxp:` and `state:` blocks: both servers allowed, the store in `dir`.
fn config(a: &FtpServer, b: &FtpServer, dir: &Path, instance: &str) -> String {
    format!(
        "fxp:\n  allow: [\"{}/32\", \"{}/32\"]\nstate:\n  url: \"sqlite://{db}\"\n  key_file: \"{key}\"\n  instance: {instance}\n  lease: 2s\n",
        a.addr.ip(),
        b.addr.ip(),
        db = dir.join("state.db").display(),
        key = dir.join("state.key").display(),
    )
}

/// Writes `data` at `rel` in the server's root, owned as the root is.
fn put(server: &FtpServer, rel: &str, data: Option<&[u8]>) {
    let p = server.file(rel);
    match data {
        Some(d) => std::fs::write(&p, d).unwrap(),
        None => std::fs::create_dir(&p).unwrap(),
    }
    let meta = std::fs::metadata(&server.root).unwrap();
    std::os::unix::fs::chown(&p, Some(meta.uid()), Some(meta.gid())).unwrap();
}

/// pyftpdlib's line per upload: `STOR /path completed=1 bytes=N seconds=S`, as
/// (path, completed, bytes).
fn uploads(log: &str) -> Vec<(String, bool, u64)> {
    log.lines()
        .filter_map(|l| {
            let at = l.find("STOR ")?;
            let mut words = l[at + 5..].split_whitespace();
            let path = words.next()?.to_owned();
            let completed = words.next()?.strip_prefix("completed=")? == "1";
            let bytes = words.next()?.strip_prefix("bytes=")?.parse().ok()?;
            Some((path, completed, bytes))
        })
        .collect()
}

const FILE_LEN: usize = 1024 * 1024;

/// The issue's first judgement: a slow tree job, `kill -9` of the proxy mid-copy, a new
/// process on the same store: the job is listed with its id, resumes (a second run in
/// its history), and finishes with every file byte-identical, none copied twice from
/// the start (the files done before the kill are not copied again; the one under way
/// goes on with `REST`).
#[test]
fn a_tree_job_survives_kill_9_and_finishes_after_a_restart_without_copying_twice() {
    let (a, b) = slow_pair();
    let dir = tempfile::tempdir().unwrap();
    put(&a, "tree", None);
    let names = ["f1.bin", "f2.bin", "f3.bin"];
    for (i, name) in names.iter().enumerate() {
        put(
            &a,
            &format!("tree/{name}"),
            Some(&payload(FILE_LEN, i as u64 + 1)),
        );
    }
    let yaml = config(&a, &b, dir.path(), "one");
    let body = format!(
        r#"{{"source": "ftp://{u}:{p}@{a}/tree", "destination": "ftp://{u}:{p}@{b}/copy",
            "options": {{"recursive": true, "concurrency": 1, "reverse": false}}}}"#,
        u = peers::USER,
        p = peers::PASS,
        a = a.addr,
        b = b.addr
    );

    let mut first = Proxy::start_with(unique_loopback_ip(), ListenerSpec::new(a.addr), &yaml);
    let id = submitted(first.admin, &body);
    // The key was made private; the store and its journal hold no password.
    let key = dir.path().join("state.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Killed while the second file is on its way (the first is whole).
    wait_for_within(Duration::from_secs(30), "the second file under way", || {
        job_json(first.admin, &id)["bytes_done"]
            .as_u64()
            .is_some_and(|n| n > FILE_LEN as u64 + 256 * 1024)
    });
    for file in ["state.db", "state.db-wal"] {
        let bytes = std::fs::read(dir.path().join(file)).unwrap_or_default();
        let needle = format!("{}:{}@", peers::USER, peers::PASS);
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
            "{file} holds a password in clear"
        );
        assert!(
            !bytes
                .windows(peers::PASS.len() + 1)
                .any(|w| w == format!(":{}", peers::PASS).as_bytes()),
            "{file} holds a password in clear"
        );
    }
    unsafe { libc::kill(first.pid() as i32, libc::SIGKILL) };
    assert!(first.wait_exit(Duration::from_secs(5)).is_some());
    // One file whole, one part-way (the servers copy in the order they list).
    let sizes: Vec<u64> = names
        .iter()
        .map(|n| std::fs::metadata(b.file(format!("copy/{n}"))).map_or(0, |m| m.len()))
        .collect();
    let partial: Vec<&str> = names
        .iter()
        .zip(&sizes)
        .filter(|(_, s)| **s > 0 && **s < FILE_LEN as u64)
        .map(|(n, _)| *n)
        .collect();
    assert_eq!(
        (
            partial.len(),
            sizes.iter().filter(|s| **s == FILE_LEN as u64).count()
        ),
        (1, 1),
        "not one file whole and one part-way after the kill: {sizes:?}\n{}",
        b.log()
    );
    let partial = partial[0];

    let second = Proxy::start_with(unique_loopback_ip(), ListenerSpec::new(a.addr), &yaml);
    let v = job_json(second.admin, &id);
    assert_eq!(v["id"], id.as_str(), "{v}");
    wait_for_within(Duration::from_secs(60), "the resumed job to end", || {
        matches!(
            job_json(second.admin, &id)["state"].as_str(),
            Some("done" | "failed" | "cancelled")
        )
    });
    let v = job_json(second.admin, &id);
    assert_eq!(v["state"], "done", "{v}\n{}", second.log());
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{v}");
    assert!(runs.iter().all(|r| r["instance"] == "one"), "{v}");
    assert!(
        second.log().contains("transfer resumed"),
        "{}",
        second.log()
    );
    for (i, name) in names.iter().enumerate() {
        assert_eq!(
            std::fs::read(b.file(format!("copy/{name}"))).unwrap(),
            payload(FILE_LEN, i as u64 + 1),
            "{name} differs"
        );
    }
    // What the destination received: no file whole twice, and the file under way at
    // the kill finished with fewer bytes than its size (resumed with REST). pyftpdlib
    // may log the part cut off by the kill as an upload of its own.
    let log = b.log();
    let stored = uploads(&log);
    for name in names {
        let of_it: Vec<u64> = stored
            .iter()
            .filter(|(p, _, _)| p.ends_with(&format!("copy/{name}")))
            .map(|(_, _, n)| *n)
            .collect();
        assert_eq!(
            of_it.iter().filter(|n| **n == FILE_LEN as u64).count(),
            usize::from(name != partial),
            "{name} copied whole {of_it:?}:\n{log}"
        );
    }
    let resumed = stored
        .iter()
        .rfind(|(p, _, _)| p.ends_with(&format!("copy/{partial}")))
        .unwrap();
    assert!(
        resumed.1 && resumed.2 < FILE_LEN as u64,
        "{partial} was copied again from the start:\n{log}"
    );
    let total: u64 = stored.iter().map(|(_, _, n)| n).sum();
    assert!(
        total <= (names.len() * FILE_LEN) as u64 + 64 * 1024,
        "{total} bytes stored for {} bytes of files:\n{log}",
        names.len() * FILE_LEN
    );
}

/// A cancel is kept by the store: after a restart the job is still cancelled and does
/// not run again; a finished job keeps its result.
#[test]
fn cancelled_and_finished_jobs_keep_their_state_across_a_restart() {
    let (a, b) = slow_pair();
    let dir = tempfile::tempdir().unwrap();
    put(&a, "small.bin", Some(b"twelve bytes"));
    put(&a, "slow.bin", Some(&payload(FILE_LEN * 4, 9)));
    let yaml = config(&a, &b, dir.path(), "one");
    let order = |src: &str, dst: &str| {
        format!(
            r#"{{"source": "ftp://{u}:{p}@{a}/{src}", "destination": "ftp://{u}:{p}@{b}/{dst}"}}"#,
            u = peers::USER,
            p = peers::PASS,
            a = a.addr,
            b = b.addr
        )
    };
    let first = Proxy::start_with(unique_loopback_ip(), ListenerSpec::new(a.addr), &yaml);
    let done = submitted(first.admin, &order("small.bin", "small.copy"));
    wait_for("the small copy", || {
        job_json(first.admin, &done)["state"] == "done"
    });
    let slow = submitted(first.admin, &order("slow.bin", "slow.copy"));
    wait_for("the slow copy to start", || {
        job_json(first.admin, &slow)["state"] == "running"
    });
    let (status, resp) = http(
        first.admin,
        "DELETE",
        &format!("/api/v1/transfers/{slow}"),
        None,
        "",
    );
    assert_eq!(status, 200, "{resp}");
    drop(first);

    let second = Proxy::start_with(unique_loopback_ip(), ListenerSpec::new(a.addr), &yaml);
    assert_eq!(job_json(second.admin, &done)["state"], "done");
    let v = job_json(second.admin, &slow);
    assert_eq!(v["state"], "cancelled", "{v}");
    // Give a wrongly resumed job the time to start: it must not.
    std::thread::sleep(Duration::from_millis(1500));
    let v = job_json(second.admin, &slow);
    assert_eq!(v["state"], "cancelled", "{v}");
    assert_eq!(v["runs"].as_array().unwrap().len(), 1, "{v}");
    let (status, list) = http(second.admin, "GET", "/api/v1/transfers", None, "");
    assert_eq!(status, 200);
    assert!(list.contains(&done) && list.contains(&slow), "{list}");
}

/// A store migrated by a newer release is refused at start, with a message that says
/// so, and nothing is served.
#[test]
fn a_store_from_a_newer_release_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch(
        "CREATE TABLE fxprelay_schema (version INTEGER NOT NULL); \
         INSERT INTO fxprelay_schema VALUES (999);",
    )
    .unwrap();
    drop(c);
    let ip = unique_loopback_ip();
    let yaml = format!(
        "state:\n  url: \"sqlite://{}\"\nlisteners:\n  - name: t\n    bind: \"{ip}:{}\"\n    upstream: \"127.0.0.1:21\"\n",
        db.display(),
        common::free_port(ip.into()),
    );
    let err = common::run_refused(dir.path(), &yaml);
    assert!(
        err.contains("version 999") && err.contains("newer"),
        "{err}"
    );
}
