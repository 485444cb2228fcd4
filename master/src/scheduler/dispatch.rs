//! Dispatch: queues per (plant, agent kind) in priority order, sending while the agent has
//! room, and the reports that come back from plants.

use super::lifecycle::Event;
use super::token::{self, DispatchToken, Verdict};
use super::{MasterState, QueueKey};
use crate::task::Status;
use heatmesh_agents::{Assignment, Outcome, PlantEvent};
use heatmesh_mesh::NodeSession;
use std::cmp::Reverse;
use std::time::Duration;

/// Whether `json` is a result of agent kind `kind` (an unknown kind has no result to be).
fn check_result(kind: &str, json: &[u8]) -> Result<(), String> {
    let k =
        heatmesh_agents::registry::lookup(kind).ok_or_else(|| format!("no agent kind {kind}"))?;
    (k.check_result)(json).map_err(|e| e.to_string())
}

impl MasterState {
    /// Puts a task in its queue (it is dispatched once durable, pending and at the front).
    pub(super) fn enqueue(&mut self, id: u64) {
        if let Some(t) = self.active.get(&id) {
            let key = Self::queue_key(&t.rec);
            let prio = t.rec.priority;
            self.ready.entry(key).or_default().push(Reverse((prio, id)));
        }
    }

    /// Dispatches from a queue while its agent has room.
    pub(super) fn pump(&mut self, key: &QueueKey) {
        if self.paused {
            return;
        }
        let Some(plant) = self.plants.get(&key.0) else {
            return;
        };
        let (Some(link), Some(session)) = (plant.link.clone(), plant.session.clone()) else {
            return;
        };
        let (epoch, node) = (plant.epoch, plant.node.clone().unwrap_or_default());
        let lease = Duration::from_millis(self.cfg.scheduler.lease_ms);
        let max = self.cfg.scheduler.max_in_flight_per_agent;
        loop {
            if self.in_flight.get(key).copied().unwrap_or(0) >= max {
                return;
            }
            let Some(Reverse((_, id))) = self.ready.get_mut(key).and_then(|h| h.pop()) else {
                return;
            };
            let Some(t) = self.active.get_mut(&id) else {
                continue;
            };
            if t.rec.status != Status::Pending || !t.durable {
                continue;
            }
            t.rec.attempt += 1;
            t.rec.epoch = epoch;
            t.rec.node = node.clone();
            t.rec.agent = format!("{}/{}", key.0, key.1);
            let a = Assignment {
                task_id: id,
                attempt: t.rec.attempt,
                epoch,
                kind: key.1.clone(),
                payload: t.payload.clone(),
            };
            let detail = format!(
                "attempt {} to {} (epoch {epoch}) on {node}",
                a.attempt, t.rec.agent
            );
            if self.transition(id, Event::Dispatch, detail, None).is_none() {
                continue;
            }
            if let Some(t) = self.active.get_mut(&id) {
                t.token = Some(DispatchToken {
                    attempt: a.attempt,
                    epoch,
                    session: session.clone(),
                });
            }
            *self.in_flight.entry(key.clone()).or_insert(0) += 1;
            self.leases.insert((self.now + lease, id, a.attempt));
            if let Err(e) = link.dispatch(a) {
                // The plant is unreachable (its node is gone or fenced): stop feeding it, or
                // the re-queued task would be popped and fail again right here. Its in-flight
                // tasks are orphaned and it is placed again once its node's loss is known.
                let reason = format!("dispatch to {} failed: {e}", key.0);
                self.orphan(id, reason.clone());
                let delay = Duration::from_millis(self.cfg.scheduler.replace_backoff_ms);
                self.on_plant_down(key.0.clone(), epoch, reason, delay);
                return;
            }
        }
    }

