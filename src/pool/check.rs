//! The health check, as an FTP client would see the server: connect, a `220` banner
//! within `timeout`, optionally log in as the check user and `NOOP`, then `QUIT`. One task
//! per pool checks every backend each `interval`, all at once.

use std::sync::Arc;
use std::time::Instant;

use futures_util::future::join_all;
use proxy_header::ProxyHeader;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::Pool;
use crate::config::{HealthCheck, ProxyVersion};
use crate::net::HostPort;
use crate::proto::reply::{Reply, ReplyAssembler};

/// A banner or a reply to the check's few commands is far smaller than this.
const MAX_REPLY: usize = 16 * 1024;

/// Checks `pool`'s backends every `interval` until `stop`.
pub async fn run(pool: Arc<Pool>, stop: CancellationToken) {
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
            let result =
                match tokio::time::timeout(health.timeout, probe(t, &health, pool.proxy_protocol))
                    .await
                {
                    Ok(r) => r,
                    Err(_) => Err(format!("no answer within {:?}", health.timeout)),
                };
            (result, started.elapsed())
        });
        let results = tokio::select! {
            _ = stop.cancelled() => return,
            r = join_all(checks) => r,
        };
        for (i, (result, took)) in results.into_iter().enumerate() {
            pool.check_done(i, result, took);
        }
    }
}

/// One check of one backend.
pub async fn probe(
    target: &HostPort,
    health: &HealthCheck,
    proxy: Option<ProxyVersion>,
) -> Result<(), String> {
    let mut stream = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    if let Some(version) = proxy {
        // LOCAL: "this connection is the proxy's own", as HAProxy's checks send.
        let mut header = Vec::new();
        let local = ProxyHeader::with_local();
        let encoded = match version {
            ProxyVersion::V1 => local.encode_v1(&mut header),
            ProxyVersion::V2 => local.encode_v2(&mut header),
        };
        encoded.map_err(|e| format!("PROXY header: {e}"))?;
        stream
            .write_all(&header)
            .await
            .map_err(|e| format!("write: {e}"))?;
    }
    let (r, mut w) = stream.split();
    let mut r = BufReader::new(r);
    let mut replies = ReplyAssembler::new(MAX_REPLY);
    let banner = final_reply(&mut r, &mut replies).await?;
    expect(&banner, &[220], "banner")?;
    if let Some(login) = &health.login {
        send(&mut w, &format!("USER {}\r\n", login.user)).await?;
        let user = final_reply(&mut r, &mut replies).await?;
        if user.code == 331 {
            send(&mut w, &format!("PASS {}\r\n", login.password)).await?;
            let pass = final_reply(&mut r, &mut replies).await?;
            expect(&pass, &[230, 202], "PASS")?;
        } else {
            expect(&user, &[230], "USER")?;
        }
        send(&mut w, "NOOP\r\n").await?;
        let noop = final_reply(&mut r, &mut replies).await?;
        expect(&noop, &[200], "NOOP")?;
    }
    // Politeness only: the check has its answer, whatever QUIT gets.
    let _ = send(&mut w, "QUIT\r\n").await;
    let _ = final_reply(&mut r, &mut replies).await;
    Ok(())
}

async fn send(w: &mut (impl AsyncWriteExt + Unpin), line: &str) -> Result<(), String> {
    w.write_all(line.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))
}

/// The next reply that is not preliminary (`1xx`).
async fn final_reply(
    r: &mut (impl AsyncBufReadExt + Unpin),
    replies: &mut ReplyAssembler,
) -> Result<Reply, String> {
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = r
            .read_until(b'\n', &mut line)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("the server closed the connection".into());
        }
        if line.len() > MAX_REPLY {
            return Err("reply too large".into());
        }
        match replies.push_line(&line) {
            Ok(Some(reply)) if reply.code >= 200 => return Ok(reply),
            Ok(_) => {}
            Err(e) => return Err(format!("not an FTP reply: {e}")),
        }
    }
}

fn expect(reply: &Reply, codes: &[u16], what: &str) -> Result<(), String> {
    if codes.contains(&reply.code) {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&reply.raw);
    Err(format!(
        "{what}: {}",
        text.lines().next().unwrap_or("").trim()
    ))
}
