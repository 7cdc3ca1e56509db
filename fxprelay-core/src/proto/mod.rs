//! The FTP control-channel protocol, sans I/O.
//!
//! Everything here is a pure function (or a small state machine) over bytes: no sockets,
//! no tokio, no clocks. The session code owns the I/O and feeds bytes in; this module
//! says what they mean and produces bytes to send. That split keeps the protocol logic
//! testable in isolation, lets property tests throw arbitrary input at it, and makes the
//! one hard guarantee easy to check: no input, however hostile, makes it panic.
//!
//! - [`line`](mod@line) frames the byte stream into lines (`\r\n` or bare `\n`) under a length limit.
//! - [`command`] parses client commands into a normalised verb and raw argument bytes.
//! - [`reply`] assembles server replies, multi-line ones included, line by line.
//! - [`listing`] reads directory listings: `MLSD` facts and `ls -l` lines of `LIST`.
//! - [`addr`] reads and writes the data-connection addresses of `227`, `228`, `229`,
//!   `PORT`, `EPRT` and `LPRT`, and rewrites them in place, leaving every other byte as
//!   it was.
//!
//! Lines are bytes, never decoded text: paths may be Latin-1 or anything else, and
//! whatever is not rewritten must reach the other side unchanged.

pub mod addr;
pub mod command;
pub mod line;
pub mod listing;
pub mod reply;

pub use addr::AddrError;
pub use command::{
    ActiveVerb, Command, CommandError, Direction, Moved, PassiveVerb, Verb, VerbClass,
    is_known_verb, parse_command,
};
pub use line::{LineTooLong, find_line, trim_eol};
pub use reply::{Reply, ReplyAssembler, ReplyError, quoted_path, reply_line};
