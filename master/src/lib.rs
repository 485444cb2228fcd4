//! placeholder

pub mod optimize;
