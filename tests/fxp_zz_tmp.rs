mod common;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;
use common::peers::{FtpServer, ServerKind, ServerOptions};
use common::unique_loopback_ip;
use fxprelay::fxp::{self, FtpUrl, Options};

fn url(s: &FtpServer, path: &str) -> FtpUrl {
    FtpUrl::parse(&format!("ftp://{}:{}@{}/{path}", s.user, s.pass, s.addr)).unwrap()
}

#[test]
fn stress() {
    let mut o = ServerOptions::new(unique_loopback_ip());
    o.foreign_data = true;
    let a = FtpServer::start(ServerKind::Vsftpd, o.clone());
    o.ip = unique_loopback_ip();
    let b = FtpServer::start(ServerKind::Pyftpdlib, o);
    let p = a.root.join("empty.bin");
    std::fs::write(&p, b"").unwrap();
    let meta = std::fs::metadata(&a.root).unwrap();
    std::os::unix::fs::chown(&p, Some(meta.uid()), Some(meta.gid())).unwrap();
    let opts = Options { retries: 0, timeout: Duration::from_secs(3), relay_fallback: false, ..Options::default() };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let name = std::env::var("F").unwrap_or("empty.bin".into());
    for i in 0..40 {
        if let Err(e) = rt.block_on(fxp::transfer(&url(&a, &name), &url(&b, &format!("c{i}.bin")), &Options{reverse:false, ..opts.clone()})) {
            panic!("{i}: {e}\n{}\n{}", a.log(), b.log().lines().filter(|l| l.contains(&format!("c{i}.bin")) || l.contains("STOR") ).collect::<Vec<_>>().join("\n"));
        }
    }
}
