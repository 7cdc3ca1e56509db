//! How a file was moved ([`Method`]), how a direct method protects the data between
//! the servers ([`Protection`]), and which server may be the passive one when a server
//! is reached through an agent ([`Passive`]). Pure: the names are what reports, the
//! API's JSON and the metrics say.

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

/// Which server may be the passive one of a direct method (FXP), from the agents the
/// two URLs name (`?via=`). A server behind an agent accepts no inbound connection: it
/// must be the active one (it gets `PORT`/`EPRT` and connects out), the other one
/// passive. Two servers behind one agent (one name) share the inside network, and either
/// may listen for the other; two behind different agents cannot reach each other at
/// all, and only the relay (through this proxy and both agents) can copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Passive {
    /// Either: standard and reverse FXP.
    Either,
    /// The source only (the destination is behind an agent): standard FXP.
    Source,
    /// The destination only (the source is behind an agent): reverse FXP.
    Destination,
    /// Neither (behind different agents): the relay only.
    Neither,
}

impl Passive {
    /// The rule for a source reached through `src_via` and a destination through
    /// `dst_via` (`None`: straight).
    pub fn of(src_via: Option<&str>, dst_via: Option<&str>) -> Passive {
        match (src_via, dst_via) {
            (None, None) => Passive::Either,
            (Some(a), Some(b)) if a == b => Passive::Either,
            (None, Some(_)) => Passive::Source,
            (Some(_), None) => Passive::Destination,
            (Some(_), Some(_)) => Passive::Neither,
        }
    }

    /// Whether `method` fits the rule (the relay always does: the proxy connects to
    /// both passive servers, through their agents).
    pub fn admits(self, method: Method) -> bool {
        match (self, method.protection()) {
            (_, None) | (Passive::Either, _) => true,
            (Passive::Source, Some(_)) => !method.is_reverse(),
            (Passive::Destination, Some(_)) => method.is_reverse(),
            (Passive::Neither, Some(_)) => false,
        }
    }

    /// Why no method can copy between these servers when the relay is not allowed
    /// (`None`: some direct method can).
    pub fn without_relay(
        self,
        src_via: Option<&str>,
        dst_via: Option<&str>,
        reverse_only: bool,
    ) -> Option<String> {
        match (self, src_via, dst_via) {
            (Passive::Neither, Some(a), Some(b)) => Some(format!(
                "the source is reached through agent {a} and the destination through agent \
                 {b}: neither accepts an inbound connection, so they cannot connect to each \
                 other; only the relay through this proxy can copy (it is turned off)"
            )),
            (Passive::Source, _, Some(b)) if reverse_only => Some(format!(
                "reverse FXP makes the destination passive, but it is reached through agent \
                 {b} and accepts no inbound connection: use standard FXP or the relay"
            )),
            _ => None,
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

    /// A server behind an agent is always the active one; one agent's two servers may
    /// take either role; two agents' servers only meet through the relay.
    #[test]
    fn the_server_behind_an_agent_is_the_active_one() {
        use Method::*;
        let direct = [Fxp, FxpSscn, FxpCpsv, FxpClear];
        let reverse = [ReverseFxp, ReverseFxpSscn, ReverseFxpCpsv, ReverseFxpClear];
        let of = Passive::of;
        assert_eq!(of(None, None), Passive::Either);
        assert_eq!(of(Some("a"), Some("a")), Passive::Either);
        assert_eq!(of(None, Some("a")), Passive::Source);
        assert_eq!(of(Some("a"), None), Passive::Destination);
        assert_eq!(of(Some("a"), Some("b")), Passive::Neither);
        for m in direct {
            assert!(Passive::Source.admits(m) && !Passive::Destination.admits(m));
        }
        for m in reverse {
            assert!(!Passive::Source.admits(m) && Passive::Destination.admits(m));
        }
        for m in direct.into_iter().chain(reverse) {
            assert!(Passive::Either.admits(m) && !Passive::Neither.admits(m));
        }
        for p in [
            Passive::Either,
            Passive::Source,
            Passive::Destination,
            Passive::Neither,
        ] {
            assert!(p.admits(Relay), "{p:?}");
        }
        // Without the relay: two agents is said plainly, naming both.
        let why = Passive::Neither
            .without_relay(Some("a"), Some("b"), false)
            .unwrap();
        assert!(why.contains("agent a") && why.contains("agent b"), "{why}");
        let why = Passive::Source
            .without_relay(None, Some("b"), true)
            .unwrap();
        assert!(why.contains("agent b"), "{why}");
        assert_eq!(Passive::Source.without_relay(None, Some("b"), false), None);
        assert_eq!(
            Passive::Destination.without_relay(Some("a"), None, true),
            None
        );
        assert_eq!(Passive::Either.without_relay(None, None, true), None);
    }
}
