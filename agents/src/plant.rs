//! The plant supervisor: owns a plant's sub-agents, restarts them by policy, escalates.
//!
//! It remembers which assignments each sub-agent holds, so when one dies nothing is lost:
//! the task it was running is reported failed (retryable) and the ones still queued in its
//! mailbox are reported orphaned. Restart intensity beyond the policy fails the supervisor
//! itself, which its parent (the node agent) reports as `PlantDown`.

use crate::actor::{SubAgent, SubAgentArgs, SubAgentMsg};
use crate::fault::FaultTable;
use crate::messages::{AgentStatus, Assignment, EventSink, Outcome, PlantEvent};
use crate::plant_spec::PlantSpec;
use crate::registry;
use crate::supervision::{RestartPolicy, RestartTracker, Verdict};
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent};
use std::collections::{HashMap, VecDeque};
use std::time::Instant;

/// Messages a plant supervisor accepts.
#[derive(Debug)]
pub enum PlantMsg {
    /// Run a task on the sub-agent of its kind.
    Run(Assignment),
    /// A sub-agent finished a task.
    Done {
        /// Kind of the reporting agent.
        kind: String,
        /// Task id.
        task_id: u64,
        /// Attempt.
        attempt: u32,
        /// Epoch.
        epoch: u64,
        /// Outcome.
        outcome: Outcome,
    },
    /// Timer: restart the agent of this kind.
    Restart(String),
}

/// Start-up arguments of a plant supervisor.
pub struct PlantArgs {
    /// The plant.
    pub spec: PlantSpec,
    /// Placement epoch; assignments of any other epoch are refused.
    pub epoch: u64,
    /// Where reports go.
    pub sink: EventSink,
    /// Restart policy for the sub-agents.
    pub policy: RestartPolicy,
    /// Rehearsal faults.
    pub faults: FaultTable,
}

struct Slot {
    kind: &'static registry::AgentKind,
    actor: Option<ActorRef<SubAgentMsg>>,
    /// Assignments sent to the actor and not yet reported, oldest (running) first.
    outstanding: VecDeque<Assignment>,
    /// Assignments that arrived while the agent was restarting.
    parked: Vec<Assignment>,
    restarts: RestartTracker,
}

/// Supervisor state.
pub struct PlantState {
    args: PlantArgs,
    slots: HashMap<String, Slot>,
}

impl PlantState {
    fn agent_name(&self, kind: &str) -> String {
        format!("{}/{}", self.args.spec.id, kind)
    }

    fn report(&self, kind: &str, a: &Assignment, outcome: Outcome) {
        (self.args.sink)(PlantEvent::TaskDone {
            plant: self.args.spec.id.clone(),
            task_id: a.task_id,
            attempt: a.attempt,
            epoch: a.epoch,
            agent: self.agent_name(kind),
            outcome,
        });
    }

    fn status(&self, kind: &str, status: AgentStatus) {
        let restarts = self.slots.get(kind).map_or(0, |s| s.restarts.total);
        (self.args.sink)(PlantEvent::AgentChanged {
            plant: self.args.spec.id.clone(),
            kind: kind.to_string(),
            status,
            restarts,
            epoch: self.args.epoch,
        });
    }
}

/// The plant supervisor actor.
pub struct PlantSupervisor;

async fn start_agent(
    myself: &ActorRef<PlantMsg>,
    st: &PlantState,
    kind: &'static registry::AgentKind,
) -> Result<ActorRef<SubAgentMsg>, ActorProcessingErr> {
    let (actor, _) = Actor::spawn_linked(
        None,
        SubAgent,
        SubAgentArgs {
            kind,
            plant: st.args.spec.id.clone(),
            supervisor: myself.clone(),
            faults: st.args.faults.clone(),
        },
        myself.get_cell(),
    )
    .await?;
    ractor::pg::join(
        format!("heatmesh/{}/{}", st.args.spec.id, kind.id),
        vec![actor.get_cell()],
    );
    Ok(actor)
}

