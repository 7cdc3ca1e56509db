//! The configuration's own tests: what loads, what is refused and how the error names
//! key and line, what is warned about, what `fxprelay config` prints.

use std::time::Duration;

use super::*;
use crate::net::HostName;
use crate::rewrite::NatMode;

const EXAMPLE: &str = r#"
admin:
  bind: 127.0.0.1:9464
listeners:
  - name: nas
    bind: 0.0.0.0:2121
    mode: reverse
    upstream: 192.168.1.10:21
    data: passthrough
    nat:
      passive: auto
      active: auto
      client_address: ftp-clients.example.net   # optional
    private_ranges: [10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16]   # optional
"#;

fn err(text: &str) -> String {
    Config::parse(text).unwrap_err().to_string()
}

#[test]
fn issue_example_parses() {
    let c = Config::parse(EXAMPLE).unwrap();
    assert_eq!(c.admin.bind, "127.0.0.1:9464".parse().unwrap());
    let l = &c.listeners[0];
    assert_eq!(l.name, "nas");
    assert_eq!(l.upstream.as_ref().unwrap().to_string(), "192.168.1.10:21");
    assert_eq!(l.nat.passive, NatMode::Auto);
    assert_eq!(
        l.nat.client_address,
        Some(HostName("ftp-clients.example.net".into()))
    );
    assert!(l.nat.private.contains("10.1.2.3".parse().unwrap()));
    assert!(!l.nat.private.contains("127.0.0.1".parse().unwrap()));
}

#[test]
fn shipped_config_is_valid() {
    let text = include_str!("../../../config/fxprelay.yaml");
    Config::parse(text).unwrap();
}

#[test]
fn defaults_are_filled() {
    let c = Config::parse(
        "listeners:\n  - name: a\n    bind: 127.0.0.1:2121\n    upstream: ftp.example.com:21\n",
    )
    .unwrap();
    assert_eq!(c.admin.bind.to_string(), DEFAULT_ADMIN_BIND);
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert_eq!(c.listeners[0].nat.passive, NatMode::Auto);
    assert_eq!(c.listeners[0].data, DataMode::Relay);
    assert_eq!(c.data.ports.to_string(), DEFAULT_DATA_PORTS);
    assert_eq!(c.limits.max_sessions, 1024);
}

#[test]
fn unknown_key_names_key_and_line() {
    let e = err(
        "listeners:\n  - name: a\n    bind: 127.0.0.1:2121\n    upstream: h:21\n    colour: red\n",
    );
    assert!(e.contains("colour"), "{e}");
    assert!(e.contains("line 5"), "{e}");
}

#[test]
fn bad_address_names_line() {
    let e = err("listeners:\n  - name: a\n    bind: 127.0.0.300:2121\n    upstream: h:21\n");
    assert!(e.contains("line 3"), "{e}");
    let e = err("listeners:\n  - name: a\n    bind: 127.0.0.1:2121\n    upstream: h:99999\n");
    assert!(e.contains("line 4") && e.contains("port"), "{e}");
    let e = err("listeners:\n  - name: a\n    bind: 127.0.0.1:2121\n    upstream: 'bad host:21'\n");
    assert!(e.contains("line 4"), "{e}");
}

#[test]
fn duplicate_names_are_rejected_with_line() {
    let e = err(
        "listeners:\n  - name: a\n    bind: 127.0.0.1:2121\n    upstream: h:21\n  - name: a\n    bind: 127.0.0.1:2122\n    upstream: h:21\n",
    );
    assert!(
        e.contains("line 5") && e.contains("duplicate listener name"),
        "{e}"
    );
    assert!(e.contains("listeners[1].name"), "{e}");
}

