//! How a file was moved ([`Method`]) and how a direct method protects the data between
//! the servers ([`Protection`]). Pure: the names are what reports, the API's JSON and
//! the metrics say.

/// How a file was moved. The names ([`Method::as_str`], the JSON and metric labels) of
/// the first three never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// `PASV` on the source, `PORT` on the destination.
    Fxp,
    /// `PASV` on the destination, `PORT` on the source.
    ReverseFxp,
    /// Through the engine: `PASV` on both, bytes copied here (over TLS on each leg whose
    /// server speaks TLS).
    Relay,
    /// FXP between two TLS servers under `PROT P`, one of them the TLS client of the data
    /// connection (`SSCN ON`): the servers encrypt between themselves.
    FxpSscn,
    /// [`Method::FxpSscn`] with `PASV` on the destination.
    ReverseFxpSscn,
    /// FXP between two TLS servers, `CPSV` (`PASV` with the passive server as TLS client)
    /// on the source.
    FxpCpsv,
    /// [`Method::FxpCpsv`] with `CPSV` on the destination.
    ReverseFxpCpsv,
    /// FXP with `PROT C` on the TLS servers: the file crosses the network between them
    /// unencrypted (only with `fxp.allow_clear_data`).
    FxpClear,
    /// [`Method::FxpClear`] with `PASV` on the destination.
    ReverseFxpClear,
}

/// How a direct method protects the data connection between the servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protection {
    /// As the sessions are: plain FTP.
    Plain,
    /// `SSCN ON` on one server.
    Sscn,
    /// `CPSV` on the passive server.
    Cpsv,
    /// `PROT C` on the TLS servers.
    Clear,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Fxp => "fxp",
            Method::ReverseFxp => "reverse_fxp",
            Method::Relay => "relay",
            Method::FxpSscn => "fxp_sscn",
            Method::ReverseFxpSscn => "reverse_fxp_sscn",
            Method::FxpCpsv => "fxp_cpsv",
            Method::ReverseFxpCpsv => "reverse_fxp_cpsv",
            Method::FxpClear => "fxp_clear",
            Method::ReverseFxpClear => "reverse_fxp_clear",
        }
    }

    /// A direct method with `PASV` on the destination.
    pub fn is_reverse(self) -> bool {
        matches!(
            self,
            Method::ReverseFxp
                | Method::ReverseFxpSscn
                | Method::ReverseFxpCpsv
                | Method::ReverseFxpClear
        )
    }

    /// How a direct method protects the data; `None` for the relay.
    pub fn protection(self) -> Option<Protection> {
        match self {
            Method::Fxp | Method::ReverseFxp => Some(Protection::Plain),
            Method::FxpSscn | Method::ReverseFxpSscn => Some(Protection::Sscn),
            Method::FxpCpsv | Method::ReverseFxpCpsv => Some(Protection::Cpsv),
            Method::FxpClear | Method::ReverseFxpClear => Some(Protection::Clear),
            Method::Relay => None,
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Dashboards and scripts read these names: the metric label, the JSON and
    /// `Display` agree, and the original three never change.
    #[test]
    fn names_are_stable_and_agree() {
        let all = [
            Method::Fxp,
            Method::ReverseFxp,
            Method::Relay,
            Method::FxpSscn,
            Method::ReverseFxpSscn,
            Method::FxpCpsv,
            Method::ReverseFxpCpsv,
            Method::FxpClear,
            Method::ReverseFxpClear,
        ];
        for m in all {
            let json = serde_json::to_string(&m).unwrap();
            assert_eq!(json, format!("\"{}\"", m.as_str()));
            assert_eq!(m.to_string(), m.as_str());
            assert_eq!(m.is_reverse(), m.as_str().starts_with("reverse_"));
        }
        let old: Vec<_> = all[..3].iter().map(|m| m.as_str()).collect();
        assert_eq!(old, ["fxp", "reverse_fxp", "relay"]);
    }
}
