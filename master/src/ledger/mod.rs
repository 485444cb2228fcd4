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
//! reading ([`codec::reading_key`]), `K`+until+id -> idempotency key kept past its task
//! (retention), `~applied`, `~format`, `~floor` (next id and seq, so retention never lets
//! them go back), `~compacted` (the highest seq whose change group was dropped). Values are
//! postcard. Only the master writes; the gRPC read paths use the read-only methods.

pub mod backup;
pub mod codec;
pub mod events;
mod migrate;
mod read;
mod retention;
pub mod space;
mod store;
mod threads;
pub mod wal;

pub use store::{MemLedger, Store};

use crate::task::{TaskRecord, Transition};
use codec::{APPLIED_KEY, FORMAT, FORMAT_KEY};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
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
    /// Remove a finished task by retention: its record and journal entries, and its
    /// idempotency key, or, while the key's window lasts, a key-index entry
    /// ([`codec::key_index_key`]) by which a later sweep removes it.
    Expire {
        /// Task id.
        id: u64,
        /// The sequence numbers of its journal entries.
        seqs: Vec<u64>,
        /// Its idempotency key.
        key: Option<String>,
        /// When the key's window ends, unix microseconds; 0: it has ended, remove it now.
        key_until_us: u64,
    },
    /// Remove an idempotency key whose window ended after its task was removed.
    ForgetKey {
        /// The key.
        key: String,
        /// The end of its window, as in its key-index entry.
        until_us: u64,
        /// The removed task it named.
        id: u64,
    },
    /// Task ids and sequence numbers below these were used, removed tasks included: a
    /// restart never hands them out again.
    Floor {
        /// The next task id.
        next_id: u64,
        /// The highest sequence number used.
        seq: u64,
    },
    /// Remove change-index groups (highest, lowest sequence number) older than the task
    /// retention.
    DropChanges(Vec<(u64, u64)>),
    /// Remove reading blocks, by their first source time, of one meter.
    DropReadings {
        /// Plant id.
        plant: String,
        /// Meter id.
        meter: String,
        /// The blocks' keys' source times.
        blocks: Vec<i64>,
    },
}

/// Finished tasks due for removal, as [`Store::expired`] finds them.
#[derive(Debug, Default)]
pub struct Expired {
    /// Each task with the sequence numbers of its journal entries.
    pub tasks: Vec<(TaskRecord, Vec<u64>)>,
    /// Where the next look starts (the last id looked at) when it stopped at its limit;
    /// None when it reached the tasks accepted after the cutoff, or the end.
    pub resume: Option<u64>,
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
        let (to_apply, applied_rx) = std::sync::mpsc::channel::<threads::Synced>();
        let (closing, closed) = std::sync::mpsc::channel::<()>();
        threads::spawn("ledger-log", {
            let (events, pos, space) = (events.clone(), pos.clone(), space.clone());
            move || threads::log_loop(wal, rx, to_apply, events, &pos, &space)
        })?;
        threads::spawn("ledger-apply", {
            let (state, pos, space) = (state.clone(), pos.clone(), space.clone());
            move || threads::apply_loop(state, applied_rx, closing, &pos, &space)
        })?;
        threads::spawn("ledger-checkpoint", {
            let db = db.clone();
            let every = opts.checkpoint_every;
            let (pos, space) = (pos.clone(), space.clone());
            move || threads::checkpoint_loop(db, closed, every, &pos, &space)
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

#[cfg(test)]
mod tests;
