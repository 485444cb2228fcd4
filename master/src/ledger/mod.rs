//! The durable task ledger: a write-ahead log first, sled as the applied state.
//!
//! Writers hand [`Commit`]s to the log thread, which encodes everything queued into one
//! record ([`codec`]), appends it to the log ([`wal`]) and waits for one fdatasync. Commits
//! that arrive meanwhile form the next group. Once synced, the log thread publishes the
//! group's events and runs each commit's `done` callback: a task is acknowledged there, in
//! the log on disk. The group then goes to the apply thread, which writes every group
//! synced meanwhile to sled in one batch with the last LSN (`~applied`) and runs the
//! `applied` callbacks; reads that must see a change (barriers) wait for those. When apply
//! falls behind, its batches grow and a task's successive records collapse into one write.
//!
//! sled is never flushed on that path. A checkpoint thread flushes it about once a second;
//! log segments whose every record is then in sled's durable state are removed. On open,
//! the log is verified record by record and replayed from sled's applied position. A state
//! ahead of what the log proves, behind where the log starts, or a damaged log is refused
//! with the file and offset named ([`LedgerError::Damaged`]): the master never starts with
//! less than it acknowledged.
//!
//! Keys in the one `state` tree (one tree, because sled makes a batch atomic only within a
//! tree): `T`+id -> [`TaskRecord`], `J`+id+seq -> [`Transition`], `I`+key -> id,
//! `P`+plant -> (node, epoch), `E`+node -> last node epoch, `R`+plant+meter+source time ->
//! reading ([`codec::reading_key`]), `~applied`, `~format`. Values are postcard. Only the
//! master writes; the gRPC read paths use the read-only methods.

pub mod codec;
pub mod events;
mod store;
pub mod wal;

pub use store::{MemLedger, Store};

use crate::task::{TaskRecord, Transition};
use codec::{APPLIED_KEY, FORMAT, FORMAT_KEY};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use wal::{Wal, WalOptions};

/// Ledger failures.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LedgerError {
    /// The disk or sled refused an operation (disk full, I/O error).
    #[error("ledger storage error: {0}")]
    Storage(String),
    /// A stored record did not decode.
    #[error("ledger record is corrupt: {0}")]
    Corrupt(String),
    /// The data directory does not hold what was acknowledged; the master refuses it.
    #[error(
        "ledger in {dir} is damaged: {detail}. Refusing to start with less than was acknowledged; restore the data directory from a backup, or move it aside to start an empty ledger"
    )]
    Damaged {
        /// The data directory.
        dir: String,
        /// What is damaged, with file and offset where known.
        detail: String,
    },
    /// The disk is full: nothing in the failed group was written; later writes succeed
    /// once space is free again.
    #[error("ledger disk full: {0}")]
    DiskFull(String),
    /// The committer thread has stopped.
    #[error("ledger is closed")]
    Closed,
}

impl From<sled::Error> for LedgerError {
    fn from(e: sled::Error) -> Self {
        LedgerError::Storage(e.to_string())
    }
}

/// One write to apply.
#[derive(Debug, Clone)]
pub enum Op {
    /// Insert or replace a task record.
    Put(TaskRecord),
    /// Append a journal entry.
    Journal {
        /// Task id.
        id: u64,
        /// Global transition sequence number.
        seq: u64,
        /// The transition.
        entry: Transition,
    },
    /// Map an idempotency key to a task.
    Idem(String, u64),
    /// Record a plant's placement (node, epoch).
    Placement {
        /// Plant id.
        plant: String,
        /// Node id.
        node: String,
        /// Epoch.
        epoch: u64,
    },
    /// Record the epoch last handed to a node.
    NodeEpoch {
        /// Node id.
        node: String,
        /// Epoch.
        epoch: u64,
    },
    /// An operator disabled or enabled a meter's connector (`heatmesh feeds disable|enable`).
    FeedSwitch {
        /// Plant id.
        plant: String,
        /// Meter id.
        meter: String,
        /// What was switched, when and why.
        switch: FeedSwitch,
    },
    /// Record readings of one meter the ledger does not hold yet (the caller deduplicates),
    /// as one block: sorted by source time, non-empty, all within one bucket
    /// ([`codec::BUCKET_US`]).
    Readings {
        /// Plant id.
        plant: std::sync::Arc<str>,
        /// Meter id.
        meter: String,
        /// (source time, what is kept), oldest first.
        block: Vec<(i64, heatmesh_ingest::reading::Stored)>,
    },
}

