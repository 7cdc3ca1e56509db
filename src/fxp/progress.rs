//! What `fxprelay fxp` shows while it copies. On a terminal: for a tree, one overall bar
//! (files done/total, bytes done/total, rate, ETA) with a bar per file in flight below
//! it (indicatif `MultiProgress`); for one file, that file's bar. Log lines and failures
//! are printed above the bars ([`LogWriter`] routes the `tracing` output there), never
//! through them. Elsewhere (a pipe, a log file): plain lines on stderr, byte counts at
//! most every few seconds. Units are IEC (KiB, MiB/s) everywhere.
//!
//! [`Live`] draws the job's [`JobState`] after each of its events: the numbers on the
//! bars are the state's; the bars themselves (one per file in flight) are the display's.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::job::{EntryOutcome, FailureKind, FileEvent, JobEvent, JobState};
use super::render::bytes_iec;

/// How often a plain (non-terminal) display prints a file's byte count.
const PLAIN_EVERY: Duration = Duration::from_secs(5);
/// Redraws per second of the bars; also keeps the rate and ETA moving between events.
const TICK: Duration = Duration::from_millis(200);

/// The bars on screen, when there are any: log lines go above them.
static BARS: Mutex<Option<MultiProgress>> = Mutex::new(None);

/// A plain line on stderr in one write. `eprintln!` writes each piece of its format on
/// its own (stderr is unbuffered): seven system calls for a file's line, 14,000 for a
/// tree of 2,000 files.
fn say(args: std::fmt::Arguments<'_>) {
    let mut line = args.to_string();
    line.push('\n');
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

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

/// A file in flight: its bar, or (plain) when its byte count was last printed.
struct Flight {
    bar: Option<ProgressBar>,
    printed: Instant,
}

/// The live view of one run (see the module doc).
pub struct Live {
    bars: Option<MultiProgress>,
    overall: Option<ProgressBar>,
    /// A tree: plain lines say each file's end only.
    tree: bool,
    flights: HashMap<usize, Flight>,
}

/// A file in flight when a copy stopped.
#[derive(Debug, Clone)]
pub struct Left {
    /// As shown in the bars: the path in the tree, or the source URL.
    pub name: String,
    /// The destination as shown (password masked).
    pub dst: String,
    /// Bytes at the destination when last polled.
    pub done: u64,
    /// The source's size.
    pub total: Option<u64>,
}

impl Live {
    /// Bars when `terminal`, plain lines otherwise; `tree`: the job copies a tree.
    pub fn new(terminal: bool, tree: bool) -> Live {
        let bars = terminal.then(|| {
            let mp = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
            *lock(&BARS) = Some(mp.clone());
            mp
        });
        Live {
            bars,
            overall: None,
            tree,
            flights: HashMap::new(),
        }
    }

    /// Shows `event`'s news, `state` being the job's with it folded in.
    pub fn show(&mut self, event: &JobEvent, state: &JobState) {
        match event {
            JobEvent::Planned(outline) if self.tree && !outline.dry_run => {
                let t = state.totals();
                let bytes = state.files().map(|e| e.plan.size.unwrap_or(0)).sum();
                self.set_totals(t.files_total.unwrap_or(0), bytes);
            }
            JobEvent::Started { entry } if state.entries[*entry].is_copy() => {
                self.begin(*entry, state)
            }
            JobEvent::File { entry, event } => self.file(*entry, event, state),
            JobEvent::Ended { entry, outcome, .. } => self.end(*entry, outcome, state),
            _ => {}
        }
    }

    /// Shows the overall bar of a tree: `files` files of `bytes` bytes to copy.
    fn set_totals(&mut self, files: usize, bytes: u64) {
        let Some(mp) = &self.bars else {
            say(format_args!(
                "fxp: {files} files to copy, {}",
                bytes_iec(bytes)
            ));
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
        self.overall = Some(bar);
    }

    /// A line above the bars (or on stderr).
    pub fn println(&self, line: &str) {
        match &self.bars {
            Some(mp) => {
                let _ = mp.println(line);
            }
            None => say(format_args!("{line}")),
        }
    }

    /// Removes the bars (before the summary is printed).
    pub fn finish(&mut self) {
        if let Some(bar) = self.overall.take() {
            bar.finish_and_clear();
        }
        for f in self.flights.values() {
            if let Some(bar) = &f.bar {
                bar.finish_and_clear();
            }
        }
        if let Some(mp) = &self.bars {
            let _ = mp.clear();
            *lock(&BARS) = None;
        }
    }

    /// The files in flight in `state`, for the report of an interrupted copy.
    pub fn left(state: &JobState) -> Vec<Left> {
        let mut v: Vec<Left> = state
            .files()
            .filter(|e| e.status == super::job::Status::Running)
            .map(|e| Left {
                name: e.plan.path.clone(),
                dst: e.plan.dst.clone(),
                done: e.done,
                total: e.total,
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    fn begin(&mut self, entry: usize, state: &JobState) {
        let plan = &state.entries[entry].plan;
        // A tree's file by its path in the tree; a single file by its name (a URL cut to
        // the bar's width would end mid-host).
        let name = match state.is_tree() {
            true => plan.path.clone(),
            false => plan.src.rsplit('/').next().unwrap_or(&plan.src).to_owned(),
        };
        let bar = self.bars.as_ref().map(|mp| {
            let bar = mp.add(ProgressBar::no_length());
            if let Ok(style) = ProgressStyle::with_template(
                "  {msg:30!} [{bar:25}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(name);
            bar
        });
        self.flights.insert(
            entry,
            Flight {
                bar,
                printed: Instant::now(),
            },
        );
    }

    fn file(&mut self, entry: usize, event: &FileEvent, state: &JobState) {
        let e = &state.entries[entry];
        let Some(f) = self.flights.get_mut(&entry) else {
            return;
        };
        match event {
            FileEvent::SourceSize { size } => {
                if let (Some(bar), Some(n)) = (&f.bar, size) {
                    bar.set_length(*n);
                }
                // Plain lines for a tree: the end of each file only (see `end`).
                if f.bar.is_none() && !self.tree {
                    let size = size.map_or(String::new(), |n| format!(" ({})", bytes_iec(n)));
                    say(format_args!("fxp: {} -> {}{size}", e.plan.src, e.plan.dst));
                }
            }
            FileEvent::Bytes { .. } => {
                match &f.bar {
                    Some(bar) => bar.set_position(e.done),
                    None if f.printed.elapsed() >= PLAIN_EVERY => {
                        f.printed = Instant::now();
                        say(format_args!("fxp: {}: {}", e.plan.path, line(event)));
                    }
                    None => {}
                }
                if let Some(bar) = &self.overall {
                    bar.set_position(state.totals().bytes_done);
                }
            }
            // Which method is tried is noise on a terminal; a failure or a retry is not.
            FileEvent::Trying { .. } if f.bar.is_some() || self.tree => {}
            other => self.println(&format!("fxp: {}: {}", e.plan.path, line(other))),
        }
    }

    fn end(&mut self, entry: usize, outcome: &EntryOutcome, state: &JobState) {
        let Some(f) = self.flights.remove(&entry) else {
            return;
        };
        if let Some(bar) = &f.bar {
            bar.finish_and_clear();
            if let Some(mp) = &self.bars {
                mp.remove(bar);
            }
        }
        if let Some(bar) = &self.overall {
            let ended = state.files().filter(|e| !e.status.is_active()).count();
            let t = state.totals();
            bar.set_prefix(format!("files {ended}/{}", t.files_total.unwrap_or(0)));
            bar.set_position(t.bytes_done);
        }
        let name = &state.entries[entry].plan.path;
        match outcome {
            // A single file's end is the command's own last line (once).
            _ if !state.is_tree() => {}
            EntryOutcome::Failed(e) if e.kind == FailureKind::Cancelled => {}
            EntryOutcome::Failed(e) => self.println(&format!("fxp: FAILED {name}: {e}")),
            EntryOutcome::Copied(r) if self.bars.is_none() => say(format_args!(
                "fxp: {name}: copied, {} by {}",
                bytes_iec(r.bytes),
                r.method
            )),
            _ => {}
        }
    }
}

/// A file's event as a plain line.
pub fn line(e: &FileEvent) -> String {
    match e {
        FileEvent::SourceSize { size: Some(n) } => format!("source size {}", bytes_iec(*n)),
        FileEvent::SourceSize { size: None } => "source size unknown".into(),
        FileEvent::Trying { method, offset: 0 } => format!("trying {method}"),
        FileEvent::Trying { method, offset } => format!("trying {method}, resuming at {offset}"),
        FileEvent::MethodFailed { method, error } => format!("{method} failed: {error}"),
        FileEvent::Bytes { done, total } => match total {
            Some(t) => format!(
                "{} of {}",
                indicatif::HumanBytes(*done),
                indicatif::HumanBytes(*t)
            ),
            None => format!("{}", indicatif::HumanBytes(*done)),
        },
        FileEvent::Retrying {
            attempt,
            delay,
            error,
        } => format!("attempt {attempt} failed ({error}); retrying in {delay:?}"),
    }
}
