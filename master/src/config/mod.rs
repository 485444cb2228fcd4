//! Master configuration: one TOML file (the fleet's plants included), every key overridable
//! by a `HEATMESH_` environment variable, validated at start with messages naming the key.
//!
//! Environment keys map to TOML paths with `__` between levels:
//! `HEATMESH_SCHEDULER__MAX_ATTEMPTS=5` sets `[scheduler] max_attempts = 5`.

use crate::optimize::{FieldError, Link, Options, Plant, Scenario, Unit};
use heatmesh_agents::{PlantSpec, RestartPolicy, registry};
use heatmesh_ingest::PlantFeeds;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;

mod span;
pub use span::Span;

/// The sample fleet of three plants that ships with heatmesh (the `demo` default).
pub const SAMPLE_FLEET: &str = include_str!("../../../config/fleet.toml");

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
    /// Attempts per task that may end in failure (agent error, crash, lease expiry) before
    /// it fails for good (per-task override on submit). Attempts cut short because the
    /// plant or its node went away count against `max_orphaned` instead.
    pub max_attempts: u32,
    /// Times a task may be orphaned (its agent, plant or node lost while it was there) and
    /// re-queued; one more and it fails, its journal saying why. Tasks queued behind an
    /// agent in a crash loop are orphaned at each crash, so this sits well above the
    /// restart intensity. Counted while the master
    /// runs: a restart re-queues everything and starts the count afresh.
    pub max_orphaned: u32,
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
            max_orphaned: 25,
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
    /// Commits waiting for the ledger's log beyond which new submits are refused with
    /// RESOURCE_EXHAUSTED (and a retry hint) instead of queueing without bound.
    pub max_commit_queue: usize,
    /// Open gRPC connections at most (kept 256 below the open-file limit).
    pub max_connections: usize,
    /// Open gRPC connections from one peer address at most.
    pub max_connections_per_peer: usize,
    /// A connection that has not sent the HTTP/2 preface this long after it was accepted is
    /// closed, ms.
    pub handshake_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_payload_bytes: 256 * 1024,
            max_idempotency_key_bytes: 256,
            max_commit_queue: 65_536,
            max_connections: 4096,
            max_connections_per_peer: 1024,
            handshake_timeout_ms: 5000,
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

/// GL-001 heat-distribution data of one plant: its `[plants.heat]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlantHeat {
    /// Heat demand, MW (the plant's balance in the fleet scenario).
    pub demand_mw: f64,
    /// Heat units with the optimizer's unit fields (docs/optimize.md); `plant` may be omitted
    /// and defaults to the enclosing plant's id.
    #[serde(default)]
    pub units: Vec<Unit>,
}

/// Fleet-wide GL-001 heat-distribution data (`[heat]`); each plant's own part is its
/// `[plants.heat]` table.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeatConfig {
    /// CO2 price, EUR/t; required once any plant has a `[plants.heat]` table.
    pub carbon_price_eur_t: Option<f64>,
    /// Directed heat links between plants (`from`/`to` are plant ids).
    pub links: Vec<Link>,
    /// Solver options for fleet runs (docs/optimize.md, `[options]`).
    pub options: Options,
    /// Each plant's `[plants.heat]`, by plant id; read from the plant tables, not from `[heat]`.
    #[serde(skip)]
    pub plants: BTreeMap<String, PlantHeat>,
}

/// The fleet's heat-distribution problem as configured, with the way back from scenario field
/// paths to configuration keys.
#[derive(Debug, Clone)]
pub struct FleetHeat {
    /// Plants with heat data (configuration order), their units and the `[heat]` links.
    pub scenario: Scenario,
    /// Configuration key of each scenario plant (`plants[i]`).
    plant_keys: Vec<String>,
    /// Configuration key of each scenario unit (`plants[i].heat.units[j]`).
    unit_keys: Vec<String>,
}