#[test]
fn overlapping_binds_are_rejected() {
    let e = err(
        "listeners:\n  - name: a\n    bind: 0.0.0.0:2121\n    upstream: h:21\n  - name: b\n    bind: 127.0.0.1:2121\n    upstream: h:21\n",
    );
    assert!(e.contains("line 6") && e.contains("overlaps"), "{e}");
    let e = err(
        "admin:\n  bind: 127.0.0.1:2121\nlisteners:\n  - name: a\n    bind: 127.0.0.1:2121\n    upstream: h:21\n",
    );
    assert!(e.contains("admin.bind"), "{e}");
}

#[test]
fn bad_enum_and_cidr() {
    let e = err(
        "listeners:\n  - name: a\n    bind: 127.0.0.1:2121\n    upstream: h:21\n    nat:\n      passive: sometimes\n",
    );
    assert!(e.contains("line 6") && e.contains("sometimes"), "{e}");
    let e = err(
        "listeners:\n  - name: a\n    bind: 127.0.0.1:2121\n    upstream: h:21\n    private_ranges: [10.0.0.0/33]\n",
    );
    assert!(e.contains("line 5"), "{e}");
}

#[test]
fn bad_duration() {
    let e = err(
        "limits:\n  connect_timeout: soon\nlisteners:\n  - name: a\n    bind: 127.0.0.1:2121\n    upstream: h:21\n",
    );
    assert!(e.contains("line 2") && e.contains("duration"), "{e}");
}

#[test]
fn allow_lists_refuse_in_their_own_name() {
    let c = Config::parse("fxp:\n  allow: [10.0.0.0/8]\nlisteners:\n  - name: f\n    bind: 127.0.0.1:2121\n    mode: forward\n    allow: [10.0.0.0/8]\n").unwrap();
    let outside = "192.0.2.1".parse().unwrap();
    let e = c.fxp.allow.admits("h", outside).unwrap_err();
    assert_eq!(e.to_string(), "192.0.2.1 is not in fxp.allow");
    let e = c.listeners[0].allow.admits("h", outside).unwrap_err();
    assert_eq!(e.to_string(), "192.0.2.1 is not in the allow list");
    // Without an `fxp:` block the (empty) list still has its name.
    let c =
        Config::parse("listeners:\n  - name: a\n    bind: 127.0.0.1:2121\n    upstream: h:21\n")
            .unwrap();
    assert!(c.fxp.allow.is_empty());
    assert_eq!(c.fxp.allow.name(), "fxp.allow");
    assert_eq!(FxpConfig::default().allow.name(), "fxp.allow");
}

const ONE: &str = "listeners:\n  - name: a\n    bind: 127.0.0.1:2121\n    upstream: h:21\n";

#[test]
fn env_vars_expand_in_values_not_comments() {
    let env = |name: &str| (name == "NODE_IP").then(|| "10.1.2.3".to_string());
    let text = format!(
        "{ONE}    public_address: ${{NODE_IP}}   # ${{UNSET}} here is a comment\n    nat: {{client_address: \"${{CLIENTS:-clients.example}}\"}}\n"
    );
    let c = Config::parse_with_env(&text, env).unwrap();
    let l = &c.listeners[0];
    assert_eq!(l.public_address, Some(HostName("10.1.2.3".into())));
    assert_eq!(
        l.nat.client_address,
        Some(HostName("clients.example".into()))
    );
    let e = Config::parse_with_env(&format!("{ONE}    public_address: ${{NODE}}\n"), env)
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 5") && e.contains("NODE is not set"), "{e}");
    assert_eq!(
        expand_env("a: $${X} '# ${Y}'\n", |_| Some("v".into())).unwrap(),
        "a: ${X} '# v'\n"
    );
    assert!(expand_env("a: ${X\n", |_| None).is_err());
    assert!(expand_env("a: ${1X}\n", |_| None).is_err());
}

#[test]
fn misspelt_keys_and_values_get_a_suggestion() {
    let e = err(&format!("{ONE}    upstream_dat: active\n"));
    assert!(e.contains("did you mean `upstream_data`?"), "{e}");
    let e = err(&format!("{ONE}    nat: {{passive: allways}}\n"));
    assert!(e.contains("did you mean `always`?"), "{e}");
    let e = err(&format!("limit:\n  max_sessions: 5\n{ONE}"));
    assert!(e.contains("did you mean `limits`?"), "{e}");
    // Nothing close: no suggestion.
    let e = err(&format!("{ONE}    colour: red\n"));
    assert!(!e.contains("did you mean"), "{e}");
}

