//! The fleet's heat distribution as the master runs it: scenarios from config and ledger, overrides, run records.

use super::*;
use crate::config::SAMPLE_FLEET;
use crate::optimize::optimize;

fn fleet() -> FleetHeat {
    Config::from_toml_with_env(SAMPLE_FLEET, Vec::new())
        .unwrap()
        .fleet_heat()
        .expect("the sample fleet has heat data")
}

const S: u64 = 1_000_000;

#[test]
fn names_resolve_with_and_without_prefix() {
    let f = fleet();
    let s = &f.scenario;
    assert_eq!(
        resolve(s, 0, "link:P1-P2").unwrap(),
        (Target::Link, "P1-P2".into())
    );
    assert_eq!(
        resolve(s, 0, "Boiler-3").unwrap(),
        (Target::Unit, "Boiler-3".into())
    );
    assert_eq!(
        resolve(s, 0, "plant:Plant-002").unwrap(),
        (Target::Plant, "Plant-002".into())
    );
    let e = resolve(s, 2, "Boiler-9").unwrap_err();
    assert!(
        matches!(&e, NotFound(m) if m.starts_with("names[2]: ") && m.contains("Boiler-3")),
        "{e}"
    );
    let e = resolve(s, 0, "pump:X").unwrap_err();
    assert!(matches!(e, InvalidArgument(_)), "{e}");
    let mut amb = s.clone();
    amb.units[0].id = "Plant-001".into();
    let e = resolve(&amb, 1, "Plant-001").unwrap_err();
    assert!(
        matches!(&e, InvalidArgument(m) if m.contains("unit:Plant-001 or plant:Plant-001")),
        "{e}"
    );
}

#[test]
fn relaxations_expire_and_replace() {
    let f = fleet();
    let mut st = OptimizerState::default();
    st.relax(&f, &["link:P1-P2".into()], 1.5, Duration::from_secs(10), 0)
        .unwrap();
    st.relax(&f, &["P1-P2".into()], 2.0, Duration::from_secs(20), S)
        .unwrap();
    let r = st.relaxations(2 * S);
    assert_eq!(r.len(), 1, "same limit replaced");
    assert_eq!(
        (r[0].factor, r[0].configured, r[0].relaxed),
        (2.0, 8.0, 16.0)
    );
    let mut s = f.scenario.clone();
    apply_relaxations(&mut s, &r);
    assert_eq!(s.links[0].capacity_mw, 16.0);
    assert!(st.relaxations(21 * S).is_empty(), "expired");
    for bad in [0.0, -1.0, f64::NAN, 101.0] {
        let e = st
            .relax(&f, &["P1-P2".into()], bad, Duration::from_secs(1), 0)
            .unwrap_err();
        assert!(
            matches!(&e, InvalidArgument(m) if m.starts_with("factor:")),
            "{e}"
        );
    }
    let e = st
        .relax(&f, &["P1-P2".into()], 2.0, Duration::ZERO, 0)
        .unwrap_err();
    assert!(
        matches!(&e, InvalidArgument(m) if m.starts_with("duration:")),
        "{e}"
    );
}

#[test]
fn relaxation_that_breaks_a_rule_is_refused_with_the_config_key() {
    let mut f = fleet();
    f.scenario.units[0].min_mw = 10.0;
    let mut st = OptimizerState::default();
    let e = st
        .relax(&f, &["Boiler-1".into()], 0.2, Duration::from_secs(5), 0)
        .unwrap_err();
    assert!(
        matches!(&e, InvalidArgument(m) if m.contains("plants[0].heat.units[0].min_mw")),
        "{e}"
    );
    assert!(st.relaxations(0).is_empty());
}

#[test]
fn algorithm_override_expires_and_auto_clears() {
    let f = fleet();
    let mut st = OptimizerState::default();
    st.set_algorithm(Algorithm::Greedy, Some(Duration::from_secs(1)), Some(&f), 0)
        .unwrap();
    assert_eq!(st.algorithm(0).unwrap().algorithm, Algorithm::Greedy);
    assert!(st.algorithm(S).is_none());
    st.set_algorithm(Algorithm::Milp, None, Some(&f), 0)
        .unwrap();
    assert!(st.algorithm(u64::MAX / 2).is_some(), "no expiry");
    st.set_algorithm(Algorithm::Auto, None, Some(&f), 0)
        .unwrap();
    assert!(st.algorithm(0).is_none());
    let mut sw = f.clone();
    sw.scenario.units[0].on_off = Some(true);
    let e = st
        .set_algorithm(Algorithm::Lp, None, Some(&sw), 0)
        .unwrap_err();
    assert!(matches!(e, FailedPrecondition(_)), "{e}");
    assert_eq!(
        parse_algorithm("algorithm", "MILP").unwrap(),
        Some(Algorithm::Milp)
    );
    assert!(parse_algorithm("algorithm", "simplex").is_err());
}

#[test]
fn gl002_replaces_boiler_efficiency_on_the_unit_basis() {
    let f = fleet();
    let mut s = f.scenario.clone();
    let mut found = HashMap::new();
    found.insert(
        "Plant-002".to_string(),
        Gl002Result {
            task_id: 7,
            efficiency_pct: Ok(82.0),
        },
    );
    found.insert(
        "Plant-001".to_string(),
        Gl002Result {
            task_id: 8,
            efficiency_pct: Err("no efficiency_pct".into()),
        },
    );
    let (subs, notes) = apply_gl002(&mut s, &found);
    assert_eq!(subs.len(), 1, "only Boiler-3 is a boiler at Plant-002");
    let b3 = &subs[0];
    assert_eq!((b3.unit.as_str(), b3.task_id), ("Boiler-3", 7));
    // net = gross x GCV/NCV (gas oil 1.066)
    assert!((b3.used - 0.82 * 1.066).abs() < 1e-12);
    assert_eq!(s.units[3].efficiency, Some(b3.used));
    assert_eq!(s.units[2].efficiency, Some(0.50), "CHP untouched");
    assert!(notes[0].contains("GL-002 task 8 of Plant-001"), "{notes:?}");
    // No ratio on a net unit: kept, and said why.
    let mut s = f.scenario.clone();
    s.units[3].gcv_ncv_ratio = None;
    found.remove("Plant-001");
    let (subs, notes) = apply_gl002(&mut s, &found);
    assert!(subs.is_empty());
    assert!(notes[0].contains("no gcv_ncv_ratio"), "{notes:?}");
    // Above 1 after conversion: kept.
    let mut s = f.scenario.clone();
    found.get_mut("Plant-002").unwrap().efficiency_pct = Ok(99.0);
    let (subs, notes) = apply_gl002(&mut s, &found);
    assert!(subs.is_empty());
    assert!(notes[0].contains("outside (0, 1]"), "{notes:?}");
}

#[test]
fn setpoints_per_plant_go_to_each_plants_gl001_agent() {
    let f = fleet();
    let cfg = Config::from_toml_with_env(SAMPLE_FLEET, Vec::new()).unwrap();
    let consumers = setpoint_consumers(&cfg, &f);
    assert_eq!(
        consumers,
        vec![
            ("Plant-001".to_string(), "GL-001"),
            ("Plant-002".to_string(), "GL-001"),
            ("Plant-003".to_string(), "GL-001"),
        ]
    );
    let r = optimize(&f.scenario).unwrap();
    let sp = plant_setpoints(&r, "Plant-001").unwrap();
    assert_eq!(sp["units"].as_array().unwrap().len(), 2);
    assert_eq!(sp["units"][0]["id"], "Boiler-1");
    assert!(plant_setpoints(&r, "Plant-404").is_none());
}