impl Actor for PlantSupervisor {
    type Msg = PlantMsg;
    type State = PlantState;
    type Arguments = PlantArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<PlantMsg>,
        args: PlantArgs,
    ) -> Result<PlantState, ActorProcessingErr> {
        let mut st = PlantState {
            args,
            slots: HashMap::new(),
        };
        for k in st.args.spec.agents.clone() {
            let kind = registry::lookup(&k)
                .ok_or_else(|| format!("plant {}: unknown agent kind {k}", st.args.spec.id))?;
            let actor = start_agent(&myself, &st, kind).await?;
            st.slots.insert(
                kind.id.to_string(),
                Slot {
                    kind,
                    actor: Some(actor),
                    outstanding: VecDeque::new(),
                    parked: Vec::new(),
                    restarts: RestartTracker::seeded(heatmesh_base::name_seed(&format!(
                        "{}/{}",
                        st.args.spec.id, kind.id
                    ))),
                },
            );
        }
        for kind in st.slots.keys() {
            st.status(kind, AgentStatus::Running);
        }
        Ok(st)
    }

    async fn handle(
        &self,
        myself: ActorRef<PlantMsg>,
        msg: PlantMsg,
        st: &mut PlantState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            PlantMsg::Run(a) => {
                if a.epoch != st.args.epoch {
                    let reason = format!(
                        "plant {} is at epoch {}, assignment carries {}",
                        st.args.spec.id, st.args.epoch, a.epoch
                    );
                    st.report(&a.kind, &a, Outcome::Orphaned { reason });
                    return Ok(());
                }
                let Some(slot) = st.slots.get_mut(&a.kind) else {
                    let error = format!("plant {} runs no {} agent", st.args.spec.id, a.kind);
                    st.report(
                        &a.kind.clone(),
                        &a,
                        Outcome::Failed {
                            error,
                            retryable: false,
                        },
                    );
                    return Ok(());
                };
                match &slot.actor {
                    Some(actor) => {
                        slot.outstanding.push_back(a.clone());
                        if actor.cast(SubAgentMsg::Run(a)).is_err() {
                            // The agent is dying; its failure event re-reports outstanding work.
                        }
                    }
                    None => slot.parked.push(a),
                }
            }
            PlantMsg::Done {
                kind,
                task_id,
                attempt,
                epoch,
                outcome,
            } => {
                let Some(slot) = st.slots.get_mut(&kind) else {
                    return Ok(());
                };
                let pos = slot
                    .outstanding
                    .iter()
                    .position(|a| a.task_id == task_id && a.attempt == attempt);
                if let Some(pos) = pos {
                    let a = slot.outstanding.remove(pos).expect("position is in range");
                    debug_assert_eq!(a.epoch, epoch);
                    st.report(&kind, &a, outcome);
                }
            }
            PlantMsg::Restart(kind) => {
                let Some(k) = st.slots.get(&kind).map(|s| s.kind) else {
                    return Ok(());
                };
                let actor = start_agent(&myself, st, k).await?;
                let slot = st.slots.get_mut(&kind).expect("slot exists");
                for a in slot.parked.drain(..) {
                    slot.outstanding.push_back(a.clone());
                    let _ = actor.cast(SubAgentMsg::Run(a));
                }
                slot.actor = Some(actor);
                st.status(&kind, AgentStatus::Running);
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<PlantMsg>,
        _st: &mut PlantState,
    ) -> Result<(), ActorProcessingErr> {
        myself.stop_children(Some("plant supervisor stopped".into()));
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<PlantMsg>,
        evt: SupervisionEvent,
        st: &mut PlantState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, why): (ActorCell, String) = match evt {
            SupervisionEvent::ActorFailed(cell, err) => (cell, format!("panicked: {err}")),
            SupervisionEvent::ActorTerminated(cell, _, reason) => (
                cell,
                format!("stopped: {}", reason.unwrap_or_else(|| "no reason".into())),
            ),
            _ => return Ok(()),
        };
        let Some(kind) = st
            .slots
            .iter()
            .find(|(_, s)| {
                s.actor
                    .as_ref()
                    .is_some_and(|a| a.get_id() == cell.get_id())
            })
            .map(|(k, _)| k.clone())
        else {
            return Ok(());
        };
        let slot = st.slots.get_mut(&kind).expect("found above");
        slot.actor = None;
        let lost: Vec<Assignment> = slot.outstanding.drain(..).collect();
        let verdict = slot.restarts.on_failure(&st.args.policy, Instant::now());
        metrics::counter!("heatmesh_agent_restarts_total", "plant" => st.args.spec.id.clone(), "kind" => kind.clone()).increment(1);
        tracing::warn!(plant = %st.args.spec.id, kind = %kind, lost = lost.len(), "agent {why}");
        let name = st.agent_name(&kind);
        for (i, a) in lost.iter().enumerate() {
            let outcome = if i == 0 {
                Outcome::Failed {
                    error: format!("agent {name} {why}"),
                    retryable: true,
                }
            } else {
                Outcome::Orphaned {
                    reason: format!("agent {name} died before running it"),
                }
            };
            st.report(&kind, a, outcome);
        }
        match verdict {
            Verdict::Restart(delay) => {
                st.status(&kind, AgentStatus::Restarting);
                let k = kind.clone();
                myself.send_after(delay, move || PlantMsg::Restart(k));
                Ok(())
            }
            Verdict::Escalate => {
                st.status(&kind, AgentStatus::Failed);
                let parked: Vec<Assignment> = st
                    .slots
                    .values_mut()
                    .flat_map(|s| {
                        s.parked
                            .drain(..)
                            .chain(s.outstanding.drain(..))
                            .collect::<Vec<_>>()
                    })
                    .collect();
                for a in &parked {
                    st.report(
                        &a.kind.clone(),
                        a,
                        Outcome::Orphaned {
                            reason: format!("plant {} supervisor escalated", st.args.spec.id),
                        },
                    );
                }
                myself.stop_children(Some("plant supervisor escalated".into()));
                Err(format!(
                    "agent {name} exceeded {} restarts in {} ms",
                    st.args.policy.max_restarts, st.args.policy.window_ms
                )
                .into())
            }
        }
    }
}
