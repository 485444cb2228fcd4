//! A plant's meters and the sources they are read from, as configured.
//!
//! ```toml
//! [[plants.sources]]
//! id = "plc"
//! kind = "modbus"
//! endpoint = "127.0.0.1:5020"
//!
//! [[plants.meters]]
//! id = "gas"
//! quantity = "volume_flow"
//! unit = "m3/h"
//! source = "plc"
//! modbus = { unit = 1, table = "holding", register = 100, type = "f32" }
//! fuel = "natural_gas"
//! calorific_value = { value_kwh_per_unit = 10.55, unit = "m3", basis = "gross" }
//! range = [0.0, 5000.0]
//! ```
//!
//! A meter without `source` is fed only by pushes (`IngestReadings`) and historian files.
//! [`PlantFeeds::validate`] checks every rule and names the key that broke it.

use heatmesh_calc::units::{
    Basis, CalorificValue, EnergyUnit, FuelUnit, PowerUnit, PressureUnit, TemperatureUnit, Unit,
    parse_unit,
};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::PathBuf;

/// A configuration key that broke a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config key `{key}`: {rule}")]
pub struct FieldError {
    /// Dotted key, e.g. `plants[0].meters[2].modbus.type`.
    pub key: String,
    /// The rule.
    pub rule: String,
}

fn err<T>(key: impl Into<String>, rule: impl Into<String>) -> Result<T, FieldError> {
    Err(FieldError {
        key: key.into(),
        rule: rule.into(),
    })
}

/// What a meter measures. Totals are cumulative counters (totalizers); the rest are
/// instantaneous values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quantity {
    /// Energy totalizer (kWh, MWh, GJ, ...).
    EnergyTotal,
    /// Power or heat rate (kW, MW, ...).
    Power,
    /// Mass flow (kg/s, kg/h, t/h).
    MassFlow,
    /// Volume flow (m3/s, m3/h, L/s, L/h).
    VolumeFlow,
    /// Mass totalizer (kg, t).
    MassTotal,
    /// Volume totalizer (m3, L).
    VolumeTotal,
    /// Temperature (C, K, F).
    Temperature,
    /// Pressure (bar, kPa, MPa, psi, ...).
    Pressure,
    /// Oxygen in the flue gas, percent by volume (`%`).
    O2Pct,
}

impl Quantity {
    /// The name used in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            Quantity::EnergyTotal => "energy_total",
            Quantity::Power => "power",
            Quantity::MassFlow => "mass_flow",
            Quantity::VolumeFlow => "volume_flow",
            Quantity::MassTotal => "mass_total",
            Quantity::VolumeTotal => "volume_total",
            Quantity::Temperature => "temperature",
            Quantity::Pressure => "pressure",
            Quantity::O2Pct => "o2_pct",
        }
    }

    /// A cumulative counter rather than an instantaneous value.
    pub fn is_total(self) -> bool {
        matches!(
            self,
            Quantity::EnergyTotal | Quantity::MassTotal | Quantity::VolumeTotal
        )
    }

    /// Checks a unit name against the quantity and returns its canonical symbol.
    pub fn unit_symbol(self, unit: &str) -> Result<&'static str, String> {
        fn linear<U: Unit>(unit: &str) -> Result<&'static str, String> {
            parse_unit::<U>("unit", unit)
                .map(|u| u.symbol())
                .map_err(|e| e.to_string().trim_start_matches("unit: ").to_string())
        }
        fn listed(unit: &str, known: &[&'static str], what: &str) -> Result<&'static str, String> {
            known
                .iter()
                .find(|k| k.eq_ignore_ascii_case(unit.trim()))
                .copied()
                .ok_or_else(|| {
                    format!(
                        "unknown {what} unit \"{unit}\"; known: {}",
                        known.join(", ")
                    )
                })
        }
        match self {
            Quantity::EnergyTotal => linear::<EnergyUnit>(unit),
            Quantity::Power => linear::<PowerUnit>(unit),
            Quantity::Temperature => linear::<TemperatureUnit>(unit),
            Quantity::Pressure => linear::<PressureUnit>(unit),
            Quantity::MassFlow => listed(unit, &["kg/s", "kg/h", "t/h"], "mass flow"),
            Quantity::VolumeFlow => listed(unit, &["m3/s", "m3/h", "L/s", "L/h"], "volume flow"),
            Quantity::MassTotal => listed(unit, &["kg", "t"], "mass"),
            Quantity::VolumeTotal => listed(unit, &["m3", "L"], "volume"),
            Quantity::O2Pct => listed(unit, &["%"], "O2"),
        }
    }

    /// The fuel unit a mass or volume meter's unit is counted in (`m3/h` counts `m3`), for
    /// checking a calorific value against it; `None` for quantities that are not amounts.
    fn fuel_unit(self, symbol: &str) -> Option<FuelUnit> {
        let amount = symbol.split('/').next()?;
        match self {
            Quantity::MassFlow
            | Quantity::MassTotal
            | Quantity::VolumeFlow
            | Quantity::VolumeTotal => parse_unit::<FuelUnit>("unit", amount).ok(),
            _ => None,
        }
    }
}

