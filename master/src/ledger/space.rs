//! Free space under the ledger: a full disk refuses new work, and the ledger recovers by
//! itself once space is freed.
//!
//! The log and the state store (sled) share one disk, and they fail differently: a log
//! group that finds no space is cut back and refused, so nothing is lost; sled refuses every
//! write after its first I/O error until it is opened again. So the ledger keeps a reserve
//! file (`reserve`, [`LedgerOptions::reserve_bytes`](super::LedgerOptions)) and declares the
//! disk full *before* sled can hit the end: when free space drops below half the reserve,
//! or a log write finds none. Declaring it removes the reserve, which gives sled room to
//! flush what the log already acknowledged, and makes the log refuse every group that
//! would write. Once a second the checkpoint thread looks again; when the reserve can be
//! made again with as much left over, writes resume, without a restart and without a
//! submit having to come first (a master that is not ready gets none).
//!
//! The log and apply threads call [`Space::guard`] before each write (one statvfs call);
//! only the checkpoint thread's [`Space::check`] clears a full disk, so writes do not flap.
//!
//! Architecture invariant: nothing here writes the log or sled; the ledger's tests
//! `a_full_disk_*` hold its verdicts.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// File name of the reserve in the data directory.
pub const RESERVE_FILE: &str = "reserve";

/// Space left over, beyond a re-made reserve, before writes resume: the least of it.
const MIN_HEADROOM: u64 = 1024 * 1024;

/// Watches the data directory's free space and keeps the reserve.
pub struct Space {
    dir: PathBuf,
    reserve: u64,
    full: AtomicBool,
    why: Mutex<String>,
    /// Test hook: the free space to report instead of asking the filesystem.
    fake_free: Mutex<Option<u64>>,
}

impl Space {
    /// Watches `dir`, making the reserve of `reserve` bytes if it is not there (a disk too
    /// full to hold it starts as full).
    pub fn open(dir: &Path, reserve: u64) -> Space {
        let s = Space {
            dir: dir.to_path_buf(),
            reserve,
            full: AtomicBool::new(false),
            why: Mutex::new(String::new()),
            fake_free: Mutex::new(None),
        };
        if let Err(e) = s.make_reserve() {
            s.declare_full(format!(
                "the {} reserve could not be made: {e}",
                mib(reserve)
            ));
        }
        s
    }

    /// Whether the disk counts as full: the log refuses groups that would write.
    pub fn full(&self) -> bool {
        self.full.load(Ordering::Acquire)
    }

