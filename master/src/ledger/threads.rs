//! The ledger's three threads: the log thread groups commits and syncs them, the apply
//! thread writes synced groups to sled, the checkpoint thread flushes sled and lets the log
//! drop what sled now holds durably. [`super::Ledger::open_with`] starts them.

use super::wal::Wal;
use super::{Callback, Commit, LedgerError, Positions, codec, events, micros, space, storage};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

pub(super) fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<(), LedgerError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map(|_| ())
        .map_err(storage)
}

/// A group that went through the log: its LSN and payload when it wrote anything.
pub(super) struct Synced {
    record: Option<(u64, Vec<u8>)>,
    applied: Vec<Callback>,
    result: Result<(), LedgerError>,
}

/// Most commits in one group; more wait for the next.
const MAX_GROUP: usize = 16_384;

pub(super) fn log_loop(
    mut wal: Wal,
    mut rx: mpsc::UnboundedReceiver<Commit>,
    to_apply: std::sync::mpsc::Sender<Synced>,
    events: events::Hub,
    pos: &Positions,
    space: &space::Space,
) {
    let mut purged_through = pos.checkpointed.load(Ordering::Acquire);
    while let Some(first) = rx.blocking_recv() {
        let mut commits = Vec::with_capacity(256);
        commits.push(first);
        while commits.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(c) => commits.push(c),
                Err(_) => break,
            }
        }
        pos.queued.fetch_sub(commits.len(), Ordering::AcqRel);
        let started = Instant::now();
        let mut payload = Vec::new();
        codec::encode_group(commits.iter().flat_map(|c| c.ops.iter()), &mut payload);
        let (record, result) = if payload.is_empty() {
            (None, Ok(()))
        } else if space.guard() {
            (None, Err(LedgerError::DiskFull(space.why())))
        } else {
            let lsn = wal.append(&payload);
            match wal.sync() {
                Ok(()) => {
                    pos.write_failing.store(false, Ordering::Release);
                    pos.unapplied_bytes
                        .fetch_add(payload.len() as u64, Ordering::AcqRel);
                    (Some((lsn, payload)), Ok(()))
                }
                Err(e) => {
                    tracing::error!("ledger: log write of {} commits failed: {e}", commits.len());
                    metrics::counter!("heatmesh_ledger_write_failures_total").increment(1);
                    if Wal::is_disk_full(&e) {
                        space.declare_full(e.to_string());
                        // A failed fdatasync poisons the log: freed space does not mend it.
                        if wal.poisoned() {
                            pos.write_failing.store(true, Ordering::Release);
                        }
                        (None, Err(LedgerError::DiskFull(e.to_string())))
                    } else {
                        pos.write_failing.store(true, Ordering::Release);
                        (None, Err(storage(e)))
                    }
                }
            }
        };
        let took = started.elapsed();
        metrics::histogram!("heatmesh_ledger_commit_seconds").record(took.as_secs_f64());
        metrics::histogram!("heatmesh_ledger_commit_batch_size").record(commits.len() as f64);
        if let Some((_, p)) = &record {
            let mut st = pos.stats.lock().unwrap_or_else(|e| e.into_inner());
            st.groups += 1;
            st.commits += commits.len() as u64;
            st.bytes += p.len() as u64;
            let _ = st.commit_us.record(micros(took));
        }
        let mut applied = Vec::new();
        for c in commits {
            if result.is_ok() && !c.events.is_empty() {
                events.publish(c.events);
            }
            if let Some(done) = c.done {
                done(result.clone());
            }
            applied.extend(c.applied);
        }
        if to_apply
            .send(Synced {
                record,
                applied,
                result,
            })
            .is_err()
        {
            return;
        }
        let cp = pos.checkpointed.load(Ordering::Acquire);
        if cp > purged_through {
            match wal.purge_through(cp) {
                Ok(n) if n > 0 => tracing::debug!("ledger: removed {n} checkpointed log segments"),
                Ok(_) => {}
                Err(e) => tracing::warn!("ledger: removing checkpointed log segments: {e}"),
            }
            purged_through = cp;
        }
        metrics::gauge!("heatmesh_ledger_log_segments").set(wal.segment_count() as f64);
    }
}

