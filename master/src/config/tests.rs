//! Configuration: parsing, environment overrides, validation messages that name the key.

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
    let bad = SAMPLE_FLEET.replacen("\"GL-001\"", "\"GL-999\"", 1);
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

/// The sample fleet's heat data and its optimum, worked by hand: Plant-003 runs WHR-1 and
/// HP-1 flat out and sends its 2 MW surplus to Plant-002 (1.84 MW arrive); Plant-001's
/// Boiler-1 covers its 12 MW plus a full P1-P2 link (8 MW sent, 7.6 arrive); Plant-002's
/// oil boiler covers the remaining 8.56 MW; the CHP and Boiler-2 are dearer and stay off.
#[test]
fn sample_fleet_heat_scenario_and_its_optimum() {
    let c = Config::from_toml_with_env(SAMPLE_FLEET, no_env()).unwrap();
    let f = c.fleet_heat().unwrap();
    let s = &f.scenario;
    assert_eq!((s.plants.len(), s.units.len(), s.links.len()), (3, 6, 3));
    assert_eq!(s.units[3].plant, "Plant-002", "plant filled from the table");
    let r = crate::optimize::optimize(s).unwrap();
    let t_per_mwh = |kg_per_tj: f64| kg_per_tj * 1e-3 * 3600.0 / 1e6;
    let gas = (30.0 + 80.0 * t_per_mwh(56_100.0)) / 0.90;
    let oil = (50.0 + 80.0 * t_per_mwh(74_100.0)) / 0.85;
    let oil_mw = 18.0 - 2.0 * 0.92 - 8.0 * 0.95;
    let expected = 20.0 * gas + 5.0 * 30.0 + 2.0 * 1.0 + oil_mw * oil;
    assert!(
        (r.objective_eur_h - expected).abs() < 1e-6,
        "{} vs {expected}",
        r.objective_eur_h
    );
    assert!((r.unit("Boiler-3").unwrap().heat_mw - oil_mw).abs() < 1e-6);
    assert_eq!(r.unit("CHP-1").unwrap().heat_mw, 0.0);
}

#[test]
fn heat_errors_name_the_config_key() {
    let check = |text: &str, key: &str, rule: &str| {
        let e = Config::from_toml_with_env(text, no_env())
            .unwrap_err()
            .to_string();
        assert!(e.contains(&format!("`{key}`")) && e.contains(rule), "{e}");
    };
    check(
        &SAMPLE_FLEET.replacen("efficiency = 0.85", "efficiency = 1.2", 1),
        "plants[1].heat.units[1].efficiency",
        "efficiency must be in (0, 1] (got 1.2)",
    );
    check(
        &SAMPLE_FLEET.replacen("max_mw = 15.0", "max_mw = -15.0", 1),
        "plants[1].heat.units[1].max_mw",
        "negative capacity",
    );
    check(
        &SAMPLE_FLEET.replacen("demand_mw = 6.0", "demand_mw = nan", 1),
        "plants[2].heat.demand_mw",
        "finite",
    );
    check(
        &SAMPLE_FLEET.replacen("to = \"Plant-002\"", "to = \"Plant-404\"", 1),
        "heat.links[0].to",
        "unknown plant \"Plant-404\"",
    );
    check(
        &SAMPLE_FLEET.replacen("carbon_price_eur_t = 80.0", "", 1),
        "heat.carbon_price_eur_t",
        "required",
    );
    check(
        &SAMPLE_FLEET.replacen(
            "id = \"Boiler-1\"",
            "id = \"Boiler-1\"\nplant = \"Plant-002\"",
            1,
        ),
        "plants[0].heat.units[0].plant",
        "must be omitted or equal the plant's id Plant-001",
    );
    check(
        &SAMPLE_FLEET.replacen("demand_mw = 12.0", "demand_mw = 12.0\nsupply = 3", 1),
        "plants[0].heat",
        "unknown field `supply`",
    );
    // No heat data at all is fine: the fleet has no scenario.
    let plain = "[[plants]]\nid = \"P\"\nname = \"p\"\nagents = [\"GL-009\"]\n";
    assert!(
        Config::from_toml_with_env(plain, no_env())
            .unwrap()
            .fleet_heat()
            .is_none()
    );
}

#[test]
fn meter_errors_name_the_config_key() {
    let check = |extra: &str, key: &str, rule: &str| {
        let text = SAMPLE_FLEET.replacen(
            "balance_threshold_pct = 5.0\n",
            &format!("balance_threshold_pct = 5.0\n{extra}\n"),
            1,
        );
        let e = Config::from_toml_with_env(&text, no_env())
            .unwrap_err()
            .to_string();
        assert!(e.contains(&format!("`{key}`")) && e.contains(rule), "{e}");
    };
    let meter = |body: &str| format!("[[plants.meters]]\nid = \"x\"\n{body}");
    check(
        &meter("quantity = \"flux\"\nunit = \"kW\""),
        "plants[0].meters[0].quantity",
        "unknown variant `flux`",
    );
    check(
        &meter("quantity = \"power\"\nunit = \"kW\"\ncolour = 1"),
        "plants[0].meters[0]",
        "unknown field `colour`",
    );
    check(
        "[[plants.sources]]\nid = \"plc\"\nkind = \"modbus\"\nendpoint = \"localhost\"",
        "plants[0].sources[0].endpoint",
        "must be host:port",
    );
    check(
        &meter("quantity = \"power\"\nunit = \"kW\"\nsource = \"dcs\""),
        "plants[0].meters[0].source",
        "no source \"dcs\"",
    );
}
