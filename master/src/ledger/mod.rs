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
//! tree): `T`+id -> [`TaskRecord`], `J`+id+seq -> [`Transition`], `S`+max seq+min seq ->
//! the group's (seq, id) pairs (the change index, one key per group), `I`+key -> id,
//! `P`+plant -> (node, epoch), `E`+node -> last node epoch, `R`+plant+meter+source time ->
//! reading ([`codec::reading_key`]), `~applied`, `~format`. Values are postcard. Only the
//! master writes; the gRPC read paths use the read-only methods.

pub mod backup;
pub mod codec;
pub mod events;
mod migrate;
mod read;
pub mod space;
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
    /// How often sled is flushed so log segments can be removed; free space is looked at
    /// as often ([`space`]).
    pub checkpoint_every: Duration,
    /// Bytes kept in the data directory's reserve file, given back to the state store when
    /// the disk fills ([`space`]); 0 keeps none.
    pub reserve_bytes: u64,
}

impl Default for LedgerOptions {
    fn default() -> Self {
        LedgerOptions {
            segment_bytes: WalOptions::default().segment_bytes,
            checkpoint_every: Duration::from_secs(1),
            reserve_bytes: 64 * 1024 * 1024,
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
    space: Arc<space::Space>,
    /// Serialises node-epoch increments (read, write, wait) across attaching nodes.
    epoch_lock: Arc<Mutex<()>>,
    info: Arc<OpenInfo>,
}

/// Positions and figures shared by the three ledger threads.
#[derive(Default)]
struct Positions {
    /// Commits queued for the log thread and not yet taken into a group.
    queued: AtomicUsize,
    /// The last group failed to reach the log for another cause than a full disk (which
    /// [`space::Space`] tracks).
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
    /// Held by apply around each batch, and by a backup while it copies the state.
    apply_gate: Mutex<()>,
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
            // Older formats are upgraded once the log is replayed (its unapplied records are
            // in the old format too).
            Some(2) | Some(3) => {}
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
        if let Some(old @ (2 | 3)) = format {
            migrate::upgrade(&state, old)?;
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
        let space = Arc::new(space::Space::open(dir, opts.reserve_bytes));
        backup::remove_partials(dir);
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
            let (events, pos, space) = (events.clone(), pos.clone(), space.clone());
            move || log_loop(wal, rx, to_apply, events, &pos, &space)
        })?;
        spawn("ledger-apply", {
            let (state, pos, space) = (state.clone(), pos.clone(), space.clone());
            move || apply_loop(state, applied_rx, closing, &pos, &space)
        })?;
        spawn("ledger-checkpoint", {
            let db = db.clone();
            let every = opts.checkpoint_every;
            let (pos, space) = (pos.clone(), space.clone());
            move || checkpoint_loop(db, closed, every, &pos, &space)
        })?;
        Ok(Ledger {
            db,
            state,
            tx,
            events,
            pos,
            space,
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

    /// Whether writes fail: the disk counts as full (until space is freed, checked once a
    /// checkpoint interval), or the last group failed for another cause. The master is not
    /// ready meanwhile.
    pub fn write_failing(&self) -> bool {
        self.space.full() || self.pos.write_failing.load(Ordering::Acquire)
    }

    /// The free-space watch of the data directory.
    pub fn space(&self) -> &space::Space {
        &self.space
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

fn apply_loop(
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

fn checkpoint_loop(
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

#[cfg(test)]
mod tests;
