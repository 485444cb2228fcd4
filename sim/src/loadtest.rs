//! Load tests in the predecessor's scenario format (docs/loadtest.md).
//!
//! A scenario names a fleet size (`plants`, `sub_agents`), two target rates and a linear
//! ramp. [`run`] starts that fleet as real processes on loopback (`heatmesh master` and one
//! `heatmesh node` per plant) or targets a running master, drives it open-loop through the
//! public gRPC API (GL-001 fleet heat-distribution runs and sub-agent tasks followed to
//! their terminal state), samples the processes' CPU and memory from `/proc`, and returns a
//! [`Report`] with a verdict against the predecessor's scaling thresholds.
//!
//! The scenario is JSON (the predecessor's `scenario.json`) or the same keys in TOML; keys
//! this module does not know are ignored and listed in the report, so the predecessor's file
//! works unchanged. Sub-agents are spread over the plants as evenly as possible.

mod fleet;
mod report;
mod run;

pub use fleet::{FleetPlant, GeneratedFleet, generate_fleet, plant_kinds};
pub use report::{
    Check, CoordinationReport, KindFigures, Latency, MachineFigures, MeshInfo, OptimizationReport,
    ProcFigures, ProcessReport, Report, SetpointReport, Verdict,
};
pub use run::{Event, Progress, RunOptions, run};

use std::fmt;
use std::path::Path;
use std::time::Duration;

/// Latency threshold of the predecessor's scaling table (orchestration latency p95 and heat
/// optimization time, "ok" below 2 s).
pub const LATENCY_THRESHOLD_MS: f64 = 2000.0;
/// Coordination error threshold of the predecessor's scaling table ("ok" below 1 %).
pub const ERROR_THRESHOLD_PCT: f64 = 1.0;

/// One broken rule of a scenario field.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// The scenario key, e.g. `sub_agents`.
    pub field: String,
    /// The rule it broke, with the offending value.
    pub rule: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.rule)
    }
}

fn join(errs: &[FieldError]) -> String {
    errs.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why a load test could not be set up or run.
#[derive(Debug, thiserror::Error)]
pub enum LoadtestError {
    /// The scenario text is not valid JSON or TOML.
    #[error("scenario is not valid {format}: {message}")]
    Syntax {
        /// `JSON` or `TOML`.
        format: &'static str,
        /// The parser's message.
        message: String,
    },
    /// Scenario fields broke rules; every broken field is listed.
    #[error("{}", join(.0))]
    Invalid(Vec<FieldError>),
    /// The fleet configuration generated for the scenario was refused.
    #[error("generated fleet configuration: {0}")]
    Fleet(String),
    /// The mesh could not be started or reached, or is unusable for the scenario.
    #[error("mesh: {0}")]
    Mesh(String),
    /// A gRPC call needed to set up the run failed.
    #[error("{call}: {status}")]
    Rpc {
        /// The call, e.g. `MeshService.ListAgents`.
        call: &'static str,
        /// Code and message.
        status: String,
    },
    /// A file or directory operation failed.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl LoadtestError {
    fn rpc(call: &'static str, s: tonic::Status) -> LoadtestError {
        LoadtestError::Rpc {
            call,
            status: format!("{:?}: {}", s.code(), s.message()),
        }
    }

    fn io(what: impl Into<String>, source: std::io::Error) -> LoadtestError {
        LoadtestError::Io {
            what: what.into(),
            source,
        }
    }
}

/// A validated load-test scenario: the predecessor's `scenario.json` keys.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// Name shown in the report (default `loadtest`).
    pub test_name: String,
    /// Total length, ramp included, minutes (> 0; fractions allowed).
    pub duration_minutes: f64,
    /// Plants of the generated fleet, `Plant-001`.. (1 to 999).
    pub plants: u64,
    /// Sub-agents over all plants (one to eight per plant: one per agent kind).
    pub sub_agents: u64,
    /// Target rate of GL-001 fleet heat-distribution runs, per minute (>= 0).
    pub heat_optimization_requests_per_minute: f64,
    /// Target rate of sub-agent tasks, per second (>= 0).
    pub agent_coordination_events_per_second: f64,
    /// Linear ramp from zero to the target rates, minutes (0 to `duration_minutes`).
    pub ramp_up_minutes: f64,
    /// Seed of the (plant, agent) choice of each task, so runs are repeatable.
    pub seed: u64,
    /// Keys present in the file that a load test does not use.
    pub ignored_keys: Vec<String>,
}

