//! Retention: finished tasks, then idempotency keys, change-index groups and readings are
//! removed once their time is up (`[retention]`), through the log like every other write.
//!
//! The sweep runs in the master core because the core owns task state: a task it holds in
//! memory (unfinished, or put back by RetryFailed and not yet applied) is never removed,
//! and a removed failed task leaves the set RetryFailed looks in. One sweep is in flight at
//! a time: the next starts once the last one's removals are applied, so the ledger never
//! offers the same task twice.

use super::{MasterMsg, MasterState};
use crate::ledger::{Commit, Op};
use std::time::Duration;

impl MasterState {
    /// Removes up to a batch of what is due, and arms the next sweep.
    pub(super) fn sweep(&mut self) {
        let r = self.cfg.retention.clone();
        let now = self.wall_us;
        let before = now.saturating_sub(r.tasks.as_us());
        let mut ops = Vec::new();
        let mut more = false;
        let mut unfailed = Vec::new();
        match self.ledger.expired(self.sweep_from, before, r.sweep_batch) {
            Ok(found) => {
                self.sweep_from = found.resume.unwrap_or(0);
                more |= found.resume.is_some();
                for (rec, seqs) in found.tasks {
                    if self.active.contains_key(&rec.id) {
                        continue;
                    }
                    if self.failed.remove(&rec.id) {
                        unfailed.push(rec.id);
                    }
                    let until = rec.created_us.saturating_add(r.idempotency_keys.as_us());
                    ops.push(Op::Expire {
                        id: rec.id,
                        seqs,
                        key: rec.idempotency_key,
                        key_until_us: if until > now { until } else { 0 },
                    });
                }
            }
            Err(e) => tracing::warn!("retention: looking for expired tasks: {e}"),
        }
        let tasks = ops.len();
        match self.ledger.keys_due(now, r.sweep_batch) {
            Ok(keys) => {
                more |= keys.len() == r.sweep_batch;
                metrics::counter!("heatmesh_retention_removed_total", "what" => "idempotency_keys")
                    .increment(keys.len() as u64);
                ops.extend(keys.into_iter().map(|(key, until_us, id)| Op::ForgetKey {
                    key,
                    until_us,
                    id,
                }));
            }
            Err(e) => tracing::warn!("retention: looking for idempotency keys due: {e}"),
        }
        let readings_before = (now as i64).saturating_sub(r.readings.as_us() as i64);
        match self
            .ledger
            .compaction(before, readings_before, r.sweep_batch)
        {
            Ok(c) => {
                for op in &c {
                    let (what, n) = match op {
                        Op::DropChanges(g) => ("change_groups", g.len()),
                        Op::DropReadings { blocks, .. } => ("reading_blocks", blocks.len()),
                        _ => continue,
                    };
                    more |= n == r.sweep_batch;
                    metrics::counter!("heatmesh_retention_removed_total", "what" => what)
                        .increment(n as u64);
                }
                ops.extend(c);
            }
            Err(e) => tracing::warn!("retention: looking for old changes and readings: {e}"),
        }
        if ops.is_empty() {
            self.after(r.sweep_every.0, MasterMsg::Sweep);
            return;
        }
        metrics::counter!("heatmesh_retention_removed_total", "what" => "tasks")
            .increment(tasks as u64);
        if tasks > 0 {
            tracing::debug!("retention: removing {tasks} finished tasks");
        }
        ops.push(Op::Floor {
            next_id: self.next_id,
            seq: self.seq,
        });
        let master = self.myself.clone();
        self.write(Commit {
            ops,
            applied: Some(Box::new(move |res| {
                if let Some(m) = master {
                    let restore = if res.is_ok() { Vec::new() } else { unfailed };
                    m(MasterMsg::Swept {
                        more: more && res.is_ok(),
                        restore,
                    });
                }
            })),
            ..Commit::default()
        });
    }

    /// The last sweep's removals are applied (or failed: its failed tasks go back to the set
    /// RetryFailed looks in): the next sweep starts at once when it left more, else after
    /// `retention.sweep_every`.
    pub(super) fn swept(&mut self, more: bool, restore: Vec<u64>) {
        self.failed.extend(restore);
        let every = self.cfg.retention.sweep_every.0;
        self.after(
            if more {
                Duration::from_millis(1)
            } else {
                every
            },
            MasterMsg::Sweep,
        );
    }
}
