//! Known-answer tests (docs reference table), validation, fallback and randomized cross-checks.

use super::*;

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/optimize");

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * b.abs().max(1.0)
}

#[track_caller]
fn assert_close(what: &str, got: f64, want: f64, rel: f64) {
    assert!(
        close(got, want, rel),
        "{what}: got {got}, want {want} (rel tol {rel})"
    );
}

/// The reference two-plant case from process-heat.md with plant B demand `d_b`.
fn reference(d_b: f64) -> Scenario {
    let mut sc = Scenario::from_path(format!("{EXAMPLES}/two-plants.json")).unwrap();
    sc.plants[1].demand_mw = d_b;
    sc
}

fn heat(r: &DispatchResult, id: &str) -> f64 {
    r.unit(id).unwrap().heat_mw
}

fn assert_dispatch(r: &DispatchResult, gas: f64, oil: f64, hp: f64, link: f64, rel: f64) {
    assert_close("gas", heat(r, "gas"), gas, rel);
    assert_close("oil", heat(r, "oil"), oil, rel);
    assert_close("hp", heat(r, "hp"), hp, rel);
    assert_close("link AB", r.link("AB").unwrap().sent_mw, link, rel);
}

fn assert_verified(sc: &Scenario, r: &DispatchResult) {
    let v = verify(sc, r).unwrap();
    assert!(
        v.iter().all(Violation::is_slack),
        "verifier found non-slack violations: {v:?}"
    );
    let json = serde_json::to_string(r).unwrap();
    assert!(!json.contains("NaN") && !json.contains("null,\"links\""));
}

// ---------------------------------------------------------------- unit heat costs

#[test]
fn heat_costs_match_reference() {
    let sc = reference(18.0);
    let cost = |id: &str| {
        sc.units
            .iter()
            .find(|u| u.id == id)
            .unwrap()
            .heat_cost(sc.carbon_price_eur_t)
            .unwrap()
            .total_eur_mwh
    };
    assert!((cost("gas") - 51.285333).abs() < 1e-6, "{}", cost("gas"));
    assert!((cost("oil") - 83.930353).abs() < 1e-6, "{}", cost("oil"));
    assert!((cost("hp") - 30.0).abs() < 1e-12);
}

#[test]
fn ipcc_gas_factor_is_0_20196_kg_per_kwh_net() {
    let (scale, basis) = EmissionUnit::KgCo2PerTjNet.t_per_mwh_scale();
    assert!((56_100.0 * scale - 0.20196).abs() < 1e-12);
    assert_eq!(basis, Some(Basis::Net));
}

#[test]
fn gross_factor_is_converted_to_net_basis_with_ratio() {
    let mut sc = reference(18.0);
    // EPA natural gas 53.06 kg/MMBtu (gross); unit price and efficiency on the net basis.
    sc.units[0].emission_factor = Some(EmissionFactor {
        value: 53.06,
        unit: EmissionUnit::KgCo2PerMmbtuGross,
    });
    assert!(
        matches!(sc.validate(), Err(ScenarioError::Invalid(ref e)) if e[0].path == "units[0].gcv_ncv_ratio")
    );
    sc.units[0].gcv_ncv_ratio = Some(1.108);
    sc.validate().unwrap();
    let c = sc.units[0].heat_cost(80.0).unwrap();
    let t_per_mwh_net = 53.06e-3 / 0.2930710702 * 1.108;
    assert!((c.co2_t_per_mwh - t_per_mwh_net / 0.9).abs() < 1e-12);
}

// ---------------------------------------------------------------- known-answer table

