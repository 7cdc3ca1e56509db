//! What `fxprelay fxp` shows while it copies. On a terminal: for a tree, one overall bar
//! (files done/total, bytes done/total, rate, ETA) with a bar per file in flight below
//! it (indicatif `MultiProgress`); for one file, that file's bar. Log lines and failures
//! are printed above the bars ([`LogWriter`] routes the `tracing` output there), never
//! through them. Elsewhere (a pipe, a log file): plain lines on stderr, byte counts at
//! most every few seconds. Units are IEC (KiB, MiB/s) everywhere.
//!
//! [`Live`] is the engine's [`FileHooks`]: it hears which file each event belongs to, and
//! keeps what is in flight for the report of an interrupted copy.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::engine::{Event, FileHooks, FxpError, Progress, Report};
use super::url::FtpUrl;

/// How often a plain (non-terminal) display prints a file's byte count.
const PLAIN_EVERY: Duration = Duration::from_secs(5);
/// Redraws per second of the bars; also keeps the rate and ETA moving between events.
const TICK: Duration = Duration::from_millis(200);

/// The bars on screen, when there are any: log lines go above them.
static BARS: Mutex<Option<MultiProgress>> = Mutex::new(None);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A `tracing_subscriber` writer for stderr that prints above the progress bars while
/// they are shown (`MultiProgress::suspend`), and straight to stderr otherwise. One event
/// is buffered and written at once, so a line is never split by a redraw.
#[derive(Default)]
pub struct LogWriter(Vec<u8>);

impl LogWriter {
    /// The `MakeWriter` for `tracing_subscriber::fmt().with_writer(...)`.
    pub fn make() -> LogWriter {
        LogWriter::default()
    }
}

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.0.is_empty() {
            return Ok(());
        }
        let buf = std::mem::take(&mut self.0);
        let bars = lock(&BARS).clone();
        match bars {
            Some(mp) => mp.suspend(|| std::io::stderr().write_all(&buf)),
            None => std::io::stderr().write_all(&buf),
        }
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// A file in flight.
struct Flight {
    /// As shown: the path relative to the tree's root (or the URL, for one file).
    name: String,
    dst: FtpUrl,
    bar: Option<ProgressBar>,
    done: u64,
    total: Option<u64>,
    /// Plain mode: when its byte count was last printed.
    printed: Instant,
}

#[derive(Default)]
struct State {
    files_total: usize,
    files_done: usize,
    /// Bytes of the files that ended (copied or not: what the bar has counted).
    bytes_finished: u64,
    flights: HashMap<Vec<u8>, Flight>,
}

/// The live view of one run (see the module doc).
pub struct Live {
    bars: Option<MultiProgress>,
    overall: Mutex<Option<ProgressBar>>,
    /// Source path prefix dropped from file names (the tree's root).
    root: Vec<u8>,
    state: Mutex<State>,
}

/// A file in flight when a copy stopped.
#[derive(Debug, Clone)]
pub struct Left {
    /// As shown in the bars.
    pub name: String,
    pub dst: FtpUrl,
    /// Bytes at the destination when last polled.
    pub done: u64,
    /// The source's size.
    pub total: Option<u64>,
}

impl Live {
    /// Bars when `terminal`, plain lines otherwise. `root` is the source path that file
    /// names are shown relative to (empty: full URLs).
    pub fn new(terminal: bool, root: &[u8]) -> Arc<Live> {
        let bars = terminal.then(|| {
            let mp = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
            *lock(&BARS) = Some(mp.clone());
            mp
        });
        Arc::new(Live {
            bars,
            overall: Mutex::new(None),
            root: root.to_vec(),
            state: Mutex::new(State::default()),
        })
    }

