//! Helpers shared by the connector tests.
#![allow(dead_code)]

use heatmesh_connect::feeds::{FeedState, Health};
use std::time::Duration;

/// Polls `ok` every 10 ms; fails the test after 15 s.
pub async fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A meter's state now.
pub fn state(h: &Health, meter: &str) -> FeedState {
    h.snapshot(heatmesh_connect::now_us())
        .into_iter()
        .find(|m| m.meter == meter)
        .map(|m| m.state)
        .unwrap()
}
