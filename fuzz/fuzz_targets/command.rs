//! `parse_command` on arbitrary bytes.
//!
//! Properties: an accepted command has a verb of 1 to `MAX_VERB_LEN` uppercase ASCII
//! letters and digits starting with a letter, written (in any case) just before the
//! arguments; the arguments borrow the input and are everything after the verb and its
//! one separating space, up to the line terminator, with no CR or NUL among them.

#![no_main]

use fxprelay_core::proto::command::MAX_VERB_LEN;
use fxprelay_core::proto::{Verb, is_known_verb, parse_command, trim_eol};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(cmd) = parse_command(data) else {
        return;
    };
    let verb = cmd.verb.as_str().as_bytes();
    assert!(!verb.is_empty() && verb.len() <= MAX_VERB_LEN, "{verb:?}");
    assert!(verb[0].is_ascii_uppercase(), "{verb:?}");
    assert!(
        verb.iter()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()),
        "{verb:?}"
    );
    // The verb is its own normal form.
    assert_eq!(Verb::new(verb), Some(cmd.verb));
    let _ = is_known_verb(&cmd.verb);

    let line = trim_eol(data);
    // Nothing in the arguments could make a server see a second command.
    assert!(
        !cmd.args.iter().any(|&b| b == b'\r' || b == 0),
        "{:?}",
        cmd.args
    );
    // Where the verb as written ends: just before the separating space, or at the end.
    let verb_end = if cmd.args.is_empty() {
        // No argument: the line ends in the verb or in the verb and one space.
        line.len() - usize::from(line.ends_with(b" "))
    } else {
        // The arguments are a sub-slice of the input, and all of the rest of the line.
        let start = (cmd.args.as_ptr() as usize)
            .checked_sub(data.as_ptr() as usize)
            .expect("args borrow the input");
        let end = start + cmd.args.len();
        assert!(end <= data.len(), "args run past the input");
        assert_eq!(end, line.len(), "args stop before the line terminator");
        assert_eq!(&data[start..end], cmd.args);
        assert_eq!(data[start - 1], b' ', "args follow one space");
        start - 1
    };
    let written = &line[verb_end - verb.len()..verb_end];
    assert!(
        written.eq_ignore_ascii_case(verb),
        "{written:?} vs {verb:?}"
    );
    // Only Telnet sequences (starting with IAC, or a stray DM) may come before the verb.
    let prefix = &line[..verb_end - verb.len()];
    assert!(
        matches!(prefix.first(), None | Some(0xFF | 0xF2)),
        "{prefix:?}"
    );
});
