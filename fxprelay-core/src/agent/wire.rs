//! What goes over the agent's connections: one JSON object per line (`\n`), each at most
//! [`MAX_LINE`] bytes, so neither end buffers without bound on a peer's say-so.
//!
//! Every connection the agent opens starts with a [`Hello`]: [`Hello::Link`] for the link
//! the edge asks on, [`Hello::Stream`] for the connection that carries one stream. The
//! edge answers a link's hello with [`ToAgent::Welcome`] or [`ToAgent::Refused`]; a
//! stream's hello gets no answer: the bytes that follow are the stream's.
//!
//! Protocol 2 adds active mode toward the server: [`ToAgent::Listen`] asks for one
//! listening port inside, for one transfer, answered by [`FromAgent::Listening`]; the
//! server's connection to it arrives at the edge as a stream, like an opened one.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// Longest line either end reads: room for a target name and an error message.
pub const MAX_LINE: usize = 4096;

/// The version this build speaks.
pub const PROTOCOL: u32 = 2;

/// The oldest version an edge still links with: such an agent carries everything but
/// active mode toward its servers ([`ToAgent::Listen`], protocol 2).
pub const MIN_PROTOCOL: u32 = 1;

/// The first version that understands [`ToAgent::Listen`].
pub const LISTEN_PROTOCOL: u32 = 2;

/// The first line of every connection an agent opens to the edge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "hello", rename_all = "snake_case")]
pub enum Hello {
    /// The link: who the agent is, its credential (a token; with mutual TLS the
    /// certificate speaks and `token` is empty), what it speaks and runs.
    Link {
        name: String,
        token: String,
        protocol: u32,
        version: String,
    },
    /// The connection for stream `id` of the link `name`, which the edge asked for with
    /// [`ToAgent::Open`]; `nonce` is the one that request carried.
    Stream {
        name: String,
        id: u64,
        nonce: String,
    },
}

/// What the edge says on a link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "msg", rename_all = "snake_case")]
pub enum ToAgent {
    /// The link is accepted; `heartbeat_secs` is how often the edge expects a word.
    Welcome { heartbeat_secs: u64 },
    /// The link is refused (the agent logs why and dials again later).
    Refused { reason: Refused },
    /// Connect to `target` (`host:port`, as the edge's configuration names it) and dial
    /// back with [`Hello::Stream`] and `nonce` (single-use, so a stream connection cannot
    /// be replayed or guessed into another session's place).
    Open {
        id: u64,
        target: String,
        nonce: String,
    },
    /// Listen on an ephemeral port inside, on the address this agent reaches `server`
    /// from, for one connection from `server`'s address (an active-mode data
    /// connection), for at most `wait_ms`; answer [`FromAgent::Listening`]; once it is
    /// accepted, dial back with [`Hello::Stream`] and `nonce`, as for [`ToAgent::Open`].
    Listen {
        id: u64,
        server: SocketAddr,
        nonce: String,
        wait_ms: u64,
    },
    /// The edge no longer waits for request `id` (a refused `PORT`, an aborted
    /// transfer, an ended session): close its listening port now.
    Close { id: u64 },
    /// Answer to [`FromAgent::Ping`].
    Pong,
}

/// Why an edge refused a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refused {
    /// No agent of that name is configured, or its token differs.
    Credential,
    /// The agent speaks another protocol version.
    Protocol,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refused::Credential => {
                "the edge does not know this agent's name or token (`agents.tokens` on the edge)"
            }
            Refused::Protocol => "the edge speaks another agent protocol version: upgrade both",
        })
    }
}

/// What an agent says on its link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "msg", rename_all = "snake_case")]
pub enum FromAgent {
    /// Stream `id` reached its target: `peer` is the address the agent connected to,
    /// `local` the agent's own end (what a server sees as its client). The stream's
    /// connection follows.
    Opened {
        id: u64,
        peer: SocketAddr,
        local: SocketAddr,
    },
    /// Stream `id` could not be opened: outside the agent's `allow`, or unreachable; for
    /// a listen, also said later when no connection came within its time.
    Failed { id: u64, reason: String },
    /// Request `id` ([`ToAgent::Listen`]) listens at `addr`: what the edge's `PORT`
    /// names to the server.
    Listening { id: u64, addr: SocketAddr },
    /// Someone other than the expected server connected to listen `id`'s port: closed
    /// at once, and the port keeps waiting (port theft, reported a few times per listen).
    Intruder { id: u64, peer: SocketAddr },
    /// A heartbeat; the edge answers [`ToAgent::Pong`].
    Ping,
}

/// Why a line could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("a line longer than {MAX_LINE} bytes")]
    TooLong,
    #[error("not a message of the agent protocol: {0}")]
    Malformed(String),
}

/// `msg` as one line, `\n` included.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    // Serializing these plain enums cannot fail: no maps with non-string keys, no I/O.
    let mut line = serde_json::to_vec(msg).unwrap_or_default();
    line.push(b'\n');
    line
}

