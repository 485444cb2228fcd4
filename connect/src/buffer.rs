//! The node's durable reading buffer: every batch a connector acquires is written here (and
//! synced) before anything else happens to it, and stays until the master confirms it
//! durable in its ledger. A node killed at any moment restarts with every batch it had not
//! had confirmed; sending one twice is harmless (the master deduplicates).
//!
//! Layout: one sled tree, key = batch sequence number (u64, big-endian, so oldest first),
//! value = postcard of [`Batch`]. The buffer is bounded in bytes; when full, [`Buffer::push`]
//! refuses and the connectors stop polling until the shipper makes room, so nothing acquired
//! is ever dropped without a word.

use heatmesh_ingest::Reading;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Buffer failures.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BufferError {
    /// The buffer holds its limit; the connectors wait for the master to confirm batches.
    #[error("reading buffer full: {used} of {limit} bytes wait for the master to confirm them")]
    Full {
        /// Bytes held.
        used: u64,
        /// The configured limit.
        limit: u64,
    },
    /// The disk refused (or the stored data does not decode).
    #[error("reading buffer in {dir}: {detail}")]
    Storage {
        /// The buffer's directory.
        dir: String,
        /// What went wrong.
        detail: String,
    },
}

/// One batch as buffered: a plant's readings from one poll of one source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    /// Plant id.
    pub plant: String,
    /// The readings.
    pub readings: Vec<Reading>,
}

/// Handle on the buffer; cheap to clone.
#[derive(Clone)]
pub struct Buffer {
    inner: Arc<Inner>,
}

struct Inner {
    dir: String,
    db: sled::Db,
    tree: sled::Tree,
    next_seq: AtomicU64,
    used: AtomicU64,
    limit: u64,
    /// Woken on every push and every removal.
    changed: tokio::sync::Notify,
}

impl Buffer {
    /// Opens (or creates) the buffer in `dir`, holding at most `limit` bytes.
    pub fn open(dir: &Path, limit: u64) -> Result<Buffer, BufferError> {
        let err = |e: &dyn std::fmt::Display| BufferError::Storage {
            dir: dir.display().to_string(),
            detail: e.to_string(),
        };
        let db = sled::Config::new()
            .path(dir)
            .flush_every_ms(None)
            .open()
            .map_err(|e| err(&e))?;
        let tree = db.open_tree("readings").map_err(|e| err(&e))?;
        let mut used = 0u64;
        let mut last = 0u64;
        for kv in tree.iter() {
            let (k, v) = kv.map_err(|e| err(&e))?;
            used += v.len() as u64;
            last = seq_of(&k).unwrap_or(last);
        }
        Ok(Buffer {
            inner: Arc::new(Inner {
                dir: dir.display().to_string(),
                db,
                tree,
                next_seq: AtomicU64::new(last + 1),
                used: AtomicU64::new(used),
                limit,
                changed: tokio::sync::Notify::new(),
            }),
        })
    }

    fn storage(&self, e: impl std::fmt::Display) -> BufferError {
        BufferError::Storage {
            dir: self.inner.dir.clone(),
            detail: e.to_string(),
        }
    }

    /// Writes a batch and syncs it to disk; returns its sequence number.
    pub async fn push(&self, batch: &Batch) -> Result<u64, BufferError> {
        let used = self.inner.used.load(Ordering::Acquire);
        if used >= self.inner.limit {
            metrics::counter!("heatmesh_buffer_full_total").increment(1);
            return Err(BufferError::Full {
                used,
                limit: self.inner.limit,
            });
        }
        let value = postcard::to_allocvec(batch).map_err(|e| self.storage(e))?;
        let seq = self.inner.next_seq.fetch_add(1, Ordering::AcqRel);
        self.inner
            .tree
            .insert(seq.to_be_bytes(), value.as_slice())
            .map_err(|e| self.storage(e))?;
        self.inner
            .db
            .flush_async()
            .await
            .map_err(|e| self.storage(e))?;
        self.inner
            .used
            .fetch_add(value.len() as u64, Ordering::AcqRel);
        self.publish_fill();
        self.inner.changed.notify_waiters();
        Ok(seq)
    }

