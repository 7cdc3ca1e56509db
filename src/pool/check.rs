//! The health check, as an FTP client would see the server: connect, a `220` banner
//! within `timeout`, optionally log in as the check user and `NOOP`, then `QUIT`. One task
//! per pool checks every backend each `interval`, all at once.
//!
//! Replies are read by [`ReplyReader`], as `fxprelay check --probe` reads them.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::Pool;
use crate::agent::Dialer;
use crate::codec::{ReadReplyError, ReplyReader};
use crate::config::{HealthCheck, ProxyVersion};
use crate::net::HostPort;
use crate::proto::reply::{Reply, code};

/// A banner or a reply to the check's few commands is far smaller than this.
const MAX_REPLY: usize = 16 * 1024;

/// Why a check failed, as the pool shows it (`last_error` in `GET /api/v1/upstreams`,
/// the log line of an upstream going down).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("connect: {0}")]
    Connect(#[source] io::Error),
    #[error("write: {0}")]
    Write(#[source] io::Error),
    /// No reply: read error, closed, too large, not FTP.
    #[error(transparent)]
    Reply(#[from] ReadReplyError),
    /// The server answered `step` with something else than the check expects: its
    /// reply's first line.
    #[error("{step}: {line}")]
    Refused { step: &'static str, line: String },
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// Checks `pool`'s backends every `interval` until `stop`, reaching them as `dialer`
/// says (the listener's: straight, or through its agent).
pub async fn run(pool: Arc<Pool>, dialer: Dialer, stop: CancellationToken) {
    let health = pool.cfg.health.clone();
    let targets = pool.targets();
    let mut tick = tokio::time::interval(health.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let checks = targets.iter().map(|t| async {
            let started = Instant::now();
            let result = check_via(&dialer, t, &health, pool.proxy_protocol).await;
            (result, started.elapsed())
        });
        let results = tokio::select! {
            _ = stop.cancelled() => return,
            r = join_all(checks) => r,
        };
        for (i, (result, took)) in results.into_iter().enumerate() {
            // The pool keeps the words only: they are shown, never acted on.
            pool.check_done(i, result.map_err(|e| e.to_string()), took);
        }
    }
}

/// One check of one backend, within `health.timeout`.
pub async fn check(
    target: &HostPort,
    health: &HealthCheck,
    proxy: Option<ProxyVersion>,
) -> Result<(), CheckError> {
    check_via(&Dialer::direct(), target, health, proxy).await
}

/// [`check`], reaching the backend as `dialer` says.
async fn check_via(
    dialer: &Dialer,
    target: &HostPort,
    health: &HealthCheck,
    proxy: Option<ProxyVersion>,
) -> Result<(), CheckError> {
    let probe = async {
        let direct = async {
            let s = TcpStream::connect((target.host.as_str(), target.port)).await?;
            let _ = s.set_nodelay(true);
            Ok(s)
        };
        let conn = dialer
            .dial(&target.to_string(), health.timeout, direct)
            .await
            .map_err(|e| CheckError::Connect(e.into_io()))?;
        probe(Box::new(conn), health, proxy).await
    };
    tokio::time::timeout(health.timeout, probe)
        .await
        .unwrap_or(Err(CheckError::Timeout(health.timeout)))
}

/// One check of one backend, unbounded in time ([`check`] bounds it).
async fn probe(
    mut stream: Box<dyn crate::data::secure::DataStream>,
    health: &HealthCheck,
    proxy: Option<ProxyVersion>,
) -> Result<(), CheckError> {
    if let Some(version) = proxy {
        // LOCAL: "this connection is the proxy's own", as HAProxy's checks send.
        let header = crate::proxy_protocol::encode(version, None);
        stream.write_all(&header).await.map_err(CheckError::Write)?;
    }
    let (r, mut w) = tokio::io::split(stream);
    let mut server = ReplyReader::new(r, MAX_REPLY);
    let banner = server.final_reply().await?;
    expect(&banner, &[code::SERVICE_READY], "banner")?;
    if let Some(login) = &health.login {
        send(&mut w, &format!("USER {}\r\n", login.user)).await?;
        let user = server.final_reply().await?;
        if user.code == code::NEED_PASSWORD {
            send(&mut w, &format!("PASS {}\r\n", login.password)).await?;
            let pass = server.final_reply().await?;
            expect(&pass, &[code::LOGGED_IN, code::SUPERFLUOUS], "PASS")?;
        } else {
            expect(&user, &[code::LOGGED_IN], "USER")?;
        }
        send(&mut w, "NOOP\r\n").await?;
        let noop = server.final_reply().await?;
        expect(&noop, &[code::COMMAND_OK], "NOOP")?;
    }
    // Politeness only: the check has its answer, whatever QUIT gets.
    let _ = send(&mut w, "QUIT\r\n").await;
    let _ = server.final_reply().await;
    Ok(())
}

async fn send(w: &mut (impl AsyncWrite + Unpin), line: &str) -> Result<(), CheckError> {
    w.write_all(line.as_bytes())
        .await
        .map_err(CheckError::Write)
}

fn expect(reply: &Reply, codes: &[u16], step: &'static str) -> Result<(), CheckError> {
    if codes.contains(&reply.code) {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&reply.raw);
    Err(CheckError::Refused {
        step,
        line: text.lines().next().unwrap_or("").trim().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncBufReadExt, BufReader};
    use tokio::net::TcpListener;

    use super::*;
    use crate::config::CheckLogin;
    use crate::proto::reply::ReplyError;

    /// A scripted server on loopback: for each step, the line it expects from the check
    /// (`None`: none) and the bytes it answers with. Returns its address.
    async fn server(script: Vec<(Option<&'static str>, Vec<u8>)>) -> HostPort {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let (r, mut w) = s.into_split();
            let mut r = BufReader::new(r);
            for (expect, answer) in script {
                if let Some(expect) = expect {
                    let mut line = String::new();
                    r.read_line(&mut line).await.unwrap();
                    assert_eq!(line, expect);
                }
                if w.write_all(&answer).await.is_err() {
                    return;
                }
            }
            // Hold the connection until the check hangs up.
            let _ = r.read_line(&mut String::new()).await;
        });
        HostPort {
            host: "127.0.0.1".into(),
            port,
        }
    }

    fn health(login: bool) -> HealthCheck {
        HealthCheck {
            timeout: Duration::from_secs(5),
            login: login.then(|| CheckLogin {
                user: "mon".into(),
                password: "pw".into(),
            }),
            ..HealthCheck::default()
        }
    }

    #[tokio::test]
    async fn a_server_that_greets_and_lets_the_check_user_in_is_up() {
        let target = server(vec![
            // A preliminary reply and a multi-line banner, as some servers send.
            (
                None,
                b"120 ready in a moment\r\n220-Welcome\r\n  to the\r\n220 server\r\n".to_vec(),
            ),
            (Some("USER mon\r\n"), b"331 password\r\n".to_vec()),
            (Some("PASS pw\r\n"), b"230 in\r\n".to_vec()),
            (Some("NOOP\r\n"), b"200 ok\r\n".to_vec()),
            (Some("QUIT\r\n"), b"221 bye\r\n".to_vec()),
        ])
        .await;
        check(&target, &health(true), None).await.unwrap();
        let target = server(vec![(None, b"220 hi\r\n".to_vec())]).await;
        check(&target, &health(false), None).await.unwrap();
    }

    #[tokio::test]
    async fn what_a_failed_check_says() {
        let target = server(vec![(None, b"421 too many users\r\n".to_vec())]).await;
        let e = check(&target, &health(false), None).await.unwrap_err();
        assert!(
            matches!(&e, CheckError::Refused { step: "banner", line } if line == "421 too many users"),
            "{e}"
        );
        assert_eq!(e.to_string(), "banner: 421 too many users");
        let target = server(vec![
            (None, b"220 hi\r\n".to_vec()),
            (Some("USER mon\r\n"), b"331 password\r\n".to_vec()),
            (Some("PASS pw\r\n"), b"530 no\r\n".to_vec()),
        ])
        .await;
        let e = check(&target, &health(true), None).await.unwrap_err();
        assert_eq!(e.to_string(), "PASS: 530 no");
        let target = server(vec![(None, b"SSH-2.0-OpenSSH_9.6\r\n".to_vec())]).await;
        let e = check(&target, &health(false), None).await.unwrap_err();
        assert!(
            matches!(
                e,
                CheckError::Reply(ReadReplyError::NotFtp(ReplyError::Malformed))
            ),
            "{e}"
        );
    }

    /// A backend that sends an endless line, or nothing, costs the check a bounded
    /// buffer and `timeout`.
    #[tokio::test]
    async fn an_endless_line_or_silence_is_bounded() {
        let target = server(vec![(None, vec![b'2'; MAX_REPLY + 1])]).await;
        let e = check(&target, &health(false), None).await.unwrap_err();
        assert!(
            matches!(e, CheckError::Reply(ReadReplyError::TooLarge)),
            "{e}"
        );
        let target = server(vec![]).await;
        let quick = HealthCheck {
            timeout: Duration::from_millis(100),
            ..health(false)
        };
        let e = check(&target, &quick, None).await.unwrap_err();
        assert!(matches!(e, CheckError::Timeout(_)), "{e}");
        let e = check(&target_closed().await, &health(false), None)
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                CheckError::Reply(ReadReplyError::Closed) | CheckError::Connect(_)
            ),
            "{e}"
        );
    }

    /// A server that accepts and hangs up at once.
    async fn target_closed() -> HostPort {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            drop(s);
        });
        HostPort {
            host: "127.0.0.1".into(),
            port,
        }
    }
}
