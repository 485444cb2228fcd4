//! Placement: which node runs each plant, under which epoch, and what happens to its work
//! when the plant, its node or an operator moves it.

use super::{AgentView, Effect, MasterMsg, MasterState, NodeRt, PlantRt, QueueKey};
use crate::task::Status;
use heatmesh_agents::AgentStatus;
use heatmesh_base::Backoff;
use heatmesh_mesh::{NodeLink, NodeSession, PlantLink};
use std::sync::Arc;
use std::time::Duration;

/// Where a plant is in its placement lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlantStatus {
    /// No node can take it yet.
    Unplaced,
    /// Its node was asked to start it; no answer yet.
    Placing,
    /// Started; tasks are dispatched to it.
    Running,
    /// Down (its node or its supervisor gave up); placed again after a backoff.
    Restarting,
    /// The last start failed; tried again after a backoff.
    Failed,
}

impl PlantStatus {
    /// Lower-case name, as the API and the CLI show it.
    pub fn as_str(self) -> &'static str {
        match self {
            PlantStatus::Unplaced => "unplaced",
            PlantStatus::Placing => "placing",
            PlantStatus::Running => "running",
            PlantStatus::Restarting => "restarting",
            PlantStatus::Failed => "failed",
        }
    }
}

impl MasterState {
    /// A plant incarnation went down: its dispatched tasks are orphaned and it is placed
    /// again, at once or after `delay`. Reports for an older incarnation change nothing.
    pub(super) fn on_plant_down(
        &mut self,
        plant: String,
        epoch: u64,
        reason: String,
        delay: Duration,
    ) {
        let Some(p) = self.plants.get_mut(&plant) else {
            return;
        };
        if p.epoch != epoch {
            return;
        }
        p.link = None;
        p.pinned = false;
        p.status = PlantStatus::Restarting;
        tracing::warn!(plant = %plant, epoch, "plant down: {reason}; re-placing");
        self.orphan_in_flight(
            &plant,
            epoch,
            &format!("plant {plant} epoch {epoch} went down: {reason}"),
        );
        let now = self.wall_us;
        for a in self.agents.values_mut().filter(|a| a.plant == plant) {
            a.status = AgentStatus::Failed;
            a.last_change_us = now;
        }
        metrics::counter!("heatmesh_plant_down_total").increment(1);
        if delay.is_zero() {
            self.place(&plant);
        } else {
            self.after(delay, MasterMsg::Replace(plant));
        }
    }

    /// Orphans every task dispatched to incarnation `epoch` of `plant`, in id order.
    fn orphan_in_flight(&mut self, plant: &str, epoch: u64, why: &str) {
        let mut lost: Vec<u64> = self
            .active
            .iter()
            .filter(|(_, t)| {
                t.rec.plant_id == plant
                    && t.rec.status == Status::Dispatched
                    && t.rec.epoch == epoch
            })
            .map(|(id, _)| *id)
            .collect();
        lost.sort_unstable();
        for id in lost {
            self.orphan(id, why.to_string());
        }
    }