/// A linear correction of the instrument: `value = raw * factor + offset`, applied to every
/// reading of the meter whatever its source.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Calibration {
    /// Multiplier, finite and non-zero.
    pub factor: f64,
    /// Added after the factor, in the meter's unit.
    pub offset: f64,
}

impl Default for Calibration {
    fn default() -> Self {
        Calibration {
            factor: 1.0,
            offset: 0.0,
        }
    }
}

/// Which Modbus register table a value is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegisterTable {
    /// Holding registers (function code 3).
    Holding,
    /// Input registers (function code 4).
    Input,
}

/// How the registers of a Modbus value are decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegisterType {
    /// Unsigned 16-bit, one register.
    U16,
    /// Signed 16-bit, one register.
    I16,
    /// Unsigned 32-bit, two registers.
    U32,
    /// Signed 32-bit, two registers.
    I32,
    /// IEEE 754 single precision, two registers.
    F32,
    /// IEEE 754 double precision, four registers.
    F64,
}

impl RegisterType {
    /// Registers the value spans.
    pub fn width(self) -> u16 {
        match self {
            RegisterType::U16 | RegisterType::I16 => 1,
            RegisterType::U32 | RegisterType::I32 | RegisterType::F32 => 2,
            RegisterType::F64 => 4,
        }
    }

    fn name(self) -> &'static str {
        match self {
            RegisterType::U16 => "u16",
            RegisterType::I16 => "i16",
            RegisterType::U32 => "u32",
            RegisterType::I32 => "i32",
            RegisterType::F32 => "f32",
            RegisterType::F64 => "f64",
        }
    }
}

/// Order of the 16-bit registers of a multi-register value (bytes within a register are
/// always big-endian, as Modbus defines).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum WordOrder {
    /// Most significant register first (ABCD).
    #[default]
    Big,
    /// Least significant register first (CDAB).
    Little,
}

/// Where a meter's value sits on a Modbus device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusAddress {
    /// Unit (slave) id.
    #[serde(default = "one")]
    pub unit: u8,
    /// Register table.
    pub table: RegisterTable,
    /// First register, 0-based protocol address.
    pub register: u16,
    /// Decoding.
    #[serde(rename = "type")]
    pub kind: RegisterType,
    /// Register order of multi-register values.
    #[serde(default)]
    pub word_order: WordOrder,
    /// Registers to read; when given it must equal the type's width (a guard against a
    /// device map read wrongly).
    pub count: Option<u16>,
    /// Register scaling to engineering units: `raw = decoded * scale + offset`.
    #[serde(default = "one_f")]
    pub scale: f64,
    /// Added after `scale`.
    #[serde(default)]
    pub offset: f64,
}

fn one() -> u8 {
    1
}
fn one_f() -> f64 {
    1.0
}

impl ModbusAddress {
    /// Decodes the registers read for this address into the meter's raw value.
    pub fn decode(&self, regs: &[u16]) -> Option<f64> {
        let n = self.kind.width() as usize;
        if regs.len() != n {
            return None;
        }
        let mut words: Vec<u16> = regs.to_vec();
        if self.word_order == WordOrder::Little {
            words.reverse();
        }
        let bits = words
            .iter()
            .fold(0u64, |acc, w| (acc << 16) | u64::from(*w));
        let v = match self.kind {
            RegisterType::U16 => f64::from(bits as u16),
            RegisterType::I16 => f64::from(bits as u16 as i16),
            RegisterType::U32 => f64::from(bits as u32),
            RegisterType::I32 => f64::from(bits as u32 as i32),
            RegisterType::F32 => f64::from(f32::from_bits(bits as u32)),
            RegisterType::F64 => f64::from_bits(bits),
        };
        Some(v * self.scale + self.offset)
    }

