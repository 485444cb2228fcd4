//! The ledger's read side: what gRPC reads, recovery and the checker ask of the applied
//! state. Reads go straight to sled and never wait for the log.

use super::*;

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

    /// Task changes after sequence number `after`, in sequence order, about `limit` of them
    /// (whole groups: a few more): each change's sequence number, its journal entry and the
    /// task's record (for its plant, kind and creation time). Changes of tasks no longer
    /// held are skipped.
    pub fn changes_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Transition, TaskRecord)>, LedgerError> {
        let start = codec::change_key(after.saturating_add(1), 0);
        let mut pairs: Vec<(u64, u64)> = Vec::new();
        for kv in self.state.range(start.to_vec()..vec![b'S' + 1]) {
            let (k, v) = kv?;
            let group = codec::changes(&k, &v).map_err(LedgerError::Corrupt)?;
            pairs.extend(group.into_iter().filter(|(seq, _)| *seq > after));
            if pairs.len() >= limit {
                break;
            }
        }
        pairs.sort_unstable();
        let mut out = Vec::with_capacity(pairs.len());
        for (seq, id) in pairs {
            let jk = codec::journal_key(id, seq);
            let (Some(entry), Some(rec)) = (self.state.get(jk)?, self.get(id)?) else {
                continue;
            };
            let entry = codec::transition(&jk, &entry).map_err(LedgerError::Corrupt)?;
            out.push((seq, entry, rec));
        }
        Ok(out)
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

fn decode_task(kv: sled::Result<(sled::IVec, sled::IVec)>) -> Result<TaskRecord, LedgerError> {
    let (k, v) = kv?;
    codec::task(&k, &v).map_err(LedgerError::Corrupt)
}
