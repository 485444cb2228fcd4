//! The agent-kind registry: the one place a new GL-0xx kind is plugged in.
//!
//! The mesh moves requests and results as JSON bytes and looks the kind up here, so the
//! scheduler, the ledger and the actors never name a concrete calculation type.

use crate::PlantSpec;
use crate::calc::{self, CalcError, Calculation};

/// A registered agent kind with type-erased entry points over JSON.
#[derive(Debug, Clone, Copy)]
pub struct AgentKind {
    /// Canonical id, e.g. `GL-009`.
    pub id: &'static str,
    /// Operator-facing name, e.g. `ThermalEfficiency`.
    pub name: &'static str,
    /// Parses and validates a JSON request without computing.
    pub validate_json: fn(&[u8]) -> Result<(), CalcError>,
    /// Parses, validates and computes; returns the JSON result.
    pub run_json: fn(&[u8]) -> Result<Vec<u8>, CalcError>,
    /// Checks that JSON bytes are a result of this kind (what the master stores as one).
    pub check_result: fn(&[u8]) -> Result<(), CalcError>,
    /// Fills request fields the plant configures (e.g. GL-009's closure threshold) when the
    /// request leaves them unset, so the stored request says exactly what was computed.
    pub plant_defaults: fn(&mut serde_json::Value, &PlantSpec),
    /// Whether the kind consumes GL-001 unit setpoints (the master's heat-distribution
    /// result for its plant) as a request: GL-001 `DispatchSetpoints` does.
    pub accepts_setpoints: bool,
    /// The shipped example request (examples/calc/<kind>.json): what the demo, the drills'
    /// client and the calculation benchmark send.
    pub example: &'static str,
}

fn no_plant_defaults(_: &mut serde_json::Value, _: &PlantSpec) {}

fn gl009_plant_defaults(req: &mut serde_json::Value, plant: &PlantSpec) {
    if let Some(obj) = req.as_object_mut() {
        let t = obj
            .entry("closure_threshold_pct")
            .or_insert(serde_json::Value::Null);
        if t.is_null() {
            *t = serde_json::json!(plant.balance_threshold_pct);
        }
    }
}

fn parse<C: Calculation>(bytes: &[u8]) -> Result<C::Request, CalcError> {
    serde_json::from_slice(bytes)
        .map_err(|e| CalcError::invalid("payload", format!("not a valid {} request: {e}", C::KIND)))
}

fn validate_json<C: Calculation>(bytes: &[u8]) -> Result<(), CalcError> {
    C::validate(&parse::<C>(bytes)?)
}

fn check_result<C: Calculation>(bytes: &[u8]) -> Result<(), CalcError> {
    serde_json::from_slice::<C::Output>(bytes)
        .map(|_| ())
        .map_err(|e| CalcError::invalid("result", format!("not a valid {} result: {e}", C::KIND)))
}

fn run_json<C: Calculation>(bytes: &[u8]) -> Result<Vec<u8>, CalcError> {
    let out = C::run(&parse::<C>(bytes)?)?;
    serde_json::to_vec(&out)
        .map_err(|e| CalcError::invalid("result", format!("cannot be encoded: {e}")))
}

const fn kind<C: Calculation>(name: &'static str, example: &'static str) -> AgentKind {
    AgentKind {
        id: C::KIND,
        name,
        example,
        validate_json: validate_json::<C>,
        run_json: run_json::<C>,
        check_result: check_result::<C>,
        plant_defaults: no_plant_defaults,
        accepts_setpoints: false,
    }
}

/// Every agent kind this build serves.
pub static KINDS: &[AgentKind] = &[
    AgentKind {
        accepts_setpoints: true,
        ..kind::<calc::gl001_setpoints::Setpoints>(
            "DispatchSetpoints",
            include_str!("../../examples/calc/gl-001.json"),
        )
    },
    kind::<calc::gl002_boiler::BoilerEfficiency>(
        "BoilerEfficiency",
        include_str!("../../examples/calc/gl-002.json"),
    ),
    kind::<calc::gl003_combustion::CombustionAnalysis>(
        "CombustionOptimizer",
        include_str!("../../examples/calc/gl-003.json"),
    ),
    kind::<calc::gl004_emissions::Emissions>(
        "EmissionsControl",
        include_str!("../../examples/calc/gl-004.json"),
    ),
    kind::<calc::gl006_recovery::HeatRecovery>(
        "HeatRecovery",
        include_str!("../../examples/calc/gl-006.json"),
    ),
    AgentKind {
        plant_defaults: gl009_plant_defaults,
        ..kind::<calc::gl009_thermal::HeatBalance>(
            "ThermalEfficiency",
            include_str!("../../examples/calc/gl-009.json"),
        )
    },
    kind::<calc::gl012_steam::SteamProperties>(
        "SteamSystem",
        include_str!("../../examples/calc/gl-012.json"),
    ),
    kind::<calc::gl014_exchanger::HeatExchanger>(
        "HeatExchanger",
        include_str!("../../examples/calc/gl-014.json"),
    ),
];