    /// Encodes an engineering value into registers (the simulator's side of [`Self::decode`]).
    pub fn encode(&self, raw: f64) -> Vec<u16> {
        let v = (raw - self.offset) / self.scale;
        let (bits, n): (u64, usize) = match self.kind {
            RegisterType::U16 => (u64::from(v.round().clamp(0.0, 65_535.0) as u16), 1),
            RegisterType::I16 => (
                u64::from(v.round().clamp(-32_768.0, 32_767.0) as i16 as u16),
                1,
            ),
            RegisterType::U32 => (u64::from(v.round().clamp(0.0, u32::MAX as f64) as u32), 2),
            RegisterType::I32 => (
                u64::from(v.round().clamp(i32::MIN as f64, i32::MAX as f64) as i32 as u32),
                2,
            ),
            RegisterType::F32 => (u64::from((v as f32).to_bits()), 2),
            RegisterType::F64 => (v.to_bits(), 4),
        };
        let mut words: Vec<u16> = (0..n).rev().map(|i| (bits >> (16 * i)) as u16).collect();
        if self.word_order == WordOrder::Little {
            words.reverse();
        }
        words
    }
}

/// An OPC UA node id, parsed from its text form (`ns=2;s=Boiler1.Flow`, `i=2258`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeId {
    /// Namespace index (0 when `ns=` is omitted).
    pub namespace: u16,
    /// The identifier.
    pub identifier: Identifier,
}

/// The identifier part of a [`NodeId`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Identifier {
    /// `i=`: numeric.
    Numeric(u32),
    /// `s=`: string.
    String(String),
    /// `g=`: GUID, as its canonical text.
    Guid(String),
    /// `b=`: opaque, base64 text.
    Opaque(String),
}

impl NodeId {
    /// Parses the OPC UA text form (Part 6, 5.3.1.10).
    pub fn parse(s: &str) -> Result<NodeId, String> {
        let bad = |why: &str| {
            Err(format!(
                "{s:?} is not an OPC UA node id ({why}); expected e.g. ns=2;s=Boiler1.Flow or ns=0;i=2258"
            ))
        };
        let (namespace, rest) = match s.strip_prefix("ns=") {
            Some(r) => match r.split_once(';') {
                Some((n, rest)) => match n.parse::<u16>() {
                    Ok(n) => (n, rest),
                    Err(_) => return bad("namespace index is not a number from 0 to 65535"),
                },
                None => return bad("`ns=` without `;`"),
            },
            None => (0, s),
        };
        let Some((tag, id)) = rest.split_once('=') else {
            return bad("no identifier type i=, s=, g= or b=");
        };
        let identifier = match tag {
            "i" => match id.parse::<u32>() {
                Ok(n) => Identifier::Numeric(n),
                Err(_) => return bad("numeric identifier is not a number from 0 to 4294967295"),
            },
            "s" if !id.is_empty() => Identifier::String(id.to_string()),
            "s" => return bad("empty string identifier"),
            "g" => {
                let groups: Vec<&str> = id.split('-').collect();
                let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
                if lens != [8, 4, 4, 4, 12]
                    || !id.chars().all(|c| c == '-' || c.is_ascii_hexdigit())
                {
                    return bad("GUID is not 8-4-4-4-12 hexadecimal digits");
                }
                Identifier::Guid(id.to_ascii_lowercase())
            }
            "b" if !id.is_empty()
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=')) =>
            {
                Identifier::Opaque(id.to_string())
            }
            "b" => return bad("opaque identifier is not base64"),
            _ => return bad("identifier type must be i=, s=, g= or b="),
        };
        Ok(NodeId {
            namespace,
            identifier,
        })
    }
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace != 0 {
            write!(f, "ns={};", self.namespace)?;
        }
        match &self.identifier {
            Identifier::Numeric(n) => write!(f, "i={n}"),
            Identifier::String(s) => write!(f, "s={s}"),
            Identifier::Guid(g) => write!(f, "g={g}"),
            Identifier::Opaque(b) => write!(f, "b={b}"),
        }
    }
}