impl FleetHeat {
    /// The configuration key behind a scenario field path, e.g. `units[2].max_mw` ->
    /// `plants[1].heat.units[0].max_mw`.
    pub fn config_key(&self, path: &str) -> String {
        let indexed = |prefix: &str| -> Option<(usize, &str)> {
            let rest = path.strip_prefix(prefix)?.strip_prefix('[')?;
            let (n, tail) = rest.split_once(']')?;
            Some((n.parse().ok()?, tail))
        };
        if let Some((k, tail)) = indexed("units")
            && let Some(key) = self.unit_keys.get(k)
        {
            return format!("{key}{tail}");
        }
        if let Some((k, tail)) = indexed("plants")
            && let Some(key) = self.plant_keys.get(k)
        {
            return match tail {
                ".id" | ".name" => format!("{key}{tail}"),
                _ => format!("{key}.heat{tail}"),
            };
        }
        format!("heat.{path}")
    }

    /// A field error with its path turned into the configuration key.
    pub fn config_error(&self, e: &FieldError) -> String {
        format!("{}: {}", self.config_key(&e.path), e.rule)
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
    /// GL-001 heat-distribution data (fleet-wide part; per-plant parts in `[plants.heat]`).
    pub heat: HeatConfig,
    /// Plant data: what the master accepts as readings.
    pub readings: ReadingsConfig,
    /// The ledger's storage.
    pub ledger: LedgerConfig,
    /// How long finished tasks, idempotency keys and readings are kept.
    pub retention: RetentionConfig,
}

/// How long the ledger keeps what it no longer needs ([`crate::scheduler`]'s sweep removes
/// it through the log, oldest first).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// A completed, failed or cancelled task is removed, with its journal, this long after
    /// its last change.
    pub tasks: Span,
    /// An idempotency key is kept this long after its first request, and at least as long
    /// as its task: a retry within the window never creates a second task.
    pub idempotency_keys: Span,
    /// Readings are removed this long after their source time (whole hour blocks).
    pub readings: Span,
    /// How often the sweep looks for what is due.
    pub sweep_every: Span,
    /// Most tasks (and as many keys and reading blocks) removed by one sweep; a sweep
    /// that finds more runs again at once.
    pub sweep_batch: usize,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            tasks: Span::days(30),
            idempotency_keys: Span::days(30),
            readings: Span::days(400),
            sweep_every: Span(std::time::Duration::from_secs(1)),
            sweep_batch: 4096,
        }
    }
}

/// The ledger's storage.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerConfig {
    /// Space held in the data directory's `reserve` file, MiB. When the disk fills, the
    /// ledger refuses new work and gives this space to its state store, so what it already
    /// acknowledged still reaches it; writes resume by themselves once the reserve fits
    /// again with as much to spare. 0 keeps none.
    pub disk_reserve_mib: u64,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            disk_reserve_mib: 64,
        }
    }
}

impl LedgerConfig {
    /// The ledger's options for this configuration.
    pub fn options(&self) -> crate::ledger::LedgerOptions {
        crate::ledger::LedgerOptions {
            reserve_bytes: self.disk_reserve_mib.saturating_mul(1024 * 1024),
            ..Default::default()
        }
    }
}

/// Limits on readings, checked before anything reaches the ledger.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReadingsConfig {
    /// Most readings in one IngestReadings message.
    pub max_batch: usize,
    /// A reading timestamped further ahead of the master's clock than this is refused
    /// (a source clock that is wrong), ms.
    pub max_future_ms: u64,
}

