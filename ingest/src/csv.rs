//! Historian export files: one reading per line.
//!
//! ```text
//! timestamp,meter,value,quality
//! 2026-12-01T10:00:00Z,gas,412.5,good
//! 2026-12-01T10:00:00+01:00,steam-t,181.2,uncertain
//! ```
//!
//! The first line that is not blank or a `#` comment is the header; it names the columns in
//! any order: `timestamp`, `meter` and `value` are required, `quality` (good, uncertain, bad;
//! empty is good) and `status` (the source's numeric status code) are optional. Fields may be
//! double-quoted (`""` is a quote inside one). Values are raw, before the meter's calibration.
//! Every error names the line and the column.

use crate::reading::{Quality, Reading};
use crate::time::parse_rfc3339;

/// A line that does not hold a valid reading.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {column}: {rule}")]
pub struct CsvError {
    /// 1-based line number.
    pub line: usize,
    /// Column name (or `header`, `line`).
    pub column: String,
    /// What is wrong.
    pub rule: String,
}

const COLUMNS: [&str; 5] = ["timestamp", "meter", "value", "quality", "status"];

/// Parses a whole file. On failure returns the first `max_errors` errors (at least one), so
/// an operator can fix a file in one pass rather than one line at a time.
pub fn parse(text: &str, max_errors: usize) -> Result<Vec<Reading>, Vec<CsvError>> {
    let mut errors = Vec::new();
    let mut readings = Vec::new();
    let mut header: Option<[Option<usize>; 5]> = None;
    for (i, raw_line) in text.lines().enumerate() {
        let line = i + 1;
        let l = raw_line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let fields = match split(l) {
            Ok(f) => f,
            Err(rule) => {
                errors.push(CsvError {
                    line,
                    column: "line".into(),
                    rule,
                });
                if errors.len() >= max_errors {
                    break;
                }
                continue;
            }
        };
        let Some(cols) = header else {
            match parse_header(&fields) {
                Ok(h) => header = Some(h),
                Err(rule) => {
                    return Err(vec![CsvError {
                        line,
                        column: "header".into(),
                        rule,
                    }]);
                }
            }
            continue;
        };
        match parse_line(&fields, &cols) {
            Ok(r) => readings.push(r),
            Err((column, rule)) => {
                errors.push(CsvError {
                    line,
                    column: column.into(),
                    rule,
                });
                if errors.len() >= max_errors.max(1) {
                    break;
                }
            }
        }
    }
    if header.is_none() {
        errors.push(CsvError {
            line: 1,
            column: "header".into(),
            rule: "the file holds no header line (timestamp,meter,value[,quality][,status])".into(),
        });
    }
    if errors.is_empty() {
        Ok(readings)
    } else {
        Err(errors)
    }
}

fn parse_header(fields: &[String]) -> Result<[Option<usize>; 5], String> {
    let mut cols = [None; 5];
    for (i, f) in fields.iter().enumerate() {
        let name = f.trim().to_ascii_lowercase();
        let Some(c) = COLUMNS.iter().position(|c| *c == name) else {
            return Err(format!(
                "unknown column {f:?}; known: {}",
                COLUMNS.join(", ")
            ));
        };
        if cols[c].replace(i).is_some() {
            return Err(format!("column {name} appears twice"));
        }
    }
    for (c, name) in COLUMNS.iter().enumerate().take(3) {
        if cols[c].is_none() {
            return Err(format!(
                "column {name} is required (timestamp, meter and value are)"
            ));
        }
    }
    Ok(cols)
}