/// OPC UA: subscribe to data changes (the server samples) or read on each poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OpcuaMode {
    /// Monitored items sampled at the meter's `poll_ms`.
    #[default]
    Subscribe,
    /// A Read service call every `poll_ms`.
    Poll,
}

/// OPC UA security policy of the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum SecurityPolicy {
    /// No security (trusted networks and tests only).
    #[default]
    None,
    /// Basic256Sha256 with a client certificate.
    Basic256Sha256,
}

/// OPC UA message security mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum SecurityMode {
    /// Neither signed nor encrypted.
    #[default]
    None,
    /// Signed.
    Sign,
    /// Signed and encrypted.
    SignAndEncrypt,
}

/// Settings every source has: how long to wait, how to reconnect.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    /// A request unanswered for this long fails with `timeout`, ms.
    pub timeout_ms: u64,
    /// Reconnect delay cap; delays start at 100 ms and double with jitter, ms.
    pub reconnect_max_ms: u64,
}

fn default_timeout_ms() -> u64 {
    2_000
}
fn default_reconnect_max_ms() -> u64 {
    30_000
}

/// An OPC UA server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpcuaSource {
    /// Source id, unique within the plant.
    pub id: String,
    /// `opc.tcp://host:port[/path]`.
    pub endpoint: String,
    /// Subscribe or poll.
    #[serde(default)]
    pub mode: OpcuaMode,
    /// Security policy.
    #[serde(default)]
    pub security_policy: SecurityPolicy,
    /// Message security mode.
    #[serde(default)]
    pub security_mode: SecurityMode,
    /// Client certificate (DER or PEM) for Basic256Sha256.
    pub certificate: Option<PathBuf>,
    /// Its private key (PEM).
    pub private_key: Option<PathBuf>,
    /// Request timeout, ms.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Reconnect delay cap, ms.
    #[serde(default = "default_reconnect_max_ms")]
    pub reconnect_max_ms: u64,
}

/// A Modbus TCP device (or gateway).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusSource {
    /// Source id, unique within the plant.
    pub id: String,
    /// `host:port`.
    pub endpoint: String,
    /// Request timeout, ms.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Reconnect delay cap, ms.
    #[serde(default = "default_reconnect_max_ms")]
    pub reconnect_max_ms: u64,
}

/// One `[[plants.sources]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SourceSpec {
    /// OPC UA client session.
    Opcua(OpcuaSource),
    /// Modbus TCP client.
    Modbus(ModbusSource),
}

impl SourceSpec {
    /// The source's id.
    pub fn id(&self) -> &str {
        match self {
            SourceSpec::Opcua(s) => &s.id,
            SourceSpec::Modbus(s) => &s.id,
        }
    }

    /// Where the source is reached: `host:port` (Modbus) or `opc.tcp://host:port[/path]`.
    pub fn endpoint(&self) -> &str {
        match self {
            SourceSpec::Opcua(s) => &s.endpoint,
            SourceSpec::Modbus(s) => &s.endpoint,
        }
    }

    /// Points the source at another endpoint (tests and the demo, on free ports).
    pub fn set_endpoint(&mut self, to: String) {
        match self {
            SourceSpec::Opcua(s) => s.endpoint = to,
            SourceSpec::Modbus(s) => s.endpoint = to,
        }
    }

    /// `opcua` or `modbus`.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceSpec::Opcua(_) => "opcua",
            SourceSpec::Modbus(_) => "modbus",
        }
    }

    /// Its timeout and reconnect settings.
    pub fn timing(&self) -> Timing {
        let (timeout_ms, reconnect_max_ms) = match self {
            SourceSpec::Opcua(s) => (s.timeout_ms, s.reconnect_max_ms),
            SourceSpec::Modbus(s) => (s.timeout_ms, s.reconnect_max_ms),
        };
        Timing {
            timeout_ms,
            reconnect_max_ms,
        }
    }
}

