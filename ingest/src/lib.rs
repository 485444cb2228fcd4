//! heatmesh-ingest: plant data as heatmesh sees it, without any I/O.
//!
//! - [`meter`]: the meters and sources of a plant's configuration (`[[plants.meters]]`,
//!   `[[plants.sources]]`), validated with the key named;
//! - [`reading`]: a reading (meter, source timestamp, value, quality) and what the ledger
//!   keeps of it;
//! - [`csv`]: historian export files, parsed with the line named on every error;
//! - [`time`]: RFC 3339 timestamps to and from microseconds since the Unix epoch.
//!
//! Connectors, buffers and the ledger live elsewhere; everything here is a function of its
//! input, so the rules are unit-tested without a network or a disk.

pub mod csv;
pub mod meter;
pub mod reading;
pub mod time;

pub use meter::{MeterSpec, PlantFeeds, Quantity, SourceSpec};
pub use reading::{Quality, Reading};
