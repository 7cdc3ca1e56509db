//! The ids of API jobs: UUIDv7 (RFC 9562), the time of submission in milliseconds
//! followed by random bits. Ids counted from 1 started again at 1 after every restart, so
//! a program polling `/api/v1/transfers/1` read a newer job as its own; these never
//! repeat, across restarts or between instances, and still sort in the order jobs were
//! submitted (within one process strictly: the `uuid` crate keeps a counter), which is
//! what the list's cursor relies on.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

/// One job's id; written `0193a5c4-7b1e-7c3d-9f2a-5e4b3c2d1a0f`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobId(Uuid);

impl JobId {
    /// A new id, later than every id this process made before.
    pub fn new() -> JobId {
        JobId(Uuid::now_v7())
    }
}

impl Default for JobId {
    fn default() -> Self {
        JobId::new()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

/// A text that is not a job id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a transfer id (ids look like 0193a5c4-7b1e-7c3d-9f2a-5e4b3c2d1a0f)")]
pub struct BadJobId(String);

impl FromStr for JobId {
    type Err = BadJobId;

    fn from_str(s: &str) -> Result<JobId, BadJobId> {
        // Only the form the API writes: one id, one spelling.
        let hyphenated = s.len() == 36 && s.as_bytes()[8] == b'-';
        match Uuid::try_parse(s) {
            Ok(id) if hyphenated => Ok(JobId(id)),
            _ => Err(BadJobId(s.chars().take(64).collect())),
        }
    }
}

impl serde::Serialize for JobId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_grow_never_repeat_and_read_back() {
        let ids: Vec<JobId> = (0..10_000).map(|_| JobId::new()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "in the order made");
        let text = ids[0].to_string();
        assert_eq!(text.len(), 36);
        assert_eq!(text.parse::<JobId>(), Ok(ids[0]));
        assert_eq!(text.to_uppercase().parse::<JobId>(), Ok(ids[0]));
        assert_eq!(
            serde_json::to_string(&ids[0]).unwrap(),
            format!("\"{text}\"")
        );
        for bad in [
            "1",
            "abc",
            "",
            &text.replace('-', ""),
            &format!("{{{text}}}"),
        ] {
            assert!(bad.parse::<JobId>().is_err(), "{bad}");
        }
    }
}