    /// Shows the overall bar of a tree: `files` files of `bytes` bytes to copy.
    pub fn set_totals(&self, files: usize, bytes: u64) {
        lock(&self.state).files_total = files;
        let Some(mp) = &self.bars else {
            eprintln!(
                "fxp: {files} files to copy, {}",
                super::tree::bytes_iec(bytes)
            );
            return;
        };
        let bar = mp.insert(0, ProgressBar::new(bytes));
        if let Ok(style) = ProgressStyle::with_template(
            "{prefix} [{wide_bar}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(format!("files 0/{files}"));
        bar.enable_steady_tick(TICK);
        *lock(&self.overall) = Some(bar);
    }

    /// A line above the bars (or on stderr).
    pub fn println(&self, line: &str) {
        match &self.bars {
            Some(mp) => {
                let _ = mp.println(line);
            }
            None => eprintln!("{line}"),
        }
    }

    /// Removes the bars (before the summary is printed).
    pub fn finish(&self) {
        if let Some(bar) = lock(&self.overall).take() {
            bar.finish_and_clear();
        }
        for f in lock(&self.state).flights.values() {
            if let Some(bar) = &f.bar {
                bar.finish_and_clear();
            }
        }
        if let Some(mp) = &self.bars {
            let _ = mp.clear();
            *lock(&BARS) = None;
        }
    }

    /// The files in flight now, for the report of an interrupted copy.
    pub fn left(&self) -> Vec<Left> {
        let mut v: Vec<Left> = lock(&self.state)
            .flights
            .values()
            .map(|f| Left {
                name: f.name.clone(),
                dst: f.dst.clone(),
                done: f.done,
                total: f.total,
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// The callback for the events of the file keyed `key`.
    fn callback(self: &Arc<Live>, key: Vec<u8>) -> Progress {
        let me = self.clone();
        Arc::new(move |e: &Event| me.on_event(&key, e))
    }

    fn name(&self, src: &FtpUrl) -> String {
        let rel = src
            .path
            .strip_prefix(self.root.as_slice())
            .filter(|_| !self.root.is_empty())
            .map(|r| r.strip_prefix(b"/").unwrap_or(r));
        match rel {
            Some(r) => String::from_utf8_lossy(r).into_owned(),
            None => src.to_string(),
        }
    }

    fn begin(&self, src: &FtpUrl, dst: &FtpUrl) {
        let name = self.name(src);
        let bar = self.bars.as_ref().map(|mp| {
            let bar = mp.add(ProgressBar::no_length());
            if let Ok(style) = ProgressStyle::with_template(
                "  {msg:30!} [{bar:25}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(name.clone());
            bar
        });
        lock(&self.state).flights.insert(
            src.path.clone(),
            Flight {
                name,
                dst: dst.clone(),
                bar,
                done: 0,
                total: None,
                printed: Instant::now(),
            },
        );
    }

    fn on_event(&self, key: &[u8], e: &Event) {
        let mut st = lock(&self.state);
        let finished = st.bytes_finished;
        let Some(f) = st.flights.get_mut(key) else {
            return;
        };
        match e {
            Event::Started { size, .. } => {
                f.total = *size;
                if let (Some(bar), Some(n)) = (&f.bar, size) {
                    bar.set_length(*n);
                }
                // Plain lines for a tree: the end of each file only (see `end`).
                if f.bar.is_none() && self.root.is_empty() {
                    eprintln!("{}", line(e));
                }
            }
            Event::Bytes { done, total } => {
                f.done = *done;
                if total.is_some() {
                    f.total = *total;
                }
                match &f.bar {
                    Some(bar) => bar.set_position(*done),
                    None if f.printed.elapsed() >= PLAIN_EVERY => {
                        f.printed = Instant::now();
                        eprintln!("fxp: {}: {}", f.name, line(e));
                    }
                    None => {}
                }
                let in_flight: u64 = st.flights.values().map(|f| f.done).sum();
                if let Some(bar) = lock(&self.overall).as_ref() {
                    bar.set_position(finished + in_flight);
                }
            }
            // Which method is tried is noise on a terminal; a failure or a retry is not.
            Event::Trying { .. } if f.bar.is_some() || !self.root.is_empty() => {}
            other => {
                let text = format!("fxp: {}: {}", f.name, line(other));
                drop(st);
                self.println(&text);
            }
        }
    }
}

impl Live {
    fn end(&self, src: &FtpUrl, result: Result<&Report, &FxpError>) {
        let mut st = lock(&self.state);
        let Some(f) = st.flights.remove(&src.path) else {
            return;
        };
        if let Some(bar) = &f.bar {
            bar.finish_and_clear();
            if let Some(mp) = &self.bars {
                mp.remove(bar);
            }
        }
        st.files_done += 1;
        st.bytes_finished += match result {
            Ok(r) => r.bytes.max(f.done),
            Err(_) => f.done,
        };
        let (done, total, finished) = (st.files_done, st.files_total, st.bytes_finished);
        let in_flight: u64 = st.flights.values().map(|f| f.done).sum();
        drop(st);
        if let Some(bar) = lock(&self.overall).as_ref() {
            bar.set_prefix(format!("files {done}/{total}"));
            bar.set_position(finished + in_flight);
        }
        match result {
            Err(FxpError::Cancelled) => {}
            Err(e) => self.println(&format!("fxp: FAILED {}: {e}", f.name)),
            Ok(r) if self.bars.is_none() => eprintln!(
                "fxp: {}: copied, {} by {}",
                f.name,
                super::tree::bytes_iec(r.bytes),
                r.method
            ),
            Ok(_) => {}
        }
    }
}

/// A [`Live`] as the engine's `Options::files`: a bar (or plain lines) per file, and the
/// overall bar kept up to date.
pub struct Hooks(pub Arc<Live>);

impl FileHooks for Hooks {
    fn started(&self, _index: usize, src: &FtpUrl, dst: &FtpUrl) -> Option<Progress> {
        self.0.begin(src, dst);
        Some(self.0.callback(src.path.clone()))
    }

    fn finished(
        &self,
        _index: usize,
        src: &FtpUrl,
        _dst: &FtpUrl,
        result: Result<&Report, &FxpError>,
    ) {
        self.0.end(src, result);
    }
}

/// An event as a plain line.
pub fn line(e: &Event) -> String {
    match e {
        Event::Started { src, dst, size } => match size {
            Some(n) => format!("fxp: {src} -> {dst} ({})", super::tree::bytes_iec(*n)),
            None => format!("fxp: {src} -> {dst}"),
        },
        Event::Trying { method, offset: 0 } => format!("trying {method}"),
        Event::Trying { method, offset } => format!("trying {method}, resuming at {offset}"),
        Event::MethodFailed { method, error } => format!("{method} failed: {error}"),
        Event::Bytes { done, total } => match total {
            Some(t) => format!(
                "{} of {}",
                indicatif::HumanBytes(*done),
                indicatif::HumanBytes(*t)
            ),
            None => format!("{}", indicatif::HumanBytes(*done)),
        },
        Event::Retrying {
            attempt,
            delay,
            error,
        } => format!("attempt {attempt} failed ({error}); retrying in {delay:?}"),
    }
}
