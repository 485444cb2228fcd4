//! The thin actor that serves one agent kind inside one plant.
//!
//! It runs one task at a time from its mailbox; the calculation itself is the registered
//! kind's pure function. A panic here is caught by ractor and handled by the plant supervisor.

use crate::fault::{FaultTable, Injected};
use crate::messages::{Assignment, Outcome};
use crate::plant::PlantMsg;
use crate::registry::AgentKind;
use ractor::{Actor, ActorProcessingErr, ActorRef};

/// Messages a sub-agent accepts.
#[derive(Debug)]
pub enum SubAgentMsg {
    /// Run one task and report to the supervisor.
    Run(Assignment),
}

/// Start-up arguments of a sub-agent.
pub struct SubAgentArgs {
    /// The kind it serves.
    pub kind: &'static AgentKind,
    /// Its plant id.
    pub plant: String,
    /// Its supervisor, which receives every outcome.
    pub supervisor: ActorRef<PlantMsg>,
    /// Armed rehearsal faults.
    pub faults: FaultTable,
}

/// The sub-agent actor.
pub struct SubAgent;

impl Actor for SubAgent {
    type Msg = SubAgentMsg;
    type State = SubAgentArgs;
    type Arguments = SubAgentArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: SubAgentArgs,
    ) -> Result<SubAgentArgs, ActorProcessingErr> {
        Ok(args)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: SubAgentMsg,
        st: &mut SubAgentArgs,
    ) -> Result<(), ActorProcessingErr> {
        let SubAgentMsg::Run(a) = msg;
        match st.faults.take(&st.plant, st.kind.id) {
            Injected::Panic => panic!(
                "injected fault: {} agent of {} panics on task {}",
                st.kind.id, st.plant, a.task_id
            ),
            Injected::Run(d) if !d.is_zero() => tokio::time::sleep(d).await,
            Injected::Run(_) => {}
        }
        let outcome = match (st.kind.run_json)(&a.payload) {
            Ok(json) => Outcome::Completed(json),
            Err(e) => Outcome::Failed {
                error: e.to_string(),
                retryable: false,
            },
        };
        st.supervisor.cast(PlantMsg::Done {
            kind: a.kind.clone(),
            task_id: a.task_id,
            attempt: a.attempt,
            epoch: a.epoch,
            outcome,
        })?;
        Ok(())
    }
}
