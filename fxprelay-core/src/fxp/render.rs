//! What the front ends print of a job: byte counts and rates in IEC units (as the
//! progress bars show them), a tree's summary line. Rendered from a [`JobState`], the
//! one record of a job's progress; the CLI's report and `SITE FXP`'s replies share it.

use super::job::{EntryResult, JobState};

/// `12939428 bytes (12.34 MiB)`: the exact count, and in IEC units as the progress bars
/// show it (below 1 KiB the count alone).
pub fn bytes_iec(bytes: u64) -> String {
    if bytes < 1024 {
        format!("{bytes} bytes")
    } else {
        format!("{bytes} bytes ({})", indicatif::HumanBytes(bytes))
    }
}

/// `161.30 MiB` (per second, when the caller appends `/s`).
pub fn rate_iec(bytes: u64, secs: f64) -> String {
    let per = if secs > 0.0 { bytes as f64 / secs } else { 0.0 };
    indicatif::HumanBytes(per as u64).to_string()
}

/// The method most copied files used (a tree's `method` in one word), `None` before
/// any copy.
pub fn main_method(state: &JobState) -> Option<&'static str> {
    state
        .totals()
        .methods
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(m, _)| *m)
}

/// Stopped before its end (Ctrl-C, a cancel, a shutdown).
pub fn interrupted(state: &JobState) -> bool {
    state.stopped.is_some() || state.totals().stopped > 0
}

/// `copied 3 files in 2 directories: 70000 bytes (68.36 KiB), 0.052 s, 1.25 MiB/s,
/// methods: fxp 3, verified: size 3`, and what was skipped, created, deleted, failed;
/// for a dry run what would be done.
pub fn summary(state: &JobState) -> String {
    let t = state.totals();
    let records = state.records();
    if state.dry_run {
        let would = |r| records.iter().filter(move |x| x.result == r);
        return format!(
            "dry run: would copy {} files ({}), create {} directories, delete {}; {} skipped",
            would(EntryResult::WouldCopy).count(),
            bytes_iec(would(EntryResult::WouldCopy).map(|x| x.bytes).sum()),
            would(EntryResult::WouldCreate).count(),
            would(EntryResult::WouldDelete).count(),
            t.skipped,
        );
    }
    let secs = state
        .finished
        .as_ref()
        .map_or(0.0, |f| f.took.as_secs_f64());
    let counts = |m: &std::collections::BTreeMap<&str, usize>| {
        m.iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let some = |n: usize, what: &str| match n {
        0 => String::new(),
        n => format!(", {n} {what}"),
    };
    format!(
        "copied {} files in {} directories: {}, {secs:.3} s, {}/s, methods: {}{}{}{}{}{}{}",
        t.files_copied,
        state.dirs,
        bytes_iec(t.bytes_copied),
        rate_iec(t.bytes_copied, secs),
        if t.methods.is_empty() {
            "none".to_owned()
        } else {
            counts(&t.methods)
        },
        if t.checks.is_empty() {
            String::new()
        } else {
            format!(", verified: {}", counts(&t.checks))
        },
        some(t.skipped, "skipped"),
        some(t.created, "directories created"),
        some(t.deleted, "deleted"),
        some(t.failed, "FAILED"),
        if interrupted(state) {
            ", INTERRUPTED"
        } else {
            ""
        },
    )
}