#[test]
fn known_answer_d_b_18_lp() {
    let sc = reference(18.0);
    let r = optimize(&sc).unwrap();
    assert_eq!(r.algorithm, AlgorithmUsed::Lp);
    assert_eq!(r.engine, Some(Engine::Microlp));
    assert_eq!(r.status, Status::Optimal);
    assert_close("objective", r.objective_eur_h, 1628.930573, 1e-6);
    assert_dispatch(&r, 20.0, 5.4, 5.0, 8.0, 1e-6);
    assert!(r.violations.is_empty());
    assert_eq!(r.gap, Some(0.0));
    assert_eq!(r.marginal_cost_method.as_deref(), Some("clarabel_dual"));
    // Oil is the marginal unit at B; gas at A (the link is full, gas has headroom).
    let mb = r.plant("B").unwrap().marginal_cost_eur_mwh.unwrap();
    let ma = r.plant("A").unwrap().marginal_cost_eur_mwh.unwrap();
    assert_close("marginal B", mb, 83.930353, 1e-5);
    assert_close("marginal A", ma, 51.285333, 1e-5);
    // Cost breakdown adds up and CO2 follows the factors.
    let c = r.costs;
    assert_close(
        "breakdown",
        c.fuel_eur_h + c.electricity_eur_h + c.carbon_eur_h + c.links_eur_h,
        r.objective_eur_h,
        1e-12,
    );
    assert_close("electricity", c.electricity_eur_h, 150.0, 1e-12);
    let co2 = 20.0 / 0.9 * 0.20196 + 5.4 / 0.85 * 0.26676;
    assert_close("co2", r.co2_t_h, co2, 1e-9);
    assert_close("carbon", c.carbon_eur_h, 80.0 * co2, 1e-9);
    assert_verified(&sc, &r);
}

#[test]
fn known_answer_d_b_14_lp() {
    let sc = reference(14.0);
    let r = optimize(&sc).unwrap();
    assert_eq!(r.status, Status::Optimal);
    assert_close("objective", r.objective_eur_h, 1293.209161, 1e-6);
    assert_dispatch(&r, 20.0, 1.4, 5.0, 8.0, 1e-6);
    assert_verified(&sc, &r);
}

#[test]
fn known_answer_d_b_14_milp_min_loads() {
    let sc = Scenario::from_path(format!("{EXAMPLES}/two-plants-milp.json")).unwrap();
    assert!(sc.has_switchable_units());
    let r = optimize(&sc).unwrap();
    assert_eq!(r.algorithm, AlgorithmUsed::Milp);
    assert_eq!(r.status, Status::Optimal);
    assert_close("objective", r.objective_eur_h, 1371.068219, 1e-6);
    assert_dispatch(&r, 17.263158, 4.0, 5.0, 5.263158, 1e-6);
    assert_eq!(r.unit("oil").unwrap().on, Some(true));
    assert_eq!(r.unit("hp").unwrap().on, None);
    assert_eq!(
        r.marginal_cost_method.as_deref(),
        Some("clarabel_dual_at_fixed_commitment")
    );
    // With oil held at its floor, extra heat at B comes from gas via the link.
    let mb = r.plant("B").unwrap().marginal_cost_eur_mwh.unwrap();
    assert_close("marginal B", mb, 51.285333 / 0.95, 1e-5);
    assert_verified(&sc, &r);
}

#[test]
fn known_answer_d_b_40_strict_is_infeasible_naming_b() {
    let mut sc = reference(40.0);
    sc.options.mode = Mode::Strict;
    let r = optimize(&sc).unwrap();
    assert_eq!(r.status, Status::Infeasible);
    assert_eq!(r.mode, Mode::Strict);
    assert_eq!(r.violations.len(), 1, "{:?}", r.violations);
    let v = &r.violations[0];
    assert_eq!(v.constraint, "balance[B]");
    assert_eq!(v.kind, ViolationKind::Unserved);
    assert_close("unserved B", v.amount_mw, 12.4, 1e-6);
    assert!(v.detail.contains("plant B"));
}

#[test]
fn known_answer_d_b_40_elastic_m_1000() {
    let mut sc = reference(40.0);
    sc.options.unserved_penalty_eur_mwh = Some(1000.0);
    let r = optimize(&sc).unwrap();
    assert_eq!(r.status, Status::FeasibleWithSlack);
    assert_close("objective", r.objective_eur_h, 14834.661961, 1e-6);
    assert_close("unserved B", r.plant("B").unwrap().unserved_mw, 12.4, 1e-6);
    assert_eq!(r.plant("A").unwrap().unserved_mw, 0.0);
    assert_close("penalty", r.costs.unserved_penalty_eur_h, 12_400.0, 1e-6);
    assert_dispatch(&r, 20.0, 15.0, 5.0, 8.0, 1e-6);
    assert_eq!(r.violations.len(), 1);
    assert_eq!(r.violations[0].constraint, "balance[B]");
    assert_close(
        "marginal B = M",
        r.plant("B").unwrap().marginal_cost_eur_mwh.unwrap(),
        1000.0,
        1e-5,
    );
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    assert_verified(&sc, &r);
}

