//! Plant data verbs: `heatmesh ingest` (historian CSV files in), `heatmesh readings` (one
//! meter's readings out) and `heatmesh meters` (what is configured).

use super::client::{JsonFlag, connect, rpc_err};
use super::table::Table;
use anyhow::{Context, bail};
use heatmesh_ingest::Reading;
use heatmesh_ingest::time::{format_us, parse_rfc3339};
use heatmesh_mesh::wire::timestamp;
use heatmesh_proto::v1 as pb;
use pb::reading_service_client::ReadingServiceClient;
use serde_json::json;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Arguments of `heatmesh ingest`.
#[derive(clap::Args)]
pub struct IngestArgs {
    /// Plant the readings belong to.
    #[arg(long)]
    plant: String,
    /// A CSV file (timestamp,meter,value[,quality][,status]), or a folder whose *.csv files
    /// are ingested in name order (docs/ingest.md).
    path: PathBuf,
    /// Readings per IngestReadings message.
    #[arg(long, default_value_t = 5_000)]
    batch: usize,
    /// Check the files against the plant's meters and stop: nothing is sent.
    #[arg(long)]
    check: bool,
    #[command(flatten)]
    out: JsonFlag,
}

/// Most line errors printed for one run.
const MAX_ERRORS: usize = 20;

fn csv_files(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("reading folder {}", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x.eq_ignore_ascii_case("csv")))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("{} holds no .csv files", path.display());
    }
    Ok(files)
}

/// `heatmesh ingest`: every file is parsed and checked first, so a bad line refuses the run
/// before anything is sent; then the readings stream in batches and the master's tally is
/// printed.
pub async fn ingest(addr: &str, a: IngestArgs) -> anyhow::Result<()> {
    if a.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let files = csv_files(&a.path)?;
    let channel = connect(addr).await?;
    let mut client = ReadingServiceClient::new(channel)
        .max_encoding_message_size(64 * 1024 * 1024)
        .max_decoding_message_size(64 * 1024 * 1024);
    let meters: HashSet<String> = client
        .list_meters(pb::ListMetersRequest {
            plant_id: a.plant.clone(),
        })
        .await
        .map_err(rpc_err)?
        .into_inner()
        .meters
        .into_iter()
        .map(|m| m.id)
        .collect();
    let mut readings: Vec<Reading> = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    for f in &files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        let parsed = heatmesh_ingest::csv::parse(&text, MAX_ERRORS);
        match parsed {
            Ok(rs) => {
                // Line numbers again, for the meter check: the parser skipped comments.
                let lines = data_lines(&text);
                for (r, line) in rs.iter().zip(lines) {
                    if !meters.contains(&r.meter) && errors.len() < MAX_ERRORS {
                        let mut known: Vec<&str> = meters.iter().map(String::as_str).collect();
                        known.sort_unstable();
                        errors.push(format!(
                            "{}:{line}: meter: plant {} has no meter {:?}; known: {}",
                            f.display(),
                            a.plant,
                            r.meter,
                            known.join(", ")
                        ));
                    }
                }
                readings.extend(rs);
            }
            Err(es) => errors.extend(
                es.into_iter()
                    .map(|e| format!("{}:{}: {}: {}", f.display(), e.line, e.column, e.rule)),
            ),
        }
    }
    if !errors.is_empty() {
        errors.truncate(MAX_ERRORS);
        bail!(
            "nothing was ingested; fix these lines first:\n  {}",
            errors.join("\n  ")
        );
    }
    if a.check {
        println!(
            "{} readings in {} file(s) are valid for plant {}; nothing sent (--check)",
            readings.len(),
            files.len(),
            a.plant
        );
        return Ok(());
    }
    let started = Instant::now();
    let total = readings.len();
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::IngestReadingsRequest>(4);
    let plant = a.plant.clone();
    let batch = a.batch;
    let show_progress = !a.out.json && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let sender = tokio::spawn(async move {
        let mut sent = 0usize;
        let mut last = Instant::now();
        let mut chunks = readings.into_iter().peekable();
        while chunks.peek().is_some() {
            let chunk: Vec<pb::Reading> = chunks
                .by_ref()
                .take(batch)
                .map(heatmesh_mesh::wire::reading_to_proto)
                .collect();
            sent += chunk.len();
            let msg = pb::IngestReadingsRequest {
                plant_id: plant.clone(),
                readings: chunk,
            };
            if tx.send(msg).await.is_err() {
                return;
            }
            if show_progress && last.elapsed() > Duration::from_millis(250) {
                eprint!("\rsent {sent} of {total} readings");
                last = Instant::now();
            }
        }
        if show_progress {
            eprint!("\r\x1b[K");
        }
    });
    let res = client
        .ingest_readings(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await;
    let _ = sender.await;
    let r = res.map_err(rpc_err)?.into_inner();
    let secs = started.elapsed().as_secs_f64();
    if a.out.json {
        println!(
            "{}",
            json!({
                "plant": a.plant, "files": files.len(), "received": r.received,
                "ingested": r.ingested, "duplicates": r.duplicates, "conflicts": r.conflicts,
                "out_of_range": r.out_of_range, "seconds": secs,
            })
        );
    } else {
        println!(
            "{} readings from {} file(s): {} ingested, {} already held, {} conflicting (first value kept), {} out of range; {:.1} s, {:.0} readings/s",
            r.received,
            files.len(),
            r.ingested,
            r.duplicates,
            r.conflicts,
            r.out_of_range,
            secs,
            r.received as f64 / secs.max(1e-9)
        );
    }
    Ok(())
}