const KNOWN: &[&str] = &[
    "test_name",
    "duration_minutes",
    "plants",
    "sub_agents",
    "heat_optimization_requests_per_minute",
    "agent_coordination_events_per_second",
    "ramp_up_minutes",
    "seed",
];

/// Highest plant count: generated plant ids have three digits.
pub const MAX_PLANTS: u64 = 999;

impl Scenario {
    /// Parses the predecessor's JSON scenario and validates it.
    pub fn from_json_str(text: &str) -> Result<Scenario, LoadtestError> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| LoadtestError::Syntax {
                format: "JSON",
                message: e.to_string(),
            })?;
        Scenario::from_value(v)
    }

    /// Parses the same keys written as TOML and validates them.
    pub fn from_toml_str(text: &str) -> Result<Scenario, LoadtestError> {
        let t: toml::Table = toml::from_str(text).map_err(|e| LoadtestError::Syntax {
            format: "TOML",
            message: e.to_string().trim().to_string(),
        })?;
        let v = serde_json::to_value(t).map_err(|e| LoadtestError::Syntax {
            format: "TOML",
            message: e.to_string(),
        })?;
        Scenario::from_value(v)
    }

    /// Reads a scenario file: TOML when it ends in `.toml`, JSON otherwise.
    pub fn from_path(path: &Path) -> Result<Scenario, LoadtestError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| LoadtestError::io(format!("reading {}", path.display()), e))?;
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("toml"))
        {
            Scenario::from_toml_str(&text)
        } else {
            Scenario::from_json_str(&text)
        }
    }

    fn from_value(v: serde_json::Value) -> Result<Scenario, LoadtestError> {
        let serde_json::Value::Object(obj) = v else {
            return Err(LoadtestError::Invalid(vec![FieldError {
                field: "(scenario)".into(),
                rule: "must be an object of scenario keys".into(),
            }]));
        };
        let mut errs = Vec::new();
        let mut bad = |field: &str, rule: String| {
            errs.push(FieldError {
                field: field.into(),
                rule,
            })
        };
        let mut number = |key: &str, required: bool| -> Option<f64> {
            match obj.get(key) {
                None | Some(serde_json::Value::Null) if required => {
                    bad(key, "required".into());
                    None
                }
                None | Some(serde_json::Value::Null) => None,
                Some(serde_json::Value::Number(n)) => n.as_f64(),
                Some(other) => {
                    bad(key, format!("must be a number, got {other}"));
                    None
                }
            }
        };
        let duration = number("duration_minutes", true);
        let plants = number("plants", true);
        let sub_agents = number("sub_agents", true);
        let opt = number("heat_optimization_requests_per_minute", true);
        let coord = number("agent_coordination_events_per_second", true);
        let ramp = number("ramp_up_minutes", false);
        let seed = number("seed", false);
        let mut whole = |key: &str, v: Option<f64>| -> Option<u64> {
            let v = v?;
            if v.fract() != 0.0 || v < 0.0 || v > u32::MAX as f64 {
                bad(key, format!("must be a whole number >= 0, got {v}"));
                return None;
            }
            Some(v as u64)
        };
        let plants = whole("plants", plants);
        let sub_agents = whole("sub_agents", sub_agents);
        let seed = whole("seed", seed);
        let test_name = match obj.get("test_name") {
            None | Some(serde_json::Value::Null) => Some("loadtest".to_string()),
            Some(serde_json::Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
            Some(other) => {
                bad(
                    "test_name",
                    format!("must be a non-empty string, got {other}"),
                );
                None
            }
        };
        if !errs.is_empty() {
            return Err(LoadtestError::Invalid(errs));
        }
        let (
            Some(test_name),
            Some(duration_minutes),
            Some(plants),
            Some(sub_agents),
            Some(opt),
            Some(coord),
        ) = (test_name, duration, plants, sub_agents, opt, coord)
        else {
            unreachable!("every missing or mistyped field was reported");
        };
        let s = Scenario {
            test_name,
            duration_minutes,
            plants,
            sub_agents,
            heat_optimization_requests_per_minute: opt,
            agent_coordination_events_per_second: coord,
            ramp_up_minutes: ramp.unwrap_or(0.0),
            seed: seed.unwrap_or(DEFAULT_SEED),
            ignored_keys: obj
                .keys()
                .filter(|k| !KNOWN.contains(&k.as_str()))
                .cloned()
                .collect(),
        };
        s.validate()?;
        Ok(s)
    }

    /// Checks every rule; the error lists each broken field with its rule.
    pub fn validate(&self) -> Result<(), LoadtestError> {
        let mut errs = Vec::new();
        let mut bad = |field: &str, rule: String| {
            errs.push(FieldError {
                field: field.into(),
                rule,
            })
        };
        let d = self.duration_minutes;
        if !d.is_finite() || d <= 0.0 {
            bad("duration_minutes", format!("must be > 0, got {d}"));
        }
        if !(1..=MAX_PLANTS).contains(&self.plants) {
            bad(
                "plants",
                format!("must be within 1..={MAX_PLANTS}, got {}", self.plants),
            );
        } else {
            let per = fleet::max_agents_per_plant() as u64;
            if self.sub_agents < self.plants {
                bad(
                    "sub_agents",
                    format!(
                        "must be at least one per plant ({} < {} plants)",
                        self.sub_agents, self.plants
                    ),
                );
            } else if self.sub_agents > self.plants * per {
                bad(
                    "sub_agents",
                    format!(
                        "at most {per} per plant, one per agent kind ({} > {} plants x {per})",
                        self.sub_agents, self.plants
                    ),
                );
            }
        }
        for (field, v) in [
            (
                "heat_optimization_requests_per_minute",
                self.heat_optimization_requests_per_minute,
            ),
            (
                "agent_coordination_events_per_second",
                self.agent_coordination_events_per_second,
            ),
        ] {
            if !v.is_finite() || v < 0.0 {
                bad(field, format!("must be a finite number >= 0, got {v}"));
            }
        }
        if self.heat_optimization_requests_per_minute == 0.0
            && self.agent_coordination_events_per_second == 0.0
        {
            bad(
                "agent_coordination_events_per_second",
                "is 0 and so is heat_optimization_requests_per_minute: nothing to send".into(),
            );
        }
        let r = self.ramp_up_minutes;
        if !r.is_finite() || r < 0.0 {
            bad("ramp_up_minutes", format!("must be >= 0, got {r}"));
        } else if d.is_finite() && r > d {
            bad(
                "ramp_up_minutes",
                format!("must not exceed duration_minutes ({r} > {d})"),
            );
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(LoadtestError::Invalid(errs))
        }
    }

    /// Total length of the run (ramp included).
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.duration_minutes * 60.0)
    }

    /// When sub-agent tasks are sent.
    pub fn coordination_schedule(&self) -> RateSchedule {
        RateSchedule {
            target_per_s: self.agent_coordination_events_per_second,
            ramp_s: self.ramp_up_minutes * 60.0,
            duration_s: self.duration_minutes * 60.0,
        }
    }

    /// When fleet heat-distribution runs are requested.
    pub fn optimization_schedule(&self) -> RateSchedule {
        RateSchedule {
            target_per_s: self.heat_optimization_requests_per_minute / 60.0,
            ramp_s: self.ramp_up_minutes * 60.0,
            duration_s: self.duration_minutes * 60.0,
        }
    }
}

