//! Median solve times of the GL-001 optimizer on generated instances.
//!
//! Run in release: `cargo run --release -p heatmesh-master --example optbench [runs]`.
//! LP sizes are timed with both microlp and clarabel so the `lp_solver = auto` threshold can
//! be checked against this machine.

use heatmesh_optimize::bench::{BenchFigures, bench_with};
use heatmesh_optimize::{GeneratorParams, LpSolverChoice};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => 0.5 * (v[n / 2 - 1] + v[n / 2]),
    }
}

fn run(label: &str, params: GeneratorParams, engine: LpSolverChoice, runs: u64) {
    let figs: Vec<BenchFigures> = (0..runs)
        .map(|seed| bench_with(params, seed, engine, false))
        .collect();
    let errors = figs.iter().filter(|f| f.error.is_some()).count();
    let statuses: Vec<String> = figs.iter().map(|f| format!("{:?}", f.status)).collect();
    let mut statuses_sorted = statuses.clone();
    statuses_sorted.sort();
    statuses_sorted.dedup();
    let gaps: Vec<f64> = figs
        .iter()
        .filter_map(|f| {
            f.greedy_objective_eur_h
                .map(|g| (g - f.objective_eur_h) / f.objective_eur_h.abs().max(1.0))
        })
        .collect();
    let f0 = &figs[0];
    println!(
        "{label:<22} {:>5} plants {:>5} units {:>5} links {:>4} bin | solve median {:>9.2} ms  \
         total median {:>9.2} ms | greedy median {:>7.2} ms, obj +{:.3} % median | engine {:?} \
         status {:?} errors {errors} | peak RSS so far {:.1} MiB",
        params.plants,
        f0.units,
        f0.links,
        f0.binaries,
        median(figs.iter().map(|f| f.solve_ms).collect()),
        median(figs.iter().map(|f| f.total_ms).collect()),
        median(figs.iter().map(|f| f.greedy_ms).collect()),
        100.0 * median(gaps),
        f0.engine,
        statuses_sorted,
        peak_rss_mib(),
    );
}

/// Peak resident memory of this process so far (VmHWM), for the memory column.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

fn main() {
    let runs: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(7);
    let lp = |plants| GeneratorParams {
        plants,
        units_per_plant: 5,
        links_per_plant: 3,
        milp: false,
    };
    println!("GL-001 optimizer benchmark, {runs} seeds per row, 5 units and 3 links per plant");
    for plants in [10, 100, 1000] {
        run("LP microlp", lp(plants), LpSolverChoice::Microlp, runs);
        run("LP clarabel", lp(plants), LpSolverChoice::Clarabel, runs);
        run("LP auto", lp(plants), LpSolverChoice::Auto, runs);
    }
    let milp = GeneratorParams {
        plants: 20,
        units_per_plant: 5,
        links_per_plant: 3,
        milp: true,
    };
    run("MILP microlp", milp, LpSolverChoice::Auto, runs);
    let milp100 = GeneratorParams {
        plants: 100,
        ..milp
    };
    run("MILP microlp", milp100, LpSolverChoice::Auto, runs);
}