#[test]
fn known_answers_with_clarabel_engine() {
    for (d_b, obj, oil) in [(18.0, 1628.930573, 5.4), (14.0, 1293.209161, 1.4)] {
        let mut sc = reference(d_b);
        sc.options.lp_solver = LpSolverChoice::Clarabel;
        let r = optimize(&sc).unwrap();
        assert_eq!(r.engine, Some(Engine::Clarabel));
        assert_eq!(r.status, Status::Optimal);
        assert_close("objective", r.objective_eur_h, obj, 1e-6);
        assert_dispatch(&r, 20.0, oil, 5.0, 8.0, 1e-6);
        assert_verified(&sc, &r);
    }
}

#[test]
fn examples_json_and_toml_are_the_same_problem() {
    let a = Scenario::from_path(format!("{EXAMPLES}/two-plants.json")).unwrap();
    let b = Scenario::from_path(format!("{EXAMPLES}/two-plants.toml")).unwrap();
    assert_eq!(a, b);
    let r = optimize(&b).unwrap();
    assert_close("objective", r.objective_eur_h, 1628.930573, 1e-6);
    // Round trip through our own serialisation.
    let again = Scenario::from_json_str(&a.to_json_string()).unwrap();
    assert_eq!(a, again);
}

#[test]
fn greedy_on_reference_is_feasible_and_not_better_than_lp() {
    for d_b in [14.0, 18.0, 40.0] {
        let mut sc = reference(d_b);
        sc.options.unserved_penalty_eur_mwh = Some(1000.0);
        let lp = optimize(&sc).unwrap();
        sc.options.algorithm = Algorithm::Greedy;
        let g = optimize(&sc).unwrap();
        assert_eq!(g.algorithm, AlgorithmUsed::Greedy);
        assert_eq!(g.status, Status::Heuristic);
        assert!(g.objective_eur_h >= lp.objective_eur_h - 1e-6);
        // On this small case merit order is optimal.
        assert_close(
            "greedy objective",
            g.objective_eur_h,
            lp.objective_eur_h,
            1e-9,
        );
        let b = g.lower_bound_eur_h.unwrap();
        assert_close("bound", b, lp.objective_eur_h, 1e-6);
        assert!(g.gap.unwrap() < 1e-6);
        assert_verified(&sc, &g);
    }
}

#[test]
fn greedy_on_milp_reference_respects_floors() {
    let mut sc = Scenario::from_path(format!("{EXAMPLES}/two-plants-milp.json")).unwrap();
    sc.options.algorithm = Algorithm::Greedy;
    let g = optimize(&sc).unwrap();
    assert!(g.objective_eur_h >= 1371.068219 - 1e-6);
    assert!(g.unserved_mw() == 0.0);
    assert_verified(&sc, &g);
}

// ---------------------------------------------------------------- modes, slack, fallback

#[test]
fn must_run_surplus_is_dumped_or_reported_in_strict_mode() {
    let mut sc = reference(18.0);
    sc.plants[0].demand_mw = 2.0;
    sc.units[0].min_mw = 15.0; // gas must run at >= 15 MW; A needs 2, link takes 8.
    sc.plants[1].demand_mw = 4.0; // ... but B only absorbs 4.
    let r = optimize(&sc).unwrap();
    assert_eq!(r.status, Status::FeasibleWithSlack);
    let dumped = r.dumped_mw();
    // Best: gas at its 15 MW floor and the link full, because transit losses absorb heat that
    // would otherwise be dumped: 5 MW dumped at A, 7.6 - 4 = 3.6 MW at B.
    assert_close("dumped", dumped, 8.6, 1e-6);
    assert_close("link", r.link("AB").unwrap().sent_mw, 8.0, 1e-9);
    assert!(r.violations.iter().any(|v| v.kind == ViolationKind::Dumped));
    sc.options.mode = Mode::Strict;
    let s = optimize(&sc).unwrap();
    assert_eq!(s.status, Status::Infeasible);
    assert!(
        s.violations
            .iter()
            .any(|v| v.kind == ViolationKind::Dumped && v.constraint == "balance[A]")
    );
}

#[test]
fn tiny_budget_falls_back_to_greedy() {
    let mut sc = generate(
        GeneratorParams {
            plants: 300,
            units_per_plant: 3,
            links_per_plant: 2,
            milp: true,
        },
        7,
    );
    sc.options.time_budget_ms = 1;
    let r = optimize(&sc).unwrap();
    assert_eq!(r.algorithm, AlgorithmUsed::Greedy);
    assert_eq!(r.status, Status::Heuristic);
    assert!(r.fallback_reason.is_some());
    assert!(r.warnings.iter().any(|w| w.contains("greedy")));
    assert_verified(&sc, &r);
}

