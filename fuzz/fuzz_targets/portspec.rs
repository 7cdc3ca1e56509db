//! `PortSpec::from_str` on arbitrary UTF-8.
//!
//! Properties: a parsed spec is non-empty, its length is its number of ports, and its
//! `Display` form is canonical: it parses back to an equal spec that prints the same.
//! Errors render a message without panicking.

#![no_main]

use std::str::FromStr;

use fxprelay_core::net::PortSpec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let spec = match PortSpec::from_str(text) {
        Ok(spec) => spec,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    assert!(!spec.is_empty());
    assert!((1..=65535).contains(&spec.len()));
    let ports: Vec<u16> = spec.iter().collect();
    assert_eq!(ports.len(), spec.len());
    assert!(
        ports.windows(2).all(|w| w[0] < w[1]),
        "ascending, no repeats"
    );
    assert!(!ports.contains(&0));
    let (first, last) = (ports[0], ports[ports.len() - 1]);
    assert!(spec.contains(first) && spec.contains(last) && !spec.contains(0));

    let shown = spec.to_string();
    let again = PortSpec::from_str(&shown).expect("Display output parses");
    assert_eq!(again, spec);
    assert_eq!(again.to_string(), shown);
});
