//! heatmesh-master: GL-001 ProcessHeatOrchestrator.
//!
//! [`ledger`] is the durable task store, [`scheduler`] the master actor that owns every task
//! state change, [`grpc`] the only place protobuf types are converted, [`server`] wires it
//! together with the metrics/health HTTP endpoint ([`procstat`] adds the process's CPU and
//! memory to it). [`optimize`] is the multi-plant heat distribution optimizer, its own crate
//! (heatmesh-optimize) so the compiler keeps it pure; [`heat_dispatch`] runs it for the fleet
//! (GL-002 efficiencies, operator overrides, last run). [`conn`] holds the gRPC listener's
//! connection limits.

pub mod config;
pub mod conn;
pub mod feeds;
pub mod grpc;
pub mod heat_dispatch;
pub mod ledger;
pub use heatmesh_optimize as optimize;
pub mod procstat;
pub mod readings;
pub mod scheduler;
pub mod server;
pub mod task;
