//! The ledger's unit tests: commits, replay, damage, format upgrades.

use super::*;
use crate::task::Status;
use std::time::Instant;

fn rec(id: u64) -> TaskRecord {
    TaskRecord {
        idempotency_key: Some(format!("key-{id}")),
        created_us: id,
        updated_us: id,
        seq: id,
        ..TaskRecord::pending(id, "Plant-001", "GL-009", format!(r#"{{"n":{id}}}"#))
    }
}

fn accept(id: u64) -> Vec<Op> {
    vec![Op::Put(rec(id)), Op::Idem(format!("key-{id}"), id)]
}

async fn commit(l: &Ledger, ops: Vec<Op>) -> Result<(), LedgerError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    l.submit(Commit {
        ops,
        applied: Some(Box::new(move |r| {
            let _ = tx.send(r);
        })),
        ..Commit::default()
    })?;
    rx.await.map_err(|_| LedgerError::Closed)?
}

/// Waits until the ledger's threads are gone and the directory opens again.
fn reopen(dir: &Path, opts: LedgerOptions) -> Result<Ledger, LedgerError> {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        match Ledger::open_with(dir, opts) {
            Err(LedgerError::Storage(e)) if Instant::now() < end => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(10));
            }
            r => return r,
        }
    }
}

fn small() -> LedgerOptions {
    LedgerOptions {
        segment_bytes: 256,
        checkpoint_every: Duration::from_millis(20),
        reserve_bytes: 1024 * 1024,
    }
}

#[tokio::test]
async fn acknowledged_writes_are_read_back_after_reopen() {
    let d = tempfile::tempdir().unwrap();
    let l = Ledger::open(d.path()).unwrap();
    for id in 1..=20 {
        commit(&l, accept(id)).await.unwrap();
    }
    assert_eq!(l.get(7).unwrap(), Some(rec(7)));
    assert_eq!(l.idempotent("key-7").unwrap(), Some(7));
    assert_eq!(l.next_node_epoch("node-1").unwrap(), 1);
    assert_eq!(l.next_node_epoch("node-1").unwrap(), 2);
    drop(l);
    let l = reopen(d.path(), LedgerOptions::default()).unwrap();
    assert_eq!(l.scan_all().count(), 20);
    assert_eq!(l.get(20).unwrap(), Some(rec(20)));
    assert_eq!(
        l.next_node_epoch("node-1").unwrap(),
        3,
        "epochs survive a reopen"
    );
}

#[tokio::test]
async fn records_only_in_the_log_are_replayed_into_the_state() {
    let d = tempfile::tempdir().unwrap();
    // A log whose groups sled never applied: what a kill -9 before a checkpoint leaves.
    let (mut wal, _) = Wal::open(&d.path().join("wal"), WalOptions::default(), 0, |_, _| {
        Ok(())
    })
    .unwrap();
    for id in 1..=5 {
        let mut p = Vec::new();
        for op in accept(id) {
            codec::encode(&op, &mut p);
        }
        wal.append(&p);
        wal.sync().unwrap();
    }
    drop(wal);
    let l = Ledger::open(d.path()).unwrap();
    assert_eq!(l.open_info().replayed, 5);
    assert_eq!(l.get(3).unwrap(), Some(rec(3)));
    commit(&l, accept(6)).await.unwrap();
    drop(l);
    let l = reopen(d.path(), LedgerOptions::default()).unwrap();
    assert_eq!(
        l.open_info().replayed,
        0,
        "the replay and what followed were checkpointed"
    );
    assert_eq!(l.scan_all().count(), 6);
}

fn segments(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("wal")).unwrap().count()
}