/// One `[[plants.meters]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeterSpec {
    /// Meter id, unique within the plant.
    pub id: String,
    /// What it measures.
    pub quantity: Quantity,
    /// Its unit (checked against the quantity; canonical symbol after validation).
    pub unit: String,
    /// The source id it is read from; omitted for meters fed only by pushes and files.
    pub source: Option<String>,
    /// OPC UA node id, for a meter on an `opcua` source.
    pub node_id: Option<String>,
    /// Register address, for a meter on a `modbus` source.
    pub modbus: Option<ModbusAddress>,
    /// Fuel name, for a fuel meter (e.g. `natural_gas`).
    pub fuel: Option<String>,
    /// Calorific value of a fuel metered by mass or volume, with its basis.
    pub calorific_value: Option<CalorificValue>,
    /// Heating-value basis of a fuel metered as energy or power.
    pub basis: Option<Basis>,
    /// Poll (or OPC UA sampling) interval, ms.
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
    /// The meter is stale when silent for this many poll intervals.
    #[serde(default = "default_stale_after")]
    pub stale_after: u32,
    /// Instrument correction.
    #[serde(default)]
    pub calibration: Calibration,
    /// Plausible range of the calibrated value, `[low, high]`; values outside are flagged.
    pub range: Option<[f64; 2]>,
}

fn default_poll_ms() -> u64 {
    1_000
}
fn default_stale_after() -> u32 {
    3
}

/// Shortest poll interval accepted, ms.
pub const MIN_POLL_MS: u64 = 10;
/// Longest poll interval accepted, ms (one day).
pub const MAX_POLL_MS: u64 = 86_400_000;

impl MeterSpec {
    /// The calibrated value of a raw reading.
    pub fn calibrate(&self, raw: f64) -> f64 {
        raw * self.calibration.factor + self.calibration.offset
    }

    /// Whether a calibrated value lies within the plausible range (always, without one).
    pub fn in_range(&self, value: f64) -> bool {
        self.range.is_none_or(|[lo, hi]| (lo..=hi).contains(&value))
    }

    /// Validates one meter; `key` is its configuration key (`plants[0].meters[2]`).
    fn validate(&mut self, key: &str, sources: &[SourceSpec]) -> Result<(), FieldError> {
        let k = |f: &str| format!("{key}.{f}");
        check_id(&k("id"), &self.id)?;
        match self.quantity.unit_symbol(&self.unit) {
            Ok(sym) => self.unit = sym.to_string(),
            Err(rule) => {
                return err(
                    k("unit"),
                    format!("{rule} (quantity {})", self.quantity.name()),
                );
            }
        }
        if !(MIN_POLL_MS..=MAX_POLL_MS).contains(&self.poll_ms) {
            return err(
                k("poll_ms"),
                format!(
                    "must be within [{MIN_POLL_MS}, {MAX_POLL_MS}], got {}",
                    self.poll_ms
                ),
            );
        }
        if self.stale_after == 0 {
            return err(k("stale_after"), "must be >= 1 (poll intervals)");
        }
        let c = self.calibration;
        if !c.factor.is_finite() || c.factor == 0.0 {
            return err(
                k("calibration.factor"),
                format!("must be finite and non-zero, got {}", c.factor),
            );
        }
        if !c.offset.is_finite() {
            return err(
                k("calibration.offset"),
                format!("must be finite, got {}", c.offset),
            );
        }
        if let Some([lo, hi]) = self.range
            && !(lo.is_finite() && hi.is_finite() && lo < hi)
        {
            return err(
                k("range"),
                format!("must be [low, high] with finite low < high, got [{lo}, {hi}]"),
            );
        }
        self.validate_fuel(key)?;
        self.validate_address(key, sources)
    }

