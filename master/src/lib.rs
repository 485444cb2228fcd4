//! heatmesh-master: GL-001 ProcessHeatOrchestrator.
//!
//! [`ledger`] is the durable task store, [`scheduler`] the master actor that owns every task
//! state change, [`grpc`] the only place protobuf types are converted, [`server`] wires it
//! together with the metrics/health HTTP endpoint.

pub mod config;
pub mod grpc;
pub mod ledger;
pub mod scheduler;
pub mod server;
pub mod task;
