//! heatmesh-sim: failover drills and load tests against a real mesh.
//!
//! A drill ([`drill::run`]) plays a [`scenario::Scenario`] (mesh shape, workload, fault
//! timeline, expectations) against a [`harness::DrillMesh`], then judges the invariants of
//! [`check`]. Two meshes implement it: [`harness::InProcMesh`] runs master and nodes in this
//! process with the node protocol over the simulated network of [`net`] (fast, for many
//! seeds), and [`multiproc::ProcMesh`] runs real processes on loopback, with kill -9 and the
//! fault-injecting TCP proxy of [`proxy`]; both can flood the master with idle connections
//! ([`flood`]). [`process`] and [`cluster`] start and stop those
//! processes. [`loadtest`] runs the predecessor's load-test scenario (`heatmesh loadtest`).

pub mod check;
pub mod cluster;
pub mod drill;
pub mod dst;
pub mod flood;
pub mod harness;
pub mod loadtest;
pub mod multiproc;
pub mod net;
pub mod plantsim;
pub mod process;
pub mod proxy;
pub mod rng;
pub mod scenario;
pub mod workload;
