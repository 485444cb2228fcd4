//! Exponential backoff with jitter, so the nodes of a site that lost a source together do
//! not reconnect in lockstep.

use std::time::Duration;

/// Delays that start at `initial`, double up to `max`, each drawn uniformly from its upper
/// half ("equal jitter").
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
    state: u64,
}

impl Backoff {
    /// A backoff from `initial` to `max`; `seed` varies the jitter between users.
    pub fn new(initial: Duration, max: Duration, seed: u64) -> Backoff {
        Backoff {
            initial,
            max: max.max(initial),
            next: initial,
            state: seed ^ 0x9E37_79B9_7F4A_7C15,
        }
    }

    /// A backoff whose jitter is seeded by a name (a node or source id), so two users with
    /// different names draw different delays and one name draws the same ones every run.
    pub fn named(initial: Duration, max: Duration, name: &str) -> Backoff {
        let seed = name
            .bytes()
            .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
        Backoff::new(initial, max, seed)
    }

    /// The next delay to wait.
    pub fn next_delay(&mut self) -> Duration {
        // SplitMix64 step: enough randomness for jitter, and deterministic per seed.
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let cap = self.next;
        self.next = (self.next * 2).min(self.max);
        let half = cap / 2;
        half + Duration::from_nanos(z % (half.as_nanos() as u64 + 1))
    }

    /// Back to the first delay (after a success).
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
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
}