/// One line (its `\n` or `\r\n` may be there or not) as a message.
pub fn decode<'a, T: Deserialize<'a>>(line: &'a [u8]) -> Result<T, WireError> {
    if line.len() > MAX_LINE {
        return Err(WireError::TooLong);
    }
    let line = crate::proto::trim_eol(line);
    serde_json::from_slice(line).map_err(|e| WireError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_message_comes_back_as_it_went() {
        let hellos = [
            Hello::Link {
                name: "site-a".into(),
                token: "t0k".into(),
                protocol: PROTOCOL,
                version: "0.1.0".into(),
            },
            Hello::Stream {
                name: "site-a".into(),
                id: 7,
                nonce: "n".into(),
            },
        ];
        for h in hellos {
            let line = encode(&h);
            assert_eq!(line.last(), Some(&b'\n'));
            assert_eq!(decode::<Hello>(&line), Ok(h));
        }
        let to = [
            ToAgent::Welcome { heartbeat_secs: 10 },
            ToAgent::Refused {
                reason: Refused::Credential,
            },
            ToAgent::Open {
                id: 1,
                target: "10.0.0.5:21".into(),
                nonce: "abc".into(),
            },
            ToAgent::Listen {
                id: 3,
                server: "10.0.0.5:21".parse().unwrap(),
                nonce: "def".into(),
                wait_ms: 30_000,
            },
            ToAgent::Close { id: 3 },
            ToAgent::Pong,
        ];
        for m in to {
            assert_eq!(decode::<ToAgent>(&encode(&m)), Ok(m));
        }
        let from = [
            FromAgent::Opened {
                id: 1,
                peer: "10.0.0.5:21".parse().unwrap(),
                local: "10.0.0.9:40000".parse().unwrap(),
            },
            FromAgent::Failed {
                id: 2,
                reason: "refused".into(),
            },
            FromAgent::Listening {
                id: 3,
                addr: "10.0.0.9:41234".parse().unwrap(),
            },
            FromAgent::Intruder {
                id: 3,
                peer: "10.0.0.66:20".parse().unwrap(),
            },
            FromAgent::Ping,
        ];
        for m in from {
            assert_eq!(decode::<FromAgent>(&encode(&m)), Ok(m));
        }
    }

    #[test]
    fn bad_lines_are_errors_not_panics() {
        assert_eq!(
            decode::<ToAgent>(&[b'{'; MAX_LINE + 1]),
            Err(WireError::TooLong)
        );
        assert!(matches!(
            decode::<ToAgent>(b"PASV\r\n"),
            Err(WireError::Malformed(_))
        ));
        assert!(matches!(
            decode::<Hello>(br#"{"hello":"link","name":"a"}"#),
            Err(WireError::Malformed(_))
        ));
    }

    fn addr() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::from((ip, p))),
            (any::<[u16; 8]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::from((ip, p))),
        ]
    }

    fn to_agent() -> impl Strategy<Value = ToAgent> {
        prop_oneof![
            (any::<u64>(), addr(), "\\PC{0,40}", any::<u64>()).prop_map(
                |(id, server, nonce, wait_ms)| ToAgent::Listen {
                    id,
                    server,
                    nonce,
                    wait_ms
                }
            ),
            any::<u64>().prop_map(|id| ToAgent::Close { id }),
            (any::<u64>(), ".{0,60}", "\\PC{0,40}")
                .prop_map(|(id, target, nonce)| { ToAgent::Open { id, target, nonce } }),
        ]
    }

    fn from_agent() -> impl Strategy<Value = FromAgent> {
        prop_oneof![
            (any::<u64>(), addr()).prop_map(|(id, addr)| FromAgent::Listening { id, addr }),
            (any::<u64>(), addr()).prop_map(|(id, peer)| FromAgent::Intruder { id, peer }),
            (any::<u64>(), ".{0,200}").prop_map(|(id, reason)| FromAgent::Failed { id, reason }),
            (any::<u64>(), addr(), addr()).prop_map(|(id, peer, local)| FromAgent::Opened {
                id,
                peer,
                local
            }),
        ]
    }

    proptest! {
        #[test]
        fn any_message_is_one_line_and_comes_back(to in to_agent(), from in from_agent()) {
            for line in [encode(&to), encode(&from)] {
                // One line: a newline inside a field would split it in two.
                prop_assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
                prop_assert!(line.len() <= MAX_LINE);
            }
            prop_assert_eq!(decode::<ToAgent>(&encode(&to)), Ok(to));
            prop_assert_eq!(decode::<FromAgent>(&encode(&from)), Ok(from));
        }

        #[test]
        fn a_listen_with_any_field_cut_or_mistyped_fails_cleanly(cut in 0usize..120) {
            let line = encode(&ToAgent::Listen {
                id: 9,
                server: "10.0.0.5:21".parse().unwrap(),
                nonce: "0123456789abcdef".into(),
                wait_ms: 1000,
            });
            let cut = cut.min(line.len());
            let r = decode::<ToAgent>(&line[..cut]);
            prop_assert!(cut >= line.len() - 1 || r.is_err());
            let bad = String::from_utf8_lossy(&line).replace("10.0.0.5:21", "10.0.0.256:21");
            prop_assert!(decode::<ToAgent>(bad.as_bytes()).is_err());
        }

        #[test]
        fn any_bytes_decode_or_fail_cleanly(line in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = decode::<ToAgent>(&line);
            let _ = decode::<FromAgent>(&line);
            let _ = decode::<Hello>(&line);
        }
    }
}
