//! Exponential backoff with jitter, so the nodes of a site that lost a source together do
//! not reconnect in lockstep.

use crate::Rng;
use std::time::Duration;

/// Delays that start at `initial`, double up to `max`, each drawn uniformly from its upper
/// half ("equal jitter").
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
    rng: Rng,
}

impl Backoff {
    /// A backoff from `initial` to `max`; `seed` varies the jitter between users.
    pub fn new(initial: Duration, max: Duration, seed: u64) -> Backoff {
        Backoff {
            initial,
            max: max.max(initial),
            next: initial,
            rng: Rng::new(seed ^ 0x9E37_79B9_7F4A_7C15),
        }
    }

    /// A backoff whose jitter is seeded by a name (a node or source id), so two users with
    /// different names draw different delays and one name draws the same ones every run.
    pub fn named(initial: Duration, max: Duration, name: &str) -> Backoff {
        Backoff {
            rng: Rng::named(name),
            ..Backoff::new(initial, max, 0)
        }
    }

    /// The next delay to wait.
    pub fn next_delay(&mut self) -> Duration {
        let cap = self.next;
        self.next = (self.next * 2).min(self.max);
        jittered(cap, &mut self.rng)
    }

    /// The delay before retry `n` (1-based) of something whose retries are counted
    /// elsewhere (a task's failures, a child's restarts): `initial` doubled `n - 1` times,
    /// capped at `max`, jittered within its upper half by `seed` and `n`, so one seed draws
    /// the same delays every run.
    pub fn nth(initial: Duration, max: Duration, n: u32, seed: u64) -> Duration {
        let exp = n.saturating_sub(1).min(30);
        let cap = initial.saturating_mul(1 << exp).min(max.max(initial));
        jittered(cap, &mut Rng::new(seed ^ u64::from(n).rotate_left(32)))
    }

    /// Back to the first delay (after a success).
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// A delay drawn uniformly from the upper half of `cap` ("equal jitter").
fn jittered(cap: Duration, rng: &mut Rng) -> Duration {
    let half = cap / 2;
    half + Duration::from_nanos(rng.next_u64() % (half.as_nanos() as u64 + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_within_their_upper_half_and_reset() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(1_000), 7);
        let caps = [100, 200, 400, 800, 1_000, 1_000];
        for cap in caps {
            let d = b.next_delay();
            assert!(d >= ms(cap) / 2 && d <= ms(cap), "{d:?} for cap {cap}");
        }
        b.reset();
        assert!(b.next_delay() <= ms(100));
        let draws: Vec<Duration> = (0..3)
            .map(|s| Backoff::new(ms(100), ms(100), s).next_delay())
            .collect();
        assert!(
            draws[0] != draws[1] || draws[1] != draws[2],
            "seeds vary the jitter"
        );
    }

    #[test]
    fn nth_doubles_per_retry_within_its_upper_half_and_replays_per_seed() {
        let ms = Duration::from_millis;
        for (n, cap) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1_000),
            (40, 1_000),
        ] {
            let d = Backoff::nth(ms(100), ms(1_000), n, 9);
            assert!(d >= ms(cap) / 2 && d <= ms(cap), "{d:?} for retry {n}");
            assert_eq!(d, Backoff::nth(ms(100), ms(1_000), n, 9), "replays");
        }
        let draws: Vec<Duration> = (0..8)
            .map(|s| Backoff::nth(ms(100), ms(100), 1, s))
            .collect();
        assert!(
            draws.windows(2).any(|w| w[0] != w[1]),
            "seeds vary the jitter"
        );
    }
}