#[test]
fn lp_algorithm_rejects_switchable_units() {
    let mut sc = Scenario::from_path(format!("{EXAMPLES}/two-plants-milp.json")).unwrap();
    sc.options.algorithm = Algorithm::Lp;
    let e = optimize(&sc).unwrap_err();
    assert!(e.to_string().contains("options.algorithm"), "{e}");
}

#[test]
fn low_penalty_is_warned_about() {
    let mut sc = reference(18.0);
    sc.options.unserved_penalty_eur_mwh = Some(60.0); // below the oil heat cost
    let r = optimize(&sc).unwrap();
    assert_eq!(r.status, Status::FeasibleWithSlack);
    assert_close("oil off", heat(&r, "oil"), 0.0, 1e-9);
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("unserved_penalty_eur_mwh")),
        "{:?}",
        r.warnings
    );
}

#[test]
fn verifier_catches_tampered_results() {
    let sc = reference(18.0);
    let mut r = optimize(&sc).unwrap();
    r.links[0].sent_mw = 9.0;
    r.units[1].heat_mw = -1.0;
    let v = verify(&sc, &r).unwrap();
    assert!(v.iter().any(|v| v.kind == ViolationKind::LinkCapacity));
    assert!(v.iter().any(|v| v.kind == ViolationKind::Negative));
    assert!(v.iter().any(|v| v.kind == ViolationKind::Balance));
    r.units[0].id = "ghost".into();
    let v = verify(&sc, &r).unwrap();
    assert!(v.iter().any(|v| v.kind == ViolationKind::UnknownId));
}

#[test]
fn verifier_catches_binary_violation() {
    let sc = Scenario::from_path(format!("{EXAMPLES}/two-plants-milp.json")).unwrap();
    let mut r = optimize(&sc).unwrap();
    let oil = r.units.iter_mut().find(|u| u.id == "oil").unwrap();
    oil.on = Some(false);
    let v = verify(&sc, &r).unwrap();
    assert!(v.iter().any(|v| v.kind == ViolationKind::Binary), "{v:?}");
    let oil = r.units.iter_mut().find(|u| u.id == "oil").unwrap();
    oil.on = Some(true);
    oil.heat_mw = 2.0;
    let v = verify(&sc, &r).unwrap();
    assert!(v.iter().any(|v| v.constraint == "unit[oil].min"), "{v:?}");
}

#[test]
fn startup_cost_can_keep_a_unit_off() {
    let mut sc = Scenario::from_path(format!("{EXAMPLES}/two-plants-milp.json")).unwrap();
    // Without oil, B is 1.4 MW short; at the default M serving still wins, so oil starts and
    // its startup cost is charged, unless it is already running.
    sc.units[1].startup_cost_eur = 100.0;
    let r = optimize(&sc).unwrap();
    assert_eq!(r.unit("oil").unwrap().on, Some(true));
    assert_close("startup", r.costs.startup_eur, 100.0, 1e-12);
    assert_close("objective", r.objective_eur_h, 1471.068219, 1e-6);
    sc.units[1].initially_on = true;
    let r = optimize(&sc).unwrap();
    assert_close("objective", r.objective_eur_h, 1371.068219, 1e-6);
}

// ---------------------------------------------------------------- validation

fn field_errors(json: &str) -> Vec<FieldError> {
    match Scenario::from_json_str(json) {
        Err(ScenarioError::Invalid(v)) => v,
        other => panic!("expected validation errors, got {other:?}"),
    }
}

fn reference_json() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(format!("{EXAMPLES}/two-plants.json")).unwrap())
        .unwrap()
}

fn errors_after(edit: impl FnOnce(&mut serde_json::Value)) -> Vec<FieldError> {
    let mut v = reference_json();
    edit(&mut v);
    field_errors(&v.to_string())
}

#[track_caller]
fn assert_error(errs: &[FieldError], path: &str, needle: &str) {
    assert!(
        errs.iter()
            .any(|e| e.path == path && e.rule.contains(needle)),
        "no error at {path} containing {needle:?}: {errs:?}"
    );
}

