//! Compiles the heatmesh.v1 protos with protox (pure Rust, no protoc install).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/heatmesh/v1/calc.proto",
        "proto/heatmesh/v1/tasks.proto",
        "proto/heatmesh/v1/mesh.proto",
        "proto/heatmesh/v1/node.proto",
        "proto/heatmesh/v1/optimize.proto",
        "proto/heatmesh/v1/readings.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("heatmesh_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;

    let mut config = tonic_prost_build::configure();
    // Calculation messages mirror the agents' JSON, so they get serde and the gRPC layer
    // converts them generically.
    for file in fds.file.iter().filter(|f| f.name().ends_with("calc.proto")) {
        for msg in &file.message_type {
            config = config.type_attribute(
                format!(".heatmesh.v1.{}", msg.name()),
                "#[derive(serde::Serialize, serde::Deserialize)] #[serde(default)]",
            );
        }
    }
    // GL-001 results mirror the optimizer's result JSON the same way; request and status
    // messages hold well-known types (Timestamp, Duration) and are converted by hand.
    for file in fds
        .file
        .iter()
        .filter(|f| f.name().ends_with("optimize.proto"))
    {
        for msg in file
            .message_type
            .iter()
            .filter(|m| m.name().starts_with("Heat"))
        {
            config = config.type_attribute(
                format!(".heatmesh.v1.{}", msg.name()),
                "#[derive(serde::Serialize, serde::Deserialize)] #[serde(default)]",
            );
        }
    }
    config.compile_fds(fds)?;
    Ok(())
}
