//! heatmesh-base: the few helpers every heatmesh crate needs, written once.
//!
//! - [`now_us`]: the wall clock as unix microseconds, the time base of tasks and readings;
//! - [`Rng`]: a seeded SplitMix64 generator, so drills, benchmarks and jitter replay from
//!   their seed on any build;
//! - [`Backoff`]: exponential backoff with equal jitter, seeded per user.
//!
//! Architecture Invariant: no dependencies at all, so every crate (the pure calculation and
//! optimizer crates included) can use it without pulling in I/O or a runtime.

mod backoff;
mod rng;

pub use backoff::Backoff;
pub use rng::Rng;

/// A seed derived from a name (a node, source or plant id): stable across runs and builds.
pub fn name_seed(name: &str) -> u64 {
    name.bytes()
        .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)))
}

/// Now as unix microseconds (0 if the system clock is before 1970).
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}
