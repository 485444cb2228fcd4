//! The durable task ledger on sled, with group commit.
//!
//! Writers hand [`Commit`]s to one committer thread, which applies everything queued, calls
//! one `flush` (fsync) for the whole group, and only then runs each commit's callback and
//! publishes its events. A task is acknowledged from that callback, so an acknowledged task
//! is always on disk, and throughput pays one fsync per group instead of one per task.
//!
//! Everything a group writes goes into one sled tree, `log`, in one batch, because sled makes
//! a batch atomic only within a tree: a task's record, its journal entry and its idempotency
//! key are durable together or not at all, also after kill -9. Keys are prefixed:
//! `T`+id -> [`TaskRecord`] JSON, `J`+id+seq -> [`Transition`] JSON, `I`+key -> id,
//! `P`+plant -> placement. Node epochs live in `meta` (written and flushed on attach).
//! Only the master writes here; the gRPC read paths use the read-only methods.

use crate::task::{TaskRecord, Transition};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{broadcast, mpsc};

/// Ledger failures.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LedgerError {
    /// sled refused an operation (disk full, I/O error, corruption).
    #[error("ledger storage error: {0}")]
    Storage(String),
    /// A stored record did not decode.
    #[error("ledger record {key} is corrupt: {reason}")]
    Corrupt {
        /// Which record.
        key: String,
        /// Decoder message.
        reason: String,
    },
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
}

/// Called on the committer thread once the commit is durable (or failed to be).
pub type Callback = Box<dyn FnOnce(Result<(), LedgerError>) + Send>;

/// A group of writes applied together, with what to do once durable.
pub struct Commit {
    /// The writes.
    pub ops: Vec<Op>,
    /// Task records to announce on the event feed once durable.
    pub events: Vec<TaskRecord>,
    /// Runs after the flush that made these writes durable.
    pub done: Option<Callback>,
}

/// Handle on the ledger: cheap to clone; reads go straight to sled.
#[derive(Clone)]
pub struct Ledger {
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
    tx: mpsc::UnboundedSender<Commit>,
    events: broadcast::Sender<Arc<TaskRecord>>,
}

fn key(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

fn task_key(id: u64) -> [u8; 9] {
    let mut k = [b'T'; 9];
    k[1..].copy_from_slice(&key(id));
    k
}

fn prefixed(tag: u8, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + rest.len());
    k.push(tag);
    k.extend_from_slice(rest);
    k
}

fn decode<T: serde::de::DeserializeOwned>(k: &[u8], v: &[u8]) -> Result<T, LedgerError> {
    serde_json::from_slice(v).map_err(|e| LedgerError::Corrupt {
        key: format!("{k:?}"),
        reason: e.to_string(),
    })
}

impl Ledger {
    /// Opens (or creates) the ledger in `dir` and starts its committer thread.
    pub fn open(dir: &Path) -> Result<Ledger, LedgerError> {
        let db = sled::Config::new()
            .path(dir)
            // Durability comes from our explicit group flush, not a timer.
            .flush_every_ms(None)
            .cache_capacity(256 * 1024 * 1024)
            .open()?;
        let (tx, rx) = mpsc::unbounded_channel();
        let (events, _) = broadcast::channel(65_536);
        let ledger = Ledger {
            log: db.open_tree("log")?,
            meta: db.open_tree("meta")?,
            db,
            tx,
            events,
        };
        // The committer holds no sender of its own queue: once every handle is gone the
        // queue closes, the thread drains it and exits, and sled's file lock is released, so
        // the same directory can be opened again in this process (in-process master crash
        // drills).
        let worker = Committer {
            db: ledger.db.clone(),
            log: ledger.log.clone(),
            events: ledger.events.clone(),
        };
        std::thread::Builder::new()
            .name("ledger-commit".into())
            .spawn(move || worker.commit_loop(rx))
            .map_err(|e| LedgerError::Storage(e.to_string()))?;
        Ok(ledger)
    }

    /// Queues a commit. Its callback runs once it is durable.
    pub fn submit(&self, c: Commit) -> Result<(), LedgerError> {
        self.tx.send(c).map_err(|_| LedgerError::Closed)
    }

    /// Resolves once every commit queued before it is durable, so reads that follow see
    /// every change made so far.
    pub async fn barrier(&self) -> Result<(), LedgerError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(Commit {
            ops: Vec::new(),
            events: Vec::new(),
            done: Some(Box::new(move |r| {
                let _ = tx.send(r);
            })),
        })?;
        rx.await.map_err(|_| LedgerError::Closed)?
    }

    /// Subscribes to every durable task change.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<TaskRecord>> {
        self.events.subscribe()
    }
}

/// The committer thread's share of the ledger.
struct Committer {
    db: sled::Db,
    log: sled::Tree,
    events: broadcast::Sender<Arc<TaskRecord>>,
}

