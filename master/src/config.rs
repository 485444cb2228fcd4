//! Master configuration: one TOML file (the fleet's plants included), every key overridable
//! by a `HEATMESH_` environment variable, validated at start with messages naming the key.
//!
//! Environment keys map to TOML paths with `__` between levels:
//! `HEATMESH_SCHEDULER__MAX_ATTEMPTS=5` sets `[scheduler] max_attempts = 5`.

use heatmesh_agents::{PlantSpec, RestartPolicy, registry};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;

/// The sample fleet of three plants that ships with heatmesh (the `demo` default).
pub const SAMPLE_FLEET: &str = include_str!("../../config/fleet.toml");

/// A configuration that failed to load, naming the key and the rule.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// TOML syntax or type error.
    #[error("config: {0}")]
    Parse(String),
    /// A key broke a rule.
    #[error("config key `{key}`: {rule}")]
    Invalid {
        /// Dotted key, e.g. `plants[1].agents[0]`.
        key: String,
        /// The rule.
        rule: String,
    },
}

fn invalid(key: impl Into<String>, rule: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        rule: rule.into(),
    }
}

/// Scheduling and retry settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerConfig {
    /// Failed attempts allowed per task before it fails (per-task override on submit).
    pub max_attempts: u32,
    /// First retry delay, ms; doubles per failure.
    pub retry_backoff_initial_ms: u64,
    /// Retry delay cap, ms.
    pub retry_backoff_max_ms: u64,
    /// How long a dispatched attempt may run before it counts as failed, ms.
    pub lease_ms: u64,
    /// Tasks sent ahead to one agent; the rest wait in the master's priority queue.
    pub max_in_flight_per_agent: usize,
    /// Scheduler timer period (retries, deadlines, leases), ms.
    pub tick_ms: u64,
    /// Delay before a plant whose supervisor escalated is placed again, ms.
    pub replace_backoff_ms: u64,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            max_attempts: 3,
            retry_backoff_initial_ms: 100,
            retry_backoff_max_ms: 30_000,
            lease_ms: 30_000,
            max_in_flight_per_agent: 64,
            tick_ms: 10,
            replace_backoff_ms: 500,
        }
    }
}

/// Input limits enforced before anything reaches the ledger.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest accepted task payload, bytes (encoded request).
    pub max_payload_bytes: usize,
    /// Largest idempotency key, bytes.
    pub max_idempotency_key_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_payload_bytes: 256 * 1024,
            max_idempotency_key_bytes: 256,
        }
    }
}

/// Where plants run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlacementConfig {
    /// After start, wait this long for preferred nodes before placing plants elsewhere, ms.
    pub startup_grace_ms: u64,
    /// Move a plant back to its preferred node when that node returns and the plant is idle.
    pub move_back: bool,
}

impl Default for PlacementConfig {
    fn default() -> Self {
        PlacementConfig {
            startup_grace_ms: 3_000,
            move_back: true,
        }
    }
}

/// Node membership: cookie, heartbeats, leases.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Shared secret nodes must present (prefer `cookie_file` or `HEATMESH_CLUSTER__COOKIE`).
    pub cookie: Option<String>,
    /// File holding the cookie (first line, trimmed).
    pub cookie_file: Option<PathBuf>,
    /// How often nodes send heartbeats, ms.
    pub heartbeat_interval_ms: u64,
    /// A node silent for this long is fenced and its plants re-placed, ms.
    pub lease_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            cookie: None,
            cookie_file: None,
            heartbeat_interval_ms: 200,
            lease_ms: 1_000,
        }
    }
}