#[test]
fn errors_in_a_file_name_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.yaml");
    std::fs::write(&path, format!("{ONE}    upstream_dat: active\n")).unwrap();
    let e = Config::load(&path).unwrap_err().to_string();
    assert!(e.contains(&format!("{}:5:5", path.display())), "{e}");
    assert!(!e.contains("<input>"), "{e}");
    assert_eq!(e.matches("unknown field").count(), 1, "{e}");
    assert!(e.contains("5 |     upstream_dat: active"), "{e}");
}

#[test]
fn duplicate_keys_are_worded_for_operators() {
    let e = err(&format!(
        "admin:\n  bind: 127.0.0.1:1\nadmin:\n  bind: 127.0.0.1:2\n{ONE}"
    ));
    assert!(
        e.contains("`admin` appears twice") && e.contains("line 3"),
        "{e}"
    );
    assert!(!e.contains("DuplicateKeyPolicy"), "{e}");
}

#[test]
fn bare_addresses_are_accepted_wherever_networks_are() {
    let c = Config::parse(&format!(
        "{ONE}    private_ranges: [10.0.0.1, 192.168.0.0/16]\n    allow_foreign_port: [192.0.2.7]\n    proxy_protocol: {{trusted: [10.0.0.5, \"::1\"]}}\n"
    ))
    .unwrap();
    let l = &c.listeners[0];
    assert!(l.nat.private.contains("10.0.0.1".parse().unwrap()));
    assert!(!l.nat.private.contains("10.0.0.2".parse().unwrap()));
    assert_eq!(l.allow_foreign_port[0].to_string(), "192.0.2.7/32");
    let pp = l.proxy_protocol.as_ref().unwrap();
    assert!(pp.trusts("10.0.0.5".parse().unwrap()) && pp.trusts("::1".parse().unwrap()));
    let e = err(&format!("{ONE}    private_ranges: [10.0.0]\n"));
    assert!(
        e.contains("line 5") && e.contains("not an address or a network"),
        "{e}"
    );
}

#[test]
fn unbracketed_ipv6_upstream_is_refused_with_the_bracketed_form() {
    let e = err(
        "listeners:\n  - name: a\n    bind: 127.0.0.1:2121\n    upstream: \"2001:db8::1:21\"\n",
    );
    assert!(
        e.contains("`[2001:db8::1]:21`") && e.contains("line 4"),
        "{e}"
    );
    let e = err("listeners:\n  - name: a\n    bind: 127.0.0.1:2121\n    upstream: \"fe80::1\"\n");
    assert!(e.contains("`[fe80::1]:21`"), "{e}");
    let c = Config::parse(
        "listeners:\n  - name: a\n    bind: 127.0.0.1:2121\n    upstream: \"[2001:db8::1]:21\"\n",
    )
    .unwrap();
    assert_eq!(c.listeners[0].upstream.as_ref().unwrap().port, 21);
}

#[test]
fn listener_ports_inside_the_data_ports_are_refused() {
    let e = err("listeners:\n  - name: a\n    bind: 127.0.0.1:50010\n    upstream: h:21\n");
    assert!(
        e.contains("listeners[0].bind") && e.contains("data.ports"),
        "{e}"
    );
    let e = err(&format!(
        "admin:\n  bind: 127.0.0.1:7000\ndata:\n  ports: \"7000-7010\"\n{ONE}"
    ));
    assert!(e.contains("admin.bind") && e.contains("line 2"), "{e}");
}

