//! Reliability tier T5 for LMDB's own I/O (`../shared/reliability.md`): EIO on LMDB's writes
//! and syncs, ENOSPC on its writes, at every call, and a full disk that frees again.
//!
//! LMDB's I/O does not go through the log's `Fs`, so this test binary interposes the libc
//! calls LMDB makes on Linux (`pwrite`, `pwritev`, `writev`, `fdatasync`, `fsync`): the definitions
//! below take precedence over libc's for every call made in this executable, LMDB's C code
//! included, and pass each call through to libc (`dlsym(RTLD_NEXT)`) unless it targets a
//! `data.mdb` file while a fault is armed. They change nothing for other files or other
//! test binaries.
//!
//! Checked after every run: every error is typed; an I/O error of LMDB other than ENOSPC
//! poisons the engine (commits get `Poisoned`; nothing is retried and then trusted: no
//! checkpoint retires a log segment after a failed LMDB sync); a reopen with the faults
//! gone holds exactly the acknowledged commits (plus at most the one whose outcome is
//! indeterminate) and takes new ones.

#[path = "common/engine.rs"]
mod engine_common;

use std::collections::BTreeMap;
use std::time::Duration;

use walmdb::{Config, Db, Error, WalConfig};

mod interpose {
    //! The interposed libc calls and the fault switchboard.

    use std::ffi::{c_int, c_void, CStr};
    use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicU8, AtomicUsize, Ordering};

    /// Which calls a fault hits.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Target {
        Writes = 1,
        Syncs = 2,
    }

    static ARMED: AtomicBool = AtomicBool::new(false);
    static TARGET: AtomicU8 = AtomicU8::new(0);
    /// Counted calls of the target kind so far.
    static CALLS: AtomicU64 = AtomicU64::new(0);
    /// The counted call that fails (1-based); with `STICKY`, it and every later one.
    static FAIL_AT: AtomicU64 = AtomicU64::new(0);
    static STICKY: AtomicBool = AtomicBool::new(false);
    static ERRNO: AtomicI32 = AtomicI32::new(0);
    /// Faults injected so far.
    static INJECTED: AtomicU64 = AtomicU64::new(0);

    /// From now on, the `n`-th call of `target` on a `data.mdb` fails with `errno` (and,
    /// if `sticky`, every later one too, until [`disarm`]).
    pub fn arm(target: Target, n: u64, errno: i32, sticky: bool) {
        CALLS.store(0, Ordering::SeqCst);
        INJECTED.store(0, Ordering::SeqCst);
        TARGET.store(target as u8, Ordering::SeqCst);
        FAIL_AT.store(n, Ordering::SeqCst);
        ERRNO.store(errno, Ordering::SeqCst);
        STICKY.store(sticky, Ordering::SeqCst);
        ARMED.store(true, Ordering::SeqCst);
    }

    pub fn disarm() {
        ARMED.store(false, Ordering::SeqCst);
    }

    /// Calls of the armed kind made since `arm`.
    pub fn calls() -> u64 {
        CALLS.load(Ordering::SeqCst)
    }

    pub fn injected() -> u64 {
        INJECTED.load(Ordering::SeqCst)
    }

    fn is_lmdb_data(fd: c_int) -> bool {
        let link = format!("/proc/self/fd/{fd}");
        std::fs::read_link(link).is_ok_and(|p| p.file_name().is_some_and(|n| n == "data.mdb"))
    }

    /// The errno this call must fail with, if any.
    fn fault(fd: c_int, target: Target) -> Option<c_int> {
        if !ARMED.load(Ordering::SeqCst)
            || TARGET.load(Ordering::SeqCst) != target as u8
            || !is_lmdb_data(fd)
        {
            return None;
        }
        let n = CALLS.fetch_add(1, Ordering::SeqCst) + 1;
        let at = FAIL_AT.load(Ordering::SeqCst);
        let hit = n == at || (STICKY.load(Ordering::SeqCst) && n >= at);
        hit.then(|| {
            INJECTED.fetch_add(1, Ordering::SeqCst);
            ERRNO.load(Ordering::SeqCst)
        })
    }

    fn fail(errno: c_int) -> isize {
        // SAFETY: errno is thread-local; writing it is what a failing libc call does.
        unsafe { *libc::__errno_location() = errno };
        -1
    }

    /// libc's own definition of `name`, found once.
    fn real(slot: &AtomicUsize, name: &CStr) -> usize {
        let mut f = slot.load(Ordering::Acquire);
        if f == 0 {
            // SAFETY: a dlsym lookup of a libc function by its NUL-terminated name.
            f = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) } as usize;
            assert_ne!(f, 0, "libc has no {name:?}");
            slot.store(f, Ordering::Release);
        }
        f
    }

    macro_rules! interpose_write {
        ($name:ident, $slot:ident, $cname:literal, ($($arg:ident: $ty:ty),*)) => {
            static $slot: AtomicUsize = AtomicUsize::new(0);
            /// Interposed: see the module docs.
            ///
            /// # Safety
            /// As libc's.
            #[no_mangle]
            pub unsafe extern "C" fn $name(fd: c_int, $($arg: $ty),*) -> isize {
                if let Some(errno) = fault(fd, Target::Writes) {
                    return fail(errno);
                }
                let f: unsafe extern "C" fn(c_int, $($ty),*) -> isize =
                    std::mem::transmute(real(&$slot, $cname));
                f(fd, $($arg),*)
            }
        };
    }

    macro_rules! interpose_sync {
        ($name:ident, $slot:ident, $cname:literal) => {
            static $slot: AtomicUsize = AtomicUsize::new(0);
            /// Interposed: see the module docs.
            ///
            /// # Safety
            /// As libc's.
            #[no_mangle]
            pub unsafe extern "C" fn $name(fd: c_int) -> c_int {
                if let Some(errno) = fault(fd, Target::Syncs) {
                    return fail(errno) as c_int;
                }
                let f: unsafe extern "C" fn(c_int) -> c_int =
                    std::mem::transmute(real(&$slot, $cname));
                f(fd)
            }
        };
    }

    interpose_write!(pwrite, REAL_PWRITE, c"pwrite", (buf: *const c_void, n: usize, off: i64));
    interpose_write!(pwrite64, REAL_PWRITE64, c"pwrite64", (buf: *const c_void, n: usize, off: i64));
    interpose_write!(pwritev, REAL_PWRITEV, c"pwritev", (iov: *const libc::iovec, n: c_int, off: i64));
    interpose_write!(pwritev64, REAL_PWRITEV64, c"pwritev64", (iov: *const libc::iovec, n: c_int, off: i64));
    // LMDB writes a run of contiguous dirty pages with lseek + writev (it is not built with
    // MDB_USE_PWRITEV): without this, a full disk that fails only pwrite let a run through
    // and failed the meta page's write after it, which LMDB treats as fatal (MDB_PANIC).
    interpose_write!(writev, REAL_WRITEV, c"writev", (iov: *const libc::iovec, n: c_int));
    interpose_sync!(fdatasync, REAL_FDATASYNC, c"fdatasync");
    interpose_sync!(fsync, REAL_FSYNC, c"fsync");
}

