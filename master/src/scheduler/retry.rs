//! Failed attempts and orphans: retry with backoff, give up when the budget is spent.
//!
//! Two budgets, so neither hides the other: `max_attempts` bounds attempts that *ended in
//! failure* (agent error, crash, lease expiry), and `scheduler.max_orphaned` bounds attempts
//! cut short because the plant or its node went away. Without the second, a flapping node
//! would re-dispatch a task forever.

use super::MasterState;
use super::lifecycle::Event;
use std::time::Duration;

/// Delay before retry `n` (1-based): `initial_ms` doubling per failure, capped at `max_ms`.
pub(super) fn backoff(initial_ms: u64, max_ms: u64, n: u32) -> Duration {
    let exp = n.saturating_sub(1).min(30);
    Duration::from_millis(initial_ms.saturating_mul(1u64 << exp).min(max_ms))
}

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
        let (initial, max) = (s.retry_backoff_initial_ms, s.retry_backoff_max_ms);
        let Some(t) = self.active.get_mut(&id) else {
            return;
        };
        t.rec.failures += 1;
        t.rec.error = Some(error.clone());
        if retryable && t.rec.failures < t.rec.max_attempts {
            let delay = backoff(initial, max, t.rec.failures);
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

#[cfg(test)]
mod tests {
    use super::backoff;
    use std::time::Duration;

    #[test]
    fn backoff_doubles_from_the_first_failure_and_stops_at_the_cap() {
        let ms = |n| backoff(100, 1_000, n);
        assert_eq!(ms(1), Duration::from_millis(100));
        assert_eq!(ms(2), Duration::from_millis(200));
        assert_eq!(ms(4), Duration::from_millis(800));
        assert_eq!(ms(5), Duration::from_millis(1_000));
        assert_eq!(ms(u32::MAX), Duration::from_millis(1_000));
    }
}
