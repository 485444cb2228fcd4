//! Applying one task change: checked against the lifecycle table, counted, journaled.

use super::lifecycle::{self, Event};
use super::{MasterMsg, MasterState, Rewrite};
use crate::ledger::{Callback, Commit, LedgerError, Op};
use crate::task::{Status, Transition};

impl MasterState {
    /// Moves an active task by `event` and journals it; returns the new state, or None when
    /// the table refuses the move (nothing changes then). `done` runs once the change is
    /// in the ledger's state (readable). Terminal tasks leave memory once applied.
    pub(super) fn transition(
        &mut self,
        id: u64,
        event: Event,
        detail: String,
        done: Option<Callback>,
    ) -> Option<Status> {
        self.transition_by(id, event, detail, done, None)
    }

    /// [`Self::transition`] that journals the (attempt, epoch) which produced the change
    /// (a result) instead of the task's current one. They are equal whenever fencing works;
    /// keeping the producer's in the journal lets an audit prove it.
    pub(super) fn transition_by(
        &mut self,
        id: u64,
        event: Event,
        detail: String,
        done: Option<Callback>,
        produced_by: Option<(u32, u64)>,
    ) -> Option<Status> {
        let t = self.active.get_mut(&id)?;
        let from = t.rec.status;
        let to = match lifecycle::next(Some(from), event) {
            Ok(to) => to,
            // The planted defect commits a result for any unfinished task, past the table.
            #[cfg(feature = "planted-bugs")]
            Err(_)
                if self.planted.accept_stale_results
                    && event == Event::Complete
                    && !from.is_terminal() =>
            {
                Status::Completed
            }
            Err(refused) => {
                self.refused += 1;
                metrics::counter!("heatmesh_transitions_refused_total").increment(1);
                tracing::error!(task_id = id, %refused, %detail, "task change refused");
                return None;
            }
        };
        self.seq += 1;
        let now = self.wall_us;
        t.rec.status = to;
        t.rec.updated_us = now;
        t.rec.seq = self.seq;
        if from == Status::Dispatched {
            t.token = None;
        }
        let (attempt, epoch) = produced_by.unwrap_or((t.rec.attempt, t.rec.epoch));
        let entry = Transition {
            from: Some(from),
            to,
            at_us: now,
            attempt,
            epoch,
            node: t.rec.node.clone(),
            detail,
        };
        let rec = t.rec.clone();
        let key = Self::queue_key(&rec);
        if from == Status::Dispatched
            && let Some(n) = self.in_flight.get_mut(&key)
        {
            *n = n.saturating_sub(1);
        }
        self.counts.moved(Some(from), Some(to));
        // `done` reads the change back from the ledger (an operator's answer), so it runs
        // once the change is applied, not merely durable.
        let mut applied = done;
        if to.is_terminal() {
            // The task stays readable in memory until its terminal record is in the ledger's
            // state, so a read never falls back to an older ledger record.
            let retire = self.retire_when_applied(id, self.seq);
            let then = applied.take();
            applied = Some(Box::new(move |r: Result<(), LedgerError>| {
                if let Some(f) = retire {
                    f(r.clone());
                }
                if let Some(f) = then {
                    f(r);
                }
            }));
            if to == Status::Failed {
                self.failed.insert(id);
            }
            metrics::counter!("heatmesh_tasks_finished_total", "state" => to.as_str()).increment(1);
            if to == Status::Completed {
                let secs = now.saturating_sub(rec.created_us) as f64 / 1e6;
                metrics::histogram!("heatmesh_task_latency_seconds").record(secs);
            }
        }
        let seq = self.seq;
        self.write(Commit {
            ops: vec![
                Op::Put(rec.clone()),
                Op::Journal {
                    id,
                    seq,
                    entry: entry.clone(),
                },
            ],
            events: vec![rec],
            done: self.on_failure(Rewrite::Task { id, seq, entry }),
            applied,
        });
        Some(to)
    }

    /// An `applied` callback that drops task `id` from memory once its terminal change
    /// `seq` is in the ledger's state; after a failed write it stays, to be written again.
    fn retire_when_applied(&self, id: u64, seq: u64) -> Option<Callback> {
        let m = self.myself.clone()?;
        Some(Box::new(move |r| {
            if r.is_ok() {
                m(MasterMsg::Retired(id, seq));
            }
        }))
    }

    /// A `done` callback that hands `what` back to the master if the write fails (a full
    /// disk), so the ledger catches up with the master once writes succeed again.
    pub(super) fn on_failure(&self, what: Rewrite) -> Option<Callback> {
        let m = self.myself.clone()?;
        Some(Box::new(move |r| {
            if r.is_err() {
                m(MasterMsg::WriteFailed(what));
            }
        }))
    }

    /// Writes again what failed to reach the ledger, once writes succeed again: each lost
    /// journal entry as it was, and the task's record and the plant's placement as they are
    /// now (never an older state over a newer one).
    pub(super) fn rewrite_failed(&mut self) {
        if self.rewrites.is_empty() || self.ledger.write_failing() {
            return;
        }
        let mut rewrites = std::mem::take(&mut self.rewrites);
        rewrites.sort_by_key(|r| match r {
            Rewrite::Task { id, seq, .. } => (0, *id, *seq, String::new()),
            Rewrite::Placement { plant } => (1, 0, 0, plant.clone()),
        });
        rewrites.dedup_by(|a, b| matches!((a, b), (Rewrite::Placement { plant: x }, Rewrite::Placement { plant: y }) if x == y));
        tracing::warn!(
            count = rewrites.len(),
            "ledger writes succeed again; writing what failed"
        );
        for r in rewrites {
            match r {
                Rewrite::Task { id, seq, entry } => {
                    let journal = Op::Journal {
                        id,
                        seq,
                        entry: entry.clone(),
                    };
                    // A task retired meanwhile has its newer record in the ledger already.
                    let rec = self.active.get(&id).map(|t| t.rec.clone());
                    let terminal = rec
                        .as_ref()
                        .is_some_and(|r| r.status.is_terminal() && r.seq == seq);
                    let mut ops = vec![journal];
                    ops.extend(rec.clone().map(Op::Put));
                    self.write(Commit {
                        ops,
                        events: rec.into_iter().collect(),
                        done: self.on_failure(Rewrite::Task { id, seq, entry }),
                        applied: terminal
                            .then(|| self.retire_when_applied(id, seq))
                            .flatten(),
                    });
                }
                Rewrite::Placement { plant } => {
                    if let Some(p) = self.plants.get(&plant)
                        && let Some(node) = p.node.clone()
                    {
                        let op = Op::Placement {
                            plant: plant.clone(),
                            node,
                            epoch: p.epoch,
                        };
                        self.write(Commit {
                            ops: vec![op],
                            done: self.on_failure(Rewrite::Placement { plant }),
                            ..Commit::default()
                        });
                    }
                }
            }
        }
    }

    /// Drops a finished task from memory once its terminal record (change `seq`) is applied.
    pub(super) fn retire(&mut self, id: u64, seq: u64) {
        if self
            .active
            .get(&id)
            .is_some_and(|t| t.rec.seq == seq && t.rec.status.is_terminal())
        {
            let t = self.active.remove(&id).expect("checked");
            self.counts.moved(Some(t.rec.status), None);
            if let Some(k) = &t.rec.idempotency_key {
                self.idem.remove(k);
            }
        }
    }
}
