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