#[test]
fn validation_names_field_and_rule() {
    let e = errors_after(|v| v["units"][0]["max_mw"] = (-5.0).into());
    assert_error(&e, "units[0].max_mw", "negative capacity");
    let e = errors_after(|v| v["units"][1]["min_mw"] = 20.0.into());
    assert_error(&e, "units[1].min_mw", "min_mw 20 > max_mw 15");
    let e = errors_after(|v| v["units"][1]["efficiency"] = 1.2.into());
    assert_error(&e, "units[1].efficiency", "(0, 1]");
    let e = errors_after(|v| v["units"][1]["efficiency"] = 0.0.into());
    assert_error(&e, "units[1].efficiency", "(0, 1]");
    let e = errors_after(|v| v["units"][2]["cop"] = 0.0.into());
    assert_error(&e, "units[2].cop", "COP must be > 0");
    let e = errors_after(|v| v["links"][0]["to"] = "Z".into());
    assert_error(&e, "links[0].to", "unknown plant \"Z\"");
    let e = errors_after(|v| v["units"][0]["plant"] = "Q".into());
    assert_error(&e, "units[0].plant", "unknown plant \"Q\"");
    let e = errors_after(|v| v["units"][1]["id"] = "gas".into());
    assert_error(&e, "units[1].id", "duplicate unit id \"gas\"");
    let e = errors_after(|v| v["plants"][1]["id"] = "A".into());
    assert_error(&e, "plants[1].id", "duplicate plant id");
    let e = errors_after(|v| v["links"][0]["loss_factor"] = 1.0.into());
    assert_error(&e, "links[0].loss_factor", "[0, 1)");
    let e = errors_after(|v| v["links"][0]["loss_factor"] = (-0.1).into());
    assert_error(&e, "links[0].loss_factor", "[0, 1)");
    let e = errors_after(|v| v["links"][0]["capacity_mw"] = (-1.0).into());
    assert_error(&e, "links[0].capacity_mw", "negative capacity");
    let e = errors_after(|v| v["plants"][0]["demand_mw"] = (-1.0).into());
    assert_error(&e, "plants[0].demand_mw", ">= 0");
    let e = errors_after(|v| {
        v["units"][0]
            .as_object_mut()
            .unwrap()
            .remove("emission_factor");
    });
    assert_error(&e, "units[0].emission_factor", "required");
    let e = errors_after(|v| v["units"][2]["efficiency"] = 0.9.into());
    assert_error(&e, "units[2].efficiency", "cop, not efficiency");
    let e = errors_after(|v| v["options"]["unserved_penalty_eur_mwh"] = 0.0.into());
    assert_error(&e, "options.unserved_penalty_eur_mwh", "> 0");
    // Several problems are all reported at once.
    let e = errors_after(|v| {
        v["units"][0]["max_mw"] = (-5.0).into();
        v["links"][0]["from"] = "nowhere".into();
    });
    assert!(e.len() >= 2);
}

#[test]
fn nan_is_rejected_everywhere_it_can_enter() {
    // JSON cannot spell NaN; TOML can.
    let toml = std::fs::read_to_string(format!("{EXAMPLES}/two-plants.toml")).unwrap();
    let bad = toml.replace("efficiency = 0.85", "efficiency = nan");
    match Scenario::from_toml_str(&bad) {
        Err(ScenarioError::Invalid(e)) => assert_error(&e, "units[1].efficiency", "finite"),
        other => panic!("{other:?}"),
    }
    let bad = toml.replace("carbon_price_eur_t = 80.0", "carbon_price_eur_t = inf");
    match Scenario::from_toml_str(&bad) {
        Err(ScenarioError::Invalid(e)) => assert_error(&e, "carbon_price_eur_t", "finite"),
        other => panic!("{other:?}"),
    }
    // And in code-built scenarios, optimize refuses too.
    let mut sc = reference(18.0);
    sc.links[0].loss_factor = f64::NAN;
    let e = optimize(&sc).unwrap_err();
    assert!(e.to_string().contains("links[0].loss_factor"), "{e}");
}

#[test]
fn parse_errors_are_reported() {
    assert!(matches!(
        Scenario::from_json_str("{\"plants\": []"),
        Err(ScenarioError::Parse { format: "JSON", .. })
    ));
    let e = Scenario::from_json_str(
        r#"{"plants":[{"id":"A","demand_mw":1}],"units":[],"carbon_price_eur_t":0,"typo":1}"#,
    )
    .unwrap_err();
    assert!(e.to_string().contains("typo"), "{e}");
    assert!(matches!(
        Scenario::from_path("/nonexistent/x.yaml"),
        Err(ScenarioError::Extension(_))
    ));
    assert!(matches!(
        Scenario::from_path("/nonexistent/x.json"),
        Err(ScenarioError::Io { .. })
    ));
}