    fn validate_fuel(&self, key: &str) -> Result<(), FieldError> {
        let k = |f: &str| format!("{key}.{f}");
        let amount = self.quantity.fuel_unit(&self.unit);
        let energy = matches!(self.quantity, Quantity::EnergyTotal | Quantity::Power);
        match &self.fuel {
            None => {
                for (f, set) in [
                    ("calorific_value", self.calorific_value.is_some()),
                    ("basis", self.basis.is_some()),
                ] {
                    if set {
                        return err(k(f), "applies only to a fuel meter; set `fuel` too");
                    }
                }
                Ok(())
            }
            Some(f) if f.trim().is_empty() => err(k("fuel"), "must not be empty"),
            Some(_) if amount.is_none() && !energy => err(
                k("fuel"),
                format!(
                    "a {} meter cannot be a fuel meter; fuel is metered as a flow, a total, energy or power",
                    self.quantity.name()
                ),
            ),
            Some(_) => match (amount, &self.calorific_value, self.basis) {
                (Some(u), Some(cv), None) => {
                    if cv.unit != u {
                        return err(
                            k("calorific_value.unit"),
                            format!(
                                "must be {u}, the unit the meter counts in ({}), got {}",
                                self.unit, cv.unit
                            ),
                        );
                    }
                    cv.validate(&k("calorific_value")).map_err(|e| FieldError {
                        key: k("calorific_value.value_kwh_per_unit"),
                        rule: e.to_string().split(": ").last().unwrap_or("").to_string(),
                    })
                }
                (Some(_), None, _) => err(
                    k("calorific_value"),
                    "required for a fuel metered by mass or volume: { value_kwh_per_unit, unit, basis = \"gross\" | \"net\" }",
                ),
                (Some(_), Some(_), Some(_)) => err(
                    k("basis"),
                    "the basis of a mass or volume fuel meter is the calorific value's own; remove `basis`",
                ),
                (None, _, None) => err(
                    k("basis"),
                    "required for a fuel metered as energy or power: \"gross\" or \"net\"",
                ),
                (None, Some(_), _) => err(
                    k("calorific_value"),
                    "applies to fuel metered by mass or volume, not energy or power",
                ),
                (None, None, Some(_)) => Ok(()),
            },
        }
    }

    fn validate_address(&self, key: &str, sources: &[SourceSpec]) -> Result<(), FieldError> {
        let k = |f: &str| format!("{key}.{f}");
        let Some(src) = &self.source else {
            if self.node_id.is_some() {
                return err(k("node_id"), "needs an opcua `source`");
            }
            if self.modbus.is_some() {
                return err(k("modbus"), "needs a modbus `source`");
            }
            return Ok(());
        };
        let Some(spec) = sources.iter().find(|s| s.id() == src) else {
            let known: Vec<&str> = sources.iter().map(|s| s.id()).collect();
            return err(
                k("source"),
                format!(
                    "no source {src:?} in this plant's [[plants.sources]]; known: {}",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            );
        };
        match spec {
            SourceSpec::Opcua(_) => {
                if self.modbus.is_some() {
                    return err(
                        k("modbus"),
                        format!("source {src} is opcua; give `node_id` instead"),
                    );
                }
                let Some(n) = &self.node_id else {
                    return err(
                        k("node_id"),
                        format!("required for a meter on opcua source {src}"),
                    );
                };
                NodeId::parse(n)
                    .map(|_| ())
                    .or_else(|rule| err(k("node_id"), rule))
            }
            SourceSpec::Modbus(_) => {
                if self.node_id.is_some() {
                    return err(
                        k("node_id"),
                        format!("source {src} is modbus; give `modbus` instead"),
                    );
                }
                let Some(a) = &self.modbus else {
                    return err(
                        k("modbus"),
                        format!(
                            "required for a meter on modbus source {src}: {{ table, register, type }}"
                        ),
                    );
                };
                let w = a.kind.width();
                if let Some(c) = a.count
                    && c != w
                {
                    return err(
                        k("modbus.count"),
                        format!(
                            "a {} spans {w} register{}, not {c}",
                            a.kind.name(),
                            if w == 1 { "" } else { "s" }
                        ),
                    );
                }
                if u32::from(a.register) + u32::from(w) > 65_536 {
                    return err(
                        k("modbus.register"),
                        format!(
                            "a {} at {} runs past register 65535",
                            a.kind.name(),
                            a.register
                        ),
                    );
                }
                if !a.scale.is_finite() || a.scale == 0.0 {
                    return err(
                        k("modbus.scale"),
                        format!("must be finite and non-zero, got {}", a.scale),
                    );
                }
                if !a.offset.is_finite() {
                    return err(
                        k("modbus.offset"),
                        format!("must be finite, got {}", a.offset),
                    );
                }
                Ok(())
            }
        }
    }
}

/// A plant's sources and meters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PlantFeeds {
    /// `[[plants.sources]]`.
    pub sources: Vec<SourceSpec>,
    /// `[[plants.meters]]`.
    pub meters: Vec<MeterSpec>,
    /// Meters an operator disabled (`heatmesh feeds disable`): configured, not read. Kept in
    /// the master's ledger, not in the fleet file.
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub disabled: std::collections::BTreeSet<String>,
}

