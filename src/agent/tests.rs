//! The agent and the hub on loopback: a stream opened through the agent reaches a server
//! the agent may reach, and nothing else.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::tls::{CaCerts, TlsAcceptor, Upstream, server_config, server_name};
use fxprelay_core::agent::Reach;

struct Edge {
    hub: std::sync::Arc<Hub>,
    addr: std::net::SocketAddr,
    ca: CaCerts,
    _dir: tempfile::TempDir,
}

async fn edge(stop: &CancellationToken) -> Edge {
    let dir = tempfile::tempdir().unwrap();
    let c = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let (cert, key) = (dir.path().join("edge.pem"), dir.path().join("edge.key"));
    std::fs::write(&cert, c.cert.pem()).unwrap();
    std::fs::write(&key, c.signing_key.serialize_pem()).unwrap();
    let acceptor = TlsAcceptor::from(server_config(&cert, &key).unwrap());
    let hub = Hub::new(BTreeMap::from([("site-a".to_owned(), "s3cret".to_owned())]));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(hub.clone().serve(listener, acceptor, stop.clone()));
    Edge {
        hub,
        addr,
        ca: CaCerts::load(&cert).unwrap(),
        _dir: dir,
    }
}

fn agent(e: &Edge, token: &str, allow: &[&str]) -> Agent {
    let allow = serde_json::from_value(serde_json::json!(allow)).unwrap();
    Agent {
        name: "site-a".into(),
        token: token.into(),
        edge: format!("127.0.0.1:{}", e.addr.port()).parse().unwrap(),
        edge_name: server_name("127.0.0.1").unwrap(),
        tls: Upstream::new(true, Some(&e.ca)).unwrap().for_session(),
        reach: Reach::new(allow),
        connect_timeout: Duration::from_secs(5),
        listens: Default::default(),
    }
}

async fn until(mut cond: impl FnMut() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not met within 5 s");
}

