//! Command implementations, one file per command family.

pub mod backup;
pub mod bench;
pub mod bench_calc;
pub mod bench_cluster;
pub mod bench_readings;
pub mod bench_soak;
pub mod calc;
pub mod client;
pub mod demo;
pub mod drill;
pub mod loadtest;
pub mod mesh;
pub mod node;
pub mod optimize;
pub mod readings;
pub mod simulate;
pub mod table;
pub mod up;
