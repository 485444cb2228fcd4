//! What the master's core needs of durable storage, as a trait: the on-disk [`Ledger`]
//! serves it in service, [`MemLedger`] under deterministic simulation, where the simulator
//! decides when a group becomes durable and a crash drops what was not.
//!
//! Architecture Invariant: the master core ([`crate::scheduler`]) reaches storage only
//! through [`Store`]; the simulator's trace-identity test (sim/tests/deterministic.rs)
//! fails if a disk thread's timing leaks into the core's decisions.

use super::{Commit, Expired, FeedSwitch, Ledger, LedgerError, Op};
use crate::task::{TaskRecord, Transition};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Durable storage as the master core uses it.
pub trait Store: Send + Sync {
    /// Queues a commit; its `done` callback runs once it is durable, then `applied`.
    fn submit(&self, c: Commit) -> Result<(), LedgerError>;
    /// Whether the last write failed (a full disk): the master re-writes what it lost once
    /// this turns false.
    fn write_failing(&self) -> bool;
    /// One task as last applied.
    fn get(&self, id: u64) -> Result<Option<TaskRecord>, LedgerError>;
    /// A task's journal, oldest first.
    fn history(&self, id: u64) -> Result<Vec<Transition>, LedgerError>;
    /// The task first accepted with this idempotency key.
    fn idempotent(&self, key: &str) -> Result<Option<u64>, LedgerError>;
    /// Hands every task to `f`, oldest first, streaming (a ledger may hold millions);
    /// stops at the first error.
    fn scan(
        &self,
        f: &mut dyn FnMut(TaskRecord) -> Result<(), LedgerError>,
    ) -> Result<(), LedgerError>;
    /// Every placement: (plant, node, epoch), sorted by plant.
    fn placements(&self) -> Result<Vec<(String, String, u64)>, LedgerError>;
    /// A plant's last placement epoch (0: never placed).
    fn placement_epoch(&self, plant: &str) -> Result<u64, LedgerError>;
    /// Every meter's latest feed switch: (plant, meter, switch).
    fn feed_switches(&self) -> Result<Vec<(String, String, FeedSwitch)>, LedgerError>;
    /// Finished tasks whose last change is before `before_us`, in id order from
    /// `after_id` + 1; at most `limit` tasks are looked at. Ids follow acceptance, so the
    /// look ends at the first task accepted after the cutoff.
    fn expired(&self, after_id: u64, before_us: u64, limit: usize) -> Result<Expired, LedgerError>;
    /// Idempotency keys of removed tasks whose window ended before `now_us`, soonest due
    /// first: (key, end of window, task id).
    fn keys_due(&self, now_us: u64, limit: usize) -> Result<Vec<(String, u64, u64)>, LedgerError>;
    /// The floor retention recorded: (next task id, highest sequence number); zeros if none.
    fn floor(&self) -> Result<(u64, u64), LedgerError>;
    /// The rest of what retention removes, as ops: change-index groups whose changes are
    /// before `changes_before_us`, and reading blocks wholly before `readings_before_us`;
    /// at most about `limit` of each.
    fn compaction(
        &self,
        changes_before_us: u64,
        readings_before_us: i64,
        limit: usize,
    ) -> Result<Vec<Op>, LedgerError>;
}

impl Store for Ledger {
    fn submit(&self, c: Commit) -> Result<(), LedgerError> {
        Ledger::submit(self, c)
    }
    fn write_failing(&self) -> bool {
        Ledger::write_failing(self)
    }
    fn get(&self, id: u64) -> Result<Option<TaskRecord>, LedgerError> {
        Ledger::get(self, id)
    }
    fn history(&self, id: u64) -> Result<Vec<Transition>, LedgerError> {
        Ledger::history(self, id)
    }
    fn idempotent(&self, key: &str) -> Result<Option<u64>, LedgerError> {
        Ledger::idempotent(self, key)
    }
    fn scan(
        &self,
        f: &mut dyn FnMut(TaskRecord) -> Result<(), LedgerError>,
    ) -> Result<(), LedgerError> {
        self.scan_all().try_for_each(|r| f(r?))
    }
    fn placements(&self) -> Result<Vec<(String, String, u64)>, LedgerError> {
        Ledger::placements(self)
    }
    fn placement_epoch(&self, plant: &str) -> Result<u64, LedgerError> {
        Ledger::placement_epoch(self, plant)
    }
    fn feed_switches(&self) -> Result<Vec<(String, String, FeedSwitch)>, LedgerError> {
        Ledger::feed_switches(self)
    }
    fn expired(&self, after_id: u64, before_us: u64, limit: usize) -> Result<Expired, LedgerError> {
        Ledger::expired(self, after_id, before_us, limit)
    }
    fn keys_due(&self, now_us: u64, limit: usize) -> Result<Vec<(String, u64, u64)>, LedgerError> {
        Ledger::keys_due(self, now_us, limit)
    }
    fn floor(&self) -> Result<(u64, u64), LedgerError> {
        Ledger::floor(self)
    }
    fn compaction(
        &self,
        changes_before_us: u64,
        readings_before_us: i64,
        limit: usize,
    ) -> Result<Vec<Op>, LedgerError> {
        Ledger::compaction(self, changes_before_us, readings_before_us, limit)
    }
}