use interpose::Target;

const EIO: i32 = 5;
const ENOSPC: i32 = 28;
const COMMITS: u32 = 40;

/// An applier and a checkpoint that run every few commits, so LMDB writes and syncs often.
fn config() -> Config {
    Config::default()
        .wal(WalConfig {
            segment_bytes: 64 << 10,
            max_record_bytes: 16 << 10,
            queue_capacity: 256,
            prepare_segments: false,
            backpressure_wait: Duration::from_secs(2),
            ..WalConfig::default()
        })
        .map_size(1 << 20)
        .apply_max_ops(20)
        .apply_interval(Duration::from_millis(1))
        .checkpoint_bytes(16 << 10)
        .checkpoint_interval(Duration::from_millis(5))
}

fn txn_writes(i: u32) -> Vec<(Vec<u8>, Vec<u8>)> {
    (0..1 + i % 3)
        .map(|j| {
            (
                format!("k{:03}", (i * 7 + j * 13) % 50).into_bytes(),
                format!("v{i}.{j}").repeat(40).into_bytes(),
            )
        })
        .collect()
}

fn model(txns: &[u32]) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut m = BTreeMap::new();
    for &i in txns {
        m.extend(txn_writes(i));
    }
    m
}

fn table(db: &Db) -> BTreeMap<Vec<u8>, Vec<u8>> {
    engine_common::scan(db, "t")
}

#[derive(Debug, Default)]
struct Counts {
    runs: u64,
    faults: u64,
    poisoned: u64,
    storage_full: u64,
    opens_refused: u64,
    acked: u64,
    /// Runs whose fault surfaced only as `close()`'s error.
    close_failed: u64,
    /// Runs whose fault surfaced nowhere (a full disk that passed, for ENOSPC).
    absorbed: u64,
    /// The most calls of the target kind one run made.
    max_calls: u64,
}