#[test]
fn keys_that_do_nothing_are_warned_about() {
    let c = Config::parse(ONE).unwrap();
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    let c = Config::parse(&format!(
        "{ONE}    data: passthrough\n    upstream_data: active\n    allow: [10.0.0.0/8]\n"
    ))
    .unwrap();
    let all = c.warnings.join("\n");
    assert!(all.contains("`upstream_data` does nothing"), "{all}");
    assert!(
        all.contains("`allow` does nothing in `mode: reverse`"),
        "{all}"
    );
    assert!(all.contains("proxy's, where nothing listens"), "{all}");
}

#[test]
fn effective_config_loads_back_the_same() {
    let text = include_str!("../../../config/fxprelay.yaml");
    let c = Config::parse(text).unwrap();
    let yaml = c.effective_yaml();
    assert!(
        yaml.contains("idle_timeout: 15m") && yaml.contains("private_ranges"),
        "{yaml}"
    );
    let again = Config::parse(&yaml).unwrap();
    assert_eq!(again.effective_yaml(), yaml);
    let c = Config::parse("admin:\n  token: s3cret\nlisteners:\n  - name: a\n    bind: 127.0.0.1:2121\n    upstream: h:21\n").unwrap();
    assert!(!c.effective_yaml().contains("s3cret"));
}

/// `fxprelay config` prints every setting: a file that sets each key away from its
/// default loads back from the printout to the same configuration.
#[test]
fn effective_config_keeps_every_setting() {
    let dir = tempfile::tempdir().unwrap();
    // The configuration names these files; it never reads them (the binary's `app` does).
    let (cert, key) = (dir.path().join("p.crt"), dir.path().join("p.key"));
    let tls = format!(
        "    tls:\n      client: {{mode: required, cert: {}, key: {}}}\n      upstream: {{mode: explicit, verify: false, server_name: s.example, data: private}}",
        cert.display(),
        key.display()
    );
    let text = [
        "admin:",
        "  bind: 127.0.0.1:9999",
        "  token: t",
        "  header_read_timeout: 3s",
        "  request_timeout: 7s",
        "  max_connections: 9",
        "  max_connections_per_ip: 2",
        &format!(
            "fxp: {{allow: [10.0.0.0/8, ftp.example.org], concurrency: 3, allow_clear_data: true, allow_insecure: true, ca_bundles: {{corp: {}}}}}",
            cert.display()
        ),
        "limits:",
        "  connect_timeout: 3s",
        "  shutdown_grace: 4s",
        "  max_sessions: 11",
        "  max_line_length: 1000",
        "  max_reply_bytes: 5000",
        "  data_accept_timeout: 6s",
        "  max_sessions_per_ip: 5",
        "  login_timeout: 8s",
        "  idle_timeout: 9s",
        "  data_idle_timeout: 10s",
        "  reply_write_timeout: 11s",
        "  max_pre_login_sessions: 12",
        "  max_pre_login_sessions_per_ip: 4",
        "  max_data_ports_per_ip: 13",
        "data: {ports: 40000-40099, bind: 127.0.0.2}",
        "listeners:",
        "  - name: r",
        "    bind: 127.0.0.1:2121",
        "    upstream: [h1:21, {address: h2:21, weight: 2, backup: true}]",
        "    balance: user",
        "    health_check: {interval: 2s, timeout: 1s, rise: 3, fall: 4}",
        "    upstream_proxy_protocol: v2",
        "    public_address: ftp.example.net",
        "    upstream_data: active",
        "    allow_foreign_port: [192.0.2.0/24]",
        "    allow_passive_hosts: [198.51.100.0/24]",
        "    proxy_protocol: {trusted: [127.0.0.9/32]}",
        "    nat: {passive: always, active: never, client_address: 203.0.113.5}",
        "    private_ranges: [10.0.0.0/8]",
        &tls,
        "  - name: o",
        "    bind: 127.0.0.1:2122",
        "    upstream: h3:21",
        "    upstream_connect: on_login",
        "    data: passthrough",
        "  - name: f",
        "    bind: 127.0.0.1:2123",
        "    mode: forward",
        "    allow: [127.0.0.0/8]",
        "",
    ]
    .join("\n");
    let first = Config::parse(&text).unwrap();
    let printed = first.effective_yaml();
    // The token is shown as *** and loads back as that: compare everything else.
    let again = Config::parse(&printed.replace("\"***\"", "t"))
        .unwrap_or_else(|e| panic!("{e}\n{printed}"));
    let view = |c: &Config| {
        format!(
            "{:?}",
            (&c.admin, &c.fxp, &c.limits, &c.data, &c.listeners,)
        )
    };
    let (a, b) = (view(&first), view(&again));
    assert_eq!(a, b, "printed:\n{printed}");
    assert!(
        printed.contains("allow_passive_hosts") && printed.contains("tls:"),
        "{printed}"
    );
    assert!(
        printed.contains("allow_insecure: true") && printed.contains("corp:"),
        "{printed}"
    );
    assert_eq!(again.fxp.ca_bundles.keys().collect::<Vec<_>>(), ["corp"]);
}