fn parse_line(f: &[String], cols: &[Option<usize>; 5]) -> Result<Reading, (&'static str, String)> {
    let get = |c: usize| {
        cols[c]
            .and_then(|i| f.get(i))
            .map(|s| s.trim())
            .unwrap_or("")
    };
    let wanted = cols.iter().flatten().max().map_or(0, |m| m + 1);
    if f.len() != wanted {
        return Err((
            "line",
            format!("has {} fields, the header {wanted}", f.len()),
        ));
    }
    let time_us = parse_rfc3339(get(0)).map_err(|e| ("timestamp", e))?;
    let meter = get(1);
    if meter.is_empty() {
        return Err(("meter", "must not be empty".into()));
    }
    let v = get(2);
    let raw: f64 = v
        .parse()
        .map_err(|_| ("value", format!("{v:?} is not a number")))?;
    if !raw.is_finite() {
        return Err(("value", format!("must be a finite number, got {v}")));
    }
    let quality = Quality::parse(get(3)).map_err(|e| ("quality", e))?;
    let s = get(4);
    let status = if s.is_empty() {
        0
    } else {
        parse_status(s).ok_or((
            "status",
            format!("{s:?} is not a status code (0 to 4294967295, or 0x...)"),
        ))?
    };
    Ok(Reading {
        meter: meter.to_string(),
        time_us,
        raw,
        quality,
        status,
    })
}

fn parse_status(s: &str) -> Option<u32> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u32::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// Splits one line at commas outside double quotes.
fn split(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', false) if cur.trim().is_empty() => {
                cur.clear();
                quoted = true;
            }
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            ('"', true) => quoted = false,
            (',', false) => out.push(std::mem::take(&mut cur)),
            (c, _) => cur.push(c),
        }
    }
    if quoted {
        return Err("a quoted field is not closed".into());
    }
    out.push(cur);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_parses_with_columns_in_any_order() {
        let text = "# exported by the site historian\nmeter,timestamp,value,quality,status\n\
                    gas,2026-12-01T10:00:00Z,412.5,good,0\n\
                    \"steam, main\",2026-12-01T11:00:00+01:00,181.25,UNCERTAIN,0x40000000\n\
                    gas,2026-12-01T10:01:00Z,-3e2,,\n";
        let r = parse(text, 10).unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(
            (r[0].meter.as_str(), r[0].raw, r[0].quality),
            ("gas", 412.5, Quality::Good)
        );
        assert_eq!(r[1].meter, "steam, main");
        assert_eq!(r[1].time_us, r[0].time_us, "the offset is applied");
        assert_eq!(
            (r[1].quality, r[1].status),
            (Quality::Uncertain, 0x4000_0000)
        );
        assert_eq!(
            (r[2].raw, r[2].time_us - r[0].time_us),
            (-300.0, 60_000_000)
        );
    }

    #[test]
    fn errors_name_line_and_column() {
        let text = "timestamp,meter,value\n\
                    2026-12-01T10:00:00Z,gas,1\n\
                    2026-12-01 10:00,gas,1\n\
                    2026-12-01T10:00:00Z,gas,NaN\n\
                    2026-12-01T10:00:00Z,gas,inf\n\
                    2026-12-01T10:00:00Z,,1\n\
                    2026-12-01T10:00:00Z,gas\n\
                    2026-12-01T10:00:00Z,gas,12,0\n";
        let e = parse(text, 100).unwrap_err();
        let got: Vec<(usize, &str)> = e.iter().map(|e| (e.line, e.column.as_str())).collect();
        assert_eq!(
            got,
            [
                (3, "timestamp"),
                (4, "value"),
                (5, "value"),
                (6, "meter"),
                (7, "line"),
                (8, "line")
            ]
        );
        assert!(
            e[1].to_string()
                .contains("line 4: value: must be a finite number, got NaN"),
            "{}",
            e[1]
        );
        assert_eq!(parse(text, 2).unwrap_err().len(), 2, "stops at max_errors");
    }

    #[test]
    fn headers_are_checked() {
        let e = parse("time,meter,value\n", 10).unwrap_err();
        assert!(e[0].rule.contains("unknown column \"time\""), "{}", e[0]);
        let e = parse("timestamp,meter\n", 10).unwrap_err();
        assert!(e[0].rule.contains("column value is required"), "{}", e[0]);
        let e = parse("\n# nothing\n", 10).unwrap_err();
        assert!(e[0].rule.contains("no header"), "{}", e[0]);
        let e = parse("timestamp,meter,value\n2026-12-01T10:00:00Z,\"gas,1\n", 10).unwrap_err();
        assert_eq!((e[0].line, e[0].column.as_str()), (2, "line"));
    }
}