impl PlantFeeds {
    /// No sources and no meters.
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty() && self.meters.is_empty()
    }

    /// Checks every rule and canonicalises units; `plant_key` is `plants[i]`.
    pub fn validate(&mut self, plant_key: &str) -> Result<(), FieldError> {
        let mut ids = HashSet::new();
        for (j, s) in self.sources.iter().enumerate() {
            let key = format!("{plant_key}.sources[{j}]");
            check_id(&format!("{key}.id"), s.id())?;
            if !ids.insert(s.id().to_string()) {
                return err(
                    format!("{key}.id"),
                    format!("duplicate source id {}", s.id()),
                );
            }
            let t = s.timing();
            if t.timeout_ms == 0 {
                return err(format!("{key}.timeout_ms"), "must be >= 1");
            }
            if t.reconnect_max_ms < 100 {
                return err(
                    format!("{key}.reconnect_max_ms"),
                    "must be >= 100 (the first delay)",
                );
            }
            match s {
                SourceSpec::Opcua(o) => validate_opcua(&key, o)?,
                SourceSpec::Modbus(m) => {
                    let ok = m.endpoint.rsplit_once(':').is_some_and(|(h, p)| {
                        !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0)
                    });
                    if !ok {
                        return err(
                            format!("{key}.endpoint"),
                            format!("must be host:port, got {:?}", m.endpoint),
                        );
                    }
                }
            }
        }
        let mut ids = HashSet::new();
        let sources = self.sources.clone();
        for (j, m) in self.meters.iter_mut().enumerate() {
            let key = format!("{plant_key}.meters[{j}]");
            m.validate(&key, &sources)?;
            if !ids.insert(m.id.clone()) {
                return err(format!("{key}.id"), format!("duplicate meter id {}", m.id));
            }
        }
        Ok(())
    }

    /// Drops the sources and the meters' addresses: every meter is then fed only by pushes
    /// and files (benchmarks and tests that must not race a device on a fixed port).
    pub fn push_only(&mut self) {
        self.sources.clear();
        for m in &mut self.meters {
            m.source = None;
            m.modbus = None;
            m.node_id = None;
        }
    }

    /// The meter with this id.
    pub fn meter(&self, id: &str) -> Option<&MeterSpec> {
        self.meters.iter().find(|m| m.id == id)
    }

    /// The source with this id.
    pub fn source(&self, id: &str) -> Option<&SourceSpec> {
        self.sources.iter().find(|s| s.id() == id)
    }
}

fn validate_opcua(key: &str, o: &OpcuaSource) -> Result<(), FieldError> {
    let rest = o.endpoint.strip_prefix("opc.tcp://").unwrap_or("");
    let hostport = rest.split('/').next().unwrap_or("");
    if hostport.is_empty() {
        return err(
            format!("{key}.endpoint"),
            format!("must be opc.tcp://host:port[/path], got {:?}", o.endpoint),
        );
    }
    let secure = o.security_policy != SecurityPolicy::None;
    match (secure, o.security_mode) {
        (false, SecurityMode::None) | (true, SecurityMode::Sign | SecurityMode::SignAndEncrypt) => {
        }
        (false, _) => {
            return err(
                format!("{key}.security_mode"),
                "must be None with security_policy None",
            );
        }
        (true, SecurityMode::None) => {
            return err(
                format!("{key}.security_mode"),
                "must be Sign or SignAndEncrypt with security_policy Basic256Sha256",
            );
        }
    }
    if secure {
        for (f, v) in [
            ("certificate", &o.certificate),
            ("private_key", &o.private_key),
        ] {
            if v.is_none() {
                return err(
                    format!("{key}.{f}"),
                    "required with security_policy Basic256Sha256 (an X.509 certificate naming urn:heatmesh:node; see docs/ingest.md)",
                );
            }
        }
    }
    Ok(())
}

/// Ids go into ledger keys, metric labels and files: short, printable, no separators.
fn check_id(key: &str, id: &str) -> Result<(), FieldError> {
    if id.is_empty() || id.len() > 64 {
        return err(key, format!("must be 1 to 64 characters, got {}", id.len()));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return err(
            key,
            format!("{id:?} has {c:?}; use letters, digits, '-', '_' and '.'"),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests;