#[test]
fn default_penalty_is_above_every_real_cost() {
    let sc = reference(18.0);
    let m = sc.unserved_penalty();
    assert!(m >= 1000.0);
    assert!(m > 10.0 * 83.930353);
    assert_eq!(sc.dump_penalty(), m);
}

// ---------------------------------------------------------------- randomized cross-checks

fn solve_with(sc: &Scenario, algorithm: Algorithm, engine: LpSolverChoice) -> DispatchResult {
    let mut sc = sc.clone();
    sc.options.algorithm = algorithm;
    sc.options.lp_solver = engine;
    sc.options.marginal_costs = false;
    let r = optimize(&sc).unwrap_or_else(|e| panic!("{algorithm:?}/{engine:?}: {e}"));
    assert_verified(&sc, &r);
    r
}

#[test]
fn random_lp_instances_cross_check() {
    for seed in 0..200u64 {
        let mut rng = heatmesh_base::Rng::new(seed);
        let params = GeneratorParams {
            plants: 2 + rng.below(9),
            units_per_plant: 1 + rng.below(4),
            links_per_plant: rng.below(3),
            milp: false,
        };
        let sc = generate(params, seed);
        let lp = solve_with(&sc, Algorithm::Lp, LpSolverChoice::Microlp);
        assert_eq!(lp.algorithm, AlgorithmUsed::Lp, "seed {seed}");
        assert_eq!(lp.status, Status::Optimal, "seed {seed}: feasible instance");
        let milp = solve_with(&sc, Algorithm::Milp, LpSolverChoice::Auto);
        assert!(
            close(milp.objective_eur_h, lp.objective_eur_h, 1e-6),
            "seed {seed}: LP {} != MILP {}",
            lp.objective_eur_h,
            milp.objective_eur_h
        );
        let cl = solve_with(&sc, Algorithm::Lp, LpSolverChoice::Clarabel);
        assert!(
            close(cl.objective_eur_h, lp.objective_eur_h, 1e-6),
            "seed {seed}: microlp {} != clarabel {}",
            lp.objective_eur_h,
            cl.objective_eur_h
        );
        let g = solve_with(&sc, Algorithm::Greedy, LpSolverChoice::Auto);
        assert!(
            g.objective_eur_h >= lp.objective_eur_h - 1e-6 * lp.objective_eur_h.abs().max(1.0),
            "seed {seed}: greedy {} below LP {}",
            g.objective_eur_h,
            lp.objective_eur_h
        );
        assert_eq!(
            g.unserved_mw(),
            0.0,
            "seed {seed}: greedy left demand unserved"
        );
    }
}

#[test]
fn random_milp_instances_cross_check() {
    for seed in 0..60u64 {
        let mut rng = heatmesh_base::Rng::new(seed.wrapping_mul(31));
        let params = GeneratorParams {
            plants: 2 + rng.below(5),
            units_per_plant: 2 + rng.below(3),
            links_per_plant: rng.below(3),
            milp: true,
        };
        let sc = generate(params, seed);
        let milp = solve_with(&sc, Algorithm::Auto, LpSolverChoice::Auto);
        let expect = if sc.has_switchable_units() {
            AlgorithmUsed::Milp
        } else {
            AlgorithmUsed::Lp
        };
        assert_eq!(milp.algorithm, expect, "seed {seed}");
        assert_eq!(milp.status, Status::Optimal, "seed {seed}");
        let g = solve_with(&sc, Algorithm::Greedy, LpSolverChoice::Auto);
        assert!(
            g.objective_eur_h >= milp.objective_eur_h - 1e-6 * milp.objective_eur_h.abs().max(1.0),
            "seed {seed}: greedy {} below MILP {}",
            g.objective_eur_h,
            milp.objective_eur_h
        );
        // The LP relaxation bound the greedy reports is below the MILP optimum.
        let b = g.lower_bound_eur_h.unwrap();
        assert!(b <= milp.objective_eur_h + 1e-6 * milp.objective_eur_h.abs().max(1.0));
    }
}