/// One run with the `n`-th LMDB call of `target` failing with `errno`; `false` once the
/// run ended without reaching it.
fn run_once(target: Target, n: u64, errno: i32, counts: &mut Counts) -> bool {
    let ctx = format!("{target:?} errno {errno} at LMDB call {n}");
    let dir = engine_common::tempdir();
    let mut acked: Vec<u32> = Vec::new();
    let mut indeterminate = None;
    let mut poisoned = false;
    interpose::arm(target, n, errno, false);
    match Db::open_with(dir.path(), config()) {
        Err(e) => {
            assert!(
                matches!(e, Error::Io(_) | Error::Lmdb { .. }),
                "{ctx}: open failed with {e:?}"
            );
            counts.opens_refused += 1;
        }
        Ok(db) => {
            for i in 0..COMMITS {
                let mut txn = db.write().unwrap_or_else(|e| panic!("{ctx}: write: {e:?}"));
                for (k, v) in txn_writes(i) {
                    txn.put("t", &k, &v).unwrap();
                }
                match txn.commit() {
                    Ok(_) => acked.push(i),
                    Err(Error::StorageFull { .. }) => {
                        counts.storage_full += 1;
                        indeterminate = Some(i);
                    }
                    Err(e) => {
                        assert!(e.is_poisoned(), "{ctx}: commit {i}: {e:?}");
                        poisoned = true;
                        indeterminate = Some(i);
                        break;
                    }
                }
                if i % 10 == 9 {
                    match db.checkpoint() {
                        Ok(_) | Err(Error::StorageFull { .. }) => {}
                        Err(e) => assert!(e.is_poisoned(), "{ctx}: checkpoint: {e:?}"),
                    }
                }
            }
            poisoned |= {
                let mut txn = db.write().unwrap();
                txn.put("t", b"probe", b"x").unwrap();
                match txn.commit() {
                    Ok(_) => {
                        acked.push(u32::MAX);
                        false
                    }
                    Err(e) => {
                        assert!(
                            e.is_poisoned() || matches!(e, Error::StorageFull { .. }),
                            "{ctx}: probe: {e:?}"
                        );
                        e.is_poisoned()
                    }
                }
            };
            counts.poisoned += poisoned as u64;
            if poisoned {
                // Nothing trusts LMDB after its failed write or sync: no checkpoint, and no
                // log segment is retired.
                let segments = engine_common::wal_segments(dir.path());
                let checkpoints = db.stats().checkpoints;
                let r = db.checkpoint();
                assert!(
                    matches!(&r, Err(e) if e.is_poisoned()),
                    "{ctx}: checkpoint of a poisoned engine: {r:?}"
                );
                assert_eq!(db.stats().checkpoints, checkpoints, "{ctx}");
                assert_eq!(engine_common::wal_segments(dir.path()), segments, "{ctx}");
                // Reads keep working: the overlay and LMDB still serve every acknowledged
                // commit (LMDB itself refuses reads only after a failed meta page write).
                match db.read() {
                    Ok(txn) => {
                        let got: BTreeMap<_, _> =
                            engine_common::collect(txn.range("t", ..).unwrap())
                                .into_iter()
                                .collect();
                        let want = model(&acked);
                        assert!(
                            want.iter().all(|(k, v)| got.get(k) == Some(v)),
                            "{ctx}: a read on the poisoned engine misses an acknowledged commit"
                        );
                    }
                    Err(e) => assert!(
                        matches!(e, Error::Lmdb { .. } | Error::Io(_)),
                        "{ctx}: read on the poisoned engine: {e:?}"
                    ),
                }
            }
            match db.close() {
                Ok(()) => {
                    if !poisoned && interpose::injected() > 0 {
                        counts.absorbed += 1;
                    }
                }
                Err(e) => {
                    assert!(
                        e.is_poisoned() || matches!(e, Error::StorageFull { .. }),
                        "{ctx}: close: {e:?}"
                    );
                    counts.close_failed += !poisoned as u64;
                }
            }
        }
    }
    let fired = interpose::injected() > 0;
    interpose::disarm();
    counts.max_calls = counts.max_calls.max(interpose::calls());
    counts.runs += 1;
    counts.faults += fired as u64;
    counts.acked += acked.len() as u64;
    // Faults gone: the reopen holds exactly what was acknowledged.
    acked.retain(|&i| i != u32::MAX);
    let db = Db::open_with(dir.path(), config()).unwrap_or_else(|e| panic!("{ctx}: reopen: {e:?}"));
    let got = table(&db);
    let mut got_probe = got.clone();
    let probe = got_probe.remove(&b"probe"[..]);
    let without = model(&acked);
    let with = indeterminate.map(|i| {
        let mut all = acked.clone();
        all.push(i);
        model(&all)
    });
    assert!(
        got_probe == without || Some(&got_probe) == with.as_ref(),
        "{ctx}: after the reopen the table is not the acknowledged transactions' result \
         ({} keys, expected {})",
        got_probe.len(),
        without.len()
    );
    let _ = probe;
    let mut txn = db.write().unwrap();
    txn.put("t", b"after", b"reopen").unwrap();
    txn.commit()
        .unwrap_or_else(|e| panic!("{ctx}: commit after reopen: {e:?}"));
    db.close().unwrap();
    fired
}

