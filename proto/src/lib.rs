//! heatmesh-proto: the `heatmesh.v1` gRPC API, generated at build time from `proto/` by
//! protox and tonic-prost-build. Nothing but generated code and the descriptor set lives here.

#![allow(missing_docs, clippy::large_enum_variant)]

/// Package `heatmesh.v1`: TaskService, MeshService, OptimizationService and the typed agent
/// requests/results.
pub mod v1 {
    tonic::include_proto!("heatmesh.v1");
}

/// Encoded FileDescriptorSet of every heatmesh proto, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/heatmesh_descriptor.bin"));