/// `fxp.ca_bundles` name their files without reading them (the TLS material is read
/// after validation: `app::material`'s tests read them); a name a caller cannot write is
/// an error naming its key and line, and `fxp.allow_insecure` is warned about.
#[test]
fn ca_bundles_are_named_at_validation_and_their_lines_kept() {
    let with = |bundles: &str| format!("fxp:\n  ca_bundles:\n{bundles}{ONE}");
    let cfg = Config::parse(&with("    corp: /nonexistent/ca.pem\n")).unwrap();
    let corp = cfg.fxp.ca_bundles.get("corp").expect("the bundle");
    assert_eq!(corp, std::path::Path::new("/nonexistent/ca.pem"));
    assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
    let e = cfg
        .origin
        .error(&ca_bundle_key("corp"), "unreadable")
        .to_string();
    assert!(
        e.contains("`fxp.ca_bundles.corp`") && e.contains("line 3"),
        "{e}"
    );
    let e = err(&with(
        "    corp: /etc/ca.pem\n    \"/etc/ca\": /etc/ca.pem\n",
    ));
    assert!(
        e.contains("not a bundle name") && e.contains("line 4"),
        "{e}"
    );
    let cfg = Config::parse(&format!("fxp:\n  allow_insecure: true\n{ONE}")).unwrap();
    assert!(cfg.fxp.allow_insecure);
    assert!(
        cfg.warnings[0].contains("fxp.allow_insecure is true"),
        "{:?}",
        cfg.warnings
    );
}

#[test]
fn forward_listeners() {
    let c = Config::parse("listeners:\n  - name: f\n    bind: 127.0.0.1:2121\n    mode: forward\n    allow: [127.0.0.0/8, 10.1.2.3, ftp.Example.org]\n").unwrap();
    let l = &c.listeners[0];
    assert_eq!(l.mode, Mode::Forward);
    assert!(l.upstream.is_none());
    let allow: Vec<_> = l.allow.iter().collect();
    assert!(allow[0].contains("127.9.9.9".parse().unwrap()));
    assert!(allow[1].contains("10.1.2.3".parse().unwrap()));
    assert!(allow[2].names("FTP.example.org."));
    let e = err(
        "listeners:\n  - name: f\n    bind: 127.0.0.1:2121\n    mode: forward\n    upstream: h:21\n",
    );
    assert!(
        e.contains("listeners[0].upstream") && e.contains("allow"),
        "{e}"
    );
    let e = err("listeners:\n  - name: r\n    bind: 127.0.0.1:2121\n");
    assert!(
        e.contains("listeners[0].upstream") && e.contains("line 2"),
        "{e}"
    );
    let e = err(
        "listeners:\n  - name: f\n    bind: 127.0.0.1:2121\n    mode: forward\n    allow: [\"not a host\"]\n",
    );
    assert!(e.contains("line 5"), "{e}");
}
#[test]
fn an_open_admin_bind_without_a_token_is_warned_about_and_admin_limits_load() {
    let base = "listeners:\n  - name: a\n    bind: 127.0.0.1:2121\n    upstream: h:21\n";
    let c = Config::parse(&format!("admin:\n  bind: 0.0.0.0:9464\n{base}")).unwrap();
    let w = &c.warnings;
    assert!(w.len() == 1 && w[0].contains("set admin.token"), "{w:?}");
    let c = Config::parse(&format!("admin:\n  bind: 0.0.0.0:9464\n  token: t\n{base}")).unwrap();
    assert!(c.warnings.is_empty());
    assert_eq!(c.admin.limits, AdminLimits::default());
    let c = Config::parse(&format!(
        "admin:\n  header_read_timeout: 2s\n  request_timeout: 5s\n  max_connections: 8\n  max_connections_per_ip: 3\n{base}"
    ))
    .unwrap();
    assert_eq!(
        c.admin.limits,
        AdminLimits {
            header_read_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            max_connections: 8,
            max_connections_per_ip: 3,
        }
    );
    let e = Config::parse(&format!("admin:\n  max_connections: 0\n{base}")).unwrap_err();
    assert!(e.to_string().contains("greater than 0"), "{e}");
}

