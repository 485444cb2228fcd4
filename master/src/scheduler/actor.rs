//! The ractor shell around [`MasterState`]: sets the clock, routes each message to its
//! handler, and carries out the effects the handler left.

use super::{Effect, MasterArgs, MasterMsg, MasterState, mailbox, placed_sink};
use crate::task::now_us;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::time::{Duration, Instant};

/// The GL-001 master actor.
pub struct Master;

impl Actor for Master {
    type Msg = MasterMsg;
    type State = MasterState;
    type Arguments = MasterArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<MasterMsg>,
        args: MasterArgs,
    ) -> Result<MasterState, ActorProcessingErr> {
        let mut st = MasterState::start(args, Some(mailbox(&myself)), Instant::now(), now_us())?;
        carry_out(&myself, &mut st);
        myself.send_interval(Duration::from_millis(st.cfg.scheduler.tick_ms), || {
            MasterMsg::Tick
        });
        Ok(st)
    }

    async fn handle(
        &self,
        myself: ActorRef<MasterMsg>,
        msg: MasterMsg,
        st: &mut MasterState,
    ) -> Result<(), ActorProcessingErr> {
        st.set_clock(Instant::now(), now_us());
        st.handle(msg);
        carry_out(&myself, st);
        Ok(())
    }
}

impl MasterState {
    /// Routes one message to its handler.
    pub fn handle(&mut self, msg: MasterMsg) {
        match msg {
            MasterMsg::Submit(t, reply) => self.submit(t, reply),
            MasterMsg::Durable(id, r) => self.on_durable(id, r),
            MasterMsg::Plant(from, ev) => self.on_plant_event(from, ev),
            MasterMsg::Placed {
                plant,
                epoch,
                result,
            } => self.placed(plant, epoch, result),
            MasterMsg::Replace(plant) => self.replace(plant),
            MasterMsg::NodeJoined {
                link,
                node_epoch,
                preferred,
                running,
            } => self.on_node_joined(link, node_epoch, preferred, running),
            MasterMsg::NodeLost {
                node_id,
                node_epoch,
                reason,
            } => self.on_node_lost(node_id, node_epoch, reason),
            MasterMsg::Rebalance(reply) => {
                let _ = reply.send(Ok(self.rebalance()));
            }
            MasterMsg::Cancel(id, reason, reply) => self.cancel(id, reason, reply),
            MasterMsg::RetryFailed(plant, kind, reply) => {
                let _ = reply.send(self.retry_failed(plant, kind));
            }
            MasterMsg::ClearOrphaned(older, reply) => {
                let _ = reply.send(Ok(self.clear_orphaned(older)));
            }
            MasterMsg::Snapshot(reply) => {
                let _ = reply.send(self.snapshot());
            }
            MasterMsg::SetPaused(p) => self.set_paused(p),
            MasterMsg::InjectFault(plant, kind, fault, reply) => {
                let _ = reply.send(self.inject_fault(&plant, &kind, fault));
            }
            MasterMsg::SetFeed {
                plant,
                meter,
                switch,
                reply,
            } => self.set_feed(plant, meter, switch, reply),
            MasterMsg::Retired(id, seq) => self.retire(id, seq),
            MasterMsg::WriteFailed(w) => self.rewrites.push(w),
            MasterMsg::Tick => self.tick(),
            MasterMsg::Sweep => self.sweep(),
            MasterMsg::Swept { more, restore } => self.swept(more, restore),
        }
    }
}

/// Carries out what the handlers left: timers become delayed messages, plant starts run
/// as tasks whose answer comes back as [`MasterMsg::Placed`].
fn carry_out(myself: &ActorRef<MasterMsg>, st: &mut MasterState) {
    for fx in st.take_effects() {
        match fx {
            Effect::After(delay, msg) => {
                myself.send_after(delay, move || msg);
            }
            Effect::Spawn {
                node,
                spec,
                epoch,
                session,
            } => {
                let master = myself.clone();
                let sink = placed_sink(myself, session);
                tokio::spawn(async move {
                    let plant = spec.id.clone();
                    let result = node
                        .spawn_plant(spec, epoch, sink)
                        .await
                        .map_err(|e| e.to_string());
                    let _ = master.cast(MasterMsg::Placed {
                        plant,
                        epoch,
                        result,
                    });
                });
            }
        }
    }
}