    /// Where a plant should run: its preferred node when attached; otherwise (after the
    /// start-up grace, so preferred nodes can attach first) the live node with fewest plants.
    fn choose_node(&self, plant: &str) -> Option<String> {
        let mut preferred: Vec<&String> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.connected && n.preferred.iter().any(|p| p == plant))
            .map(|(id, _)| id)
            .collect();
        preferred.sort();
        if let Some(id) = preferred.first() {
            return Some((*id).clone());
        }
        // Right after start, wait for a preferred node we have not heard of yet; once one is
        // known (and now down), waiting longer only delays recovery.
        let preferred_known = self
            .nodes
            .values()
            .any(|n| n.preferred.iter().any(|p| p == plant));
        let grace = Duration::from_millis(self.cfg.placement.startup_grace_ms);
        if !preferred_known && self.now.saturating_duration_since(self.started) < grace {
            return None;
        }
        let mut live: Vec<&String> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.connected)
            .map(|(id, _)| id)
            .collect();
        live.sort_by_key(|id| (self.plants_on(id).len(), (*id).clone()));
        live.first().map(|id| (*id).clone())
    }

    /// Plants placed on node `id`, sorted.
    fn plants_on(&self, id: &str) -> Vec<String> {
        let mut on: Vec<String> = self
            .plants
            .values()
            .filter(|p| p.node.as_deref() == Some(id))
            .map(|p| p.spec.id.clone())
            .collect();
        on.sort();
        on
    }

    /// Whether the plant's preferred node is attached but the plant runs elsewhere.
    fn away_from_preferred(&self, plant: &PlantRt) -> Option<String> {
        let mut pref: Vec<&String> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.connected && n.preferred.iter().any(|p| p == &plant.spec.id))
            .map(|(id, _)| id)
            .collect();
        pref.sort();
        let pref = (*pref.first()?).clone();
        (plant.node.as_ref() != Some(&pref)).then_some(pref)
    }

    /// Tasks dispatched to `plant` and not yet reported.
    pub(super) fn plant_in_flight(&self, plant: &str) -> usize {
        self.in_flight
            .iter()
            .filter(|((p, _), _)| p == plant)
            .map(|(_, n)| *n)
            .sum()
    }

    /// Tasks of `plant` queued or in flight.
    fn plant_work(&self, plant: &str) -> usize {
        self.ready
            .iter()
            .filter(|((p, _), _)| p == plant)
            .map(|(_, h)| h.len())
            .sum::<usize>()
            + self.plant_in_flight(plant)
    }

    /// Moves a running plant to another node: the old incarnation is stopped and its
    /// in-flight tasks are orphaned and re-queued, then the plant is placed again.
    fn move_plant(&mut self, plant: &str, why: &str) {
        let Some(p) = self.plants.get_mut(plant) else {
            return;
        };
        if let Some(link) = p.link.take() {
            link.stop();
        }
        let epoch = p.epoch;
        metrics::counter!("heatmesh_placement_moves_total").increment(1);
        tracing::info!(plant, epoch, "moving plant: {why}");
        self.on_plant_down(plant.to_string(), epoch, why.to_string(), Duration::ZERO);
    }

    /// Places `plant` where [`Self::choose_node`] says, or marks it unplaced.
    pub(super) fn place(&mut self, plant: &str) {
        match self.choose_node(plant) {
            Some(node) => self.place_on(plant, &node),
            None => {
                if let Some(p) = self.plants.get_mut(plant) {
                    p.node = None;
                    p.session = None;
                    p.link = None;
                    p.status = PlantStatus::Unplaced;
                }
            }
        }
    }

    /// Starts a new incarnation (epoch + 1) of `plant` on `node_id` and journals it.
    fn place_on(&mut self, plant: &str, node_id: &str) {
        let Some((node, node_epoch)) = self
            .nodes
            .get(node_id)
            .map(|n| (n.link.clone(), n.node_epoch))
        else {
            return;
        };
        let Some(p) = self.plants.get_mut(plant) else {
            return;
        };
        let session = NodeSession {
            node: node_id.to_string(),
            node_epoch,
        };
        p.epoch += 1;
        p.node = Some(node_id.to_string());
        p.session = Some(session.clone());
        p.link = None;
        p.status = PlantStatus::Placing;
        let (spec, epoch) = (p.spec.clone(), p.epoch);
        self.write(crate::ledger::Commit {
            ops: vec![crate::ledger::Op::Placement {
                plant: plant.to_string(),
                node: node_id.to_string(),
                epoch,
            }],
            done: self.on_failure(super::Rewrite::Placement {
                plant: plant.to_string(),
            }),
            ..Default::default()
        });
        self.fx.push(Effect::Spawn {
            node,
            spec,
            epoch,
            session,
        });
    }

    /// A node answered a placement: the plant runs (its queues are pumped), or it is tried
    /// again after a backoff. Answers for an older incarnation change nothing.
    pub(super) fn placed(
        &mut self,
        plant: String,
        epoch: u64,
        result: Result<Arc<dyn PlantLink>, String>,
    ) {
        let Some(p) = self.plants.get_mut(&plant) else {
            return;
        };
        if p.epoch != epoch {
            return;
        }
        match result {
            Ok(link) => {
                p.link = Some(link);
                p.status = PlantStatus::Running;
                p.replace_failures = 0;
                tracing::info!(plant = %plant, epoch, "plant placed");
                let keys: Vec<QueueKey> = p
                    .spec
                    .agents
                    .iter()
                    .map(|k| (plant.clone(), k.clone()))
                    .collect();
                for k in keys {
                    self.pump(&k);
                }
            }
            Err(e) => {
                p.status = PlantStatus::Failed;
                p.replace_failures += 1;
                let delay = Backoff::nth(
                    Duration::from_millis(self.cfg.scheduler.replace_backoff_ms),
                    Duration::from_secs(30),
                    p.replace_failures,
                    heatmesh_base::name_seed(&plant),
                );
                tracing::error!(plant = %plant, epoch, "placement failed: {e}; retry in {delay:?}");
                self.after(delay, MasterMsg::Replace(plant));
            }
        }
    }

    /// Timer after a plant went down: place it, unless a placement is already under way
    /// (e.g. after its node's loss), which wins.
    pub(super) fn replace(&mut self, plant: String) {
        if self
            .plants
            .get(&plant)
            .is_some_and(|p| p.link.is_none() && p.status != PlantStatus::Placing)
        {
            self.place(&plant)
        }
    }

    /// An agent of the current incarnation changed status.
    pub(super) fn agent_changed(
        &mut self,
        plant: String,
        kind: String,
        status: AgentStatus,
        restarts: u32,
        epoch: u64,
    ) {
        let Some(node) = self
            .plants
            .get(&plant)
            .filter(|p| p.epoch == epoch)
            .map(|p| p.node.clone().unwrap_or_default())
        else {
            return;
        };
        let a = self
            .agents
            .entry((plant.clone(), kind.clone()))
            .or_insert(AgentView {
                plant,
                kind,
                status,
                restarts: 0,
                epoch,
                node: node.clone(),
                completed: 0,
                last_change_us: 0,
            });
        // A new incarnation (new epoch) starts its restart count afresh.
        a.restarts = if a.epoch == epoch {
            restarts.max(a.restarts)
        } else {
            restarts
        };
        a.status = status;
        a.epoch = epoch;
        a.node = node;
        a.last_change_us = self.wall_us;
    }

    /// A node attached: stale incarnations it still runs are stopped, waiting plants placed.
    pub(super) fn on_node_joined(
        &mut self,
        link: Arc<dyn NodeLink>,
        node_epoch: u64,
        preferred: Vec<String>,
        running: Vec<(String, u64)>,
    ) {
        let id = link.id().to_string();
        tracing::info!(node = %id, node_epoch, ?preferred, "node joined");
        // Whatever it still runs from an earlier session is not current: a new master or a
        // fence gave those plants new epochs. Stop them; placement below decides afresh.
        for (plant, epoch) in &running {
            let current = self.plants.get(plant).is_some_and(|p| {
                p.epoch == *epoch && p.node.as_ref() == Some(&id) && p.link.is_some()
            });
            if !current {
                link.stop_stale_plant(plant, *epoch);
            }
        }
        for p in &preferred {
            if !self.plants.contains_key(p) {
                tracing::warn!(node = %id, plant = %p, "node prefers a plant that is not in the fleet");
            }
        }
        self.nodes.insert(
            id,
            NodeRt {
                link,
                node_epoch,
                connected: true,
                preferred,
                lost_reason: None,
            },
        );
        self.node_gauge();
        self.place_waiting();
    }

    /// A node's session ended: it is fenced and its plants are placed elsewhere.
    pub(super) fn on_node_lost(&mut self, id: String, node_epoch: u64, reason: String) {
        let Some(n) = self.nodes.get_mut(&id) else {
            return;
        };
        if n.node_epoch != node_epoch {
            return;
        }
        n.connected = false;
        n.lost_reason = Some(reason.clone());
        self.node_gauge();
        let mut lost: Vec<(String, u64)> = self
            .plants
            .values()
            .filter(|p| p.node.as_ref() == Some(&id))
            .map(|p| (p.spec.id.clone(), p.epoch))
            .collect();
        lost.sort();
        for (plant, epoch) in lost {
            let why = format!("node {id} (node epoch {node_epoch}) lost: {reason}");
            self.on_plant_down(plant, epoch, why, Duration::ZERO);
        }
        let now = self.wall_us;
        for a in self.agents.values_mut().filter(|a| a.node == id) {
            a.status = AgentStatus::Failed;
            a.last_change_us = now;
        }
    }

    fn node_gauge(&self) {
        metrics::gauge!("heatmesh_nodes", "status" => "connected")
            .set(self.nodes.values().filter(|n| n.connected).count() as f64);
    }

    /// Places unplaced plants where possible, and moves plants back to their preferred
    /// node once they are idle (when `placement.move_back` is on).
    pub(super) fn place_waiting(&mut self) {
        let mut ids: Vec<String> = self.plants.keys().cloned().collect();
        ids.sort();
        for id in ids {
            let Some(p) = self.plants.get(&id) else {
                continue;
            };
            if p.node.is_none() {
                self.place(&id);
            } else if self.cfg.placement.move_back
                && !p.pinned
                && p.link.is_some()
                && let Some(pref) = self.away_from_preferred(p)
                && self.plant_in_flight(&id) == 0
            {
                self.move_plant(&id, &format!("moving back to preferred node {pref}"));
            }
        }
    }

    /// Moves the plant with the most waiting work off the most loaded node onto the least
    /// loaded live node, when that node has fewer plants. Returns the moves made.
    pub(super) fn rebalance(&mut self) -> Vec<String> {
        let mut live: Vec<String> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.connected)
            .map(|(id, _)| id.clone())
            .collect();
        live.sort();
        let node_work = |st: &Self, n: &str| -> usize {
            st.plants_on(n).iter().map(|p| st.plant_work(p)).sum()
        };
        let Some(busiest) = live
            .iter()
            .max_by_key(|n| (node_work(self, n), self.plants_on(n).len(), (*n).clone()))
            .cloned()
        else {
            return Vec::new();
        };
        let Some(idlest) = live
            .iter()
            .filter(|n| **n != busiest)
            .min_by_key(|n| (self.plants_on(n).len(), node_work(self, n), (*n).clone()))
            .cloned()
        else {
            return Vec::new();
        };
        let on_busiest = self.plants_on(&busiest);
        if on_busiest.len() < 2 || self.plants_on(&idlest).len() + 1 >= on_busiest.len() {
            return Vec::new();
        }
        let Some(plant) = on_busiest
            .iter()
            .max_by_key(|p| (self.plant_work(p), (*p).clone()))
            .cloned()
        else {
            return Vec::new();
        };
        // Place on the idlest node explicitly: it may not be the plant's preferred one.
        let why = format!("rebalance: {busiest} -> {idlest}");
        let Some(p) = self.plants.get_mut(&plant) else {
            return Vec::new();
        };
        if let Some(link) = p.link.take() {
            link.stop();
        }
        let epoch = p.epoch;
        metrics::counter!("heatmesh_placement_moves_total").increment(1);
        self.orphan_in_flight(&plant, epoch, &why);
        self.place_on(&plant, &idlest);
        if let Some(p) = self.plants.get_mut(&plant) {
            p.pinned = true;
        }
        vec![format!("{plant}: {busiest} -> {idlest}")]
    }
}