impl Default for ReadingsConfig {
    fn default() -> Self {
        ReadingsConfig {
            max_batch: 50_000,
            max_future_ms: 10 * 60 * 1000,
        }
    }
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
            heat: HeatConfig::default(),
            readings: ReadingsConfig::default(),
            ledger: LedgerConfig::default(),
            retention: RetentionConfig::default(),
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
        let plant_heat = take_plant_heat(&mut value)?;
        let feeds = take_plant_feeds(&mut value)?;
        let mut cfg: Config = toml::Value::Table(value)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))?;
        cfg.heat.plants = plant_heat;
        for p in &mut cfg.plants {
            p.feeds = feeds.get(&p.id).cloned().unwrap_or_default();
        }
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
        let r = &self.retention;
        if r.sweep_every.0.is_zero() {
            return Err(invalid("retention.sweep_every", "must be at least 1ms"));
        }
        if r.sweep_batch == 0 {
            return Err(invalid("retention.sweep_batch", "must be >= 1"));
        }
        for (k, v) in [("tasks", r.tasks), ("idempotency_keys", r.idempotency_keys)] {
            if v.0 < std::time::Duration::from_secs(1) {
                return Err(invalid(format!("retention.{k}"), "must be at least 1s"));
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
        if self.readings.max_batch == 0 {
            return Err(invalid("readings.max_batch", "must be >= 1"));
        }
        self.validate_heat()
    }

    /// Checks the heat-distribution data: links between plants that have heat data, a carbon
    /// price, and every optimizer rule (reported under the configuration key).
    fn validate_heat(&self) -> Result<(), ConfigError> {
        for id in self.heat.plants.keys() {
            if !self.plants.iter().any(|p| &p.id == id) {
                return Err(invalid("heat.plants", format!("no plant {id}")));
            }
        }
        if self.heat.plants.is_empty() {
            if !self.heat.links.is_empty() {
                return Err(invalid(
                    "heat.links",
                    "links need plants with a [plants.heat] table; none has one",
                ));
            }
            return Ok(());
        }
        for (k, l) in self.heat.links.iter().enumerate() {
            for (field, end) in [("from", &l.from), ("to", &l.to)] {
                if self.plants.iter().any(|p| &p.id == end) && !self.heat.plants.contains_key(end) {
                    return Err(invalid(
                        format!("heat.links[{k}].{field}"),
                        format!("plant {end} has no [plants.heat] table"),
                    ));
                }
            }
        }
        if self.heat.carbon_price_eur_t.is_none() {
            return Err(invalid(
                "heat.carbon_price_eur_t",
                "required when a plant has a [plants.heat] table",
            ));
        }
        let Some(fleet) = self.fleet_heat() else {
            return Ok(());
        };
        if let Err(e) = fleet.scenario.validate() {
            let errs = e.field_errors();
            if let Some(first) = errs.first() {
                let more = match errs.len() {
                    1 => String::new(),
                    n => format!(" (and {} more)", n - 1),
                };
                return Err(invalid(
                    fleet.config_key(&first.path),
                    format!("{}{more}", first.rule),
                ));
            }
        }
        Ok(())
    }

    /// The fleet's heat-distribution scenario as configured (no GL-002 results, no operator
    /// overrides), or `None` when no plant has a `[plants.heat]` table.
    pub fn fleet_heat(&self) -> Option<FleetHeat> {
        if self.heat.plants.is_empty() {
            return None;
        }
        let mut plants = Vec::new();
        let mut units = Vec::new();
        let (mut plant_keys, mut unit_keys) = (Vec::new(), Vec::new());
        for (i, p) in self.plants.iter().enumerate() {
            let Some(h) = self.heat.plants.get(&p.id) else {
                continue;
            };
            plants.push(Plant {
                id: p.id.clone(),
                name: Some(p.name.clone()).filter(|n| !n.is_empty()),
                demand_mw: h.demand_mw,
            });
            plant_keys.push(format!("plants[{i}]"));
            for (j, u) in h.units.iter().enumerate() {
                units.push(u.clone());
                unit_keys.push(format!("plants[{i}].heat.units[{j}]"));
            }
        }
        Some(FleetHeat {
            scenario: Scenario {
                name: Some(format!("fleet ({} plants)", plants.len())),
                plants,
                units,
                links: self.heat.links.clone(),
                carbon_price_eur_t: self.heat.carbon_price_eur_t.unwrap_or(f64::NAN),
                options: self.heat.options.clone(),
            },
            plant_keys,
            unit_keys,
        })
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

/// Removes each plant's `heat` table from the raw configuration and parses it, filling a
/// unit's omitted `plant` with the enclosing plant's id.
fn take_plant_heat(value: &mut toml::Table) -> Result<BTreeMap<String, PlantHeat>, ConfigError> {
    let mut out = BTreeMap::new();
    let Some(toml::Value::Array(plants)) = value.get_mut("plants") else {
        return Ok(out);
    };
    for (i, p) in plants.iter_mut().enumerate() {
        let toml::Value::Table(t) = p else { continue };
        let Some(heat) = t.remove("heat") else {
            continue;
        };
        let key = format!("plants[{i}].heat");
        let Some(id) = t.get("id").and_then(|v| v.as_str()).map(str::to_string) else {
            continue; // the plant itself fails to parse with a clearer message
        };
        let toml::Value::Table(mut heat) = heat else {
            return Err(invalid(key, "must be a table"));
        };
        if let Some(toml::Value::Array(units)) = heat.get_mut("units") {
            for (j, u) in units.iter_mut().enumerate() {
                let toml::Value::Table(u) = u else { continue };
                match u.get("plant").map(|v| v.as_str()) {
                    None => {
                        u.insert("plant".into(), toml::Value::String(id.clone()));
                    }
                    Some(Some(p)) if p == id => {}
                    Some(_) => {
                        return Err(invalid(
                            format!("{key}.units[{j}].plant"),
                            format!("must be omitted or equal the plant's id {id}"),
                        ));
                    }
                }
            }
        }
        let parsed: PlantHeat = toml::Value::Table(heat)
            .try_into()
            .map_err(|e: toml::de::Error| invalid(&key, e.to_string().trim().to_string()))?;
        out.insert(id, parsed);
    }
    Ok(out)
}

/// Removes each plant's `sources` and `meters` arrays from the raw configuration, parses
/// each entry under its own key and validates the plant's feeds.
fn take_plant_feeds(value: &mut toml::Table) -> Result<BTreeMap<String, PlantFeeds>, ConfigError> {
    let mut out = BTreeMap::new();
    let Some(toml::Value::Array(plants)) = value.get_mut("plants") else {
        return Ok(out);
    };
    for (i, p) in plants.iter_mut().enumerate() {
        let toml::Value::Table(t) = p else { continue };
        let key = format!("plants[{i}]");
        if t.contains_key("feeds") {
            return Err(invalid(
                format!("{key}.feeds"),
                "not a configuration key; give [[plants.sources]] and [[plants.meters]]",
            ));
        }
        let mut feeds = PlantFeeds {
            sources: parse_entries(t.remove("sources"), &format!("{key}.sources"))?,
            meters: parse_entries(t.remove("meters"), &format!("{key}.meters"))?,
            disabled: Default::default(),
        };
        if feeds.sources.is_empty() && feeds.meters.is_empty() {
            continue;
        }
        let Some(id) = t.get("id").and_then(|v| v.as_str()).map(str::to_string) else {
            continue; // the plant itself fails to parse with a clearer message
        };
        feeds.validate(&key).map_err(|e| ConfigError::Invalid {
            key: e.key,
            rule: e.rule,
        })?;
        out.insert(id, feeds);
    }
    Ok(out)
}

/// Parses an array of tables entry by entry, so an error names `key[j].field`.
fn parse_entries<T: serde::de::DeserializeOwned>(
    v: Option<toml::Value>,
    key: &str,
) -> Result<Vec<T>, ConfigError> {
    let Some(v) = v else { return Ok(Vec::new()) };
    let toml::Value::Array(items) = v else {
        return Err(invalid(key, "must be an array of tables ([[...]])"));
    };
    items
        .into_iter()
        .enumerate()
        .map(|(j, item)| {
            item.try_into().map_err(|e: toml::de::Error| {
                // toml ends its message with "in `a.b`" naming the field within the entry.
                let msg = e.to_string().trim().to_string();
                let (rule, field) = match msg.rsplit_once("\nin `") {
                    Some((rule, f)) => (rule.to_string(), format!(".{}", f.trim_end_matches('`'))),
                    None => (msg, String::new()),
                };
                invalid(format!("{key}[{j}]{field}"), rule)
            })
        })
        .collect()
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
mod tests;