#[test]
fn random_strict_instances_are_feasible() {
    for seed in 0..40u64 {
        let mut sc = generate(
            GeneratorParams {
                plants: 5,
                units_per_plant: 3,
                links_per_plant: 2,
                milp: seed % 2 == 0,
            },
            seed,
        );
        sc.options.mode = Mode::Strict;
        let r = optimize(&sc).unwrap();
        assert_eq!(r.status, Status::Optimal, "seed {seed}");
        assert_verified(&sc, &r);
    }
}

#[test]
fn bench_entry_point_reports_figures() {
    let f = bench(10, 3, 2, false, 1);
    assert!(f.error.is_none());
    assert_eq!(f.algorithm, AlgorithmUsed::Lp);
    assert_eq!(f.units, 30);
    assert!(f.greedy_objective_eur_h.unwrap() >= f.objective_eur_h - 1e-6 * f.objective_eur_h);
    let f = bench(5, 3, 2, true, 1);
    assert_eq!(f.algorithm, AlgorithmUsed::Milp);
    assert!(f.binaries > 0);
}

// ---------------------------------------------------------------- edge cases

#[test]
fn plant_without_units_is_all_unserved() {
    let mut sc = reference(18.0);
    sc.units.clear();
    sc.links.clear();
    for engine in [LpSolverChoice::Microlp, LpSolverChoice::Clarabel] {
        sc.options.lp_solver = engine;
        let r = optimize(&sc).unwrap();
        assert_eq!(r.status, Status::FeasibleWithSlack);
        assert_close("unserved", r.unserved_mw(), 30.0, 1e-9);
        assert_verified(&sc, &r);
    }
}

#[test]
fn fixed_output_and_zero_capacity_are_handled() {
    let mut sc = reference(18.0);
    sc.units[2].min_mw = 5.0; // heat pump pinned at 5 MW
    sc.links[0].capacity_mw = 0.0;
    for engine in [LpSolverChoice::Microlp, LpSolverChoice::Clarabel] {
        sc.options.lp_solver = engine;
        let r = optimize(&sc).unwrap();
        assert_eq!(r.status, Status::Optimal);
        assert_dispatch(&r, 12.0, 13.0, 5.0, 0.0, 1e-6);
        assert_verified(&sc, &r);
    }
}

#[test]
fn zero_demand_everywhere_costs_nothing() {
    let mut sc = reference(0.0);
    sc.plants[0].demand_mw = 0.0;
    let r = optimize(&sc).unwrap();
    assert_eq!(r.status, Status::Optimal);
    assert_eq!(r.objective_eur_h, 0.0);
    let g = {
        sc.options.algorithm = Algorithm::Greedy;
        optimize(&sc).unwrap()
    };
    assert_eq!(g.objective_eur_h, 0.0);
}

#[test]
fn marginal_costs_can_be_switched_off() {
    let mut sc = reference(18.0);
    sc.options.marginal_costs = false;
    let r = optimize(&sc).unwrap();
    assert!(r.plants.iter().all(|p| p.marginal_cost_eur_mwh.is_none()));
    assert!(r.marginal_cost_method.unwrap().contains("not requested"));
    // Clarabel's duals come with its primal solve, so they are kept.
    sc.options.lp_solver = LpSolverChoice::Clarabel;
    let r = optimize(&sc).unwrap();
    assert!(r.plants.iter().all(|p| p.marginal_cost_eur_mwh.is_some()));
}

#[test]
fn solver_threads_are_capped_and_every_slot_comes_back() {
    static POOL: Slots = Slots::new();
    let held: Vec<SolverSlot> = (0..3)
        .map(|_| POOL.claim(3, Duration::ZERO).unwrap())
        .collect();
    let t = Instant::now();
    assert!(
        POOL.claim(3, Duration::from_millis(30)).is_none(),
        "a fourth slot of three"
    );
    assert!(
        t.elapsed() >= Duration::from_millis(30),
        "gave up before its wait"
    );
    // A slot freed while a claim waits is taken by it.
    let waiter = std::thread::spawn(|| POOL.claim(3, Duration::from_secs(10)).is_some());
    std::thread::sleep(Duration::from_millis(20));
    drop(held);
    assert!(waiter.join().unwrap());
    assert_eq!(POOL.running(), 0);
    // A solve's slot comes back when its thread ends.
    let r = optimize(&reference(30.0)).unwrap();
    assert_eq!(r.algorithm, AlgorithmUsed::Lp);
    assert!(solver_threads() <= MAX_SOLVER_THREADS);
}