/// An in-memory ledger for deterministic simulation: commits queue until the simulator
/// calls [`MemLedger::sync`] (one group commit, callbacks in submit order) and are lost by
/// [`MemLedger::crash`], exactly what a crash before the fdatasync loses. Cheap to clone;
/// clones share the store. Task events are not announced (nothing watches a simulation).
#[derive(Clone, Default)]
pub struct MemLedger {
    inner: Arc<Mutex<Mem>>,
}

#[derive(Default)]
struct Mem {
    queued: Vec<Commit>,
    /// The next groups fail as a full disk fails them.
    disk_full: bool,
    write_failing: bool,
    groups: u64,
    tasks: BTreeMap<u64, TaskRecord>,
    journal: BTreeMap<(u64, u64), Transition>,
    idem: BTreeMap<String, u64>,
    placements: BTreeMap<String, (String, u64)>,
    node_epochs: BTreeMap<String, u64>,
    feeds: BTreeMap<(String, String), FeedSwitch>,
    readings: BTreeMap<(String, String, i64), heatmesh_ingest::reading::Stored>,
    /// Keys of removed tasks kept until their window ends: (end, task id) -> key.
    key_index: BTreeMap<(u64, u64), String>,
    floor: (u64, u64),
}

impl Mem {
    fn apply(&mut self, op: Op) {
        match op {
            Op::Put(rec) => {
                self.tasks.insert(rec.id, rec);
            }
            Op::Journal { id, seq, entry } => {
                self.journal.insert((id, seq), entry);
            }
            Op::Idem(k, id) => {
                self.idem.entry(k).or_insert(id);
            }
            Op::Placement { plant, node, epoch } => {
                self.placements.insert(plant, (node, epoch));
            }
            Op::NodeEpoch { node, epoch } => {
                self.node_epochs.insert(node, epoch);
            }
            Op::FeedSwitch {
                plant,
                meter,
                switch,
            } => {
                self.feeds.insert((plant, meter), switch);
            }
            Op::Readings {
                plant,
                meter,
                block,
            } => {
                for (t, r) in block {
                    self.readings
                        .insert((plant.to_string(), meter.clone(), t), r);
                }
            }
            Op::Expire {
                id,
                seqs,
                key,
                key_until_us,
            } => {
                self.tasks.remove(&id);
                for seq in seqs {
                    self.journal.remove(&(id, seq));
                }
                match key {
                    Some(k) if key_until_us > 0 => {
                        self.key_index.insert((key_until_us, id), k);
                    }
                    Some(k) => {
                        self.idem.remove(&k);
                    }
                    None => {}
                }
            }
            Op::ForgetKey { key, until_us, id } => {
                self.idem.remove(&key);
                self.key_index.remove(&(until_us, id));
            }
            Op::Floor { next_id, seq } => {
                self.floor = (self.floor.0.max(next_id), self.floor.1.max(seq));
            }
            // The simulator keeps no change index.
            Op::DropChanges(_) => {}
            Op::DropReadings {
                plant,
                meter,
                blocks,
            } => {
                for b in blocks {
                    let end = super::codec::bucket_start(b) + super::codec::BUCKET_US;
                    let range =
                        (plant.clone(), meter.clone(), b)..(plant.clone(), meter.clone(), end);
                    let doomed: Vec<_> =
                        self.readings.range(range).map(|(k, _)| k.clone()).collect();
                    for k in doomed {
                        self.readings.remove(&k);
                    }
                }
            }
        }
    }
}