/// Commits ids from 41 on until a checkpoint has let the log drop its first segments
/// (purging follows a sync); returns the last id committed.
async fn until_purged(l: &Ledger, dir: &Path) -> u64 {
    let end = Instant::now() + Duration::from_secs(20);
    let mut id = 40;
    loop {
        id += 1;
        commit(l, accept(id)).await.unwrap();
        if !dir.join("wal").join("00000000000000000001.wal").exists() {
            return id;
        }
        assert!(
            Instant::now() < end,
            "no checkpoint removed a segment within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn checkpoints_remove_old_segments() {
    let d = tempfile::tempdir().unwrap();
    let l = Ledger::open_with(d.path(), small()).unwrap();
    for id in 1..=40 {
        commit(&l, accept(id)).await.unwrap();
    }
    // A checkpoint during the run removed the first segment (until_purged waits for it).
    let last = until_purged(&l, d.path()).await;
    drop(l);
    let l = reopen(d.path(), small()).unwrap();
    assert_eq!(l.scan_all().count() as u64, last);
    assert_eq!(
        segments(d.path()),
        1,
        "an open leaves only the newest segment"
    );
}

#[tokio::test]
async fn a_state_that_lost_checkpointed_data_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let l = Ledger::open_with(d.path(), small()).unwrap();
    for id in 1..=40 {
        commit(&l, accept(id)).await.unwrap();
    }
    until_purged(&l, d.path()).await;
    drop(l);
    // A lost or truncated state store: every file of the directory but the log.
    let _ = reopen(d.path(), small()).unwrap();
    for e in std::fs::read_dir(d.path()).unwrap() {
        let p = e.unwrap().path();
        if p.file_name().unwrap() != "wal" {
            if p.is_dir() {
                std::fs::remove_dir_all(&p).unwrap();
            } else {
                std::fs::remove_file(&p).unwrap();
            }
        }
    }
    let err = reopen(d.path(), small())
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("is damaged"), "{err}");
    assert!(err.contains("the state store lost data"), "{err}");
    assert!(
        err.contains("restore the data directory from a backup"),
        "{err}"
    );
}

#[tokio::test]
async fn a_state_ahead_of_its_log_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let l = Ledger::open(d.path()).unwrap();
    for id in 1..=3 {
        commit(&l, accept(id)).await.unwrap();
    }
    drop(l);
    let _ = reopen(d.path(), LedgerOptions::default()).unwrap();
    std::fs::remove_dir_all(d.path().join("wal")).unwrap();
    let err = reopen(d.path(), LedgerOptions::default())
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("has applied LSN 3 but the log"), "{err}");
    assert!(err.contains("log segments are missing"), "{err}");
}