/// Normalises `gl-009`, `GL009`, `gl_009` to the canonical `GL-009`.
pub fn canonical_id(id: &str) -> String {
    let digits: String = id.chars().filter(|c| c.is_ascii_digit()).collect();
    let letters: String = id.chars().filter(|c| c.is_ascii_alphabetic()).collect();
    format!("{}-{}", letters.to_ascii_uppercase(), digits)
}

/// Looks a kind up by any spelling of its id.
pub fn lookup(id: &str) -> Option<&'static AgentKind> {
    let id = canonical_id(id);
    KINDS.iter().find(|k| k.id == id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_accepts_spellings() {
        for s in ["GL-009", "gl-009", "gl009", "Gl_009"] {
            assert_eq!(lookup(s).map(|k| k.id), Some("GL-009"), "{s}");
        }
        assert!(lookup("GL-999").is_none());
    }

    #[test]
    fn run_json_round_trip() {
        let k = lookup("GL-009").unwrap();
        let req = br#"{"inputs":[{"name":"fuel","energy_kwh":1000}],"outputs":[{"name":"steam","energy_kwh":850}]}"#;
        let out: serde_json::Value = serde_json::from_slice(&(k.run_json)(req).unwrap()).unwrap();
        assert_eq!(out["efficiency_pct"], 85.0);
        let err = (k.validate_json)(br#"{"inputs":[]}"#).unwrap_err();
        assert_eq!(err.field(), Some("inputs"));
    }

    #[test]
    fn names_and_no_duplicates() {
        let names: Vec<(&str, &str)> = KINDS.iter().map(|k| (k.id, k.name)).collect();
        assert_eq!(
            names,
            vec![
                ("GL-001", "DispatchSetpoints"),
                ("GL-002", "BoilerEfficiency"),
                ("GL-003", "CombustionOptimizer"),
                ("GL-004", "EmissionsControl"),
                ("GL-006", "HeatRecovery"),
                ("GL-009", "ThermalEfficiency"),
                ("GL-012", "SteamSystem"),
                ("GL-014", "HeatExchanger"),
            ]
        );
    }

    /// Every shipped example under examples/calc/ validates and runs to a JSON object.
    #[test]
    fn shipped_examples_run() {
        assert_eq!(KINDS.len(), 8);
        let examples = KINDS.iter().map(|k| (k.id, k.example.as_bytes()));
        for (id, req) in examples {
            let k = lookup(id).unwrap();
            (k.validate_json)(req).unwrap_or_else(|e| panic!("{id}: {e}"));
            let out = (k.run_json)(req).unwrap_or_else(|e| panic!("{id}: {e}"));
            // What an agent returns is what the master accepts as this kind's result.
            (k.check_result)(&out).unwrap_or_else(|e| panic!("{id}: its own result: {e}"));
            let other = if id == "GL-009" { "GL-014" } else { "GL-009" };
            assert!(
                (lookup(other).unwrap().check_result)(&out).is_err(),
                "{id}'s result passes as a {other} result"
            );
            let out: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert!(out.is_object(), "{id}: {out}");
        }
        let err = (lookup("GL-014").unwrap().validate_json)(br#"{"mode":"lmtd"}"#).unwrap_err();
        assert_eq!(err.field(), Some("payload"));
    }

    #[test]
    fn example_request_runs_through_the_registry() {
        let kind = lookup("gl012").unwrap();
        assert_eq!((kind.id, kind.name), ("GL-012", "SteamSystem"));
        let example = include_bytes!("../../examples/calc/gl-012.json");
        (kind.validate_json)(example).unwrap();
        let out: serde_json::Value =
            serde_json::from_slice(&(kind.run_json)(example).unwrap()).unwrap();
        let req: crate::calc::gl012_steam::SteamRequest = serde_json::from_slice(example).unwrap();
        let want = crate::calc::gl012_steam::props_pt(
            req.pressure_mpa.unwrap(),
            req.temperature_k.unwrap(),
        )
        .unwrap();
        assert_eq!(out["mode"], "pt");
        assert_eq!(out["state"]["enthalpy_kj_kg"], want.enthalpy_kj_kg);
        assert_eq!(out["state"]["phase"], "vapour");
        let err = (kind.run_json)(br#"{"mode":"pt","pressure_mpa":1}"#).unwrap_err();
        assert_eq!(err.field(), Some("temperature_k"));
    }
}