/// An operator's switch of one meter's connector, as the ledger keeps it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FeedSwitch {
    /// False: disabled (not read); true: enabled again.
    pub enabled: bool,
    /// Why, as the operator said.
    pub reason: String,
    /// When, Unix microseconds.
    pub at_us: i64,
}

/// Called once a commit is durable, or applied (or once it failed).
pub type Callback = Box<dyn FnOnce(Result<(), LedgerError>) + Send>;

/// A group of writes applied together, with what to do once durable and once applied.
#[derive(Default)]
pub struct Commit {
    /// The writes.
    pub ops: Vec<Op>,
    /// Task records to announce to watchers and feeds once durable.
    pub events: Vec<TaskRecord>,
    /// Runs on the log thread right after the fdatasync that made these writes durable:
    /// acknowledge here. The state store may not show the writes yet.
    pub done: Option<Callback>,
    /// Runs on the apply thread once the writes are in the state store, so reads from the
    /// ledger see them (barriers; dropping in-memory copies of finished tasks).
    pub applied: Option<Callback>,
}

/// Tuning of the ledger; the defaults suit a master.
#[derive(Debug, Clone, Copy)]
pub struct LedgerOptions {
    /// Log segment size.
    pub segment_bytes: u64,
    /// How often sled is flushed so log segments can be removed.
    pub checkpoint_every: Duration,
}

impl Default for LedgerOptions {
    fn default() -> Self {
        LedgerOptions {
            segment_bytes: WalOptions::default().segment_bytes,
            checkpoint_every: Duration::from_secs(1),
        }
    }
}

/// What opening the ledger found, for the start-up log line.
#[derive(Debug, Clone, Default)]
pub struct OpenInfo {
    /// Groups replayed from the log into sled.
    pub replayed: u64,
    /// The LSN sled had applied before replay.
    pub applied_before: u64,
    /// Bytes of an interrupted, never-acknowledged write cut from the log's end.
    pub torn_tail_bytes: u64,
}

/// Handle on the ledger: cheap to clone; reads go straight to sled.
#[derive(Clone)]
pub struct Ledger {
    db: sled::Db,
    state: sled::Tree,
    tx: mpsc::UnboundedSender<Commit>,
    events: events::Hub,
    pos: Arc<Positions>,
    /// Serialises node-epoch increments (read, write, wait) across attaching nodes.
    epoch_lock: Arc<Mutex<()>>,
    info: Arc<OpenInfo>,
}

/// Positions and figures shared by the three ledger threads.
#[derive(Default)]
struct Positions {
    /// Commits queued for the log thread and not yet taken into a group.
    queued: AtomicUsize,
    /// The last group failed to reach the log (a full disk, an I/O error).
    write_failing: std::sync::atomic::AtomicBool,
    /// Applying to the state store failed; sled refuses every write after an I/O error,
    /// so only a restart (which replays the log) mends it.
    apply_broken: std::sync::atomic::AtomicBool,
    /// Highest LSN applied to sled (not necessarily flushed).
    applied: AtomicU64,
    /// Highest LSN known to be in sled's durable state.
    checkpointed: AtomicU64,
    /// Log bytes synced but not yet applied to sled: how far apply lags behind.
    unapplied_bytes: AtomicU64,
    /// Woken after every apply, for writers that wait for the lag to shrink.
    apply_progress: tokio::sync::Notify,
    stats: Mutex<CommitStats>,
}

/// Group-commit figures since open (or the last [`Ledger::take_stats`]), for benchmarks:
/// read against an fsync probe of the same disk, they say how close the ledger runs to it.
#[derive(Debug, Clone)]
pub struct CommitStats {
    /// Groups written (each one append and one fdatasync).
    pub groups: u64,
    /// Commits carried by those groups.
    pub commits: u64,
    /// Log bytes written.
    pub bytes: u64,
    /// Time from a group's first commit taken off the queue to its fdatasync returning, us.
    pub commit_us: hdrhistogram::Histogram<u64>,
    /// Time to apply a group to sled, us.
    pub apply_us: hdrhistogram::Histogram<u64>,
}

