//! The OTP-style restart policy: ractor has none of its own.

use heatmesh_base::Backoff;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Restart a crashed child with exponential backoff; more than `max_restarts` within
/// `window` escalates to the parent.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RestartPolicy {
    /// Restarts tolerated inside `window` before escalating.
    pub max_restarts: u32,
    /// The sliding window, milliseconds.
    pub window_ms: u64,
    /// Delay before the first restart, milliseconds; doubles with each restart in the window.
    pub backoff_initial_ms: u64,
    /// Upper bound of the restart delay, milliseconds.
    pub backoff_max_ms: u64,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            max_restarts: 5,
            window_ms: 10_000,
            backoff_initial_ms: 10,
            backoff_max_ms: 2_000,
        }
    }
}

/// What to do after a child failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Restart it after this delay.
    Restart(Duration),
    /// Too many restarts: give up and fail the parent.
    Escalate,
}

/// Sliding-window restart bookkeeping for one child.
#[derive(Debug, Clone, Default)]
pub struct RestartTracker {
    recent: VecDeque<Instant>,
    /// Restarts since the child was first started.
    pub total: u32,
    seed: u64,
}

impl RestartTracker {
    /// A tracker whose restart delays are jittered by `seed` (e.g. the child's name), so
    /// children that crash together do not restart in lockstep.
    pub fn seeded(seed: u64) -> RestartTracker {
        RestartTracker {
            seed,
            ..RestartTracker::default()
        }
    }

    /// Records a failure at `now` and decides.
    pub fn on_failure(&mut self, policy: &RestartPolicy, now: Instant) -> Verdict {
        let window = Duration::from_millis(policy.window_ms);
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
        if self.recent.len() as u32 > policy.max_restarts {
            return Verdict::Escalate;
        }
        self.total += 1;
        Verdict::Restart(Backoff::nth(
            Duration::from_millis(policy.backoff_initial_ms),
            Duration::from_millis(policy.backoff_max_ms),
            self.recent.len() as u32,
            self.seed,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backs_off_then_escalates() {
        let p = RestartPolicy {
            max_restarts: 3,
            window_ms: 1000,
            backoff_initial_ms: 10,
            backoff_max_ms: 25,
        };
        let mut t = RestartTracker::seeded(1);
        let now = Instant::now();
        let ms = Duration::from_millis;
        // Each delay lies in the upper half of 10, 20, then the 25 ms cap.
        for cap in [10, 20, 25] {
            match t.on_failure(&p, now) {
                Verdict::Restart(d) => assert!(d >= ms(cap) / 2 && d <= ms(cap), "{d:?} for {cap}"),
                v => panic!("{v:?} before the limit"),
            }
        }
        assert_eq!(t.on_failure(&p, now), Verdict::Escalate);
        // Outside the window the count starts again.
        let later = now + Duration::from_millis(1500);
        match t.on_failure(&p, later) {
            Verdict::Restart(d) => assert!(d >= ms(5) && d <= ms(10), "{d:?}"),
            v => panic!("{v:?} after the window"),
        }
        assert_eq!(t.total, 4);
    }
}
