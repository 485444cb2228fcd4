//! A reading: a fact captured at a plant, and what the ledger keeps of it.

use serde::{Deserialize, Serialize};

/// The source's own judgement of a value (OPC UA's three status classes; Modbus and files
/// map onto them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Quality {
    /// The source vouches for the value.
    #[default]
    Good,
    /// The source has doubts (sensor calibration due, value substituted, ...).
    Uncertain,
    /// The source says the value is wrong (sensor failure, no communication).
    Bad,
}

impl Quality {
    /// The name used in files, tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Quality::Good => "good",
            Quality::Uncertain => "uncertain",
            Quality::Bad => "bad",
        }
    }

    /// Parses `good`, `uncertain` or `bad` (any case); empty means good.
    pub fn parse(s: &str) -> Result<Quality, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "good" => Ok(Quality::Good),
            "uncertain" => Ok(Quality::Uncertain),
            "bad" => Ok(Quality::Bad),
            _ => Err(format!(
                "unknown quality {s:?}; known: good, uncertain, bad"
            )),
        }
    }
}

/// One value of one meter as acquired: raw (before the meter's calibration), at the
/// source's timestamp.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    /// Meter id, unique within its plant.
    pub meter: String,
    /// Source timestamp, microseconds since the Unix epoch (UTC).
    pub time_us: i64,
    /// The value as the source gave it, in the meter's unit before calibration.
    pub raw: f64,
    /// The source's quality.
    pub quality: Quality,
    /// The source's own status code (OPC UA StatusCode; 0 where the source has none).
    pub status: u32,
}

/// Flag: the calibrated value lies outside the meter's plausible range.
pub const FLAG_OUT_OF_RANGE: u8 = 1;

/// What the ledger keeps of a reading, under the key (plant, meter, source timestamp).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stored {
    /// The value as acquired.
    pub raw: f64,
    /// The value after the meter's calibration, in the meter's unit.
    pub value: f64,
    /// The source's quality.
    pub quality: Quality,
    /// The source's status code.
    pub status: u32,
    /// heatmesh's own findings ([`FLAG_OUT_OF_RANGE`]).
    pub flags: u8,
    /// When the master received it, microseconds since the epoch.
    pub received_us: i64,
}

impl Stored {
    /// Good from the source and nothing found against it: the only readings a calculation
    /// may take at face value.
    pub fn is_good(&self) -> bool {
        self.quality == Quality::Good && self.flags == 0
    }

    /// The flags as words, for tables and files.
    pub fn flag_names(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.flags & FLAG_OUT_OF_RANGE != 0 {
            v.push("out_of_range");
        }
        v
    }
}