impl ClusterConfig {
    /// The cookie from `cookie` or `cookie_file`; None when neither is set.
    pub fn resolve_cookie(&self) -> Result<Option<String>, ConfigError> {
        if let Some(c) = &self.cookie {
            return Ok(Some(c.clone()));
        }
        match &self.cookie_file {
            None => Ok(None),
            Some(f) => {
                let text = std::fs::read_to_string(f).map_err(|e| {
                    invalid(
                        "cluster.cookie_file",
                        format!("cannot read {}: {e}", f.display()),
                    )
                })?;
                let c = text.lines().next().unwrap_or("").trim().to_string();
                if c.is_empty() {
                    return Err(invalid(
                        "cluster.cookie_file",
                        format!("{} is empty", f.display()),
                    ));
                }
                Ok(Some(c))
            }
        }
    }
}

/// Everything the master needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// gRPC address (task API, mesh API, health, reflection).
    pub listen: SocketAddr,
    /// Metrics and health HTTP address; unset disables it.
    pub metrics_listen: Option<SocketAddr>,
    /// Ledger directory.
    pub data_dir: PathBuf,
    /// This node's id.
    pub node_id: String,
    /// Scheduling.
    pub scheduler: SchedulerConfig,
    /// Sub-agent restart policy.
    pub restart: RestartPolicy,
    /// Input limits.
    pub limits: Limits,
    /// Lets MeshService.InjectFault arm rehearsal faults (drills, tests).
    pub allow_fault_injection: bool,
    /// Plant placement.
    pub placement: PlacementConfig,
    /// Node membership.
    pub cluster: ClusterConfig,
    /// The fleet.
    pub plants: Vec<PlantSpec>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:7400".parse().expect("valid literal"),
            metrics_listen: Some("127.0.0.1:9400".parse().expect("valid literal")),
            data_dir: PathBuf::from("./heatmesh-data"),
            node_id: "master".into(),
            scheduler: SchedulerConfig::default(),
            restart: RestartPolicy::default(),
            limits: Limits::default(),
            allow_fault_injection: false,
            placement: PlacementConfig::default(),
            cluster: ClusterConfig::default(),
            plants: Vec::new(),
        }
    }
}

impl Config {
    /// Parses TOML text, applies `HEATMESH_*` variables from `env`, validates.
    pub fn from_toml_with_env(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut value: toml::Table =
            toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        for (k, v) in env {
            let Some(path) = k.strip_prefix("HEATMESH_") else {
                continue;
            };
            // Variables the CLI reads itself are not config keys.
            if matches!(path, "CONFIG" | "LOG" | "LOG_FORMAT" | "ADDR") {
                continue;
            }
            let parts: Vec<String> = path.split("__").map(|p| p.to_ascii_lowercase()).collect();
            let parsed = toml::from_str::<toml::Table>(&format!("v = {v}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or(toml::Value::String(v));
            set_path(&mut value, &parts, parsed);
        }
        let cfg: Config = toml::Value::Table(value)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses TOML text with the process environment applied.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_with_env(text, std::env::vars())
    }

    /// Checks every rule; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.plants.is_empty() {
            return Err(invalid("plants", "at least one plant is required"));
        }
        let mut ids = HashSet::new();
        for (i, p) in self.plants.iter().enumerate() {
            let key = |f: &str| format!("plants[{i}].{f}");
            if p.id.trim().is_empty() {
                return Err(invalid(key("id"), "must not be empty"));
            }
            if !ids.insert(p.id.clone()) {
                return Err(invalid(key("id"), format!("duplicate plant id {}", p.id)));
            }
            if p.agents.is_empty() {
                return Err(invalid(
                    key("agents"),
                    "at least one sub-agent kind is required",
                ));
            }
            for (j, a) in p.agents.iter().enumerate() {
                if registry::lookup(a).is_none() {
                    let known: Vec<&str> = registry::KINDS.iter().map(|k| k.id).collect();
                    return Err(invalid(
                        format!("plants[{i}].agents[{j}]"),
                        format!("unknown agent kind {a}; known: {}", known.join(", ")),
                    ));
                }
            }
            let t = p.balance_threshold_pct;
            if !t.is_finite() || !(0.0..=100.0).contains(&t) {
                return Err(invalid(
                    key("balance_threshold_pct"),
                    format!("must be within [0, 100], got {t}"),
                ));
            }
        }
        let s = &self.scheduler;
        if s.max_attempts == 0 {
            return Err(invalid("scheduler.max_attempts", "must be >= 1"));
        }
        if s.max_in_flight_per_agent == 0 {
            return Err(invalid("scheduler.max_in_flight_per_agent", "must be >= 1"));
        }
        if s.tick_ms == 0 {
            return Err(invalid("scheduler.tick_ms", "must be >= 1"));
        }
        if s.lease_ms == 0 {
            return Err(invalid("scheduler.lease_ms", "must be >= 1"));
        }
        if s.retry_backoff_initial_ms > s.retry_backoff_max_ms {
            return Err(invalid(
                "scheduler.retry_backoff_initial_ms",
                "must not exceed scheduler.retry_backoff_max_ms",
            ));
        }
        let c = &self.cluster;
        if c.heartbeat_interval_ms == 0 {
            return Err(invalid("cluster.heartbeat_interval_ms", "must be >= 1"));
        }
        if c.lease_ms <= c.heartbeat_interval_ms {
            return Err(invalid(
                "cluster.lease_ms",
                format!(
                    "must exceed cluster.heartbeat_interval_ms ({})",
                    c.heartbeat_interval_ms
                ),
            ));
        }
        if c.cookie.as_ref().is_some_and(|k| k.len() < 16) {
            return Err(invalid("cluster.cookie", "must be at least 16 characters"));
        }
        if self.restart.window_ms == 0 {
            return Err(invalid("restart.window_ms", "must be >= 1"));
        }
        if self.node_id.trim().is_empty() {
            return Err(invalid("node_id", "must not be empty"));
        }
        Ok(())
    }

