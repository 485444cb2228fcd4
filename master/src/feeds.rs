//! The master's view of plant data feeds: what each node reports about the meters its
//! connectors read (about once a second), and the in-process node's own table.
//!
//! A node's report replaces everything it reported before, so a plant that moved away from
//! a node disappears from its entries. A report older than [`SILENT_AFTER_US`] means the node
//! itself is silent; its meters then show `unknown` rather than their last state.

use heatmesh_connect::feeds::{Health, MeterHealth};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A node's report older than this no longer vouches for its meters.
pub const SILENT_AFTER_US: i64 = 5_000_000;

/// One meter's feed as the master shows it.
#[derive(Debug, Clone)]
pub struct Feed {
    /// The node reading it.
    pub node: String,
    /// When the node took the snapshot, microseconds.
    pub reported_us: i64,
    /// `unknown` when the node's report is too old; otherwise the node's state.
    pub state: String,
    /// The rest of the node's record.
    pub health: MeterHealth,
}

/// One node's last report: per meter, when the snapshot was taken and what it held.
type Report = Vec<(i64, MeterHealth)>;

/// Feed reports by node; cheap to clone.
#[derive(Clone, Default)]
pub struct FeedBoard {
    remote: Arc<Mutex<BTreeMap<String, Report>>>,
    local: Option<(String, Health)>,
}

impl FeedBoard {
    /// A board that also shows the in-process node `node`'s table.
    pub fn with_local(node: &str, health: Health) -> FeedBoard {
        FeedBoard {
            remote: Arc::default(),
            local: Some((node.to_string(), health)),
        }
    }

    /// A node's report, replacing its previous one.
    pub fn report(&self, node: &str, meters: Report) {
        self.remote
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(node.to_string(), meters);
    }

    /// Every meter's feed (of one plant when given), sorted by plant and meter. Where two
    /// nodes report a meter (a plant that just moved), the newer report wins.
    pub fn list(&self, plant: Option<&str>, now_us: i64) -> Vec<Feed> {
        let mut out: BTreeMap<(String, String), Feed> = BTreeMap::new();
        let mut add = |node: &str, reported_us: i64, h: MeterHealth| {
            if plant.is_some_and(|p| p != h.plant) {
                return;
            }
            let silent = now_us - reported_us > SILENT_AFTER_US;
            let state = if silent {
                "unknown".to_string()
            } else {
                h.state.name().to_string()
            };
            let key = (h.plant.clone(), h.meter.clone());
            if out.get(&key).is_some_and(|f| f.reported_us >= reported_us) {
                return;
            }
            out.insert(
                key,
                Feed {
                    node: node.to_string(),
                    reported_us,
                    state,
                    health: h,
                },
            );
        };
        if let Some((node, health)) = &self.local {
            for h in health.snapshot(now_us) {
                add(node, now_us, h);
            }
        }
        for (node, meters) in self.remote.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            for (reported, h) in meters {
                add(node, *reported, h.clone());
            }
        }
        out.into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use heatmesh_connect::feeds::FeedState;

    fn health(plant: &str, meter: &str, state: FeedState) -> MeterHealth {
        MeterHealth {
            plant: plant.into(),
            meter: meter.into(),
            source: "plc".into(),
            state,
            last_value: Some(1.0),
            last_time_us: Some(0),
            last_error: None,
            errors: 0,
            poll_ms: 1_000,
            stale_after: 3,
            timestamped: false,
            changed_us: Some(0),
            disabled: false,
        }
    }

    #[test]
    fn the_newest_report_wins_and_a_silent_node_vouches_for_nothing() {
        let b = FeedBoard::default();
        let now = 100_000_000;
        b.report(
            "node-1",
            vec![(now - 10_000_000, health("P1", "gas", FeedState::Ok))],
        );
        b.report(
            "node-2",
            vec![(now - 500_000, health("P1", "gas", FeedState::Down))],
        );
        b.report(
            "node-3",
            vec![(now - 6_000_000, health("P2", "oil", FeedState::Ok))],
        );
        let all = b.list(None, now);
        let rows: Vec<(&str, &str, &str)> = all
            .iter()
            .map(|f| (f.health.meter.as_str(), f.node.as_str(), f.state.as_str()))
            .collect();
        assert_eq!(
            rows,
            [("gas", "node-2", "down"), ("oil", "node-3", "unknown")]
        );
        assert_eq!(b.list(Some("P2"), now).len(), 1);
        // A node's new report replaces its old one: the plant moved away from node-2.
        b.report("node-2", Vec::new());
        let f = b.list(Some("P1"), now);
        assert_eq!(
            (f[0].node.as_str(), f[0].state.as_str()),
            ("node-1", "unknown")
        );
    }
}