impl MemLedger {
    /// An empty ledger.
    pub fn new() -> MemLedger {
        MemLedger::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Mem> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Commits queued and not yet durable.
    pub fn queued(&self) -> usize {
        self.lock().queued.len()
    }

    /// Groups made durable so far (failed ones included).
    pub fn groups(&self) -> u64 {
        self.lock().groups
    }

    /// Makes every queued commit durable as one group, in submit order, then runs every
    /// `done` callback and then every `applied` one (outside the lock: callbacks read back). With
    /// the disk full, nothing is written and every callback gets [`LedgerError::DiskFull`].
    /// Returns how many commits the group carried.
    pub fn sync(&self) -> usize {
        let (group, result) = {
            let mut m = self.lock();
            let group = std::mem::take(&mut m.queued);
            if group.is_empty() {
                return 0;
            }
            m.groups += 1;
            let result = if m.disk_full {
                m.write_failing = true;
                Err(LedgerError::DiskFull(
                    "simulated: no space left on device".into(),
                ))
            } else {
                m.write_failing = false;
                Ok(())
            };
            let mut callbacks = Vec::with_capacity(group.len());
            for c in group {
                if result.is_ok() {
                    for op in c.ops {
                        m.apply(op);
                    }
                }
                callbacks.push((c.done, c.applied));
            }
            (callbacks, result)
        };
        let n = group.len();
        // As on disk: every acknowledgement of the group, then every applied callback.
        let (dones, applieds): (Vec<_>, Vec<_>) = group.into_iter().unzip();
        for f in dones.into_iter().chain(applieds).flatten() {
            f(result.clone());
        }
        n
    }

    /// A crash before the next fdatasync: queued commits are gone and their callbacks never
    /// run. Returns how many were lost.
    pub fn crash(&self) -> usize {
        std::mem::take(&mut self.lock().queued).len()
    }

    /// Fills (true) or frees (false) the simulated disk. As on disk, writes count as
    /// failing from the moment it fills until it is freed, with no write needed to notice.
    pub fn set_disk_full(&self, full: bool) {
        let mut m = self.lock();
        m.disk_full = full;
        m.write_failing = full;
    }

    /// The next epoch for a node attaching now, durable at once (the on-disk ledger waits
    /// for its sync; under simulation that wait takes no simulated time). A full disk
    /// refuses it, as on disk: the node cannot attach until space is freed.
    pub fn next_node_epoch(&self, node: &str) -> Result<u64, LedgerError> {
        let mut m = self.lock();
        if m.disk_full {
            return Err(LedgerError::DiskFull(
                "simulated: no space left on device".into(),
            ));
        }
        let e = m.node_epochs.get(node).copied().unwrap_or(0) + 1;
        m.node_epochs.insert(node.to_string(), e);
        Ok(e)
    }
}

impl Store for MemLedger {
    fn submit(&self, c: Commit) -> Result<(), LedgerError> {
        self.lock().queued.push(c);
        Ok(())
    }
    fn write_failing(&self) -> bool {
        self.lock().write_failing
    }
    fn get(&self, id: u64) -> Result<Option<TaskRecord>, LedgerError> {
        Ok(self.lock().tasks.get(&id).cloned())
    }
    fn history(&self, id: u64) -> Result<Vec<Transition>, LedgerError> {
        Ok(self
            .lock()
            .journal
            .range((id, 0)..=(id, u64::MAX))
            .map(|(_, t)| t.clone())
            .collect())
    }
    fn idempotent(&self, key: &str) -> Result<Option<u64>, LedgerError> {
        Ok(self.lock().idem.get(key).copied())
    }
    fn scan(
        &self,
        f: &mut dyn FnMut(TaskRecord) -> Result<(), LedgerError>,
    ) -> Result<(), LedgerError> {
        // Copied out first: `f` may read the ledger again.
        let all: Vec<TaskRecord> = self.lock().tasks.values().cloned().collect();
        all.into_iter().try_for_each(f)
    }
    fn placements(&self) -> Result<Vec<(String, String, u64)>, LedgerError> {
        Ok(self
            .lock()
            .placements
            .iter()
            .map(|(p, (n, e))| (p.clone(), n.clone(), *e))
            .collect())
    }
    fn placement_epoch(&self, plant: &str) -> Result<u64, LedgerError> {
        Ok(self.lock().placements.get(plant).map_or(0, |(_, e)| *e))
    }
    fn feed_switches(&self) -> Result<Vec<(String, String, FeedSwitch)>, LedgerError> {
        Ok(self
            .lock()
            .feeds
            .iter()
            .map(|((p, m), s)| (p.clone(), m.clone(), s.clone()))
            .collect())
    }
    fn expired(&self, after_id: u64, before_us: u64, limit: usize) -> Result<Expired, LedgerError> {
        let m = self.lock();
        let mut out = Expired::default();
        for (n, (&id, rec)) in m.tasks.range(after_id + 1..).enumerate() {
            if rec.created_us >= before_us {
                break;
            }
            if n == limit {
                out.resume = Some(id - 1);
                break;
            }
            if rec.status.is_terminal() && rec.updated_us < before_us {
                let seqs = m
                    .journal
                    .range((id, 0)..=(id, u64::MAX))
                    .map(|((_, s), _)| *s);
                out.tasks.push((rec.clone(), seqs.collect()));
            }
        }
        Ok(out)
    }
    fn keys_due(&self, now_us: u64, limit: usize) -> Result<Vec<(String, u64, u64)>, LedgerError> {
        Ok(self
            .lock()
            .key_index
            .range(..(now_us, 0))
            .take(limit)
            .map(|(&(until, id), k)| (k.clone(), until, id))
            .collect())
    }
    fn floor(&self) -> Result<(u64, u64), LedgerError> {
        Ok(self.lock().floor)
    }
    fn compaction(
        &self,
        _changes_before_us: u64,
        readings_before_us: i64,
        limit: usize,
    ) -> Result<Vec<Op>, LedgerError> {
        let cut = super::codec::bucket_start(readings_before_us);
        let mut blocks: BTreeMap<(String, String), Vec<i64>> = BTreeMap::new();
        let m = self.lock();
        let old = m.readings.keys().filter(|(_, _, t)| *t < cut).take(limit);
        for (p, mt, t) in old {
            let b = blocks.entry((p.clone(), mt.clone())).or_default();
            let start = super::codec::bucket_start(*t);
            if b.last() != Some(&start) {
                b.push(start);
            }
        }
        Ok(blocks
            .into_iter()
            .map(|((plant, meter), blocks)| Op::DropReadings {
                plant,
                meter,
                blocks,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::Status;

    fn rec(id: u64) -> TaskRecord {
        TaskRecord::pending(id, "Plant-001", "GL-009", "{}".into())
    }

    #[test]
    fn commits_are_durable_only_after_sync_and_a_crash_drops_the_rest() {
        let m = MemLedger::new();
        let acked = Arc::new(Mutex::new(Vec::new()));
        for id in 1..=3 {
            let a = acked.clone();
            m.submit(Commit {
                ops: vec![Op::Put(rec(id)), Op::Idem(format!("k{id}"), id)],
                done: Some(Box::new(move |r| a.lock().unwrap().push((id, r.is_ok())))),
                ..Commit::default()
            })
            .unwrap();
            if id == 2 {
                assert_eq!(m.sync(), 2);
            }
        }
        assert_eq!(*acked.lock().unwrap(), vec![(1, true), (2, true)]);
        assert_eq!(m.crash(), 1);
        assert_eq!(m.sync(), 0);
        let mut n = 0;
        m.scan(&mut |_| {
            n += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(n, 2);
        assert_eq!(m.idempotent("k2").unwrap(), Some(2));
        assert_eq!(m.idempotent("k3").unwrap(), None);
        assert_eq!(m.get(1).unwrap().unwrap().status, Status::Pending);
    }

    #[test]
    fn a_full_disk_fails_the_group_and_writes_nothing() {
        let m = MemLedger::new();
        m.set_disk_full(true);
        let seen = Arc::new(Mutex::new(None));
        let s = seen.clone();
        m.submit(Commit {
            ops: vec![Op::Put(rec(7))],
            done: Some(Box::new(move |r| *s.lock().unwrap() = Some(r))),
            ..Commit::default()
        })
        .unwrap();
        m.sync();
        assert!(matches!(
            *seen.lock().unwrap(),
            Some(Err(LedgerError::DiskFull(_)))
        ));
        assert!(m.write_failing());
        assert!(m.get(7).unwrap().is_none());
        m.set_disk_full(false);
        assert!(!m.write_failing());
    }

    #[test]
    fn node_epochs_only_increase() {
        let m = MemLedger::new();
        assert_eq!(m.next_node_epoch("node-1").unwrap(), 1);
        assert_eq!(m.next_node_epoch("node-1").unwrap(), 2);
        m.set_disk_full(true);
        assert!(m.next_node_epoch("node-2").is_err());
        m.set_disk_full(false);
        assert_eq!(m.next_node_epoch("node-2").unwrap(), 1);
    }
}
