//! Replies in order, nothing lost: clients that talk while a transfer runs, through a
//! relaying listener, with real servers. pyftpdlib answers commands while a transfer runs
//! (so a reply to them arrives before the transfer's own); vsftpd reads them only after
//! it (so they queue behind it). Either way each reply must answer its own command, in
//! the order the commands were sent, and an upload must arrive whole.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::time::Duration;

use common::control::Control;
use common::peers::{self, FtpServer, ServerKind, ServerOptions};
use common::proxy::{ListenerSpec, Proxy};
use common::{payload, unique_loopback_ip, wait_for};

const DEAD: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 99);

/// A server announcing a dead address, and a relaying proxy in front of it.
fn relayed(kind: ServerKind) -> (FtpServer, Proxy) {
    let mut opts = ServerOptions::new(unique_loopback_ip());
    opts.masquerade = Some(DEAD);
    let server = FtpServer::start(kind, opts);
    let proxy = Proxy::start(
        unique_loopback_ip(),
        ListenerSpec::new(server.addr).passive("always").relay(&[]),
    );
    (server, proxy)
}

/// Sends a transfer command, whose reply must be a `1xx` (`150`, or pyftpdlib's `125`).
fn opened(s: &mut Control, command: &str) {
    let r = s.cmd(command);
    assert!(r.starts_with('1'), "{command}: {r}");
}

fn file_len(server: &FtpServer, name: &str) -> u64 {
    std::fs::metadata(server.root.join(name)).map_or(0, |m| m.len())
}

/// A `SIZE` sent in the middle of a `STOR`: the upload arrives whole, `226` answers the
/// `STOR` and the `550` answers the `SIZE`, in that order.
fn a_command_during_an_upload_does_not_cut_it(kind: ServerKind) {
    let (server, proxy) = relayed(kind);
    let data_bytes = payload(1_376_256, 42);
    let half = 1024 * 1024;
    let mut s = Control::login(proxy.addr);
    let addr = s.pasv().unwrap();
    let mut data = TcpStream::connect(addr).unwrap();
    opened(&mut s, "STOR up.bin");
    data.write_all(&data_bytes[..half]).unwrap();
    // The server has stored most of the first part: the transfer is running. (Not all of
    // it: pyftpdlib writes through Python's buffered file, which may keep the last few
    // KiB it received until more arrive.)
    wait_for("most of the first part stored", || {
        file_len(&server, "up.bin") >= half as u64 / 2
    });
    s.send(b"SIZE no-such-file\r\n");
    // pyftpdlib answers the SIZE at once; that reply must not reach the client as the
    // STOR's, nor end the relay.
    if let Ok(r) = s.reply_within(Duration::from_millis(1500)) {
        panic!(
            "{}: a reply came while the upload ran: {r}{}",
            kind.name(),
            proxy.log()
        );
    }
    data.write_all(&data_bytes[half..])
        .unwrap_or_else(|e| panic!("{}: the relay broke: {e}\n{}", kind.name(), proxy.log()));
    drop(data);
    let r = s.reply();
    assert!(r.starts_with("226"), "{}: STOR got {r}", kind.name());
    let r = s.reply();
    assert!(r.starts_with("550"), "{}: SIZE got {r}", kind.name());
    s.cmd_expect("NOOP", 200);
    let stored = std::fs::read(server.root.join("up.bin")).unwrap();
    assert!(
        stored == data_bytes,
        "{}: {} of {} bytes stored",
        kind.name(),
        stored.len(),
        data_bytes.len()
    );
}

#[test]
fn a_command_during_an_upload_does_not_cut_it_with_pyftpdlib() {
    a_command_during_an_upload_does_not_cut_it(ServerKind::Pyftpdlib);
}

#[test]
fn a_command_during_an_upload_does_not_cut_it_with_vsftpd() {
    a_command_during_an_upload_does_not_cut_it(ServerKind::Vsftpd);
}

/// Two commands pipelined the moment the data connection closes, before the `226` (lftp
/// does this with `SITE UTIME`): their replies come after the `226`, in order, every
/// time.
fn pipelined_commands_never_overtake_the_226(kind: ServerKind) {
    let (_server, proxy) = relayed(kind);
    let mut s = Control::login(proxy.addr);
    for round in 0..25 {
        let addr = s.pasv().unwrap();
        let mut data = TcpStream::connect(addr).unwrap();
        opened(&mut s, &format!("RETR {}", peers::HELLO_NAME));
        let mut got = Vec::new();
        data.read_to_end(&mut got).unwrap();
        s.send(b"SITE UTIME 20260101000000 hello.txt\r\nNOOP\r\n");
        assert_eq!(got, peers::HELLO);
        let replies = [s.reply(), s.reply(), s.reply()];
        let codes: Vec<&str> = replies.iter().map(|r| &r[..3]).collect();
        assert!(
            codes[0] == "226" && codes[1] != "226" && codes[2] == "200",
            "{} round {round}: replies out of order: {replies:?}",
            kind.name()
        );
    }
}

#[test]
fn pipelined_commands_never_overtake_the_226_with_vsftpd() {
    pipelined_commands_never_overtake_the_226(ServerKind::Vsftpd);
}

#[test]
fn pipelined_commands_never_overtake_the_226_with_pyftpdlib() {
    pipelined_commands_never_overtake_the_226(ServerKind::Pyftpdlib);
}