#[tokio::test]
async fn a_stream_through_the_agent_carries_bytes_both_ways_and_only_inside_allow() {
    let stop = CancellationToken::new();
    let e = edge(&stop).await;
    // A server "inside": an echo that greets.
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server_addr = server.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = server.accept().await {
            tokio::spawn(async move {
                s.write_all(b"220 inside\r\n").await.unwrap();
                let mut buf = [0; 64];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    assert!(matches!(
        e.hub
            .dial("site-a", &server_addr.to_string(), Duration::from_secs(1))
            .await,
        Err(DialError::NotConnected(_))
    ));
    // A name no agent may link as: nothing to wait for, said apart from a known one.
    assert!(matches!(
        e.hub
            .dial("site-z", &server_addr.to_string(), Duration::from_secs(1))
            .await,
        Err(DialError::Unknown(n)) if n == "site-z"
    ));
    tokio::spawn(agent(&e, "s3cret", &["127.0.0.1"]).run(stop.clone()));
    until(|| e.hub.connected("site-a")).await;
    let (mut s, peer, _local) = e
        .hub
        .dial("site-a", &server_addr.to_string(), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(peer, server_addr);
    let mut greeting = [0; 12];
    s.read_exact(&mut greeting).await.unwrap();
    assert_eq!(&greeting, b"220 inside\r\n");
    s.write_all(b"NOOP\r\n").await.unwrap();
    let mut echo = [0; 6];
    s.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"NOOP\r\n");
    // Counted open on its link while it lives.
    assert_eq!(e.hub.links()[0].streams, 1);
    drop(s);
    assert_eq!(e.hub.links()[0].streams, 0);
    // Outside the agent's allow: refused by the agent, not tried.
    let r = e
        .hub
        .dial("site-a", "127.0.0.2:21", Duration::from_secs(5))
        .await;
    match r {
        Err(DialError::Failed { reason, .. }) => {
            assert!(reason.contains("agent.allow"), "{reason}")
        }
        other => panic!("expected the agent's refusal, got {:?}", other.map(|_| ())),
    }
    assert_eq!(e.hub.links().len(), 1);
    stop.cancel();
}

#[tokio::test]
async fn a_wrong_token_is_refused_and_never_linked() {
    let stop = CancellationToken::new();
    let e = edge(&stop).await;
    let a = agent(&e, "wrong", &["127.0.0.1"]);
    tokio::spawn(a.run(stop.clone()));
    until(|| e.hub.refusals() >= 1).await;
    assert!(!e.hub.connected("site-a"));
    assert!(e.hub.links().is_empty());
    stop.cancel();
}

#[tokio::test]
async fn connections_without_a_hello_are_bounded() {
    let stop = CancellationToken::new();
    let e = edge(&stop).await;
    // Plain TCP, no TLS: each holds a slot until the hello's time limit, so of 80 at
    // most 64 stay open; the others are closed at once.
    let mut conns = Vec::new();
    for _ in 0..80 {
        conns.push(tokio::net::TcpStream::connect(e.addr).await.unwrap());
    }
    let reads = conns.iter_mut().map(|c| async move {
        let mut buf = [0; 1];
        tokio::time::timeout(Duration::from_millis(1500), c.read(&mut buf)).await
    });
    let outcomes = futures_util::future::join_all(reads).await;
    let closed = outcomes
        .iter()
        .filter(|r| matches!(r, Ok(Ok(0)) | Ok(Err(_))))
        .count();
    let open = outcomes.iter().filter(|r| r.is_err()).count();
    assert!(
        closed >= 16 && open <= 64,
        "closed {closed}, still open {open}"
    );
    stop.cancel();
}

/// An echo server that greets, standing for the FTP server inside.
async fn echo_server() -> std::net::SocketAddr {
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = server.accept().await {
            tokio::spawn(async move {
                let _ = s.write_all(b"220 inside\r\n").await;
                let mut buf = [0; 64];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// Whether nothing listens at `addr` any more.
async fn refused(addr: std::net::SocketAddr) -> bool {
    tokio::net::TcpStream::connect(addr).await.is_err()
}

/// An edge (until `stop`), an echo server, an agent linked to the edge for it (until
/// `agent_stop`) with its listening ports, and a control connection through the agent:
/// a session whose link listens for its server.
async fn linked_session(
    stop: &CancellationToken,
    agent_stop: &CancellationToken,
) -> (
    Edge,
    std::net::SocketAddr,
    std::sync::Arc<run::Listens>,
    AgentStream,
) {
    let e = edge(stop).await;
    let server = echo_server().await;
    let a = agent(&e, "s3cret", &["127.0.0.1"]);
    let listens = a.listens.clone();
    tokio::spawn(a.run(agent_stop.clone()));
    until(|| e.hub.connected("site-a")).await;
    let (control, _, _) = e
        .hub
        .dial("site-a", &server.to_string(), Duration::from_secs(5))
        .await
        .unwrap();
    (e, server, listens, control)
}

#[tokio::test]
async fn the_agent_listens_inside_for_its_server_alone_and_closes_the_port_on_every_path() {
    let stop = CancellationToken::new();
    let (e, server, listens, control) = linked_session(&stop, &stop).await;
    let link = control.link();
    let scope = crate::metrics::Scope::new("t", fxprelay_core::route::RouteLabel::Default);
    let (wait, limit) = (Duration::from_secs(30), Duration::from_secs(5));

    let inside = e
        .hub
        .listen("site-a", link, server, wait, limit)
        .await
        .unwrap();
    let at = inside.addr();
    // On the agent's address toward the server (loopback here), an ephemeral port.
    assert_eq!(at.ip(), server.ip());
    assert_ne!(at.port(), 0);
    assert_eq!(listens.len(), 1);
    // Someone else first: the agent closes it, and the port keeps waiting.
    let thief = tokio::net::TcpSocket::new_v4().unwrap();
    thief.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut thief = thief.connect(at).await.unwrap();
    let mut buf = [0; 8];
    let stolen = tokio::time::timeout(Duration::from_secs(5), thief.read(&mut buf)).await;
    assert!(
        matches!(stolen, Ok(Ok(0)) | Ok(Err(_))),
        "the thief's connection is closed: {stolen:?}"
    );
    // ...and reported to the edge, on the link (counted there, and by the session).
    until(|| e.hub.thefts() == 1).await;
    // The server: its bytes reach the edge through the agent's stream, both ways.
    let from_server = tokio::spawn(async move {
        let mut s = tokio::net::TcpStream::connect(at).await.unwrap();
        s.write_all(b"file bytes").await.unwrap();
        let mut back = [0; 3];
        s.read_exact(&mut back).await.unwrap();
        back
    });
    let mut s = inside.accepted(&scope, limit).await.unwrap();
    let mut got = [0; 10];
    s.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"file bytes");
    s.write_all(b"ack").await.unwrap();
    assert_eq!(&from_server.await.unwrap(), b"ack");
    // One connection per port: closed as soon as the server's came.
    assert_eq!(listens.len(), 0);
    assert!(refused(at).await);
    drop(s);

    // The edge gives up before the server came (a refused PORT): the port closes now,
    // not at the end of its wait.
    let inside = e
        .hub
        .listen("site-a", link, server, wait, limit)
        .await
        .unwrap();
    let at = inside.addr();
    assert!(!refused(at).await);
    drop(inside);
    until(|| listens.len() == 0).await;
    assert!(refused(at).await);

    // Its wait runs out: the agent closes the port and says so, before the edge's own
    // limit.
    let inside = e
        .hub
        .listen("site-a", link, server, Duration::from_millis(1), limit)
        .await
        .unwrap();
    let at = inside.addr();
    let started = std::time::Instant::now();
    let r = inside.accepted(&scope, Duration::from_secs(20)).await;
    assert!(
        matches!(&r, Err(crate::agent::InsideError::Failed { reason, .. }) if reason.contains("no connection from 127.0.0.1")),
        "{r:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(refused(at).await);
    assert_eq!(listens.len(), 0);

    // A server outside the agent's allow: no port for it.
    let outside = "127.0.0.3:21".parse().unwrap();
    let r = e.hub.listen("site-a", link, outside, wait, limit).await;
    match r {
        Err(DialError::Failed { reason, .. }) => {
            assert!(reason.contains("agent.allow"), "{reason}")
        }
        other => panic!("expected the agent's refusal, got {other:?}"),
    }
    // At most so many ports at once per link.
    let max = fxprelay_core::agent::listen::MAX_LISTENS;
    let mut held = Vec::new();
    for _ in 0..max {
        held.push(
            e.hub
                .listen("site-a", link, server, wait, limit)
                .await
                .unwrap(),
        );
    }
    assert_eq!(listens.len(), max);
    let r = e.hub.listen("site-a", link, server, wait, limit).await;
    assert!(
        matches!(&r, Err(DialError::Failed { reason, .. }) if reason.contains("already holds")),
        "{r:?}"
    );
    drop(held);
    until(|| listens.len() == 0).await;
    // The session's link lost (here: a link that never was): the least busy one of the
    // name listens (most often the same agent, linked again).
    let inside = e
        .hub
        .listen("site-a", link + 1_000, server, wait, limit)
        .await
        .unwrap();
    assert_eq!(inside.addr().ip(), server.ip());
    drop(inside);
    drop(control);
    stop.cancel();
}

#[tokio::test]
async fn a_lost_link_closes_the_agents_ports() {
    let stop = CancellationToken::new();
    let agent_stop = CancellationToken::new();
    let (e, server, listens, control) = linked_session(&stop, &agent_stop).await;
    let scope = crate::metrics::Scope::new("t", fxprelay_core::route::RouteLabel::Default);
    let inside = e
        .hub
        .listen(
            "site-a",
            control.link(),
            server,
            Duration::from_secs(60),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    let at = inside.addr();
    // The agent stops: its link goes, and with it the port; the edge's waiter hears
    // at once rather than at the end of its wait.
    agent_stop.cancel();
    let r = inside.accepted(&scope, Duration::from_secs(30)).await;
    assert!(r.is_err());
    until(|| listens.len() == 0).await;
    assert!(refused(at).await);
    stop.cancel();
}

#[tokio::test]
async fn a_sessions_data_connections_go_through_the_agent_of_its_control_connection() {
    let stop = CancellationToken::new();
    let e = edge(&stop).await;
    let server = echo_server().await;
    // Two agents of one name (on two hosts, in production: a server sees them as two
    // clients, and takes data connections only from its control connection's).
    tokio::spawn(agent(&e, "s3cret", &["127.0.0.1"]).run(stop.clone()));
    tokio::spawn(agent(&e, "s3cret", &["127.0.0.1"]).run(stop.clone()));
    until(|| e.hub.links().len() == 2).await;
    let target = server.to_string();
    let limit = Duration::from_secs(5);
    let (control, _, _) = e.hub.dial("site-a", &target, limit).await.unwrap();
    let link = control.link();
    // Least busy alone would alternate; pinned, every one goes through `link`.
    let mut data = Vec::new();
    for _ in 0..4 {
        let (s, _, _) = e
            .hub
            .dial_on("site-a", Some(link), &target, limit)
            .await
            .unwrap();
        assert_eq!(s.link(), link);
        data.push(s);
    }
    // Unpinned, the other link takes the next.
    let (other, _, _) = e.hub.dial("site-a", &target, limit).await.unwrap();
    assert_ne!(other.link(), link);
    stop.cancel();
}
