//! Lengths of time written as operators write them: `30d`, `12h`, `15m`, `90s`, `500ms`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::time::Duration;

/// A length of time in the configuration: a whole number and a unit (`ms`, `s`, `m`, `h`,
/// `d`), written and read as that text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Span(pub Duration);

impl Span {
    /// Whole days.
    pub const fn days(n: u64) -> Span {
        Span(Duration::from_secs(n * 86_400))
    }

    /// Microseconds, as the ledger's timestamps count.
    pub fn as_us(&self) -> u64 {
        self.0.as_micros().min(u64::MAX as u128) as u64
    }
}

impl std::str::FromStr for Span {
    type Err = String;

    fn from_str(s: &str) -> Result<Span, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (n, unit) = s.split_at(split);
        let n: u64 = n.parse().map_err(|_| {
            format!("{s:?} is not a length of time: write a whole number and a unit, like 30d, 12h, 15m, 90s or 500ms")
        })?;
        let ms = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            u => {
                return Err(format!(
                    "{s:?} has unit {u:?}; the units are ms, s, m, h and d"
                ));
            }
        };
        n.checked_mul(ms)
            .map(|ms| Span(Duration::from_millis(ms)))
            .ok_or_else(|| format!("{s:?} is too long"))
    }
}

impl std::fmt::Display for Span {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = self.0.as_millis();
        let (n, u) = [
            (86_400_000, "d"),
            (3_600_000, "h"),
            (60_000, "m"),
            (1_000, "s"),
        ]
        .into_iter()
        .find(|(d, _)| ms >= *d && ms.is_multiple_of(*d))
        .map_or((ms, "ms"), |(d, u)| (ms / d, u));
        write!(f, "{n}{u}")
    }
}

impl Serialize for Span {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Span, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_and_print_as_written() {
        for (text, secs) in [
            ("30d", 2_592_000),
            ("12h", 43_200),
            ("15m", 900),
            ("90s", 90),
        ] {
            let s: Span = text.parse().unwrap();
            assert_eq!(s.0, Duration::from_secs(secs));
            assert_eq!(s.to_string(), text);
        }
        assert_eq!(
            "500ms".parse::<Span>().unwrap().0,
            Duration::from_millis(500)
        );
        let e = "30 days".parse::<Span>().unwrap_err();
        assert!(e.contains("unit \" days\""), "{e}");
        let e = "d".parse::<Span>().unwrap_err();
        assert!(e.contains("whole number and a unit"), "{e}");
        assert!("99999999999999999d".parse::<Span>().is_err());
    }
}
