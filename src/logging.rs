//! The text log's fields, with control characters escaped. Log lines quote what clients
//! and servers sent (a `USER` name, a path, a server's reply): written raw, an ESC
//! sequence in a user name would move the cursor of whoever reads the log in a terminal
//! (`tail -f`, `journalctl`) and could overwrite the real line with a forged
//! `login user=root result=ok`, and a CR or LF would start a forged line of its own.
//! [`EscapedFields`] formats every field of every event and span (the message too) as
//! tracing-subscriber's default does, `name=value` separated by spaces, but writes C0
//! controls (ESC, CR, LF, TAB, ...), DEL and C1 controls as `\n`, `\r`, `\t` or
//! `\u{1b}`. The JSON format escapes them already (JSON strings must).

use std::fmt::{self, Write};

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::Writer;

/// The text format's field formatter (`tracing_subscriber::fmt().fmt_fields(...)`).
#[derive(Debug, Clone, Copy, Default)]
pub struct EscapedFields;

impl<'writer> FormatFields<'writer> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = Visitor {
            ansi: writer.has_ansi_escapes(),
            writer,
            empty: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

/// Writes each field as it is visited, like tracing-subscriber's `DefaultVisitor`.
struct Visitor<'w> {
    writer: Writer<'w>,
    ansi: bool,
    empty: bool,
    result: fmt::Result,
}

impl Visit for Visitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_err() {
            return;
        }
        let name = field.name();
        // Metadata of `log` records, shown elsewhere in the line.
        if name.starts_with("log.") {
            return;
        }
        self.result = self.write(name, value);
    }
}

impl Visitor<'_> {
    fn write(&mut self, name: &str, value: &dyn fmt::Debug) -> fmt::Result {
        if !std::mem::take(&mut self.empty) {
            self.writer.write_char(' ')?;
        }
        if name != "message" {
            let name = name.strip_prefix("r#").unwrap_or(name);
            // Names are the program's own identifiers: no escaping needed.
            if self.ansi {
                write!(self.writer, "\x1b[3m{name}\x1b[0m\x1b[2m=\x1b[0m")?;
            } else {
                write!(self.writer, "{name}=")?;
            }
        }
        write!(Escaping(&mut self.writer), "{value:?}")
    }
}

/// A writer that escapes control characters on their way through.
struct Escaping<'a, W: Write>(&'a mut W);

impl<W: Write> Write for Escaping<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut rest = s;
        while let Some(at) = rest.find(is_control) {
            self.0.write_str(&rest[..at])?;
            let c = rest[at..].chars().next().expect("found at `at`");
            match c {
                '\n' => self.0.write_str("\\n")?,
                '\r' => self.0.write_str("\\r")?,
                '\t' => self.0.write_str("\\t")?,
                c => write!(self.0, "\\u{{{:x}}}", c as u32)?,
            }
            rest = &rest[at + c.len_utf8()..];
        }
        self.0.write_str(rest)
    }
}

/// C0 controls, DEL and C1 controls: what a terminal may act on.
fn is_control(c: char) -> bool {
    c.is_control()
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing::info;

    use super::*;

    /// Everything logged by `f` through a text subscriber with [`EscapedFields`].
    fn logged(ansi: bool, f: impl FnOnce()) -> String {
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(EscapedFields)
            .with_ansi(ansi)
            .without_time()
            .with_writer(move || Sink(sink.clone()))
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let bytes = out.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn control_characters_in_any_field_are_escaped() {
        let user = "\x1b[2K\x1b[1Glogin user=root result=ok";
        let text = logged(false, || {
            let span = tracing::info_span!("session", client = %"a\rb\x7f");
            let _in = span.enter();
            info!(%user, path = ?"x\ny", reply = 530, "login\u{9b}31m");
        });
        assert!(!text.contains(['\x1b', '\r', '\x7f', '\u{9b}']), "{text:?}");
        assert_eq!(text.matches('\n').count(), 1, "one line: {text:?}");
        assert!(
            text.contains(
                r#"session{client=a\rb\u{7f}}: fxprelay::logging::tests: login\u{9b}31m user=\u{1b}[2K\u{1b}[1Glogin user=root result=ok path="x\ny" reply=530"#
            ),
            "{text:?}"
        );
    }

    /// What is not a control character is written as the default format writes it.
    #[test]
    fn other_text_is_unchanged() {
        let ours = logged(false, || {
            info!(user = %"élan", path = "a b", n = 3, ok = true, "transfer");
        });
        let theirs = {
            let out = Arc::new(Mutex::new(Vec::new()));
            let sink = out.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_ansi(false)
                .without_time()
                .with_writer(move || Sink(sink.clone()))
                .finish();
            tracing::subscriber::with_default(subscriber, || {
                info!(user = %"élan", path = "a b", n = 3, ok = true, "transfer");
            });
            let bytes = out.lock().unwrap().clone();
            String::from_utf8(bytes).unwrap()
        };
        assert_eq!(ours, theirs);
        // With colours, names are styled as the default does; values still escaped.
        let coloured = logged(true, || info!(user = %"\x1b]0;x\x07", "login"));
        assert!(
            coloured.contains("\x1b[3muser\x1b[0m\x1b[2m=\x1b[0m\\u{1b}]0;x\\u{7}"),
            "{coloured:?}"
        );
    }
}