/// Line numbers of the data lines (not blank, not comments, not the header).
fn data_lines(text: &str) -> impl Iterator<Item = usize> + '_ {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim().starts_with('#'))
        .skip(1)
        .map(|(i, _)| i + 1)
}

/// Arguments of `heatmesh readings`.
#[derive(clap::Args)]
pub struct ReadingsArgs {
    /// Plant id.
    #[arg(long)]
    plant: String,
    /// Meter id.
    #[arg(long)]
    meter: String,
    /// Readings of this last stretch of time, e.g. 1h, 15m, 7d (default 1h).
    #[arg(long, value_parser = humantime::parse_duration, conflicts_with = "from")]
    since: Option<Duration>,
    /// Window start, RFC 3339 (e.g. 2026-12-01T00:00:00Z).
    #[arg(long)]
    from: Option<String>,
    /// Window end (exclusive), RFC 3339; default now.
    #[arg(long)]
    to: Option<String>,
    /// Most readings printed.
    #[arg(long, default_value_t = 10_000)]
    limit: u32,
    /// Print CSV in the `heatmesh ingest` format (value raw, as acquired).
    #[arg(long, conflicts_with = "json")]
    csv: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn micros(t: &Option<prost_types::Timestamp>) -> i64 {
    t.as_ref().map_or(0, heatmesh_mesh::wire::micros)
}

fn quality_name(q: i32) -> &'static str {
    match pb::ReadingQuality::try_from(q) {
        Ok(pb::ReadingQuality::Uncertain) => "uncertain",
        Ok(pb::ReadingQuality::Bad) => "bad",
        _ => "good",
    }
}

/// `heatmesh readings`.
pub async fn readings(addr: &str, a: ReadingsArgs) -> anyhow::Result<()> {
    let now = heatmesh_master::task::now_us() as i64;
    let parse =
        |flag: &str, s: &str| parse_rfc3339(s).map_err(|e| anyhow::anyhow!("--{flag}: {e}"));
    let to = match &a.to {
        Some(s) => parse("to", s)?,
        None => now + 1,
    };
    let from = match (&a.from, a.since) {
        (Some(s), _) => parse("from", s)?,
        (None, since) => {
            to - since
                .unwrap_or(Duration::from_secs(3600))
                .as_micros()
                .min(i64::MAX as u128) as i64
        }
    };
    let mut client =
        ReadingServiceClient::new(connect(addr).await?).max_decoding_message_size(64 * 1024 * 1024);
    let r = client
        .query_readings(pb::QueryReadingsRequest {
            plant_id: a.plant.clone(),
            meter: a.meter.clone(),
            from: Some(timestamp(from.max(0))),
            to: Some(timestamp(to.max(0))),
            limit: a.limit,
        })
        .await
        .map_err(rpc_err)?
        .into_inner();
    let more = r
        .next_from
        .as_ref()
        .map(|_| format_us(micros(&r.next_from)));
    if a.json {
        let rows: Vec<serde_json::Value> = r
            .readings
            .iter()
            .map(|x| {
                json!({
                    "source_time": format_us(micros(&x.source_time)), "raw": x.raw,
                    "value": x.value, "quality": quality_name(x.quality),
                    "status_code": x.status_code, "flags": x.flags,
                    "received": format_us(micros(&x.received)),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "plant": r.plant_id, "meter": r.meter, "unit": r.unit,
                "readings": rows, "next_from": more,
            }))?
        );
        return Ok(());
    }
    if a.csv {
        println!("timestamp,meter,value,quality,status");
        for x in &r.readings {
            println!(
                "{},{},{},{},{}",
                format_us(micros(&x.source_time)),
                r.meter,
                x.raw,
                quality_name(x.quality),
                x.status_code
            );
        }
    } else {
        let mut t = Table::new(&[
            "SOURCE TIME",
            &format!("VALUE ({})", r.unit),
            "RAW",
            "QUALITY",
            "FLAGS",
        ]);
        for x in &r.readings {
            t.row(vec![
                format_us(micros(&x.source_time)),
                show(x.value),
                show(x.raw),
                quality_name(x.quality).into(),
                x.flags.join(","),
            ]);
        }
        print!("{}", t.render());
        println!(
            "{} readings of {} on {} from {} to {}",
            r.readings.len(),
            r.meter,
            r.plant_id,
            format_us(from.max(0)),
            format_us(to.max(0))
        );
    }
    if let Some(m) = more {
        eprintln!("more readings follow: ask again with --from {m} (or a larger --limit)");
    }
    Ok(())
}