    /// Why the disk counts as full, for refusals and the log.
    pub fn why(&self) -> String {
        self.why.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Declares the disk full (a log write found no space, or free space ran low) and
    /// gives the reserve back to the filesystem, so sled can still flush.
    pub fn declare_full(&self, why: String) {
        if self.full.swap(true, Ordering::AcqRel) {
            return;
        }
        let _ = std::fs::remove_file(self.reserve_path());
        tracing::error!(
            "ledger: disk full in {}: {why}; refusing new writes until space is freed (they resume by themselves)",
            self.dir.display()
        );
        metrics::gauge!("heatmesh_ledger_disk_full").set(1.0);
        *self.why.lock().unwrap_or_else(|e| e.into_inner()) = why;
    }

    /// Before a write: declares the disk full if free space ran low, so the write that
    /// follows (sled writes its buffers on apply, not only on flush) has the reserve to use.
    /// Returns whether the disk counts as full. One statvfs call.
    pub fn guard(&self) -> bool {
        if self.full() {
            return true;
        }
        let low = self.reserve / 2;
        if let Some(free) = self.free()
            && free < low
        {
            self.declare_full(format!(
                "{} free, below the {} kept for the state store",
                mib(free),
                mib(low)
            ));
        }
        self.full()
    }

    /// Looks at free space: declares the disk full when it ran low, or clears a full disk
    /// once the reserve is made again with as much left over. Returns whether it is full.
    pub fn check(&self) -> bool {
        if !self.full() {
            return self.guard();
        }
        let Some(free) = self.free() else {
            return true;
        };
        if free < self.reserve + self.reserve.max(MIN_HEADROOM) {
            return true;
        }
        match self.make_reserve() {
            Ok(()) => {
                self.full.store(false, Ordering::Release);
                metrics::gauge!("heatmesh_ledger_disk_full").set(0.0);
                tracing::warn!(
                    "ledger: {} free in {} again; writes resume",
                    mib(free),
                    self.dir.display()
                );
                false
            }
            Err(e) => {
                tracing::warn!("ledger: the reserve could not be made again yet: {e}");
                true
            }
        }
    }

    /// Test hook: report `free` bytes free (`None`: ask the filesystem again).
    pub fn set_fake_free(&self, free: Option<u64>) {
        *self.fake_free.lock().unwrap_or_else(|e| e.into_inner()) = free;
    }

    fn reserve_path(&self) -> PathBuf {
        self.dir.join(RESERVE_FILE)
    }

    fn free(&self) -> Option<u64> {
        if let Some(f) = *self.fake_free.lock().unwrap_or_else(|e| e.into_inner()) {
            return Some(f);
        }
        free_bytes(&self.dir)
    }

    /// Makes the reserve file hold `reserve` bytes of real blocks (not a sparse file, which
    /// would give nothing back when removed).
    fn make_reserve(&self) -> std::io::Result<()> {
        if self.reserve == 0 {
            return Ok(());
        }
        let path = self.reserve_path();
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        if let Err(e) = allocate(&f, self.reserve) {
            drop(f);
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        f.sync_all()
    }
}

/// Bytes an unprivileged writer may still use on the filesystem holding `dir`.
pub fn free_bytes(dir: &Path) -> Option<u64> {
    let st = rustix::fs::statvfs(dir).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Gives `f` `len` bytes of allocated blocks: fallocate where the filesystem has it,
/// written zeros where it does not.
fn allocate(f: &std::fs::File, len: u64) -> std::io::Result<()> {
    use std::io::Write;
    match rustix::fs::fallocate(f, rustix::fs::FallocateFlags::empty(), 0, len) {
        Ok(()) => return Ok(()),
        Err(e) if e != rustix::io::Errno::OPNOTSUPP => return Err(e.into()),
        Err(_) => {}
    }
    let mut w = f;
    let block = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        w.write_all(&block[..n])?;
        left -= n as u64;
    }
    Ok(())
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    fn reserve_len(d: &Path) -> Option<u64> {
        std::fs::metadata(d.join(RESERVE_FILE))
            .ok()
            .map(|m| m.len())
    }

    #[test]
    fn a_full_disk_is_declared_at_half_the_reserve_and_cleared_with_room_for_it_again() {
        let d = tempfile::tempdir().unwrap();
        let s = Space::open(d.path(), 4 * MIB);
        assert_eq!(reserve_len(d.path()), Some(4 * MIB));
        // (free, full afterwards, reserve present afterwards)
        let steps = [
            (100 * MIB, false, true),
            (2 * MIB, false, true),
            (2 * MIB - 1, true, false),
            (5 * MIB, true, false),
            (8 * MIB - 1, true, false),
            (8 * MIB, false, true),
            (3 * MIB, false, true),
        ];
        for (free, full, reserve) in steps {
            s.set_fake_free(Some(free));
            assert_eq!(s.check(), full, "free {free}");
            assert_eq!(s.full(), full, "free {free}");
            assert_eq!(reserve_len(d.path()).is_some(), reserve, "free {free}");
        }
    }

    #[test]
    fn a_declared_full_disk_gives_the_reserve_back_and_says_why() {
        let d = tempfile::tempdir().unwrap();
        let s = Space::open(d.path(), MIB);
        s.declare_full("No space left on device".into());
        assert!(s.full());
        assert_eq!(reserve_len(d.path()), None);
        assert_eq!(s.why(), "No space left on device");
        // Without a reserve, a full disk clears once a MiB is free again.
        let s0 = Space::open(d.path(), 0);
        s0.declare_full("ENOSPC".into());
        s0.set_fake_free(Some(MIB - 1));
        assert!(s0.check());
        s0.set_fake_free(Some(MIB));
        assert!(!s0.check());
    }

    #[test]
    fn the_real_filesystem_reports_free_space() {
        let d = tempfile::tempdir().unwrap();
        assert!(free_bytes(d.path()).is_some_and(|f| f > 0));
        assert_eq!(free_bytes(&d.path().join("missing")), None);
    }
}
