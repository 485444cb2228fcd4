//! Start-up: the fleet, the operators' feed switches and every unfinished task come back
//! from the ledger; dispatched and orphaned tasks go back to pending.

use super::lifecycle::Event;
use super::{Mailbox, MasterArgs, MasterState, NodeRt, PlantRt, PlantStatus};
use crate::ledger::LedgerError;
use crate::task::Status;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

impl MasterState {
    /// The state a master starts with: plants at their journaled epochs, unfinished tasks
    /// re-queued, the in-process node (if any) attached, every plant placed where it can be.
    /// `myself` receives the ledger's callbacks; None only in tests that carry them out
    /// by hand.
    pub fn start(
        args: MasterArgs,
        myself: Option<Mailbox>,
        now: Instant,
        wall_us: u64,
    ) -> Result<MasterState, LedgerError> {
        let mut st = MasterState {
            myself,
            plants: BTreeMap::new(),
            ledger: args.ledger,
            nodes: BTreeMap::new(),
            started: now,
            now,
            wall_us,
            paused: args.paused,
            next_id: 1,
            seq: 0,
            active: HashMap::new(),
            idem: HashMap::new(),
            failed: BTreeSet::new(),
            agents: BTreeMap::new(),
            ready: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            delayed: BTreeSet::new(),
            deadlines: BTreeSet::new(),
            leases: BTreeSet::new(),
            counts: Default::default(),
            refused: 0,
            fx: Vec::new(),
            rewrites: Vec::new(),
            sweep_from: 0,
            #[cfg(feature = "planted-bugs")]
            planted: args.planted,
            cfg: args.config,
        };
        for spec in st.cfg.plants.clone() {
            let epoch = st.ledger.placement_epoch(&spec.id)?;
            st.plants.insert(
                spec.id.clone(),
                PlantRt {
                    spec,
                    epoch,
                    node: None,
                    session: None,
                    pinned: false,
                    link: None,
                    status: PlantStatus::Unplaced,
                    replace_failures: 0,
                },
            );
        }
        for (plant, meter, switch) in st.ledger.feed_switches()? {
            // A meter since removed from the fleet file has nothing to switch.
            if let Some(p) = st.plants.get_mut(&plant)
                && !switch.enabled
                && p.spec.feeds.meter(&meter).is_some()
            {
                p.spec.feeds.disabled.insert(meter);
            }
        }
        st.recover()?;
        let sweep = st.cfg.retention.sweep_every.0;
        st.after(sweep, super::MasterMsg::Sweep);
        if let Some(local) = args.local_node {
            let preferred = st.plants.keys().cloned().collect();
            st.nodes.insert(
                local.id().to_string(),
                NodeRt {
                    link: local,
                    node_epoch: 1,
                    connected: true,
                    preferred,
                    lost_reason: None,
                },
            );
        }
        let mut ids: Vec<String> = st.plants.keys().cloned().collect();
        ids.sort();
        for id in ids {
            st.place(&id);
        }
        Ok(st)
    }

    /// Rebuilds the active set from the ledger: dispatched and orphaned tasks go back to
    /// pending, tasks of plants no longer configured stay orphaned.
    fn recover(&mut self) -> Result<(), LedgerError> {
        let mut requeue = Vec::new();
        let ledger = self.ledger.clone();
        // Removed tasks' ids and sequence numbers stay used.
        let (next_id, seq) = ledger.floor()?;
        self.next_id = self.next_id.max(next_id);
        self.seq = self.seq.max(seq);
        ledger.scan(&mut |rec| {
            self.next_id = self.next_id.max(rec.id + 1);
            self.seq = self.seq.max(rec.seq);
            if rec.status == Status::Failed {
                self.failed.insert(rec.id);
            }
            if rec.status.is_terminal() {
                return Ok(());
            }
            let id = rec.id;
            if let Some(k) = &rec.idempotency_key {
                self.idem.insert(k.clone(), id);
            }
            if let Some(d) = rec.deadline_us {
                self.deadlines.insert((d, id));
            }
            self.counts.moved(None, Some(rec.status));
            requeue.push((id, rec.status, self.plants.contains_key(&rec.plant_id)));
            self.active.insert(id, Self::loaded(rec));
            Ok(())
        })?;
        let n = requeue.len();
        for (id, status, known) in requeue {
            if !known {
                if status != Status::Orphaned {
                    self.transition(
                        id,
                        Event::Orphan,
                        "plant is not in the fleet configuration".into(),
                        None,
                    );
                }
                continue;
            }
            match status {
                Status::Dispatched => {
                    let why = "master restarted while dispatched; re-queued";
                    self.transition(id, Event::Restart, why.into(), None);
                }
                Status::Orphaned => {
                    let why = "master restarted; orphan re-queued";
                    self.transition(id, Event::Requeue, why.into(), None);
                }
                _ => {}
            }
            self.enqueue(id);
        }
        if n > 0 {
            tracing::info!("recovered {n} unfinished tasks from the ledger");
        }
        Ok(())
    }
}
