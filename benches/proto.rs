//! Microbenchmarks of the sans-IO parsers on the hot path of every session:
//! `cargo bench --bench proto`.

use std::hint::black_box;
use std::net::SocketAddrV4;

use fxprelay::proto::{addr, command, line, reply::ReplyAssembler};

fn main() {
    divan::main();
}

const PASV: &[u8] = b"227 Entering Passive Mode (192,168,1,20,195,80).\r\n";
const FEAT: &[&[u8]] = &[
    b"211-Features:\r\n",
    b" EPRT\r\n",
    b" EPSV\r\n",
    b" MDTM\r\n",
    b" PASV\r\n",
    b" REST STREAM\r\n",
    b" SIZE\r\n",
    b" TVFS\r\n",
    b"211 End\r\n",
];

#[divan::bench]
fn parse_227() -> SocketAddrV4 {
    addr::parse_pasv_reply(black_box(PASV)).unwrap().0
}

#[divan::bench]
fn rewrite_227() -> Vec<u8> {
    let new = SocketAddrV4::new([198, 51, 100, 7].into(), 50000);
    addr::rewrite_pasv_reply(black_box(PASV), new).unwrap()
}

#[divan::bench]
fn parse_port() -> SocketAddrV4 {
    addr::parse_port_args(black_box(b"192,168,1,5,4,1\r\n")).unwrap()
}

#[divan::bench]
fn parse_eprt_v6() -> std::net::SocketAddr {
    addr::parse_eprt_args(black_box(b"|2|1080::8:800:200C:417A|5282|\r\n")).unwrap()
}

#[divan::bench]
fn parse_command_retr() -> usize {
    command::parse_command(black_box(b"RETR /pub/some/longer/path/file.tar.gz\r\n"))
        .unwrap()
        .args
        .len()
}

#[divan::bench]
fn find_line_in_buffer() -> Option<usize> {
    let mut buf = vec![b'x'; 200];
    buf.extend_from_slice(b"\r\n");
    line::find_line(black_box(&buf), 4096).unwrap()
}

#[divan::bench]
fn assemble_feat_multiline() -> usize {
    let mut asm = ReplyAssembler::new(256 * 1024);
    let mut n = 0;
    for l in FEAT {
        if let Some(r) = asm.push_line(black_box(l)).unwrap() {
            n += r.raw.len();
        }
    }
    n
}