/// A value for a table: six decimals at most, trailing zeros dropped, so an f32 register or
/// a scaled integer reads as the device meant it (`--json` and `--csv` keep every digit).
fn show(v: f64) -> String {
    if v != 0.0 && (v.abs() < 1e-4 || v.abs() >= 1e15) {
        return format!("{v:e}");
    }
    let s = format!("{v:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.to_string() }
}

/// Arguments of `heatmesh meters`.
#[derive(clap::Args)]
pub struct MetersArgs {
    /// Only this plant's meters.
    #[arg(long)]
    plant: Option<String>,
    #[command(flatten)]
    out: JsonFlag,
}

/// `heatmesh meters`: the configured meters with their source and address.
pub async fn meters(addr: &str, a: MetersArgs) -> anyhow::Result<()> {
    let mut client = ReadingServiceClient::new(connect(addr).await?);
    let ms = client
        .list_meters(pb::ListMetersRequest {
            plant_id: a.plant.unwrap_or_default(),
        })
        .await
        .map_err(rpc_err)?
        .into_inner()
        .meters;
    if a.out.json {
        let by_plant: BTreeMap<&str, Vec<serde_json::Value>> =
            ms.iter().fold(BTreeMap::new(), |mut acc, m| {
                acc.entry(m.plant_id.as_str()).or_default().push(json!({
                    "id": m.id, "quantity": m.quantity, "unit": m.unit, "source": m.source,
                    "source_kind": m.source_kind, "address": m.address, "fuel": m.fuel,
                    "poll_ms": m.poll_ms,
                    "range": m.has_range.then_some([m.range_low, m.range_high]),
                }));
                acc
            });
        println!("{}", serde_json::to_string_pretty(&by_plant)?);
        return Ok(());
    }
    let mut t = Table::new(&[
        "PLANT", "METER", "QUANTITY", "UNIT", "SOURCE", "ADDRESS", "RANGE",
    ]);
    for m in &ms {
        t.row(vec![
            m.plant_id.clone(),
            m.id.clone(),
            m.quantity.clone(),
            m.unit.clone(),
            if m.source.is_empty() {
                m.source_kind.clone()
            } else {
                format!("{} ({})", m.source, m.source_kind)
            },
            m.address.clone(),
            if m.has_range {
                format!("{} .. {}", m.range_low, m.range_high)
            } else {
                String::new()
            },
        ]);
    }
    print!("{}", t.render());
    Ok(())
}

/// Arguments of `heatmesh feeds`.
#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct FeedsArgs {
    /// Only this plant's meters.
    #[arg(long)]
    plant: Option<String>,
    #[command(flatten)]
    out: JsonFlag,
    #[command(subcommand)]
    action: Option<FeedAction>,
}

/// `heatmesh feeds disable|enable`.
#[derive(clap::Subcommand)]
enum FeedAction {
    /// Stop reading a failing meter (journaled; stays off across restarts and moves).
    Disable(SwitchArgs),
    /// Read a disabled meter again.
    Enable(SwitchArgs),
}

#[derive(clap::Args)]
struct SwitchArgs {
    /// The meter: METER, or PLANT/METER (METER alone when its id is unique in the fleet).
    meter: String,
    /// Its plant (instead of PLANT/METER).
    #[arg(long)]
    plant: Option<String>,
    /// Why (journaled; required to disable).
    #[arg(long, default_value = "")]
    reason: String,
}