    /// Pumps every queue that has work.
    pub(super) fn pump_all(&mut self) {
        let keys: Vec<QueueKey> = self
            .ready
            .iter()
            .filter(|(_, h)| !h.is_empty())
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            self.pump(&k);
        }
    }

    /// A plant's report, judged against what the master holds before it changes anything.
    pub(super) fn on_plant_event(&mut self, from: NodeSession, ev: PlantEvent) {
        match ev {
            PlantEvent::TaskDone {
                task_id,
                attempt,
                epoch,
                agent,
                outcome,
                ..
            } => self.on_task_done(&from, task_id, attempt, epoch, agent, outcome),
            PlantEvent::AgentChanged {
                plant,
                kind,
                status,
                restarts,
                epoch,
            } => {
                if self.plant_verdict(&plant, epoch, &from, "agent status") == Verdict::Current {
                    self.agent_changed(plant, kind, status, restarts, epoch);
                }
            }
            PlantEvent::PlantDown {
                plant,
                epoch,
                reason,
            } => {
                if self.plant_verdict(&plant, epoch, &from, "plant down") == Verdict::Current {
                    let delay = Duration::from_millis(self.cfg.scheduler.replace_backoff_ms);
                    self.on_plant_down(plant, epoch, reason, delay);
                }
            }
        }
    }

    /// Judges a plant-level report; a foreign one is logged with both nodes and counted.
    fn plant_verdict(&self, plant: &str, epoch: u64, from: &NodeSession, what: &str) -> Verdict {
        let held = self
            .plants
            .get(plant)
            .and_then(|p| p.session.as_ref().map(|s| (p.epoch, s)));
        let v = token::judge_plant(held, epoch, from);
        if v == Verdict::Foreign {
            let holder = held.map(|(_, s)| s.node.as_str()).unwrap_or("");
            metrics::counter!("heatmesh_foreign_reports_total").increment(1);
            tracing::warn!(%plant, epoch, from = %from.node, holder, "{what} report rejected: plant is not placed on the reporting node");
        }
        v
    }

    fn on_task_done(
        &mut self,
        from: &NodeSession,
        task_id: u64,
        attempt: u32,
        epoch: u64,
        agent: String,
        outcome: Outcome,
    ) {
        let held = self.active.get(&task_id).and_then(|t| t.token.as_ref());
        let verdict = token::judge(held, attempt, epoch, from);
        #[cfg(feature = "planted-bugs")]
        let verdict = if self.planted.accept_stale_results
            && self
                .active
                .get(&task_id)
                .is_some_and(|t| !t.rec.status.is_terminal())
        {
            Verdict::Current
        } else {
            verdict
        };
        match verdict {
            Verdict::Current => {}
            Verdict::Stale => {
                metrics::counter!("heatmesh_stale_results_total").increment(1);
                tracing::debug!(task_id, attempt, epoch, "stale result rejected");
                return;
            }
            Verdict::Foreign => {
                let holder = held.map(|h| h.session.node.clone()).unwrap_or_default();
                metrics::counter!("heatmesh_foreign_reports_total").increment(1);
                tracing::warn!(task_id, attempt, epoch, from = %from.node, %holder, "result rejected: the task is not dispatched to the reporting node");
                return;
            }
        }
        let Some(key) = self.active.get(&task_id).map(|t| Self::queue_key(&t.rec)) else {
            return;
        };
        match outcome {
            Outcome::Completed(json) if let Err(e) = check_result(&key.1, &json) => {
                // Whoever sent it holds the dispatch, but the bytes are not this kind's
                // result: never stored as one. The attempt counts as failed.
                metrics::counter!("heatmesh_results_refused_total").increment(1);
                tracing::warn!(task_id, attempt, from = %from.node, "result refused: {e}");
                self.attempt_failed(task_id, format!("result refused: {e}"), true);
            }
            Outcome::Completed(json) => {
                if let Some(t) = self.active.get_mut(&task_id) {
                    t.rec.result = Some(String::from_utf8_lossy(&json).into_owned());
                    t.rec.error = None;
                }
                if let Some(a) = self.agents.get_mut(&key) {
                    a.completed += 1;
                }
                self.transition_by(
                    task_id,
                    Event::Complete,
                    format!("completed by {agent}"),
                    None,
                    Some((attempt, epoch)),
                );
            }
            Outcome::Failed { error, retryable } => self.attempt_failed(task_id, error, retryable),
            Outcome::Orphaned { reason } => self.orphan(task_id, reason),
        }
        self.pump(&key);
    }
}