/// Seed used when the scenario gives none.
pub const DEFAULT_SEED: u64 = 0x4845_4154;

/// A rate ramping linearly from 0 to `target_per_s` over `ramp_s`, then held until
/// `duration_s`. Event k (1-based) is due when the expected count reaches k, so the events
/// of any interval match the integral of the rate over it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateSchedule {
    /// Rate once ramped up, events per second.
    pub target_per_s: f64,
    /// Length of the ramp, seconds.
    pub ramp_s: f64,
    /// Length of the whole schedule, seconds.
    pub duration_s: f64,
}

impl RateSchedule {
    /// The rate at `t` seconds.
    pub fn rate_at(&self, t: f64) -> f64 {
        if !(0.0..self.duration_s).contains(&t) {
            0.0
        } else if t < self.ramp_s {
            self.target_per_s * t / self.ramp_s
        } else {
            self.target_per_s
        }
    }

    /// Events due by `t` seconds (the integral of the rate), fractional.
    pub fn expected_by(&self, t: f64) -> f64 {
        let t = t.clamp(0.0, self.duration_s);
        let (r, v) = (self.ramp_s, self.target_per_s);
        if r <= 0.0 {
            v * t
        } else if t <= r {
            v * t * t / (2.0 * r)
        } else {
            v * (r / 2.0 + (t - r))
        }
    }