impl Default for CommitStats {
    fn default() -> Self {
        let h = || hdrhistogram::Histogram::new(3).expect("3 significant figures is valid");
        CommitStats {
            groups: 0,
            commits: 0,
            bytes: 0,
            commit_us: h(),
            apply_us: h(),
        }
    }
}

fn micros(d: Duration) -> u64 {
    (d.as_micros() as u64).max(1)
}

fn storage(e: impl std::fmt::Display) -> LedgerError {
    LedgerError::Storage(e.to_string())
}

impl Ledger {
    /// Opens (or creates) the ledger in `dir` with default options.
    pub fn open(dir: &Path) -> Result<Ledger, LedgerError> {
        Ledger::open_with(dir, LedgerOptions::default())
    }

    /// Opens (or creates) the ledger in `dir`: opens sled, verifies the log, replays what
    /// sled has not applied, and starts the log, apply and checkpoint threads.
    pub fn open_with(dir: &Path, opts: LedgerOptions) -> Result<Ledger, LedgerError> {
        // sled 0.34 panics on some damage to its files instead of returning an error; a
        // damaged directory must be refused with a named error, never crash the process.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Self::open_checked(dir, opts)
        }))
        .unwrap_or_else(|panic| {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".into());
            Err(LedgerError::Damaged {
                dir: dir.display().to_string(),
                detail: format!("the state store (sled, file `db`) failed while opening: {why}"),
            })
        })
    }

    fn open_checked(dir: &Path, opts: LedgerOptions) -> Result<Ledger, LedgerError> {
        let damaged = |detail: String| LedgerError::Damaged {
            dir: dir.display().to_string(),
            detail,
        };
        let db = sled::Config::new()
            .path(dir)
            // Durability comes from the log; sled is flushed by the checkpoint thread.
            .flush_every_ms(None)
            .cache_capacity(256 * 1024 * 1024)
            .open()
            .map_err(|e| match e {
                sled::Error::Corruption { .. } | sled::Error::ReportableBug(_) => {
                    damaged(format!("the state store (sled) does not open: {e}"))
                }
                e => storage(e),
            })?;
        let state = db.open_tree("state")?;
        let format = state.get(FORMAT_KEY)?.and_then(|v| codec::u64_value(&v));
        match format {
            Some(FORMAT) => {}
            // Format 2 kept one reading per key; it is turned into blocks once the log is
            // replayed (its unapplied records hold format-2 readings too).
            Some(2) => {}
            Some(f) => {
                return Err(damaged(format!(
                    "state format {f} is not the format {FORMAT} this heatmesh reads"
                )));
            }
            None if db.open_tree("log")?.first()?.is_some() => {
                return Err(damaged(
                    "it holds a ledger in the JSON format of heatmesh before the write-ahead log (tree `log`), which this version does not read".into(),
                ));
            }
            None if !state.is_empty() => {
                return Err(damaged(
                    "the state store has records but no format marker".into(),
                ));
            }
            None => {
                state.insert(FORMAT_KEY, &FORMAT.to_be_bytes())?;
            }
        }
        let applied_before = state
            .get(APPLIED_KEY)?
            .and_then(|v| codec::u64_value(&v))
            .unwrap_or(0);
        let wal_dir = dir.join("wal");
        let mut expect = applied_before + 1;
        let mut apply_err: Option<LedgerError> = None;
        let (wal, report) = Wal::open(
            &wal_dir,
            WalOptions {
                segment_bytes: opts.segment_bytes,
            },
            applied_before,
            |lsn, payload| {
                if lsn != expect {
                    return Err(state_behind(expect - 1, lsn));
                }
                let mut batch = sled::Batch::default();
                codec::apply_payload(lsn, payload, &mut batch)?;
                if let Err(e) = state.apply_batch(batch) {
                    apply_err.get_or_insert(storage(e));
                    return Err("replay stopped by a storage error".into());
                }
                expect += 1;
                Ok(())
            },
        )
        .map_err(|e| match apply_err.take() {
            Some(se) => se,
            None => match e {
                wal::WalError::Damaged { .. } => damaged(format!("log {e}")),
                e => storage(e),
            },
        })?;
        let last = report.next_lsn - 1;
        if applied_before > last {
            return Err(damaged(format!(
                "the state store has applied LSN {applied_before} but the log in {} ends at {last}: log segments are missing",
                wal_dir.display()
            )));
        }
        if applied_before + 1 < report.first_lsn {
            return Err(damaged(format!(
                "log {}: {}",
                wal_dir.display(),
                state_behind(applied_before, report.first_lsn)
            )));
        }
        let replayed = last - applied_before;
        if format == Some(2) {
            migrate_readings_to_blocks(&state)?;
            state.insert(FORMAT_KEY, &FORMAT.to_be_bytes())?;
            db.flush()?;
        } else if replayed > 0 {
            db.flush()?;
        }
        // Everything is in sled's durable state now: what a short-lived process left in the
        // log must not pile up for every later open to verify again.
        let mut wal = wal;
        wal.purge_through(last).map_err(storage)?;
        let info = OpenInfo {
            replayed,
            applied_before,
            torn_tail_bytes: report.torn_tail_bytes,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let events = events::Hub::default();
        let pos = Arc::new(Positions::default());
        pos.applied.store(last, Ordering::Release);
        pos.checkpointed.store(last, Ordering::Release);
        // The threads hold no sender of the commit queue: once every handle is gone the
        // queue closes, the threads drain it, checkpoint and exit, and sled's file lock is
        // released, so the same directory can be opened again in this process (in-process
        // master crash drills).
        let (to_apply, applied_rx) = std::sync::mpsc::channel::<Synced>();
        let (closing, closed) = std::sync::mpsc::channel::<()>();
        spawn("ledger-log", {
            let (events, pos) = (events.clone(), pos.clone());
            move || log_loop(wal, rx, to_apply, events, &pos)
        })?;
        spawn("ledger-apply", {
            let (state, pos) = (state.clone(), pos.clone());
            move || apply_loop(state, applied_rx, closing, &pos)
        })?;
        spawn("ledger-checkpoint", {
            let db = db.clone();
            let every = opts.checkpoint_every;
            let pos = pos.clone();
            move || checkpoint_loop(db, closed, every, &pos)
        })?;
        Ok(Ledger {
            db,
            state,
            tx,
            events,
            pos,
            epoch_lock: Arc::new(Mutex::new(())),
            info: Arc::new(info),
        })
    }

    /// What opening found (replayed groups, a cut interrupted write).
    pub fn open_info(&self) -> &OpenInfo {
        &self.info
    }

    /// The group-commit figures gathered since the last call, which starts a new count.
    pub fn take_stats(&self) -> CommitStats {
        std::mem::take(&mut *self.pos.stats.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Queues a commit. Its callback runs once it is durable.
    pub fn submit(&self, c: Commit) -> Result<(), LedgerError> {
        self.pos.queued.fetch_add(1, Ordering::AcqRel);
        self.tx.send(c).map_err(|_| {
            self.pos.queued.fetch_sub(1, Ordering::AcqRel);
            LedgerError::Closed
        })
    }

    /// Whether the last write to the log failed: the master is not ready until one succeeds.
    pub fn write_failing(&self) -> bool {
        self.pos.write_failing.load(Ordering::Acquire)
    }

    /// Whether the state store stopped taking writes (an I/O error such as a full disk):
    /// reads may be stale, and a restart is needed to replay the log into it.
    pub fn state_broken(&self) -> bool {
        self.pos.apply_broken.load(Ordering::Acquire)
    }

    /// Commits waiting for the log thread: the depth load shedding is judged on.
    pub fn queued_commits(&self) -> usize {
        self.pos.queued.load(Ordering::Acquire)
    }

    /// Resolves once every commit queued before it is durable, so reads that follow see
    /// every change made so far.
    pub async fn barrier(&self) -> Result<(), LedgerError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(Commit {
            applied: Some(Box::new(move |r| {
                let _ = tx.send(r);
            })),
            ..Commit::default()
        })?;
        rx.await.map_err(|_| LedgerError::Closed)?
    }

    /// Log bytes durable but not yet applied to the state store.
    pub fn unapplied_bytes(&self) -> u64 {
        self.pos.unapplied_bytes.load(Ordering::Acquire)
    }

    /// Resolves once no more than `limit` log bytes wait to be applied. Bulk writers (readings)
    /// wait here, so a burst cannot run the state store minutes behind the log: apply would
    /// then take the CPU every other request needs, and a restart would replay it all.
    pub async fn apply_caught_up(&self, limit: u64) {
        loop {
            let woken = self.pos.apply_progress.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if self.unapplied_bytes() <= limit {
                return;
            }
            woken.await;
        }
    }

    /// Subscribes to the durable changes of one task.
    pub fn watch(&self, task: u64) -> events::Subscription {
        self.events.watch(task)
    }

    /// Subscribes to the durable changes the filter passes.
    pub fn feed(&self, filter: events::Filter) -> events::Subscription {
        self.events.feed(filter)
    }
}

fn state_behind(applied: u64, log_starts: u64) -> String {
    format!(
        "the state store has applied the log only up to LSN {applied} but the log resumes at {log_starts} (what lay between was checkpointed into the state store and removed from the log): the state store lost data"
    )
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<(), LedgerError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map(|_| ())
        .map_err(storage)
}

/// A group that went through the log: its LSN and payload when it wrote anything.
struct Synced {
    record: Option<(u64, Vec<u8>)>,
    applied: Vec<Callback>,
    result: Result<(), LedgerError>,
}

/// Most commits in one group; more wait for the next.
const MAX_GROUP: usize = 16_384;

fn log_loop(
    mut wal: Wal,
    mut rx: mpsc::UnboundedReceiver<Commit>,
    to_apply: std::sync::mpsc::Sender<Synced>,
    events: events::Hub,
    pos: &Positions,
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
        for op in commits.iter().flat_map(|c| c.ops.iter()) {
            codec::encode(op, &mut payload);
        }
        let (record, result) = if payload.is_empty() {
            (None, Ok(()))
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
                    pos.write_failing.store(true, Ordering::Release);
                    metrics::counter!("heatmesh_ledger_write_failures_total").increment(1);
                    if Wal::is_disk_full(&e) {
                        (None, Err(LedgerError::DiskFull(e.to_string())))
                    } else {
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

fn apply_loop(
    state: sled::Tree,
    rx: std::sync::mpsc::Receiver<Synced>,
    closing: std::sync::mpsc::Sender<()>,
    pos: &Positions,
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
                let started = Instant::now();
                let mut batch = sled::Batch::default();
                let r = ready
                    .iter()
                    .filter(|g| g.result.is_ok())
                    .filter_map(|g| g.record.as_ref())
                    .try_for_each(|(lsn, p)| codec::apply_payload(*lsn, p, &mut batch))
                    .map_err(LedgerError::Corrupt)
                    .and_then(|()| state.apply_batch(batch).map_err(LedgerError::from));
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

fn checkpoint_loop(
    db: sled::Db,
    closing: std::sync::mpsc::Receiver<()>,
    every: Duration,
    pos: &Positions,
) {
    use std::sync::mpsc::RecvTimeoutError;
    loop {
        // Nothing is ever sent: the wait ends at the interval, or at once when the apply
        // thread exits and drops the sender.
        let closed = matches!(
            closing.recv_timeout(every),
            Err(RecvTimeoutError::Disconnected)
        );
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

impl Ledger {
    /// Reads one task.
    pub fn get(&self, id: u64) -> Result<Option<TaskRecord>, LedgerError> {
        let k = codec::id_key(b'T', id);
        match self.state.get(k)? {
            Some(v) => codec::task(&k, &v).map(Some).map_err(LedgerError::Corrupt),
            None => Ok(None),
        }
    }

    /// The task's journal, oldest first.
    pub fn history(&self, id: u64) -> Result<Vec<Transition>, LedgerError> {
        self.state
            .scan_prefix(codec::prefixed(b'J', &id.to_be_bytes()))
            .map(|kv| {
                let (k, v) = kv?;
                codec::transition(&k, &v).map_err(LedgerError::Corrupt)
            })
            .collect()
    }

    /// The task first accepted with this idempotency key.
    pub fn idempotent(&self, k: &str) -> Result<Option<u64>, LedgerError> {
        Ok(self
            .state
            .get(codec::prefixed(b'I', k.as_bytes()))?
            .and_then(|v| codec::u64_value(&v)))
    }

    /// Tasks newest first, starting below `before` (exclusive) when given.
    pub fn scan_newest_first(
        &self,
        before: Option<u64>,
    ) -> impl Iterator<Item = Result<TaskRecord, LedgerError>> + '_ {
        let end = before.map_or_else(|| vec![b'T' + 1], |b| codec::id_key(b'T', b).to_vec());
        self.state.range(vec![b'T']..end).rev().map(decode_task)
    }

    /// Every task, oldest first (recovery).
    pub fn scan_all(&self) -> impl Iterator<Item = Result<TaskRecord, LedgerError>> + '_ {
        self.state.scan_prefix([b'T']).map(decode_task)
    }

    /// Every recorded placement: (plant, node, epoch), sorted by plant.
    pub fn placements(&self) -> Result<Vec<(String, String, u64)>, LedgerError> {
        self.state
            .scan_prefix([b'P'])
            .map(|kv| {
                let (k, v) = kv?;
                let (node, epoch): (String, u64) =
                    codec::decode(&k, &v).map_err(LedgerError::Corrupt)?;
                Ok((String::from_utf8_lossy(&k[1..]).into_owned(), node, epoch))
            })
            .collect()
    }

    /// The last recorded epoch of a plant (0 if never placed).
    pub fn placement_epoch(&self, plant: &str) -> Result<u64, LedgerError> {
        let k = codec::placement_key(plant);
        Ok(match self.state.get(&k)? {
            Some(v) => {
                let (_, epoch): (String, u64) =
                    codec::decode(&k, &v).map_err(LedgerError::Corrupt)?;
                epoch
            }
            None => 0,
        })
    }

    /// The next epoch for a node attaching now: one more than any it had, durable (in the
    /// log) before it is handed out, so a fenced node can never come back under an old
    /// epoch. Blocks until the log has synced; never call it from a ledger callback.
    pub fn next_node_epoch(&self, node: &str) -> Result<u64, LedgerError> {
        let _one_at_a_time = self.epoch_lock.lock().unwrap_or_else(|e| e.into_inner());
        let last = self
            .state
            .get(codec::node_epoch_key(node))?
            .and_then(|v| codec::u64_value(&v))
            .unwrap_or(0);
        let epoch = last + 1;
        let (tx, rx) = std::sync::mpsc::channel();
        self.submit(Commit {
            ops: vec![Op::NodeEpoch {
                node: node.to_string(),
                epoch,
            }],
            // Applied, not only durable: the next attach reads the epoch from the state.
            applied: Some(Box::new(move |r| {
                let _ = tx.send(r);
            })),
            ..Commit::default()
        })?;
        rx.recv().map_err(|_| LedgerError::Closed)??;
        Ok(epoch)
    }

    /// One reading, by meter and source timestamp.
    pub fn reading(
        &self,
        plant: &str,
        meter: &str,
        time_us: i64,
    ) -> Result<Option<heatmesh_ingest::reading::Stored>, LedgerError> {
        Ok(self
            .readings(plant, meter, time_us, time_us.saturating_add(1))
            .next()
            .transpose()?
            .map(|(_, s)| s))
    }

    /// The source time of a meter's latest reading, if it has any.
    pub fn latest_reading_time(
        &self,
        plant: &str,
        meter: &str,
    ) -> Result<Option<i64>, LedgerError> {
        let last = self
            .state
            .scan_prefix(codec::reading_prefix(plant, meter))
            .next_back()
            .transpose()?
            .and_then(|(k, _)| codec::reading_time(&k));
        let Some(first) = last else {
            return Ok(None);
        };
        // Blocks of the last bucket may overlap (a backfill): the latest is the greatest
        // time among them.
        let mut latest = None;
        for r in self.readings(plant, meter, codec::bucket_start(first), i64::MAX) {
            latest = latest.max(Some(r?.0));
        }
        Ok(latest)
    }

    /// One meter's readings with source timestamps in `[from_us, to_us)`, oldest first.
    pub fn readings(
        &self,
        plant: &str,
        meter: &str,
        from_us: i64,
        to_us: i64,
    ) -> impl Iterator<Item = Result<(i64, heatmesh_ingest::reading::Stored), LedgerError>> + '_
    {
        type Block = Vec<(i64, heatmesh_ingest::reading::Stored)>;
        let lo = codec::reading_key(plant, meter, codec::bucket_start(from_us));
        let hi = codec::reading_key(plant, meter, to_us.max(from_us));
        let mut blocks = self.state.range(lo..hi).peekable();
        // Bucket by bucket: the blocks of one bucket may overlap in time, so they are merged
        // and sorted before any of it is yielded; no block spans two buckets.
        let mut ready = std::collections::VecDeque::new();
        std::iter::from_fn(move || {
            loop {
                if let Some(r) = ready.pop_front() {
                    return Some(Ok(r));
                }
                let (k, v) = match blocks.next()? {
                    Ok(kv) => kv,
                    Err(e) => return Some(Err(e.into())),
                };
                let bucket = codec::bucket_start(codec::reading_time(&k).unwrap_or(0));
                let mut all: Block = match codec::decode(&k, &v) {
                    Ok(b) => b,
                    Err(e) => return Some(Err(LedgerError::Corrupt(e))),
                };
                while let Some(Ok((k2, _))) = blocks.peek() {
                    if codec::bucket_start(codec::reading_time(k2).unwrap_or(0)) != bucket {
                        break;
                    }
                    let (k2, v2) = blocks.next()?.ok()?;
                    match codec::decode::<Block>(&k2, &v2) {
                        Ok(b) => all.extend(b),
                        Err(e) => return Some(Err(LedgerError::Corrupt(e))),
                    }
                }
                all.sort_by_key(|(t, _)| *t);
                ready.extend(all.into_iter().filter(|(t, _)| *t >= from_us && *t < to_us));
            }
        })
    }

    /// Every meter's latest feed switch: (plant, meter, switch).
    pub fn feed_switches(&self) -> Result<Vec<(String, String, FeedSwitch)>, LedgerError> {
        self.meter_records(vec![b'F'])
    }

    /// One meter's feed switches, oldest first.
    pub fn feed_history(&self, plant: &str, meter: &str) -> Result<Vec<FeedSwitch>, LedgerError> {
        Ok(self
            .meter_records(codec::meter_key(b'H', plant, meter))?
            .into_iter()
            .map(|(_, _, s)| s)
            .collect())
    }

    fn meter_records<T: serde::de::DeserializeOwned>(
        &self,
        prefix: Vec<u8>,
    ) -> Result<Vec<(String, String, T)>, LedgerError> {
        self.state
            .scan_prefix(prefix)
            .map(|kv| {
                let (k, v) = kv?;
                let (plant, meter) = codec::meter_of(&k).ok_or_else(|| {
                    LedgerError::Corrupt(format!("bad key {}", codec::show_key(&k)))
                })?;
                let s = codec::decode(&k, &v).map_err(LedgerError::Corrupt)?;
                Ok((plant, meter, s))
            })
            .collect()
    }

    /// Flushes sled synchronously (used at shutdown, so the next open replays nothing).
    pub fn flush(&self) -> Result<(), LedgerError> {
        self.db.flush()?;
        Ok(())
    }
}

/// Format 2 to 3: each reading's value becomes a block of that one reading, under the same
/// key (a block is keyed by its first source time).
fn migrate_readings_to_blocks(state: &sled::Tree) -> Result<(), LedgerError> {
    let mut batch = sled::Batch::default();
    let mut n = 0u64;
    for kv in state.scan_prefix([b'R']) {
        let (k, v) = kv?;
        let t = codec::reading_time(&k).unwrap_or(0);
        let s: heatmesh_ingest::reading::Stored =
            codec::decode(&k, &v).map_err(LedgerError::Corrupt)?;
        batch.insert(k, codec::value(&vec![(t, s)]));
        n += 1;
    }
    state.apply_batch(batch)?;
    tracing::info!(
        readings = n,
        "ledger state format 2 -> 3: readings now stored in blocks"
    );
    Ok(())
}

fn decode_task(kv: sled::Result<(sled::IVec, sled::IVec)>) -> Result<TaskRecord, LedgerError> {
    let (k, v) = kv?;
    codec::task(&k, &v).map_err(LedgerError::Corrupt)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