#[tokio::test]
async fn a_damaged_log_record_is_refused_with_its_file() {
    let d = tempfile::tempdir().unwrap();
    // No checkpoint, so every segment stays and the first one is closed.
    let opts = LedgerOptions {
        checkpoint_every: Duration::from_secs(3600),
        ..small()
    };
    let l = Ledger::open_with(d.path(), opts).unwrap();
    for id in 1..=10 {
        commit(&l, accept(id)).await.unwrap();
    }
    // Damaged before any reopen: an open that succeeds purges what sled holds.
    drop(l);
    let mut segs: Vec<_> = std::fs::read_dir(d.path().join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segs.sort();
    let first = &segs[0];
    let mut b = std::fs::read(first).unwrap();
    b[wal::MAGIC.len() + 20] ^= 1;
    std::fs::write(first, b).unwrap();
    let err = reopen(d.path(), opts).err().expect("refused").to_string();
    assert!(err.contains(&first.display().to_string()), "{err}");
    assert!(err.contains("checksum mismatch"), "{err}");
}

fn block(times: &[i64]) -> Vec<(i64, heatmesh_ingest::reading::Stored)> {
    times
        .iter()
        .map(|&t| {
            let s = heatmesh_ingest::reading::Stored {
                raw: t as f64,
                value: t as f64,
                quality: heatmesh_ingest::Quality::Good,
                status: 0,
                flags: 0,
                received_us: 0,
            };
            (t, s)
        })
        .collect()
}

#[tokio::test]
async fn reading_blocks_read_back_in_time_order_across_buckets_and_overlaps() {
    let d = tempfile::tempdir().unwrap();
    let l = Ledger::open(d.path()).unwrap();
    let h = codec::BUCKET_US;
    let plant: std::sync::Arc<str> = std::sync::Arc::from("P");
    let put = |times: &[i64]| Op::Readings {
        plant: plant.clone(),
        meter: "m".into(),
        block: block(times),
    };
    // Two batches in the first hour, the second a backfill inside the first's span; one
    // in the next hour; another meter's block, which must not show.
    commit(
        &l,
        vec![
            put(&[10, 50, 90]),
            put(&[h + 5, h + 7]),
            Op::Readings {
                plant: plant.clone(),
                meter: "other".into(),
                block: block(&[20]),
            },
        ],
    )
    .await
    .unwrap();
    commit(&l, vec![put(&[30, 70])]).await.unwrap();
    let times = |from, to| -> Vec<i64> {
        l.readings("P", "m", from, to)
            .map(|r| r.unwrap().0)
            .collect()
    };
    assert_eq!(times(0, i64::MAX), vec![10, 30, 50, 70, 90, h + 5, h + 7]);
    assert_eq!(times(31, h + 6), vec![50, 70, 90, h + 5]);
    assert_eq!(times(h, h + 1), Vec::<i64>::new());
    assert_eq!(l.reading("P", "m", 70).unwrap().map(|s| s.raw), Some(70.0));
    assert_eq!(l.reading("P", "m", 71).unwrap(), None);
    assert_eq!(l.latest_reading_time("P", "m").unwrap(), Some(h + 7));
    // A backfill into the last hour whose first time is later than the newest reading's
    // block start does not hide the newest reading.
    commit(&l, vec![put(&[h + 6])]).await.unwrap();
    assert_eq!(l.latest_reading_time("P", "m").unwrap(), Some(h + 7));
    assert_eq!(l.latest_reading_time("P", "none").unwrap(), None);
}

#[tokio::test]
async fn a_format_2_ledger_opens_with_its_readings_as_blocks() {
    let d = tempfile::tempdir().unwrap();
    {
        let l = Ledger::open(d.path()).unwrap();
        // What format 2 wrote: one Stored per key.
        let (t, s) = block(&[1_000]).remove(0);
        l.state
            .insert(codec::reading_key("P", "m", t), codec::value(&s))
            .unwrap();
        l.state.insert(FORMAT_KEY, &2u64.to_be_bytes()).unwrap();
        l.flush().unwrap();
    }
    let l = reopen(d.path(), LedgerOptions::default()).unwrap();
    let got: Vec<(i64, f64)> = l
        .readings("P", "m", 0, i64::MAX)
        .map(|r| r.map(|(t, s)| (t, s.raw)).unwrap())
        .collect();
    assert_eq!(got, vec![(1_000, 1_000.0)]);
    let f = l
        .state
        .get(FORMAT_KEY)
        .unwrap()
        .and_then(|v| codec::u64_value(&v));
    assert_eq!(f, Some(FORMAT));
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < end, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_full_disk_refuses_writes_and_recovers_by_itself_once_space_is_freed() {
    let d = tempfile::tempdir().unwrap();
    let l = Ledger::open_with(d.path(), small()).unwrap();
    commit(&l, accept(1)).await.unwrap();
    assert!(d.path().join(space::RESERVE_FILE).exists());

    // Free space runs low: the next checkpoint declares the disk full, before any write
    // hits the end, and the reserve goes back to the filesystem.
    l.space().set_fake_free(Some(1000));
    until("the disk counts as full", || l.write_failing()).await;
    assert!(!d.path().join(space::RESERVE_FILE).exists());
    let err = commit(&l, accept(2)).await.unwrap_err();
    assert!(
        matches!(&err, LedgerError::DiskFull(why) if why.contains("free, below the")),
        "{err:?}"
    );
    assert_eq!(l.get(2).unwrap(), None);
    // Reads and empty barriers still work.
    l.barrier().await.unwrap();
    assert_eq!(l.get(1).unwrap(), Some(rec(1)));

    // Space comes back: no write has to come first for the ledger to notice.
    l.space().set_fake_free(None);
    until("writes resume", || !l.write_failing()).await;
    assert!(d.path().join(space::RESERVE_FILE).exists());
    commit(&l, accept(2)).await.unwrap();
    assert_eq!(l.get(2).unwrap(), Some(rec(2)));
}

#[tokio::test]
async fn changes_read_back_in_sequence_order_and_a_format_3_ledger_is_indexed_on_open() {
    let d = tempfile::tempdir().unwrap();
    let entry = |to| Transition {
        from: None,
        to,
        at_us: 1,
        attempt: 1,
        epoch: 0,
        node: String::new(),
        detail: String::new(),
    };
    {
        let l = Ledger::open(d.path()).unwrap();
        // Two tasks whose changes interleave: 1 (seq 1), 2 (seq 2), 1 (seq 3), 2 (seq 4).
        for (id, seq, st) in [
            (1, 1, Status::Pending),
            (2, 2, Status::Pending),
            (1, 3, Status::Completed),
            (2, 4, Status::Failed),
        ] {
            commit(
                &l,
                vec![
                    Op::Put(rec(id)),
                    Op::Journal {
                        id,
                        seq,
                        entry: entry(st),
                    },
                ],
            )
            .await
            .unwrap();
        }
        let seqs = |after, limit| -> Vec<(u64, u64, Status)> {
            l.changes_after(after, limit)
                .unwrap()
                .into_iter()
                .map(|(s, e, r)| (s, r.id, e.to))
                .collect()
        };
        assert_eq!(
            seqs(0, 10),
            [
                (1, 1, Status::Pending),
                (2, 2, Status::Pending),
                (3, 1, Status::Completed),
                (4, 2, Status::Failed)
            ]
        );
        assert_eq!(seqs(2, 1), [(3, 1, Status::Completed)]);
        assert!(seqs(4, 10).is_empty());
        // What format 3 held: the journal without the index.
        let index: Vec<_> = l
            .state
            .scan_prefix([b'S'])
            .keys()
            .map(|k| k.unwrap())
            .collect();
        assert_eq!(index.len(), 4);
        for k in index {
            l.state.remove(k).unwrap();
        }
        l.state.insert(FORMAT_KEY, &3u64.to_be_bytes()).unwrap();
        l.flush().unwrap();
        assert!(l.changes_after(0, 10).unwrap().is_empty());
    }
    let l = reopen(d.path(), LedgerOptions::default()).unwrap();
    let got: Vec<u64> = l
        .changes_after(0, 10)
        .unwrap()
        .iter()
        .map(|c| c.0)
        .collect();
    assert_eq!(got, [1, 2, 3, 4]);
    let f = l
        .state
        .get(FORMAT_KEY)
        .unwrap()
        .and_then(|v| codec::u64_value(&v));
    assert_eq!(f, Some(FORMAT));
}

#[tokio::test]
async fn compaction_drops_old_change_groups_and_reading_blocks_through_the_log() {
    use heatmesh_ingest::reading::{Quality, Stored};
    let d = tempfile::tempdir().unwrap();
    let hour = codec::BUCKET_US;
    let stored = |v| Stored {
        raw: v,
        value: v,
        quality: Quality::Good,
        status: 0,
        flags: 0,
        received_us: 0,
    };
    let block = |t: i64| vec![(t, stored(1.0)), (t + 1_000_000, stored(2.0))];
    {
        let l = Ledger::open(d.path()).unwrap();
        // Changes at 10 s, 20 s and 30 s; the task of the first one is since removed.
        for (id, at_us) in [(1u64, 10_000_000u64), (2, 20_000_000), (3, 30_000_000)] {
            let entry = Transition {
                from: None,
                to: Status::Pending,
                at_us,
                attempt: 0,
                epoch: 0,
                node: String::new(),
                detail: String::new(),
            };
            let mut ops = accept(id);
            ops.push(Op::Journal { id, seq: id, entry });
            commit(&l, ops).await.unwrap();
        }
        let expire = Op::Expire {
            id: 1,
            seqs: vec![1],
            key: Some("key-1".into()),
            key_until_us: 0,
        };
        commit(&l, vec![expire]).await.unwrap();
        // Two meters, blocks in hours 0, 1 and 3.
        for meter in ["FT-1", "TT-2"] {
            for h in [0, 1, 3] {
                let op = Op::Readings {
                    plant: "Plant-001".into(),
                    meter: meter.into(),
                    block: block(h * hour + 5),
                };
                commit(&l, vec![op]).await.unwrap();
            }
        }
        // Cutoffs: changes before 25 s; readings before 2.5 h (blocks of hours 0 and 1).
        let ops = l.compaction(25_000_000, 2 * hour + hour / 2, 100).unwrap();
        assert!(
            matches!(&ops[0], Op::DropChanges(g) if g.len() == 2),
            "{ops:?}"
        );
        let blocks: Vec<_> = ops[1..]
            .iter()
            .map(|op| match op {
                Op::DropReadings { meter, blocks, .. } => (meter.clone(), blocks.clone()),
                op => panic!("{op:?}"),
            })
            .collect();
        let old = vec![5, hour + 5];
        assert_eq!(blocks, [("FT-1".into(), old.clone()), ("TT-2".into(), old)]);
        // At most the limit of each.
        assert_eq!(l.compaction(25_000_000, 0, 1).unwrap().len(), 1);
        commit(&l, ops).await.unwrap();
        assert_eq!(l.compacted_through().unwrap(), 2);
        assert!(
            l.compaction(25_000_000, 2 * hour + hour / 2, 100)
                .unwrap()
                .is_empty()
        );
    }
    // A reopened ledger holds exactly what is left.
    let l = reopen(d.path(), LedgerOptions::default()).unwrap();
    let seqs: Vec<u64> = l
        .changes_after(0, 10)
        .unwrap()
        .iter()
        .map(|c| c.0)
        .collect();
    assert_eq!(seqs, [3]);
    assert_eq!(l.get(1).unwrap(), None);
    assert_eq!(l.idempotent("key-1").unwrap(), None);
    assert_eq!(l.idempotent("key-2").unwrap(), Some(2));
    for meter in ["FT-1", "TT-2"] {
        let left: Vec<i64> = l
            .readings("Plant-001", meter, 0, 10 * hour)
            .map(|r| r.unwrap().0)
            .collect();
        assert_eq!(left, [3 * hour + 5, 3 * hour + 1_000_005], "{meter}");
    }
}
