//! `heatmesh calc <agent> --input FILE`: one calculation, no mesh.

use anyhow::{Context, bail};
use heatmesh_agents::registry;
use std::path::PathBuf;

/// Arguments of `heatmesh calc`.
#[derive(clap::Args)]
pub struct CalcArgs {
    /// Agent kind, e.g. gl-009.
    agent: String,
    /// Request JSON file, `-` for stdin.
    #[arg(long, short)]
    input: PathBuf,
}

/// Runs the kind's calculation and prints the result JSON (pretty) on stdout.
pub fn run(args: CalcArgs) -> anyhow::Result<()> {
    let Some(kind) = registry::lookup(&args.agent) else {
        let known: Vec<&str> = registry::KINDS.iter().map(|k| k.id).collect();
        bail!(
            "unknown agent kind {:?}; known: {}",
            args.agent,
            known.join(", ")
        );
    };
    let input = crate::read_input(&args.input)?;
    let out = (kind.run_json)(input.as_bytes())
        .map_err(|e| anyhow::anyhow!("{} rejected {}: {e}", kind.id, args.input.display()))?;
    let v: serde_json::Value = serde_json::from_slice(&out).context("decoding the result")?;
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}