    /// Up to `max_readings` readings (at least one batch) of the oldest batches, oldest first.
    pub fn oldest(&self, max_readings: usize) -> Result<Vec<(u64, Batch)>, BufferError> {
        let mut out = Vec::new();
        let mut n = 0;
        for kv in self.inner.tree.iter() {
            let (k, v) = kv.map_err(|e| self.storage(e))?;
            let b: Batch = postcard::from_bytes(&v).map_err(|e| self.storage(e))?;
            if !out.is_empty() && n + b.readings.len() > max_readings {
                break;
            }
            n += b.readings.len();
            out.push((seq_of(&k).unwrap_or(0), b));
        }
        Ok(out)
    }

    /// Forgets batches the master has confirmed.
    pub fn remove(&self, seqs: &[u64]) -> Result<(), BufferError> {
        let mut freed = 0u64;
        for s in seqs {
            if let Some(v) = self
                .inner
                .tree
                .remove(s.to_be_bytes())
                .map_err(|e| self.storage(e))?
            {
                freed += v.len() as u64;
            }
        }
        self.inner.used.fetch_sub(freed, Ordering::AcqRel);
        self.publish_fill();
        self.inner.changed.notify_waiters();
        Ok(())
    }

    /// Bytes held and the limit.
    pub fn fill(&self) -> (u64, u64) {
        (self.inner.used.load(Ordering::Acquire), self.inner.limit)
    }

    /// Batches held.
    pub fn len(&self) -> usize {
        self.inner.tree.len()
    }

    /// No batch held.
    pub fn is_empty(&self) -> bool {
        self.inner.tree.is_empty()
    }

    /// Resolves after the next push or removal (or at once if `ready` already holds).
    pub async fn changed(&self, ready: impl Fn(&Buffer) -> bool) {
        loop {
            let woken = self.inner.changed.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if ready(self) {
                return;
            }
            woken.await;
        }
    }

    fn publish_fill(&self) {
        let (used, limit) = self.fill();
        metrics::gauge!("heatmesh_buffer_bytes").set(used as f64);
        metrics::gauge!("heatmesh_buffer_fill_ratio").set(used as f64 / limit.max(1) as f64);
    }
}

fn seq_of(k: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(k.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use heatmesh_ingest::Quality;

    fn batch(n: usize, t: i64) -> Batch {
        Batch {
            plant: "P".into(),
            readings: (0..n)
                .map(|i| Reading {
                    meter: "m".into(),
                    time_us: t + i as i64,
                    raw: i as f64,
                    quality: Quality::Good,
                    status: 0,
                })
                .collect(),
        }
    }

    #[tokio::test]
    async fn batches_survive_a_reopen_until_removed() {
        let dir = tempfile::tempdir().unwrap();
        let seqs = {
            let b = Buffer::open(dir.path(), 1 << 20).unwrap();
            let mut seqs = Vec::new();
            for i in 0..3 {
                seqs.push(b.push(&batch(10, i * 100)).await.unwrap());
            }
            b.remove(&seqs[..1]).unwrap();
            seqs
        };
        let b = loop {
            match Buffer::open(dir.path(), 1 << 20) {
                Ok(b) => break b,
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        };
        let held = b.oldest(1_000).unwrap();
        assert_eq!(held.iter().map(|(s, _)| *s).collect::<Vec<_>>(), seqs[1..]);
        assert_eq!(held[0].1, batch(10, 100));
        let next = b.push(&batch(1, 999)).await.unwrap();
        assert!(next > seqs[2], "sequence numbers are never reused");
        assert_eq!(
            b.oldest(15).unwrap().len(),
            1,
            "at most 15 readings, at least one batch"
        );
    }

    #[tokio::test]
    async fn a_full_buffer_refuses_and_says_how_full() {
        let dir = tempfile::tempdir().unwrap();
        let b = Buffer::open(dir.path(), 200).unwrap();
        let s = b.push(&batch(20, 0)).await.unwrap();
        let e = b.push(&batch(20, 100)).await.unwrap_err();
        assert!(matches!(e, BufferError::Full { limit: 200, .. }), "{e}");
        assert!(e.to_string().contains("reading buffer full"), "{e}");
        b.remove(&[s]).unwrap();
        assert_eq!(b.fill().0, 0);
        b.push(&batch(20, 100)).await.unwrap();
    }
}