impl Committer {
    fn commit_loop(self, mut rx: mpsc::UnboundedReceiver<Commit>) {
        let mut group: Vec<Commit> = Vec::with_capacity(1024);
        while let Some(first) = rx.blocking_recv() {
            group.push(first);
            while group.len() < 16_384 {
                match rx.try_recv() {
                    Ok(c) => group.push(c),
                    Err(_) => break,
                }
            }
            let started = Instant::now();
            let result = self.apply(&group).and_then(|_| {
                self.db.flush()?;
                Ok(())
            });
            metrics::histogram!("heatmesh_ledger_commit_seconds")
                .record(started.elapsed().as_secs_f64());
            metrics::histogram!("heatmesh_ledger_commit_batch_size").record(group.len() as f64);
            if let Err(e) = &result {
                tracing::error!("ledger commit of {} writes failed: {e}", group.len());
            }
            for c in group.drain(..) {
                if result.is_ok() {
                    for ev in c.events {
                        let _ = self.events.send(Arc::new(ev));
                    }
                }
                if let Some(done) = c.done {
                    done(result.clone());
                }
            }
        }
    }

    fn apply(&self, group: &[Commit]) -> Result<(), LedgerError> {
        let mut batch = sled::Batch::default();
        for op in group.iter().flat_map(|c| c.ops.iter()) {
            match op {
                Op::Put(rec) => batch.insert(task_key(rec.id).to_vec(), enc(rec)),
                Op::Journal { id, seq, entry } => {
                    let mut k = Vec::with_capacity(17);
                    k.push(b'J');
                    k.extend_from_slice(&key(*id));
                    k.extend_from_slice(&key(*seq));
                    batch.insert(k, enc(entry));
                }
                Op::Idem(k, id) => batch.insert(prefixed(b'I', k.as_bytes()), key(*id).to_vec()),
                Op::Placement { plant, node, epoch } => {
                    let v = serde_json::json!({ "node": node, "epoch": epoch });
                    batch.insert(prefixed(b'P', plant.as_bytes()), v.to_string().into_bytes());
                }
            }
        }
        self.log.apply_batch(batch)?;
        Ok(())
    }
}

impl Ledger {
    /// Reads one task.
    pub fn get(&self, id: u64) -> Result<Option<TaskRecord>, LedgerError> {
        match self.log.get(task_key(id))? {
            Some(v) => decode(&key(id), &v).map(Some),
            None => Ok(None),
        }
    }

    /// The task's journal, oldest first.
    pub fn history(&self, id: u64) -> Result<Vec<Transition>, LedgerError> {
        self.log
            .scan_prefix(prefixed(b'J', &key(id)))
            .map(|kv| {
                let (k, v) = kv?;
                decode(&k, &v)
            })
            .collect()
    }

    /// The task first accepted with this idempotency key.
    pub fn idempotent(&self, k: &str) -> Result<Option<u64>, LedgerError> {
        Ok(self.log.get(prefixed(b'I', k.as_bytes()))?.and_then(|v| {
            let b: [u8; 8] = v.as_ref().try_into().ok()?;
            Some(u64::from_be_bytes(b))
        }))
    }

    /// Tasks newest first, starting below `before` (exclusive) when given.
    pub fn scan_newest_first(
        &self,
        before: Option<u64>,
    ) -> impl Iterator<Item = Result<TaskRecord, LedgerError>> + '_ {
        let end = before.map_or_else(|| vec![b'T' + 1], |b| task_key(b).to_vec());
        self.log.range(vec![b'T']..end).rev().map(|kv| {
            let (k, v) = kv?;
            decode(&k, &v)
        })
    }

    /// Every task, oldest first (recovery).
    pub fn scan_all(&self) -> impl Iterator<Item = Result<TaskRecord, LedgerError>> + '_ {
        self.log.scan_prefix([b'T']).map(|kv| {
            let (k, v) = kv?;
            decode(&k, &v)
        })
    }

    /// Every recorded placement: (plant, node, epoch), sorted by plant.
    pub fn placements(&self) -> Result<Vec<(String, String, u64)>, LedgerError> {
        self.log
            .scan_prefix([b'P'])
            .map(|kv| {
                let (k, v) = kv?;
                let j: serde_json::Value = decode(&k, &v)?;
                Ok((
                    String::from_utf8_lossy(&k[1..]).into_owned(),
                    j["node"].as_str().unwrap_or_default().to_string(),
                    j["epoch"].as_u64().unwrap_or(0),
                ))
            })
            .collect()
    }

    /// The last recorded epoch of a plant (0 if never placed).
    pub fn placement_epoch(&self, plant: &str) -> Result<u64, LedgerError> {
        Ok(match self.log.get(prefixed(b'P', plant.as_bytes()))? {
            Some(v) => {
                let j: serde_json::Value = decode(plant.as_bytes(), &v)?;
                j["epoch"].as_u64().unwrap_or(0)
            }
            None => 0,
        })
    }

    /// The next epoch for a node attaching now: one more than any it had, durable before it
    /// is handed out, so a fenced node can never come back under an old epoch.
    pub fn next_node_epoch(&self, node: &str) -> Result<u64, LedgerError> {
        let key = format!("node_epoch/{node}");
        let next = self.meta.update_and_fetch(key.as_bytes(), |old| {
            let n = old
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map_or(0, u64::from_be_bytes);
            Some((n + 1).to_be_bytes().to_vec())
        })?;
        self.db.flush()?;
        Ok(next
            .and_then(|b| <[u8; 8]>::try_from(b.as_ref()).ok())
            .map_or(1, u64::from_be_bytes))
    }

    /// Flushes synchronously (used at shutdown).
    pub fn flush(&self) -> Result<(), LedgerError> {
        self.db.flush()?;
        Ok(())
    }
}

fn enc<T: serde::Serialize>(v: &T) -> Vec<u8> {
    // Records are plain structs of strings and numbers: encoding cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}
