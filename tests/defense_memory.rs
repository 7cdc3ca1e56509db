//! What one key of the edge defense's ban table costs in memory, measured by counting the
//! allocator's bytes while a table fills to its bound (`defense::MAX_KEYS`), and that a
//! spray of twice as many addresses leaves it there. README ("Edge defense") quotes the
//! figure this prints (`cargo test --release --test defense_memory -- --nocapture`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use fxprelay::defense::{Defender, DefenseEvent, MAX_KEYS, Settings};

/// The system allocator, counting the bytes in use.
struct Counting;

static IN_USE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call goes to the system allocator unchanged; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        IN_USE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        IN_USE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        IN_USE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The `n`th address of a spray (all distinct for n < 2^24).
fn address(n: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n as u32))
}

/// One connection and one wrong password from each of `from..to`: a key each, with a
/// rate booking and a score (what a credential-stuffing spray leaves).
fn spray(d: &mut Defender, from: usize, to: usize, now: Instant) {
    for n in from..to {
        let ip = address(n);
        d.on_connect(ip, now);
        d.record(ip, DefenseEvent::LoginFailed, now);
    }
}

#[test]
fn a_full_table_costs_a_few_hundred_bytes_a_key_and_a_spray_never_grows_it() {
    let now = Instant::now();
    let before = IN_USE.load(Ordering::Relaxed);
    let mut d = Defender::new(Settings::default());
    spray(&mut d, 0, MAX_KEYS, now);
    assert_eq!(d.len(), MAX_KEYS);
    let full = IN_USE.load(Ordering::Relaxed) - before;
    let per_key = full as f64 / MAX_KEYS as f64;
    println!(
        "ban table: {MAX_KEYS} keys take {:.1} MiB, {per_key:.0} bytes per key",
        full as f64 / (1024.0 * 1024.0)
    );
    assert!(per_key < 512.0, "{per_key:.0} bytes per key");
    // Three times as many again, later: the oldest scores make room, the table stays at
    // its bound.
    for round in 1..4 {
        let at = now + Duration::from_secs(round as u64);
        spray(&mut d, round * MAX_KEYS, (round + 1) * MAX_KEYS, at);
    }
    assert!(d.len() <= MAX_KEYS);
    let after = IN_USE.load(Ordering::Relaxed) - before;
    println!(
        "after a spray of {} addresses: {:.1} MiB",
        4 * MAX_KEYS,
        after as f64 / (1024.0 * 1024.0)
    );
    assert!(
        after as f64 <= full as f64 * 1.1,
        "{after} bytes after the spray, {full} when first full"
    );
}