/// A forward or transparent listener without `allow` refuses everyone; one whose
/// `allow` spans everything on a bind other hosts reach is an open relay. Both are
/// warned about; loopback binds, narrow lists and reverse listeners are not.
#[test]
fn forward_listeners_without_allow_or_open_to_all_are_warned_about() {
    let listener = |mode: &str, bind: &str, allow: &str| {
        Config::parse(&format!(
            "listeners:\n  - name: f\n    bind: {bind}\n    mode: {mode}\n{allow}"
        ))
        .unwrap()
        .warnings
        .join("\n")
    };
    let w = listener("forward", "127.0.0.1:2121", "");
    assert!(
        w.contains("no `allow`") && w.contains("every client is refused"),
        "{w}"
    );
    let w = listener("transparent", "0.0.0.0:2121", "    allow: []\n");
    assert!(w.contains("`allow: []` admits no server"), "{w}");
    for (mode, all) in [("forward", "0.0.0.0/0"), ("transparent", "::/0")] {
        let w = listener(
            mode,
            "0.0.0.0:2121",
            &format!("    allow: [10.0.0.0/8, \"{all}\"]\n"),
        );
        assert!(
            w.contains("open FTP relay") && w.contains("0.0.0.0:2121"),
            "{w}"
        );
        assert!(w.contains("listeners[0] (`f`, line 2)"), "{w}");
    }
    for (bind, allow) in [
        ("127.0.0.1:2121", "[\"0.0.0.0/0\", \"::/0\"]"),
        ("\"[::1]:2121\"", "[\"::/0\"]"),
        ("0.0.0.0:2121", "[10.0.0.0/8, ftp.example.net]"),
    ] {
        let w = listener("forward", bind, &format!("    allow: {allow}\n"));
        assert!(w.is_empty(), "{bind} {allow}: {w}");
    }
}

/// `upstream: host` means FTP's port 21, as forward logins and FXP URLs do; an IPv6
/// address in brackets too. A port that is not a number is still refused.
#[test]
fn an_upstream_without_a_port_means_port_21() {
    for (written, host) in [
        ("ftp.example.net", "ftp.example.net"),
        ("192.0.2.10", "192.0.2.10"),
        ("\"[2001:db8::1]\"", "2001:db8::1"),
    ] {
        let c = Config::parse(&format!(
            "listeners:\n  - name: a\n    bind: 127.0.0.1:2121\n    upstream: {written}\n"
        ))
        .unwrap();
        let up = c.listeners[0].upstream.as_ref().unwrap();
        assert_eq!((up.host.as_str(), up.port), (host, 21), "{written}");
    }
    let e = err("listeners:\n  - name: a\n    bind: 127.0.0.1:2121\n    upstream: h:ftp\n");
    assert!(e.contains("line 4") && e.contains("port"), "{e}");
}