    /// Events in the whole schedule.
    pub fn total(&self) -> u64 {
        (self.expected_by(self.duration_s) + 1e-9).floor() as u64
    }

    /// When event `k` (1-based) is due, seconds from the start; `None` past the end.
    pub fn time_of(&self, k: u64) -> Option<f64> {
        if k == 0 || self.target_per_s <= 0.0 || k > self.total() {
            return None;
        }
        let (r, v, k) = (self.ramp_s, self.target_per_s, k as f64);
        let in_ramp = v * r / 2.0;
        let t = if r > 0.0 && k <= in_ramp {
            (2.0 * r * k / v).sqrt()
        } else {
            r + (k - in_ramp) / v
        };
        Some(t.min(self.duration_s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREDECESSOR: &str = r#"{
      "test_name": "multi_plant_load_test",
      "duration_minutes": 30,
      "plants": 15,
      "sub_agents": 75,
      "heat_optimization_requests_per_minute": 100,
      "agent_coordination_events_per_second": 50,
      "ramp_up_minutes": 5
    }"#;

    fn errors(text: &str) -> Vec<String> {
        match Scenario::from_json_str(text) {
            Err(LoadtestError::Invalid(e)) => e.iter().map(ToString::to_string).collect(),
            other => panic!("expected field errors, got {other:?}"),
        }
    }

    fn with(key: &str, value: &str) -> String {
        let mut v: serde_json::Value = serde_json::from_str(PREDECESSOR).unwrap();
        v[key] = serde_json::from_str(value).unwrap();
        v.to_string()
    }

    #[test]
    fn predecessor_scenario_parses() {
        let s = Scenario::from_json_str(PREDECESSOR).unwrap();
        assert_eq!(s.test_name, "multi_plant_load_test");
        assert_eq!((s.plants, s.sub_agents), (15, 75));
        assert_eq!(s.duration(), Duration::from_secs(1800));
        assert!(s.ignored_keys.is_empty());
        let shipped =
            Scenario::from_json_str(include_str!("../../drills/loadtest/multi-plant.json"))
                .unwrap();
        assert_eq!(shipped, s);
        Scenario::from_json_str(include_str!("../../drills/loadtest/smoke.json")).unwrap();
    }

    #[test]
    fn unknown_keys_are_ignored_and_listed() {
        let s = Scenario::from_json_str(&with("namespace", "\"greenlang\"")).unwrap();
        assert_eq!(s.ignored_keys, vec!["namespace".to_string()]);
    }

    #[test]
    fn toml_with_the_same_keys() {
        let s = Scenario::from_toml_str(
            "duration_minutes = 0.5\nplants = 2\nsub_agents = 3\n\
             heat_optimization_requests_per_minute = 6\n\
             agent_coordination_events_per_second = 4.5\n",
        )
        .unwrap();
        assert_eq!((s.plants, s.sub_agents, s.ramp_up_minutes), (2, 3, 0.0));
        assert_eq!(s.test_name, "loadtest");
        let e = Scenario::from_toml_str("plants = ").unwrap_err();
        assert!(
            e.to_string().starts_with("scenario is not valid TOML"),
            "{e}"
        );
    }

    #[test]
    fn bad_values_name_the_field_and_the_rule() {
        let e = errors(&with("sub_agents", "10"));
        assert_eq!(
            e,
            vec!["sub_agents: must be at least one per plant (10 < 15 plants)"]
        );
        let e = errors(&with("sub_agents", "121"));
        assert_eq!(
            e,
            vec!["sub_agents: at most 8 per plant, one per agent kind (121 > 15 plants x 8)"]
        );
        assert_eq!(
            errors(&with("plants", "15.5")),
            vec!["plants: must be a whole number >= 0, got 15.5"]
        );
        assert_eq!(
            errors(&with("plants", "0")),
            vec!["plants: must be within 1..=999, got 0"]
        );
        assert_eq!(
            errors(&with("duration_minutes", "\"30m\"")),
            vec!["duration_minutes: must be a number, got \"30m\""]
        );
        assert_eq!(
            errors(&with("ramp_up_minutes", "31")),
            vec!["ramp_up_minutes: must not exceed duration_minutes (31 > 30)"]
        );
        assert_eq!(
            errors(&with("heat_optimization_requests_per_minute", "-1")),
            vec!["heat_optimization_requests_per_minute: must be a finite number >= 0, got -1"]
        );
        assert_eq!(
            errors(&with("test_name", "\"\"")),
            vec!["test_name: must be a non-empty string, got \"\""]
        );
        // Every broken field is reported, not only the first.
        let e = errors(r#"{"plants": 3, "duration_minutes": -1}"#);
        assert_eq!(
            e,
            vec![
                "sub_agents: required",
                "heat_optimization_requests_per_minute: required",
                "agent_coordination_events_per_second: required",
            ]
        );
        let e = errors(
            r#"{"plants": 3, "sub_agents": 3, "duration_minutes": -1, "ramp_up_minutes": -2,
                "heat_optimization_requests_per_minute": 0,
                "agent_coordination_events_per_second": 0}"#,
        );
        assert_eq!(
            e,
            vec![
                "duration_minutes: must be > 0, got -1",
                "agent_coordination_events_per_second: is 0 and so is \
                 heat_optimization_requests_per_minute: nothing to send",
                "ramp_up_minutes: must be >= 0, got -2",
            ]
        );
        let e = Scenario::from_json_str("[1, 2]").unwrap_err().to_string();
        assert_eq!(e, "(scenario): must be an object of scenario keys");
        let e = Scenario::from_json_str("{").unwrap_err().to_string();
        assert!(e.starts_with("scenario is not valid JSON"), "{e}");
    }

    #[test]
    fn ramp_then_hold() {
        // 50/s ramped over 300 s, held to 1800 s: 50 x 150 in the ramp + 50 x 1500 after.
        let s = RateSchedule {
            target_per_s: 50.0,
            ramp_s: 300.0,
            duration_s: 1800.0,
        };
        assert_eq!(s.total(), 7_500 + 75_000);
        assert_eq!(s.rate_at(0.0), 0.0);
        assert_eq!(s.rate_at(150.0), 25.0);
        assert_eq!(s.rate_at(300.0), 50.0);
        assert_eq!(s.rate_at(1800.0), 0.0);
        assert!((s.expected_by(300.0) - 7_500.0).abs() < 1e-9);
        assert!((s.expected_by(150.0) - 1_875.0).abs() < 1e-9);
        // The 1,875th event is due at 150 s, the 7,500th at the end of the ramp, then one
        // every 20 ms.
        assert!((s.time_of(1_875).unwrap() - 150.0).abs() < 1e-9);
        assert!((s.time_of(7_500).unwrap() - 300.0).abs() < 1e-9);
        assert!((s.time_of(7_501).unwrap() - 300.02).abs() < 1e-9);
        assert!((s.time_of(s.total()).unwrap() - 1800.0).abs() < 1e-9);
        assert_eq!(s.time_of(s.total() + 1), None);
        assert_eq!(s.time_of(0), None);
        // Due times increase, and the count due by any time matches the integral.
        let mut last = 0.0;
        for k in (1..s.total()).step_by(997) {
            let t = s.time_of(k).unwrap();
            assert!(t > last);
            assert!((s.expected_by(t) - k as f64).abs() < 1e-6, "k {k} t {t}");
            last = t;
        }
    }

    #[test]
    fn no_ramp_and_zero_rate() {
        let s = RateSchedule {
            target_per_s: 100.0 / 60.0,
            ramp_s: 0.0,
            duration_s: 60.0,
        };
        assert_eq!(s.total(), 100);
        assert!((s.time_of(1).unwrap() - 0.6).abs() < 1e-9);
        assert!((s.time_of(100).unwrap() - 60.0).abs() < 1e-9);
        let z = RateSchedule {
            target_per_s: 0.0,
            ..s
        };
        assert_eq!((z.total(), z.time_of(1)), (0, None));
        // A ramp as long as the run: only the triangle.
        let r = RateSchedule {
            target_per_s: 10.0,
            ramp_s: 60.0,
            duration_s: 60.0,
        };
        assert_eq!(r.total(), 300);
        assert!((r.time_of(300).unwrap() - 60.0).abs() < 1e-9);
    }
}
