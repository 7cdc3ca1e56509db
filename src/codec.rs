//! The async adapter for control-channel framing: a `tokio_util` decoder that yields
//! whole lines with their terminators intact, delegating the scanning to
//! [`crate::proto::line`].

use bytes::BytesMut;
use tokio_util::codec::Decoder;

use crate::proto::line::{LineTooLong, find_line};

/// A framing failure on the control channel.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    #[error(transparent)]
    TooLong(#[from] LineTooLong),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Splits a byte stream into lines ending in `\n`, bytes untouched (lines are not UTF-8).
#[derive(Debug)]
pub struct LineCodec {
    max_len: usize,
}

impl LineCodec {
    pub fn new(max_len: usize) -> Self {
        LineCodec { max_len }
    }
}

impl Decoder for LineCodec {
    type Item = BytesMut;
    type Error = LineError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, LineError> {
        Ok(find_line(src, self.max_len)?.map(|n| src.split_to(n)))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, LineError> {
        // A peer that closes mid-line sent no complete command or reply: drop the rest.
        let line = self.decode(src)?;
        if line.is_none() {
            src.clear();
        }
        Ok(line)
    }
}
