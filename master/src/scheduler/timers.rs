//! The scheduler's timer: retry backoffs that ended, deadlines, dispatch leases, gauges.

use super::MasterState;
use super::lifecycle::Event;
use crate::task::Status;

impl MasterState {
    /// Runs everything due at the clock set for this message.
    pub(super) fn tick(&mut self) {
        let now = self.now;
        while let Some(&(at, id)) = self.delayed.first() {
            if at > now {
                break;
            }
            self.delayed.pop_first();
            self.enqueue(id);
        }
        let wall = self.wall_us;
        while let Some(&(at, id)) = self.deadlines.first() {
            if at > wall {
                break;
            }
            self.deadlines.pop_first();
            if let Some(t) = self
                .active
                .get_mut(&id)
                .filter(|t| !t.rec.status.is_terminal())
            {
                let late_ms = wall.saturating_sub(t.rec.created_us) / 1000;
                t.rec.error = Some(format!(
                    "DEADLINE_EXCEEDED: not completed within {late_ms} ms of acceptance"
                ));
                self.transition(id, Event::Expire, "deadline exceeded".into(), None);
            }
        }
        while let Some(&(at, id, attempt)) = self.leases.first() {
            if at > now {
                break;
            }
            self.leases.pop_first();
            let expired = self
                .active
                .get(&id)
                .is_some_and(|t| t.rec.status == Status::Dispatched && t.rec.attempt == attempt);
            if expired {
                let ms = self.cfg.scheduler.lease_ms;
                self.attempt_failed(id, format!("lease expired: no result within {ms} ms"), true);
            }
        }
        self.rewrite_failed();
        self.place_waiting();
        self.pump_all();
        for s in [Status::Pending, Status::Dispatched, Status::Orphaned] {
            metrics::gauge!("heatmesh_tasks", "state" => s.as_str()).set(self.counts.get(s) as f64);
        }
        let depth: usize = self.ready.values().map(|h| h.len()).sum::<usize>() + self.delayed.len();
        metrics::gauge!("heatmesh_queue_depth").set(depth as f64);
    }
}
