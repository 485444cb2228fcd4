//! heatmesh-calc: pure process-heat calculations, one module per agent kind.
//!
//! A crate of its own so the compiler keeps it pure: its only dependencies are serde,
//! serde_json and thiserror, so no actor, runtime, protobuf or I/O can creep in.
//!
//! Every module here holds its request type, its validation, its calculation and its result
//! type side by side. Nothing in `calc` knows about actors, protobuf, files or clocks: a
//! calculation is a function from a validated request to a result, so it can be tested
//! against the reference figures and called from the CLI, an actor or a benchmark alike.

pub mod gl001_setpoints;
pub mod gl002_boiler;
pub mod gl003_combustion;
pub mod gl004_emissions;
pub mod gl006_recovery;
pub mod gl009_thermal;
pub mod gl012_steam;
pub mod gl014_exchanger;
pub mod units;

use serde::{Deserialize, Serialize};

/// Why a calculation refused its input. `field` is a dotted path into the request
/// (`inputs[2].energy_kwh`), `rule` says what the value must satisfy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum CalcError {
    /// A request field broke a rule; nothing was computed.
    #[error("{field}: {rule}")]
    Invalid {
        /// Dotted path of the offending field.
        field: String,
        /// The rule it broke, with the value where that helps.
        rule: String,
    },
    /// An iterative method did not converge; the request may be near a region boundary.
    #[error("{what} did not converge")]
    NotConverged {
        /// What was being solved.
        what: String,
    },
}

impl CalcError {
    /// Shorthand for [`CalcError::Invalid`].
    pub fn invalid(field: impl Into<String>, rule: impl Into<String>) -> Self {
        CalcError::Invalid {
            field: field.into(),
            rule: rule.into(),
        }
    }

    /// The offending field, when the error is about one.
    pub fn field(&self) -> Option<&str> {
        match self {
            CalcError::Invalid { field, .. } => Some(field),
            CalcError::NotConverged { .. } => None,
        }
    }
}

/// Checks that `value` is finite; the error names `field`.
pub fn finite(field: &str, value: f64) -> Result<f64, CalcError> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(CalcError::invalid(
            field,
            format!("must be a finite number, got {value}"),
        ))
    }
}

/// Checks that `value` is finite and >= 0; the error names `field`.
pub fn non_negative(field: &str, value: f64) -> Result<f64, CalcError> {
    finite(field, value)?;
    if value < 0.0 {
        return Err(CalcError::invalid(
            field,
            format!("must be >= 0, got {value}"),
        ));
    }
    Ok(value)
}

/// Checks that `value` is finite and > 0; the error names `field`.
pub fn positive(field: &str, value: f64) -> Result<f64, CalcError> {
    finite(field, value)?;
    if value <= 0.0 {
        return Err(CalcError::invalid(
            field,
            format!("must be > 0, got {value}"),
        ));
    }
    Ok(value)
}

/// Checks that `value` is finite and within `[lo, hi]`; the error names `field`.
pub fn in_range(field: &str, value: f64, lo: f64, hi: f64) -> Result<f64, CalcError> {
    finite(field, value)?;
    if value < lo || value > hi {
        return Err(CalcError::invalid(
            field,
            format!("must be within [{lo}, {hi}], got {value}"),
        ));
    }
    Ok(value)
}

/// A calculation served by one agent kind: a typed request in, a typed result out.
///
/// Implementations live one per file in this module; registering one in
/// `heatmesh_agents::registry` is all it takes for the mesh to serve it.
pub trait Calculation {
    /// The agent id operators use, e.g. `GL-009`.
    const KIND: &'static str;
    /// The request, as it arrives in JSON (`heatmesh calc`) or converted from protobuf.
    type Request: serde::de::DeserializeOwned + Serialize;
    /// The result.
    type Output: Serialize + serde::de::DeserializeOwned;
    /// Checks every rule of the request without computing the result. Bad input is refused
    /// here before it is accepted into the ledger.
    fn validate(request: &Self::Request) -> Result<(), CalcError>;
    /// Validates and computes. Must not panic on any input and must not return NaN.
    fn run(request: &Self::Request) -> Result<Self::Output, CalcError>;
}
