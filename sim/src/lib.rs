//! heatmesh-sim: the means to rehearse failures against a real mesh.
//!
//! [`proxy::BlackholeProxy`] sits on a TCP path (node to master) and can swallow traffic
//! without closing the connection, which is what a partition or a hung peer looks like.
//! [`process`] starts `heatmesh` processes on loopback and kills them with SIGKILL.

pub mod cluster;
pub mod loadtest;
pub mod process;
pub mod proxy;
