//! Memory per registration record, measured with a counting allocator: the
//! in-memory table (indexes and live state included) and the scheduler for
//! 100,000 registered accounts. The 1,000,000-account target is 1 GiB RSS for
//! the whole process, so the records must stay well below 1 KiB each.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use rand::SeedableRng;
use rand::rngs::StdRng;
use siphost::registrations::{
    LiveState, Record, RegistrationTable, Scheduler, SchedulerConfig, Secret, flags,
};

struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counter only observes sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is passed on as it is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: `ptr` came from `System.alloc` with this layout (above).
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: `ptr` came from `System` with `layout`; the contract is passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const ACCOUNTS: u32 = 100_000;
/// Bytes per record allowed: 600 MB at a million, leaving the rest of the
/// 1 GiB to the process (allocator payload, not counting malloc's own
/// per-chunk overhead of about 8-16 bytes per allocation, three per record).
const BUDGET_PER_RECORD: isize = 600;

/// A typical provider account: user names of 10-12 characters, a password,
/// an auth proxy; optional columns empty.
fn account(i: u32) -> Record {
    Record {
        l_uuid: format!("{i:010}"),
        l_username: format!("user{i:07}"),
        l_domain: "pbx.example.com".to_owned(),
        r_username: format!("49301{i:07}"),
        r_domain: "sip.provider.example".to_owned(),
        realm: "sip.provider.example".to_owned(),
        auth_username: format!("49301{i:07}"),
        auth_password: Secret::new(format!("pw-{i:09}")),
        auth_proxy: "sip:proxy.provider.example:5060".to_owned(),
        expires: 3600,
        ..Record::default()
    }
}

#[test]
fn a_registered_record_costs_well_under_a_kilobyte() {
    let before = LIVE_BYTES.load(Ordering::Relaxed);
    let mut table = RegistrationTable::new();
    let mut scheduler = Scheduler::new(SchedulerConfig::default(), StdRng::seed_from_u64(1));
    let now_ms = 1_795_000_000_000;
    for i in 0..ACCOUNTS {
        let state = LiveState {
            flags: flags::ONLINE | flags::INIT,
            expires: 3600,
            registered_until: now_ms / 1000 + 3600,
            call_id: format!("{:032x}@10.0.0.1", u128::from(i) * 0x9e37_79b9),
            cseq: 11,
            last_status: 200,
            last_reason: "OK".to_owned(),
            failures: 0,
            next_due_ms: 0,
        };
        let id = table.insert(account(i), state).expect("valid account");
        scheduler.registered(id, now_ms, 3600);
    }
    let used = LIVE_BYTES.load(Ordering::Relaxed) - before;
    let per_record = used / ACCOUNTS as isize;
    eprintln!(
        "{per_record} bytes per registered record (table {} records, scheduler {} bytes)",
        table.len(),
        scheduler.heap_bytes()
    );
    assert_eq!(table.counters().regactive, u64::from(ACCOUNTS));
    assert!(
        per_record <= BUDGET_PER_RECORD,
        "{per_record} bytes per record exceeds {BUDGET_PER_RECORD}"
    );
}
