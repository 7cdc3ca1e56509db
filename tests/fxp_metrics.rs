//! The FXP metrics as Prometheus renders them after real transfers (its own test binary:
//! it installs the process-wide recorder).

mod common;

use std::time::Duration;

use common::peers::{FtpServer, ServerKind, ServerOptions};
use common::unique_loopback_ip;
use fxprelay::fxp::{self, EngineOptions, FtpUrl};

fn url(s: &FtpServer, path: &str) -> FtpUrl {
    FtpUrl::parse(&format!("ftp://{}:{}@{}/{path}", s.user, s.pass, s.addr)).unwrap()
}

#[test]
fn transfers_are_counted_by_result_and_method() {
    let handle = fxprelay::metrics::install().unwrap();
    let mut o = ServerOptions::new(unique_loopback_ip());
    o.foreign_data = true;
    let a = FtpServer::start(ServerKind::Vsftpd, o.clone());
    o.ip = unique_loopback_ip();
    let b = FtpServer::start(ServerKind::Pyftpdlib, o);
    let opts = EngineOptions {
        retries: 0,
        timeout: Duration::from_secs(10),
        ..EngineOptions::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let copy = |src, dst| {
        let order = fxp::Order::File {
            src,
            dst,
            skip_existing: false,
        };
        let state = rt.block_on(common::run_job(order, opts.clone()));
        state.outcome().expect("an outcome").cloned()
    };
    copy(url(&a, "big.bin"), url(&b, "c.bin"))
        .unwrap_or_else(|e| panic!("{e}\n{}\n{}", a.log(), b.log()));
    copy(url(&a, "nope"), url(&b, "d.bin")).unwrap_err();
    let text = handle.render();
    for needle in [
        "fxprelay_fxp_transfers_total{result=\"ok\",method=\"fxp\"} 1",
        "fxprelay_fxp_transfers_total{result=\"failed\",method=\"none\"} 1",
        "fxprelay_fxp_bytes_total{method=\"fxp\"} 8388608",
        "fxprelay_fxp_active 0",
        "fxprelay_fxp_transfer_seconds_bucket{result=\"ok\",le=\"0.05\"}",
        "fxprelay_fxp_transfer_seconds_count{result=\"failed\"} 1",
    ] {
        assert!(text.contains(needle), "{needle} missing:\n{text}");
    }
}
