//! Operators' actions: cancel, retry failed tasks, clear orphans, switch feeds, inject
//! rehearsal faults, pause, and the mesh view.

use super::lifecycle::Event;
use super::{AgentView, ApiError, MasterState, MeshSnapshot, NodeView, PlantView};
use crate::ledger::{Commit, FeedSwitch, Op};
use crate::task::{Status, TaskRecord};
use heatmesh_agents::fault::Fault;
use ractor::RpcReplyPort;
use std::time::Duration;

impl MasterState {
    /// Cancels an unfinished task; the reply carries the record as the ledger holds it.
    pub(super) fn cancel(
        &mut self,
        id: u64,
        reason: String,
        reply: RpcReplyPort<Result<TaskRecord, ApiError>>,
    ) {
        if self
            .active
            .get(&id)
            .is_none_or(|t| t.rec.status.is_terminal())
        {
            let current = self.active.get(&id).map(|t| Ok(Some(t.rec.clone())));
            let answer = match current.unwrap_or_else(|| self.ledger.get(id)) {
                Ok(Some(rec)) => Err(ApiError::FailedPrecondition(format!(
                    "task {id} is already {}; only pending, dispatched or orphaned tasks can be cancelled",
                    rec.status.as_str()
                ))),
                Ok(None) => Err(ApiError::NotFound(format!("task {id} not found"))),
                Err(e) => Err(e.into()),
            };
            let _ = reply.send(answer);
            return;
        }
        let ledger = self.ledger.clone();
        let detail = if reason.is_empty() {
            "cancelled by operator".to_string()
        } else {
            format!("cancelled: {reason}")
        };
        if let Some(t) = self.active.get_mut(&id) {
            t.rec.error = Some(detail.clone());
        }
        self.transition(
            id,
            Event::Cancel,
            detail,
            Some(Box::new(move |r| {
                let answer = r.map_err(ApiError::from).and_then(|_| {
                    ledger
                        .get(id)?
                        .ok_or_else(|| ApiError::NotFound(format!("task {id} not found")))
                });
                let _ = reply.send(answer);
            })),
        );
    }

    /// Puts failed tasks (optionally of one plant and kind) back to pending with a fresh
    /// attempt budget and no deadline. Returns their ids.
    pub(super) fn retry_failed(
        &mut self,
        plant: Option<String>,
        kind: Option<String>,
    ) -> Result<Vec<u64>, ApiError> {
        let mut retried = Vec::new();
        let candidates: Vec<u64> = self.failed.iter().copied().collect();
        for id in candidates {
            let in_memory = self.active.get(&id).map(|t| Ok(Some(t.rec.clone())));
            let Some(rec) = in_memory.unwrap_or_else(|| self.ledger.get(id))? else {
                continue;
            };
            if rec.status != Status::Failed
                || plant.as_ref().is_some_and(|p| p != &rec.plant_id)
                || kind.as_ref().is_some_and(|k| k != &rec.agent_kind)
                || !self.plants.contains_key(&rec.plant_id)
            {
                continue;
            }
            self.failed.remove(&id);
            let mut rec = rec;
            rec.failures = 0;
            rec.deadline_us = None;
            if let Some(old) = self.active.insert(id, Self::loaded(rec)) {
                self.counts.moved(Some(old.rec.status), None);
            }
            self.counts.moved(None, Some(Status::Failed));
            let why = "retried by operator (attempt budget reset, deadline cleared)";
            if self
                .transition(id, Event::RetryFailed, why.into(), None)
                .is_some()
            {
                self.enqueue(id);
                retried.push(id);
            }
        }
        self.pump_all();
        Ok(retried)
    }

    /// Cancels orphaned tasks unchanged for longer than `older`. Returns their ids.
    pub(super) fn clear_orphaned(&mut self, older: Duration) -> Vec<u64> {
        let cutoff = self.wall_us.saturating_sub(older.as_micros() as u64);
        let mut ids: Vec<u64> = self
            .active
            .iter()
            .filter(|(_, t)| t.rec.status == Status::Orphaned && t.rec.updated_us <= cutoff)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        for id in &ids {
            let detail = format!("cleared: orphaned for more than {} s", older.as_secs());
            if let Some(t) = self.active.get_mut(id) {
                t.rec.error = Some(detail.clone());
            }
            self.transition(*id, Event::Cancel, detail, None);
        }
        ids
    }

    /// Holds (true) or resumes (false) dispatch.
    pub(super) fn set_paused(&mut self, paused: bool) {
        self.paused = paused;
        if !paused {
            self.pump_all();
        }
    }

