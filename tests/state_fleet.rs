//! The state store shared by a fleet (issue 23): two fxprelay processes on one real
//! PostgreSQL (started here, on its own loopback address and port, stopped by pid). A
//! job posted to one is listed and cancelled through the other; a killed instance's job
//! is finished by the other once the lease ran out; fifty jobs posted to both run once
//! each; `pg_dump` shows no password; a ban made by one is honoured by the other, and
//! survives a restart.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::control::connect_from;
use common::peers::{self, FtpServer, ServerKind, ServerOptions};
use common::postgres::Postgres;
use common::proxy::{ListenerSpec, Proxy, http};
use common::{payload, unique_loopback_ip, wait_for_within};

const DB: &str = "fxprelay";

fn job_json(api: SocketAddr, id: &str) -> serde_json::Value {
    let (status, body) = http(api, "GET", &format!("/api/v1/transfers/{id}"), None, "");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn submitted(api: SocketAddr, body: &str) -> String {
    let (status, resp) = http(api, "POST", "/api/v1/transfers", None, body);
    assert_eq!(status, 202, "{resp}");
    let v: serde_json::Value = serde_json::from_str(&resp).unwrap();
    v["id"].as_str().unwrap().to_owned()
}

/// A pyftpdlib source (throttled to 256 KiB/s when `slow`) and destination, both
/// allowing FXP.
fn pair(slow: bool) -> (FtpServer, FtpServer) {
    let server = |throttle| {
        let mut opts = ServerOptions::new(unique_loopback_ip());
        opts.foreign_data = true;
        opts.throttle = throttle;
        FtpServer::start(ServerKind::Pyftpdlib, opts)
    };
    (server(slow.then_some(256 * 1024)), server(None))
}

fn put(server: &FtpServer, rel: &str, data: &[u8]) {
    let p = server.file(rel);
    std::fs::write(&p, data).unwrap();
    let meta = std::fs::metadata(&server.root).unwrap();
    std::os::unix::fs::chown(&p, Some(meta.uid()), Some(meta.gid())).unwrap();
}

fn order(a: &FtpServer, src: &str, b: &FtpServer, dst: &str) -> String {
    format!(
        r#"{{"source": "ftp://{u}:{p}@{a}/{src}", "destination": "ftp://{u}:{p}@{b}/{dst}"}}"#,
        u = peers::USER,
        p = peers::PASS,
        a = a.addr,
        b = b.addr
    )
}

/// One instance of the fleet: the store on `pg`, the key in `dir`, lease 2 s.
fn instance(
    a: &FtpServer,
    b: &FtpServer,
    pg: &Postgres,
    dir: &Path,
    name: &str,
    concurrency: usize,
) -> Proxy {
    instance_with(a, b, pg, dir, name, concurrency, "")
}

fn instance_with(
    a: &FtpServer,
    b: &FtpServer,
    pg: &Postgres,
    dir: &Path,
    name: &str,
    concurrency: usize,
    extra: &str,
) -> Proxy {
    let yaml = format!(
        "{extra}fxp:\n  allow: [\"{}/32\", \"{}/32\"]\n  concurrency: {concurrency}\nstate:\n  url: \"{}\"\n  key_file: \"{}\"\n  instance: {name}\n  lease: 2s\n",
        a.addr.ip(),
        b.addr.ip(),
        pg.url(DB),
        dir.join("fleet.key").display(),
    );
    Proxy::start_with(
        unique_loopback_ip(),
        ListenerSpec::new(a.addr).relay(&[]),
        &yaml,
    )
}

fn pyftpdlib_uploads(log: &str, name: &str) -> Vec<(bool, u64)> {
    log.lines()
        .filter_map(|l| {
            let at = l.find("STOR ")?;
            let mut words = l[at + 5..].split_whitespace();
            if !words.next()?.ends_with(&format!("/{name}")) {
                return None;
            }
            let completed = words.next()?.strip_prefix("completed=")? == "1";
            let bytes = words.next()?.strip_prefix("bytes=")?.parse().ok()?;
            Some((completed, bytes))
        })
        .collect()
}

/// Posted to A, listed and shown by B, cancelled through B: A's runner stops it within
/// about two seconds (its next renewal), and the copy stops growing.
#[test]
fn a_job_posted_to_one_instance_is_listed_and_cancelled_through_the_other() {
    let pg = Postgres::start(DB);
    let (a, b) = pair(true);
    let dir = tempfile::tempdir().unwrap();
    put(&a, "big.bin", &payload(8 << 20, 3));
    let one = instance(&a, &b, &pg, dir.path(), "a", 4);
    let id = submitted(one.admin, &order(&a, "big.bin", &b, "big.copy"));
    wait_for_within(Duration::from_secs(10), "A to run it", || {
        job_json(one.admin, &id)["bytes_done"]
            .as_u64()
            .is_some_and(|n| n > 0)
    });
    // B starts once A holds the job: it must not take it.
    let two = instance(&a, &b, &pg, dir.path(), "b", 4);
    let v = job_json(two.admin, &id);
    assert_eq!(
        (v["state"].as_str(), v["instance"].as_str()),
        (Some("running"), Some("a")),
        "{v}"
    );
    let (status, list) = http(two.admin, "GET", "/api/v1/transfers", None, "");
    assert_eq!(status, 200);
    assert!(list.contains(&id), "{list}");

    let asked = Instant::now();
    let (status, resp) = http(
        two.admin,
        "DELETE",
        &format!("/api/v1/transfers/{id}"),
        None,
        "",
    );
    assert_eq!(status, 200, "{resp}");
    assert!(resp.contains("\"state\":\"cancelled\""), "{resp}");
    wait_for_within(Duration::from_secs(5), "A to stop the job", || {
        one.log()
            .contains("transfer cancelled (through another instance)")
    });
    let took = asked.elapsed();
    assert!(
        took < Duration::from_millis(2500),
        "A stopped it {took:?} after the cancel"
    );
    // The copy no longer grows (the servers were told to stop with the sessions).
    let size = || std::fs::metadata(b.file("big.copy")).map_or(0, |m| m.len());
    std::thread::sleep(Duration::from_millis(1500));
    let then = size();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(size(), then, "the copy still grows after the cancel");
    assert!(then < 8 << 20);
    for api in [one.admin, two.admin] {
        let v = job_json(api, &id);
        assert_eq!(v["state"], "cancelled", "{v}");
        assert_eq!(v["runs"].as_array().unwrap().len(), 1, "{v}");
    }
}

/// `kill -9` of the instance running a job: the other takes it over once the lease ran
/// out, goes on with `REST` from where the destination's copy ends, and finishes it
/// byte-identical; the job's runs show both instances.
#[test]
fn a_killed_instance_s_job_is_finished_by_the_other_after_its_lease() {
    let pg = Postgres::start(DB);
    let (a, b) = pair(true);
    let dir = tempfile::tempdir().unwrap();
    let data = payload(2 << 20, 5);
    put(&a, "two.bin", &data);
    let mut one = instance(&a, &b, &pg, dir.path(), "a", 4);
    let id = submitted(one.admin, &order(&a, "two.bin", &b, "two.copy"));
    wait_for_within(Duration::from_secs(15), "A to copy a part", || {
        job_json(one.admin, &id)["bytes_done"]
            .as_u64()
            .is_some_and(|n| n > 400 * 1024)
    });
    let two = instance(&a, &b, &pg, dir.path(), "b", 4);
    assert_eq!(job_json(two.admin, &id)["instance"], "a");
    let killed = Instant::now();
    unsafe { libc::kill(one.pid() as i32, libc::SIGKILL) };
    assert!(one.wait_exit(Duration::from_secs(5)).is_some());
    wait_for_within(Duration::from_secs(10), "B to take the job over", || {
        job_json(two.admin, &id)["instance"] == "b"
    });
    // Not before the lease (2 s, renewed each 400 ms) ran out.
    assert!(
        killed.elapsed() > Duration::from_millis(1500),
        "{:?}",
        killed.elapsed()
    );
    wait_for_within(Duration::from_secs(30), "B to finish it", || {
        job_json(two.admin, &id)["state"] != "running"
    });
    let v = job_json(two.admin, &id);
    assert_eq!(v["state"], "done", "{v}\n{}", two.log());
    let runs: Vec<&str> = v["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["instance"].as_str().unwrap())
        .collect();
    assert_eq!(runs, ["a", "b"], "{v}");
    assert_eq!(std::fs::read(b.file("two.copy")).unwrap(), data);
    // What the destination received: A's part, then B's rest from where it ended
    // (pyftpdlib logs the part cut off by the kill as an upload of its own).
    let log = b.log();
    let ups = pyftpdlib_uploads(&log, "two.copy");
    let last = ups.last().expect("uploads logged").1;
    assert!(
        ups.len() >= 2 && last < data.len() as u64,
        "B copied it again from the start:\n{log}"
    );
    let total: u64 = ups.iter().map(|u| u.1).sum();
    assert!(
        total <= data.len() as u64 + 64 * 1024,
        "{total} bytes stored:\n{log}"
    );
}

/// Fifty small jobs posted to both instances, which both run jobs: each runs once
/// (one run in its history, one start in the two logs together), every copy is
/// byte-identical, and the store (`pg_dump`) holds no password in clear.
#[test]
fn fifty_jobs_posted_to_both_instances_each_run_once() {
    let pg = Postgres::start(DB);
    let (a, b) = pair(false);
    let dir = tempfile::tempdir().unwrap();
    for i in 0..50 {
        put(
            &a,
            &format!("s{i}.bin"),
            &payload(20_000 + i, i as u64 + 100),
        );
    }
    let one = instance(&a, &b, &pg, dir.path(), "a", 4);
    let two = instance(&a, &b, &pg, dir.path(), "b", 4);
    let ids: Vec<String> = (0..50)
        .map(|i| {
            let api = if i % 2 == 0 { one.admin } else { two.admin };
            submitted(
                api,
                &order(&a, &format!("s{i}.bin"), &b, &format!("d{i}.bin")),
            )
        })
        .collect();
    wait_for_within(Duration::from_secs(90), "every job to end", || {
        ids.iter().all(|id| {
            matches!(
                job_json(one.admin, id)["state"].as_str(),
                Some("done" | "failed" | "cancelled")
            )
        })
    });
    let mut by = std::collections::BTreeMap::<String, usize>::new();
    for (i, id) in ids.iter().enumerate() {
        let v = job_json(two.admin, id);
        assert_eq!(v["state"], "done", "{v}");
        let runs = v["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 1, "{v}");
        *by.entry(runs[0]["instance"].as_str().unwrap().to_owned())
            .or_default() += 1;
        assert_eq!(
            std::fs::read(b.file(format!("d{i}.bin"))).unwrap(),
            payload(20_000 + i, i as u64 + 100),
            "d{i}.bin differs"
        );
    }
    // Each started once, by one of the two (their logs together): the engine may retry
    // an attempt inside that run (a busy server), never a second run.
    let logs = format!("{}{}", one.log(), two.log());
    for id in &ids {
        let starts = logs
            .lines()
            .filter(|l| l.contains(id.as_str()) && l.contains("transfer started"))
            .count();
        assert_eq!(starts, 1, "{id} started {starts} times");
    }
    // Both instances did some of the work (each claims while it has free slots, and a
    // post wakes the instance it reached).
    assert_eq!(by.values().sum::<usize>(), 50, "{by:?}");
    assert_eq!(by.len(), 2, "{by:?}");
    let dump = pg.dump(DB);
    let text = String::from_utf8_lossy(&dump);
    assert!(text.contains("CREATE TABLE public.jobs"), "{text}");
    assert!(
        !text.contains(&format!("{}:{}@", peers::USER, peers::PASS)),
        "pg_dump shows a password in clear"
    );
    assert!(!text.contains(&format!(":{}@", peers::PASS)));
}

const REFUSAL: &str = "421 Too many failed logins from your address; try again later.";

/// The first line a client at `source` reads from `to`.
fn first_reply(source: Ipv4Addr, to: SocketAddr) -> String {
    let mut s = connect_from(source, to).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while !got.ends_with(b"\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let _ = s.write_all(b"QUIT\r\n");
    String::from_utf8_lossy(&got).trim_end().to_string()
}

fn bans(api: SocketAddr) -> serde_json::Value {
    let (status, body) = http(api, "GET", "/api/v1/bans", None, "");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<serde_json::Value>(&body).unwrap()["bans"].clone()
}

/// An operator's ban through A is honoured by B within about two seconds (listed there
/// as `fleet`), survives B's restart, and its lifting through A reaches B too.
#[test]
fn a_ban_made_by_one_instance_is_honoured_by_the_other_and_survives_restarts() {
    let pg = Postgres::start(DB);
    let (a, b) = pair(false);
    let dir = tempfile::tempdir().unwrap();
    // Many connections from one address here are the test's, not an attack.
    let defense = "defense:\n  enabled: true\n  connect_rate: 1000/1s\n";
    let one = instance_with(&a, &b, &pg, dir.path(), "a", 1, defense);
    let two = instance_with(&a, &b, &pg, dir.path(), "b", 1, defense);
    let attacker = unique_loopback_ip();
    assert!(first_reply(attacker, two.addr).starts_with("220"));
    let body = format!("{{\"address\": \"{attacker}\", \"duration\": \"1h\"}}");
    let asked = Instant::now();
    let (status, made) = http(one.admin, "POST", "/api/v1/bans", None, &body);
    assert_eq!(status, 201, "{made}");
    wait_for_within(Duration::from_secs(5), "B to hold the ban", || {
        !bans(two.admin).as_array().unwrap().is_empty()
    });
    let took = asked.elapsed();
    assert_eq!(first_reply(attacker, two.addr), REFUSAL);
    assert!(
        took < Duration::from_millis(2500),
        "B refused it {took:?} after the ban"
    );
    let listed = bans(two.admin);
    assert_eq!(listed[0]["address"], attacker.to_string(), "{listed}");
    assert_eq!(listed[0]["source"], "fleet", "{listed}");
    assert!(
        two.log().contains("ban (from the state store)"),
        "{}",
        two.log()
    );

    // B restarts: the ban is still in force there.
    drop(two);
    let two = instance_with(&a, &b, &pg, dir.path(), "b", 1, defense);
    wait_for_within(Duration::from_secs(5), "the ban after B's restart", || {
        !bans(two.admin).as_array().unwrap().is_empty()
    });
    assert_eq!(first_reply(attacker, two.addr), REFUSAL);
    // A lets the client in again: so does B.
    let (status, _) = http(
        one.admin,
        "DELETE",
        &format!("/api/v1/bans/{attacker}"),
        None,
        "",
    );
    assert_eq!(status, 200);
    wait_for_within(Duration::from_secs(5), "B to lift the ban", || {
        bans(two.admin).as_array().unwrap().is_empty()
    });
    assert!(first_reply(attacker, two.addr).starts_with("220"));
}

/// PostgreSQL stopped while a job runs: FTP sessions through the proxy go on, a new
/// `POST` is answered `503 store_unavailable`, `/healthz` (still 200) and
/// `fxprelay_state_store_up` say so; the running job goes on and its end is recorded
/// once PostgreSQL is back.
#[test]
fn postgresql_stopped_mid_run_stops_nothing_but_new_jobs() {
    use common::clients::{self, Mode};
    let mut pg = Postgres::start(DB);
    let (a, b) = pair(true);
    let dir = tempfile::tempdir().unwrap();
    let data = payload(1 << 20, 8);
    put(&a, "one.bin", &data);
    let one = instance(&a, &b, &pg, dir.path(), "a", 4);
    let id = submitted(one.admin, &order(&a, "one.bin", &b, "one.copy"));
    wait_for_within(Duration::from_secs(10), "the copy to start", || {
        job_json(one.admin, &id)["bytes_done"]
            .as_u64()
            .is_some_and(|n| n > 0)
    });
    pg.stop();

    let (status, resp) = http(
        one.admin,
        "POST",
        "/api/v1/transfers",
        None,
        &order(&a, "one.bin", &b, "other.copy"),
    );
    assert_eq!(status, 503, "{resp}");
    assert!(resp.contains("\"code\":\"store_unavailable\""), "{resp}");
    assert!(!resp.contains(peers::PASS), "{resp}");
    let (status, health) = http(one.admin, "GET", "/healthz", None, "");
    assert_eq!(status, 200, "{health}");
    assert!(health.contains("state store unreachable"), "{health}");
    assert_eq!(one.metric("fxprelay_state_store_up", &[]), 0.0);
    // An FTP session through the proxy (to the source server) works as ever.
    let url = clients::ftp_url(peers::USER, peers::PASS, one.addr, peers::HELLO_NAME);
    let got = clients::curl(&url, &Mode::Passive, std::iter::empty::<&str>());
    assert!(got.ok(), "{got}");
    assert_eq!(got.stdout_bytes, peers::HELLO);

    // The job ends while the store is away; PostgreSQL comes back: it is recorded.
    wait_for_within(Duration::from_secs(20), "the copy to end", || {
        std::fs::metadata(b.file("one.copy")).is_ok_and(|m| m.len() == data.len() as u64)
    });
    pg.restart();
    wait_for_within(Duration::from_secs(15), "the end to be recorded", || {
        let (status, body) = http(
            one.admin,
            "GET",
            &format!("/api/v1/transfers/{id}"),
            None,
            "",
        );
        status == 200 && body.contains("\"state\":\"done\"")
    });
    assert_eq!(
        pg.psql(DB, &format!("SELECT phase FROM jobs WHERE id = '{id}'"))
            .trim(),
        "done"
    );
    assert_eq!(std::fs::read(b.file("one.copy")).unwrap(), data);
    wait_for_within(Duration::from_secs(5), "the store to be up again", || {
        one.metric("fxprelay_state_store_up", &[]) == 1.0
    });
    let (_, health) = http(one.admin, "GET", "/healthz", None, "");
    assert_eq!(health, "ok\n");
}

/// PostgreSQL unreachable at start: a clear error naming the URL without its password,
/// and nothing is served.
#[test]
fn an_unreachable_postgresql_at_start_is_an_error_naming_the_url_without_password() {
    let dir = tempfile::tempdir().unwrap();
    let ip = unique_loopback_ip();
    let dead = common::free_port(ip.into());
    let yaml = format!(
        "state:\n  url: \"postgres://fx:sekr1tpw@{ip}:{dead}/fxprelay\"\n  key_file: \"{}\"\nlisteners:\n  - name: t\n    bind: \"{ip}:{}\"\n    upstream: \"127.0.0.1:21\"\n",
        dir.path().join("k").display(),
        common::free_port(ip.into()),
    );
    let err = common::run_refused(dir.path(), &yaml);
    assert!(
        err.contains(&format!("postgres://fx:***@{ip}:{dead}/fxprelay"))
            && err.contains("cannot be reached"),
        "{err}"
    );
    assert!(!err.contains("sekr1tpw"), "{err}");
}