pub(super) fn apply_loop(
    state: sled::Tree,
    rx: std::sync::mpsc::Receiver<Synced>,
    closing: std::sync::mpsc::Sender<()>,
    pos: &Positions,
    space: &space::Space,
) {
    // After one failed apply, sled and the log disagree until a restart replays the log:
    // everything after it fails too rather than acknowledging on a state with a hole.
    let mut broken: Option<LedgerError> = None;
    let mut ready: Vec<Synced> = Vec::new();
    while let Ok(first) = rx.recv() {
        // Every group synced meanwhile goes into one sled batch: when apply falls behind,
        // the batches grow and a task's successive records collapse into its last one.
        ready.push(first);
        ready.extend(rx.try_iter());
        let last = ready
            .iter()
            .filter(|g| g.result.is_ok())
            .filter_map(|g| g.record.as_ref().map(|r| r.0))
            .max();
        let applied = match (last, &broken) {
            // A barrier must not report a broken state as caught up.
            (_, Some(e)) => Err(e.clone()),
            (None, None) => Ok(()),
            (Some(lsn), None) => {
                // What the log holds must reach sled whatever the disk says; a disk about to
                // fill gives its reserve to this write.
                space.guard();
                let started = Instant::now();
                let mut batch = sled::Batch::default();
                let r = ready
                    .iter()
                    .filter(|g| g.result.is_ok())
                    .filter_map(|g| g.record.as_ref())
                    .try_for_each(|(lsn, p)| codec::apply_payload(*lsn, p, &mut batch))
                    .map_err(LedgerError::Corrupt)
                    .and_then(|()| {
                        let _gate = pos.apply_gate.lock().unwrap_or_else(|e| e.into_inner());
                        state.apply_batch(batch).map_err(LedgerError::from)
                    });
                let took = started.elapsed();
                metrics::histogram!("heatmesh_ledger_apply_seconds").record(took.as_secs_f64());
                let _ = (pos.stats.lock().unwrap_or_else(|e| e.into_inner()))
                    .apply_us
                    .record(micros(took));
                match &r {
                    Ok(()) => pos.applied.store(lsn, Ordering::Release),
                    Err(e) => {
                        tracing::error!(
                            "ledger: applying up to LSN {lsn} to the state store failed: {e}; later commits fail until a restart replays the log"
                        );
                        pos.apply_broken.store(true, Ordering::Release);
                        broken = Some(e.clone());
                    }
                }
                r
            }
        };
        let bytes: u64 = ready
            .iter()
            .filter_map(|g| g.record.as_ref().map(|r| r.1.len() as u64))
            .sum();
        pos.unapplied_bytes.fetch_sub(bytes, Ordering::AcqRel);
        pos.apply_progress.notify_waiters();
        for g in ready.drain(..) {
            let result = g.result.and(applied.clone());
            for f in g.applied {
                f(result.clone());
            }
        }
    }
    // Dropping `closing` tells the checkpoint thread to take its last checkpoint and exit.
    drop(closing);
}

pub(super) fn checkpoint_loop(
    db: sled::Db,
    closing: std::sync::mpsc::Receiver<()>,
    every: Duration,
    pos: &Positions,
    space: &space::Space,
) {
    use std::sync::mpsc::RecvTimeoutError;
    loop {
        // Nothing is ever sent: the wait ends at the interval, or at once when the apply
        // thread exits and drops the sender.
        let closed = matches!(
            closing.recv_timeout(every),
            Err(RecvTimeoutError::Disconnected)
        );
        // Before the flush: a disk about to fill gives its reserve to this flush.
        space.check();
        let applied = pos.applied.load(Ordering::Acquire);
        if applied > pos.checkpointed.load(Ordering::Acquire) {
            let started = Instant::now();
            match db.flush() {
                Ok(_) => {
                    pos.checkpointed.store(applied, Ordering::Release);
                    metrics::histogram!("heatmesh_ledger_checkpoint_seconds")
                        .record(started.elapsed().as_secs_f64());
                }
                Err(e) => tracing::error!("ledger: checkpoint flush failed: {e}"),
            }
        }
        if closed {
            return;
        }
    }
}