    /// Arms a rehearsal fault on one agent, when the configuration allows it.
    pub(super) fn inject_fault(
        &self,
        plant: &str,
        kind: &str,
        fault: Fault,
    ) -> Result<(), ApiError> {
        if !self.cfg.allow_fault_injection {
            return Err(ApiError::FailedPrecondition(
                "fault injection is disabled; set allow_fault_injection = true".into(),
            ));
        }
        if !self
            .agents
            .contains_key(&(plant.to_string(), kind.to_string()))
        {
            return Err(ApiError::NotFound(format!(
                "no agent {kind} on plant {plant}"
            )));
        }
        let node = self
            .plants
            .get(plant)
            .and_then(|p| p.node.as_ref())
            .and_then(|n| self.nodes.get(n))
            .map(|n| n.link.clone())
            .ok_or_else(|| ApiError::FailedPrecondition(format!("plant {plant} is not placed")))?;
        node.inject_fault(plant, kind, fault)
            .map_err(|e| ApiError::FailedPrecondition(e.to_string()))
    }

    /// Switches a meter's connector off or on: journaled, then the node hosting the plant
    /// restarts its connectors without (or with) it; a later placement carries the switch.
    pub(super) fn set_feed(
        &mut self,
        plant: String,
        meter: String,
        switch: FeedSwitch,
        reply: RpcReplyPort<Result<FeedSwitch, ApiError>>,
    ) {
        let Some(p) = self.plants.get_mut(&plant) else {
            let _ = reply.send(Err(ApiError::NotFound(format!(
                "plant_id: no plant {plant:?} in the fleet"
            ))));
            return;
        };
        let Some(m) = p.spec.feeds.meter(&meter) else {
            let known: Vec<&str> = p.spec.feeds.meters.iter().map(|m| m.id.as_str()).collect();
            let _ = reply.send(Err(ApiError::NotFound(format!(
                "meter: plant {plant} has no meter {meter:?}; known: {}",
                known.join(", ")
            ))));
            return;
        };
        if m.source.is_none() {
            let _ = reply.send(Err(ApiError::FailedPrecondition(format!(
                "meter: {plant}/{meter} has no source; it is fed by pushes and files, and no connector reads it"
            ))));
            return;
        }
        if switch.enabled {
            p.spec.feeds.disabled.remove(&meter);
        } else {
            p.spec.feeds.disabled.insert(meter.clone());
        }
        tracing::info!(%plant, %meter, enabled = switch.enabled, reason = %switch.reason, "feed switched by an operator");
        if let Some(link) = p
            .node
            .as_ref()
            .and_then(|n| self.nodes.get(n))
            .map(|n| n.link.clone())
            && let Err(e) = link.set_feeds(&plant, &p.spec.feeds)
        {
            // The node is going away; the plant's next placement carries the switch.
            tracing::warn!(%plant, "telling the node about the feed switch: {e}");
        }
        let journaled = switch.clone();
        self.write(Commit {
            ops: vec![Op::FeedSwitch {
                plant,
                meter,
                switch,
            }],
            done: Some(Box::new(move |r| {
                let _ = reply.send(r.map(|()| journaled).map_err(ApiError::from));
            })),
            ..Commit::default()
        });
    }

    /// Tasks not finished yet (pending, dispatched, orphaned), from the lifecycle counts.
    pub fn unfinished(&self) -> u64 {
        [Status::Pending, Status::Dispatched, Status::Orphaned]
            .into_iter()
            .map(|s| self.counts.get(s))
            .sum()
    }

    /// The mesh as operators see it, sorted by id.
    pub fn snapshot(&self) -> MeshSnapshot {
        let mut plants: Vec<PlantView> = self
            .plants
            .values()
            .map(|p| {
                let queued = self
                    .ready
                    .iter()
                    .filter(|((pl, _), _)| pl == &p.spec.id)
                    .map(|(_, h)| h.len() as u64)
                    .sum();
                PlantView {
                    spec: p.spec.clone(),
                    node: p.node.clone().unwrap_or_default(),
                    epoch: p.epoch,
                    status: p.status,
                    queued,
                    in_flight: self.plant_in_flight(&p.spec.id) as u64,
                }
            })
            .collect();
        plants.sort_by(|a, b| a.spec.id.cmp(&b.spec.id));
        let mut agents: Vec<AgentView> = self.agents.values().cloned().collect();
        agents.sort_by(|a, b| (&a.plant, &a.kind).cmp(&(&b.plant, &b.kind)));
        let mut nodes: Vec<NodeView> = self
            .nodes
            .iter()
            .map(|(id, n)| NodeView {
                id: id.clone(),
                address: n.link.address(),
                connected: n.connected,
                node_epoch: n.node_epoch,
                plants: plants
                    .iter()
                    .filter(|p| &p.node == id)
                    .map(|p| p.spec.id.clone())
                    .collect(),
                preferred: n.preferred.clone(),
                last_heartbeat_us: n.link.last_heartbeat_us().unwrap_or(self.wall_us),
                lost_reason: n.lost_reason.clone(),
            })
            .collect();
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        MeshSnapshot {
            plants,
            agents,
            nodes,
        }
    }
}
