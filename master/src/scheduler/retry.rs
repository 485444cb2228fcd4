//! Failed attempts and orphans: retry with backoff, give up when the budget is spent.
//!
//! Two budgets, so neither hides the other: `max_attempts` bounds attempts that *ended in
//! failure* (agent error, crash, lease expiry), and `scheduler.max_orphaned` bounds attempts
//! cut short because the plant or its node went away. Without the second, a flapping node
//! would re-dispatch a task forever.

use super::MasterState;
use super::lifecycle::Event;
use heatmesh_base::Backoff;
use std::time::Duration;

impl MasterState {
    /// Marks a task orphaned and, when its plant is still in the fleet and the task has not
    /// been orphaned more than `scheduler.max_orphaned` times, re-queues it at once.
    pub(super) fn orphan(&mut self, id: u64, reason: String) {
        let Some(t) = self.active.get_mut(&id) else {
            return;
        };
        t.orphaned += 1;
        let times = t.orphaned;
        let known = self.plants.contains_key(&t.rec.plant_id);
        if self.transition(id, Event::Orphan, reason, None).is_none() {
            return;
        }
        metrics::counter!("heatmesh_tasks_orphaned_total").increment(1);
        if !known {
            return;
        }
        let cap = self.cfg.scheduler.max_orphaned;
        if times > cap {
            let why = format!(
                "orphaned {times} times, more than scheduler.max_orphaned = {cap}: its plant keeps going away"
            );
            if let Some(t) = self.active.get_mut(&id) {
                t.rec.error = Some(why.clone());
            }
            self.transition(id, Event::GiveUp, why, None);
            return;
        }
        let detail = format!("re-queued after orphaning ({times} of {cap} allowed)");
        if self.transition(id, Event::Requeue, detail, None).is_some() {
            self.enqueue(id);
            metrics::counter!("heatmesh_tasks_recovered_total").increment(1);
        }
    }

    /// The current attempt failed: retry after a backoff while the budget lasts.
    pub(super) fn attempt_failed(&mut self, id: u64, error: String, retryable: bool) {
        let s = &self.cfg.scheduler;
        let initial = Duration::from_millis(s.retry_backoff_initial_ms);
        let max = Duration::from_millis(s.retry_backoff_max_ms);
        let Some(t) = self.active.get_mut(&id) else {
            return;
        };
        t.rec.failures += 1;
        t.rec.error = Some(error.clone());
        if retryable && t.rec.failures < t.rec.max_attempts {
            // Jittered per task, so tasks that failed together do not all come back together.
            let delay = Backoff::nth(initial, max, t.rec.failures, id);
            let detail = format!(
                "attempt {} failed ({}/{} failures): {error}; retry in {} ms",
                t.rec.attempt,
                t.rec.failures,
                t.rec.max_attempts,
                delay.as_millis()
            );
            if self.transition(id, Event::Retry, detail, None).is_some() {
                self.delayed.insert((self.now + delay, id));
            }
        } else {
            let detail = if retryable {
                format!(
                    "attempt {} failed, no attempts left: {error}",
                    t.rec.attempt
                )
            } else {
                format!("attempt {} failed, not retryable: {error}", t.rec.attempt)
            };
            self.transition(id, Event::GiveUp, detail, None);
        }
    }
}