fn sweep(target: Target, errno: i32) -> Counts {
    let mut counts = Counts::default();
    let mut n = 1;
    while run_once(target, n, errno, &mut counts) {
        n += 1;
    }
    assert!(
        counts.faults >= 10,
        "{target:?}: only {} faults fired: the interposition does not reach LMDB",
        counts.faults
    );
    eprintln!(
        "LMDB {target:?} failing with errno {errno}: {} runs (up to {} such calls in a run), \
         {} faults injected: {} opens refused, {} runs poisoned, {} only close() failed, \
         {} passed unseen; {} commits refused StorageFull; {} acknowledged commits checked \
         after reopen, 0 lost",
        counts.runs,
        counts.max_calls,
        counts.faults,
        counts.opens_refused,
        counts.poisoned,
        counts.close_failed,
        counts.absorbed,
        counts.storage_full,
        counts.acked
    );
    counts
}

/// The switchboard is global: tests that arm it run one at a time.
static SWITCHBOARD: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn every_lmdb_write_and_sync_failing_loses_nothing_acknowledged() {
    let _one_at_a_time = SWITCHBOARD.lock().unwrap_or_else(|e| e.into_inner());
    sweep(Target::Writes, EIO);
    sweep(Target::Syncs, EIO);
    sweep(Target::Writes, ENOSPC);
}

/// A disk that fills under LMDB and then frees: commits are refused with `StorageFull` (none
/// acknowledged and lost, none hanging), and once space exists the applier's retry applies
/// everything and commits succeed again without a reopen.
#[test]
fn a_full_disk_under_lmdb_refuses_commits_then_heals_when_space_frees() {
    let _one_at_a_time = SWITCHBOARD.lock().unwrap_or_else(|e| e.into_inner());
    let dir = engine_common::tempdir();
    let db = Db::open_with(dir.path(), config()).unwrap();
    let mut acked = Vec::new();
    let commit = |i: u32| {
        let mut txn = db.write().unwrap();
        for (k, v) in txn_writes(i) {
            txn.put("t", &k, &v).unwrap();
        }
        txn.commit()
    };
    for i in 0..10 {
        commit(i).unwrap();
        acked.push(i);
    }
    db.checkpoint().unwrap();
    // The disk is full from LMDB's next write on.
    interpose::arm(Target::Writes, 1, ENOSPC, true);
    let mut refused = 0;
    for i in 10..200 {
        match commit(i) {
            Ok(_) => acked.push(i),
            Err(Error::StorageFull { .. }) => refused += 1,
            Err(e) => panic!("commit {i} on a full disk: {e:?}"),
        }
        if refused >= 5 {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(refused >= 5, "a full disk under LMDB refused no commit");
    assert!(db.stats().storage_full);
    assert!(matches!(db.checkpoint(), Err(Error::StorageFull { .. })));
    // Reads serve every acknowledged commit meanwhile.
    assert_eq!(table(&db), model(&acked));
    // Space frees.
    interpose::disarm();
    engine_common::wait_until("LMDB applies again", || !db.stats().storage_full);
    for i in 200..210 {
        commit(i).unwrap();
        acked.push(i);
    }
    db.checkpoint().unwrap();
    assert_eq!(db.stats().applied_lsn, db.stats().visible_lsn);
    assert_eq!(table(&db), model(&acked));
    db.close().unwrap();
    let db = Db::open_with(dir.path(), config()).unwrap();
    assert_eq!(db.recovery_report().replayed_records, 0);
    assert_eq!(table(&db), model(&acked));
}
