//! `heatmesh bench calc`: single-core throughput of every agent kind's calculation, and the
//! cost of one IAPWS-IF97 (p,T) property call per region.

use heatmesh_agents::calc::gl012_steam;
use heatmesh_agents::registry;
use std::hint::black_box;
use std::time::{Duration, Instant};

/// Arguments of `heatmesh bench calc`.
#[derive(clap::Args)]
pub struct CalcBenchArgs {
    /// Time spent measuring each figure.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    per_case: Duration,
}

/// Runs `f` repeatedly for about `budget` and returns (calls, elapsed).
fn measure(budget: Duration, mut f: impl FnMut()) -> (u64, Duration) {
    let start = Instant::now();
    let mut n = 0u64;
    // Check the clock every 256 calls so it does not dominate sub-microsecond calls.
    while start.elapsed() < budget {
        for _ in 0..256 {
            f();
        }
        n += 256;
    }
    (n, start.elapsed())
}

/// Prints one line per agent kind (its shipped example, JSON in and out, as the mesh runs
/// it) and one line per IF97 region.
pub fn run(a: CalcBenchArgs) -> anyhow::Result<()> {
    println!(
        "heatmesh bench calc: one thread, {:?} per figure",
        a.per_case
    );
    println!(
        "agent kinds (examples/calc/<kind>.json through run_json: parse, validate, compute, encode):"
    );
    for k in registry::KINDS {
        let json = k.example.as_bytes();
        (k.run_json)(json).map_err(|e| anyhow::anyhow!("{}: {e}", k.id))?;
        let (n, t) = measure(a.per_case, || {
            black_box((k.run_json)(black_box(json)).ok());
        });
        let per = t.as_secs_f64() / n as f64;
        println!(
            "  {:<7} {:<20} {:>10.0} calls/s  {:>8.2} us/call",
            k.id,
            k.name,
            1.0 / per,
            per * 1e6
        );
    }
    println!("IAPWS-IF97 props_pt (all properties of one state), per region:");
    let cases: [(&str, &[(f64, f64)]); 4] = [
        (
            "region 1 (liquid)",
            &[(3.0, 300.0), (80.0, 300.0), (3.0, 500.0), (10.0, 450.0)],
        ),
        (
            "region 2 (vapour)",
            &[
                (0.0035, 300.0),
                (0.0035, 700.0),
                (30.0, 700.0),
                (4.0, 673.15),
            ],
        ),
        (
            "region 3 (near critical)",
            &[(25.5837018, 650.0), (78.3095639, 750.0), (30.0, 660.0)],
        ),
        (
            "region 5 (high T)",
            &[(0.5, 1500.0), (30.0, 1500.0), (30.0, 2000.0)],
        ),
    ];
    for (label, points) in cases {
        let mut i = 0;
        let (n, t) = measure(a.per_case, || {
            let (p, tk) = points[i % points.len()];
            i += 1;
            black_box(gl012_steam::props_pt(black_box(p), black_box(tk)).ok());
        });
        let ns = t.as_secs_f64() / n as f64 * 1e9;
        println!("  {label:<26} {ns:>8.1} ns/call");
    }
    Ok(())
}