    /// Normalises agent kind spellings to canonical ids.
    pub fn normalise(&mut self) {
        for p in &mut self.plants {
            for a in &mut p.agents {
                if let Some(k) = registry::lookup(a) {
                    *a = k.id.to_string();
                }
            }
        }
    }
}

fn set_path(table: &mut toml::Table, path: &[String], v: toml::Value) {
    match path {
        [] => {}
        [last] => {
            table.insert(last.clone(), v);
        }
        [first, rest @ ..] => {
            let entry = table
                .entry(first.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if let toml::Value::Table(t) = entry {
                set_path(t, rest, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env() -> Vec<(String, String)> {
        Vec::new()
    }

    #[test]
    fn sample_fleet_loads() {
        let c = Config::from_toml_with_env(SAMPLE_FLEET, no_env()).unwrap();
        assert_eq!(c.plants.len(), 3);
    }

    #[test]
    fn env_overrides_a_nested_key() {
        let env = vec![(
            "HEATMESH_SCHEDULER__MAX_ATTEMPTS".to_string(),
            "7".to_string(),
        )];
        let c = Config::from_toml_with_env(SAMPLE_FLEET, env).unwrap();
        assert_eq!(c.scheduler.max_attempts, 7);
    }

    #[test]
    fn errors_name_the_key() {
        let bad = SAMPLE_FLEET.replacen("\"GL-002\"", "\"GL-999\"", 1);
        let e = Config::from_toml_with_env(&bad, no_env())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("plants[0].agents[0]") && e.contains("unknown agent kind GL-999"),
            "{e}"
        );
        let env = vec![(
            "HEATMESH_SCHEDULER__MAX_ATTEMPTS".to_string(),
            "0".to_string(),
        )];
        let e = Config::from_toml_with_env(SAMPLE_FLEET, env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("scheduler.max_attempts"), "{e}");
        let e = Config::from_toml_with_env("bogus_key = 1", no_env())
            .unwrap_err()
            .to_string();
        assert!(e.contains("bogus_key"), "{e}");
    }
}