/// `heatmesh feeds disable|enable`: switches one meter's connector and says what was
/// journaled.
async fn switch(addr: &str, enabled: bool, a: SwitchArgs) -> anyhow::Result<()> {
    let ch = connect(addr).await?;
    let (plant, meter) = match (a.plant, a.meter.split_once('/')) {
        (Some(p), None) => (p, a.meter.clone()),
        (None, Some((p, m))) => (p.to_string(), m.to_string()),
        (Some(_), Some(_)) => bail!("give the plant once: --plant P METER, or PLANT/METER"),
        (None, None) => {
            let meters = ReadingServiceClient::new(ch.clone())
                .list_meters(pb::ListMetersRequest::default())
                .await
                .map_err(rpc_err)?
                .into_inner()
                .meters;
            let plants: Vec<String> = meters
                .into_iter()
                .filter(|m| m.id == a.meter)
                .map(|m| m.plant_id)
                .collect();
            match plants.as_slice() {
                [p] => (p.clone(), a.meter.clone()),
                [] => bail!(
                    "no plant has a meter {:?} (heatmesh meters lists them)",
                    a.meter
                ),
                _ => bail!(
                    "meter {:?} is in several plants ({}); give --plant or PLANT/METER",
                    a.meter,
                    plants.join(", ")
                ),
            }
        }
    };
    let s = ReadingServiceClient::new(ch)
        .set_feed_enabled(pb::SetFeedEnabledRequest {
            plant_id: plant,
            meter,
            enabled,
            reason: a.reason,
        })
        .await
        .map_err(rpc_err)?
        .into_inner();
    println!(
        "{}/{}: {} at {}{}",
        s.plant_id,
        s.meter,
        if s.enabled { "enabled" } else { "disabled" },
        format_us(micros(&s.at)),
        if s.reason.is_empty() {
            String::new()
        } else {
            format!(" ({})", s.reason)
        }
    );
    Ok(())
}

/// `heatmesh feeds`: each connector-read meter's state, last value and age, errors and
/// their cause, and the node reading it.
pub async fn feeds(addr: &str, a: FeedsArgs) -> anyhow::Result<()> {
    match a.action {
        Some(FeedAction::Disable(s)) => return switch(addr, false, s).await,
        Some(FeedAction::Enable(s)) => return switch(addr, true, s).await,
        None => {}
    }
    let mut client = ReadingServiceClient::new(connect(addr).await?);
    let fs = client
        .list_feeds(pb::ListFeedsRequest {
            plant_id: a.plant.unwrap_or_default(),
        })
        .await
        .map_err(rpc_err)?
        .into_inner()
        .feeds;
    let now = heatmesh_master::task::now_us() as i64;
    let age = |t: &Option<prost_types::Timestamp>| {
        t.as_ref().map(|_| (now - micros(t)).max(0) as f64 / 1e6)
    };
    if a.out.json {
        let rows: Vec<serde_json::Value> = fs
            .iter()
            .map(|f| {
                json!({
                    "plant": f.plant_id, "meter": f.meter, "source": f.source,
                    "state": f.state, "node": f.node,
                    "last_value": f.has_value.then_some(f.last_value),
                    "last_time": f.last_time.as_ref().map(|_| format_us(micros(&f.last_time))),
                    "age_seconds": age(&f.last_time), "errors": f.errors,
                    "last_error": Some(&f.last_error).filter(|e| !e.is_empty()),
                    "switch": f.switch.as_ref().map(|s| json!({
                        "enabled": s.enabled, "reason": s.reason,
                        "at": format_us(micros(&s.at)),
                    })),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if fs.is_empty() {
        println!(
            "no meter is read by a connector (meters without a source are fed by pushes and files)"
        );
        return Ok(());
    }
    let mut t = Table::new(&[
        "PLANT",
        "METER",
        "SOURCE",
        "STATE",
        "LAST VALUE",
        "AGE",
        "ERRORS",
        "LAST ERROR",
        "NODE",
    ]);
    for f in &fs {
        t.row(vec![
            f.plant_id.clone(),
            f.meter.clone(),
            f.source.clone(),
            f.state.clone(),
            if f.has_value {
                format!("{}", f.last_value)
            } else {
                "-".into()
            },
            age(&f.last_time).map_or("-".into(), |s| format!("{s:.1} s")),
            f.errors.to_string(),
            match &f.switch {
                Some(s) if f.state == "disabled" => {
                    format!("disabled at {}: {}", format_us(micros(&s.at)), s.reason)
                }
                _ => f.last_error.clone(),
            },
            f.node.clone(),
        ]);
    }
    print!("{}", t.render());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::show;

    #[test]
    fn table_values_drop_binary_noise_but_not_magnitude() {
        assert_eq!(show(179.910400390625), "179.9104");
        assert_eq!(show(3.0300000000000002), "3.03");
        assert_eq!(show(2_000.0), "2000");
        assert_eq!(show(-0.0000001), "-1e-7");
        assert_eq!(show(0.0), "0");
        assert_eq!(show(1.5e16), "1.5e16");
    }
}
