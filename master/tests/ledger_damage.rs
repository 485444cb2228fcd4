//! A damaged data directory never opens silently with less than it acknowledged: the state
//! store's file is corrupted the ways disks and operators do it (a flipped byte, a
//! truncation, a zeroed page, the file gone) and the ledger must either refuse to open,
//! naming the damage, or open with every acknowledged task intact. It must never panic.

mod common;
use common::rec;

use heatmesh_master::ledger::{Commit, Ledger, LedgerError, LedgerOptions, Op};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const TASKS: u64 = 3_000;

/// Opens `dir` with small log segments and frequent checkpoints, so most acknowledged
/// tasks live only in the state store once their segments are removed; waits out the lock
/// a handle just dropped may still hold.
fn open(dir: &Path) -> Result<Ledger, LedgerError> {
    let opts = || LedgerOptions {
        segment_bytes: 16 * 1024,
        checkpoint_every: Duration::from_millis(100),
        ..LedgerOptions::default()
    };
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        match Ledger::open_with(dir, opts()) {
            Err(e) if e.to_string().contains("lock") && Instant::now() < end => {
                std::thread::sleep(Duration::from_millis(10));
            }
            r => return r,
        }
    }
}

/// A ledger with `TASKS` acknowledged tasks, checkpointed (so the log no longer holds the
/// early ones and only the state store does), then closed.
fn written() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(dir.path()).unwrap();
    let (tx, rx) = mpsc::channel();
    for id in 1..=TASKS {
        let tx = tx.clone();
        ledger
            .submit(Commit {
                ops: vec![Op::Put(rec(id)), Op::Idem(format!("k{id}"), id)],
                done: Some(Box::new(move |r| {
                    let _ = tx.send(r.is_ok());
                })),
                ..Commit::default()
            })
            .unwrap();
        if id % 500 == 0 {
            // Spread over several checkpoints.
            std::thread::sleep(Duration::from_millis(400));
        }
    }
    drop(tx);
    assert_eq!(
        rx.iter().filter(|ok| *ok).count() as u64,
        TASKS,
        "all acknowledged"
    );
    std::thread::sleep(Duration::from_millis(1500));
    drop(ledger);
    let segments = std::fs::read_dir(dir.path().join("wal")).map_or(0, |d| d.count());
    assert!(
        segments < 20,
        "{segments} log segments left: the early tasks are still in the log"
    );
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// The verdict on one damaged copy: refused with a named error, or every task intact.
fn judge(case: &str, dir: &Path) -> &'static str {
    let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| open(dir)));
    let ledger = match opened {
        Err(_) => panic!("{case}: opening a damaged directory panicked"),
        Ok(Err(e)) => {
            let msg = e.to_string();
            assert!(
                matches!(e, LedgerError::Damaged { .. })
                    && msg.contains(&dir.display().to_string()),
                "{case}: refused, but without naming the directory and the damage: {msg}"
            );
            eprintln!("{case}: refused: {msg}");
            return "refused";
        }
        Ok(Ok(l)) => l,
    };
    for id in 1..=TASKS {
        let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| ledger.get(id)));
        match got {
            Err(_) => panic!("{case}: reading task {id} panicked"),
            Ok(Ok(Some(r))) => assert_eq!(r, rec(id), "{case}: task {id} changed"),
            Ok(Ok(None)) => panic!("{case}: opened without acknowledged task {id}"),
            // A read that finds the damage and says so loses nothing silently.
            Ok(Err(e)) => {
                eprintln!("{case}: task {id} unreadable: {e}");
                return "refused on read";
            }
        }
    }
    assert_eq!(ledger.idempotent("k1").unwrap(), Some(1), "{case}: key k1");
    eprintln!("{case}: opened with every task intact");
    "intact"
}

fn db_file(dir: &Path) -> PathBuf {
    dir.join("db")
}

#[test]
fn damaged_state_is_refused_or_opens_with_every_acknowledged_task() {
    let base = written();
    let len = std::fs::metadata(db_file(base.path())).unwrap().len();
    assert!(
        len > 64 * 1024,
        "the state file is {len} bytes: too small to damage usefully"
    );
    type Damage = Box<dyn Fn(&Path)>;
    let write_at = |at: u64, bytes: Vec<u8>| -> Damage {
        Box::new(move |d: &Path| {
            use std::os::unix::fs::FileExt;
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(db_file(d))
                .unwrap();
            f.write_all_at(&bytes, at).unwrap();
        })
    };
    let flip = |at: u64| -> Damage {
        Box::new(move |d: &Path| {
            let mut b = std::fs::read(db_file(d)).unwrap();
            b[at as usize] ^= 0x40;
            std::fs::write(db_file(d), b).unwrap();
        })
    };
    let truncate = |to: u64| -> Damage {
        Box::new(move |d: &Path| {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(db_file(d))
                .unwrap();
            f.set_len(to).unwrap();
        })
    };
    let cases: Vec<(&str, Damage)> = vec![
        ("flip a byte near the end", flip(len - 100)),
        ("flip a byte in the middle", flip(len / 2)),
        ("flip a byte near the start", flip(600)),
        ("truncate to half", truncate(len / 2)),
        ("truncate to nothing", truncate(0)),
        (
            "zero a 4 KiB page in the middle",
            write_at((len / 2) & !4095, vec![0; 4096]),
        ),
        (
            "zero the last 4 KiB",
            write_at(len.saturating_sub(4096), vec![0; 4096]),
        ),
        (
            "remove the state file",
            Box::new(|d: &Path| std::fs::remove_file(db_file(d)).unwrap()),
        ),
    ];
    let work = tempfile::tempdir().unwrap();
    let mut verdicts = Vec::new();
    for (i, (case, damage)) in cases.iter().enumerate() {
        let copy = work.path().join(format!("case-{i}"));
        copy_dir(base.path(), &copy);
        damage(&copy);
        verdicts.push((*case, judge(case, &copy)));
    }
    eprintln!("{verdicts:#?}");
}
