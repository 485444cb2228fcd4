//! `heatmesh bench soak`: a long open-loop load against a master, three plant nodes and a
//! spare as processes, with a short retention, sampling the master's resident memory and
//! its data directory's disk use. Retention is working when both curves go flat once the
//! first tasks expire; the verdict compares the end of the run with the moment the ledger
//! reached its steady size.

use super::bench::follow_terminal;
use anyhow::{Context, bail};
use heatmesh_master::config::Span;
use heatmesh_proto::v1 as pb;
use heatmesh_sim::cluster::{Cluster, req};
use pb::task_service_client::TaskServiceClient;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tonic::Code;

/// Arguments of `heatmesh bench soak`.
#[derive(clap::Args)]
pub struct SoakBenchArgs {
    /// Offered load, tasks/s (each a GL-009 heat balance with its own idempotency key).
    #[arg(long, default_value_t = 5_000)]
    rate: u64,
    /// Length of the load.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30m")]
    duration: Duration,
    /// How often to sample memory and disk.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    sample_every: Duration,
    /// The master's `retention.tasks`: finished tasks older than this are removed.
    #[arg(long, default_value = "2m")]
    task_retention: Span,
    /// The master's `retention.idempotency_keys`.
    #[arg(long, default_value = "3m")]
    key_retention: Span,
    /// Submits in flight at most; a tick that finds them all busy counts as not offered.
    #[arg(long, default_value_t = 4_096)]
    max_in_flight: usize,
    /// Rise of the fitted trend after the steady point, in percent of the mean, above which
    /// the run fails.
    #[arg(long, default_value_t = 10.0)]
    max_growth_pct: f64,
}

/// Counters the submitters and the feed share.
#[derive(Default)]
struct Counts {
    acked: AtomicU64,
    refused: AtomicU64,
    failed: AtomicU64,
    not_offered: AtomicU64,
    finished: AtomicU64,
}

/// One sample of the run.
struct Sample {
    at_s: f64,
    rss: u64,
    disk: u64,
}

const MIB: f64 = 1024.0 * 1024.0;

/// Runs the soak and prints one line per sample, then the verdict.
pub async fn run(a: SoakBenchArgs) -> anyhow::Result<()> {
    if a.rate == 0 || a.sample_every.is_zero() || a.duration < a.sample_every {
        bail!("--rate must be above 0 and --duration at least one --sample-every");
    }
    let bin = std::env::current_exe().context("locating this executable")?;
    let mut c = Cluster::new(&bin).context("creating the cluster directory")?;
    c.fault_injection = false;
    c.master_env.extend([
        (
            "HEATMESH_RETENTION__TASKS".into(),
            a.task_retention.to_string(),
        ),
        (
            "HEATMESH_RETENTION__IDEMPOTENCY_KEYS".into(),
            a.key_retention.to_string(),
        ),
    ]);
    c.spawn_master().context("starting the master")?;
    c.reach_master(Duration::from_secs(30))
        .await
        .map_err(anyhow::Error::msg)?;
    let placed = c.start_standard(true, None).await;
    let pid = c
        .master
        .as_ref()
        .and_then(|m| m.pid())
        .context("the master has no pid")?;
    let data = c.dir.path().join("data");
    println!(
        "heatmesh bench soak: {} tasks/s for {}, retention tasks {} / keys {}; master + 3 plant nodes + 1 spare as processes (placed in {placed:.0?}); logs in {}",
        a.rate,
        humantime::format_duration(a.duration),
        a.task_retention,
        a.key_retention,
        c.dir.path().display()
    );
    let ch = c.channel().await;
    let counts = Arc::new(Counts::default());
    let feed = {
        let counts = counts.clone();
        follow_terminal(ch.clone(), move |_| {
            counts.finished.fetch_add(1, Ordering::Relaxed);
        })
        .await?
    };
    let load = tokio::spawn(offer(
        ch,
        a.rate,
        a.duration,
        a.max_in_flight,
        counts.clone(),
    ));

    let t0 = Instant::now();
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval(a.sample_every);
    println!(
        "{:>7} {:>10} {:>10} {:>8} {:>8} {:>10} {:>9} {:>9}",
        "t (s)", "acked", "finished", "refused", "skipped", "removed", "RSS MiB", "disk MiB"
    );
    loop {
        tick.tick().await;
        let at = t0.elapsed();
        if let Some(gone) = c.exited().first() {
            bail!(
                "{gone} exited during the soak; the end of the master's log:\n{}",
                c.newest_master_log_tail(20)
            );
        }
        let s = Sample {
            at_s: at.as_secs_f64(),
            rss: rss_bytes(pid).context("reading the master's resident memory")?,
            disk: disk_bytes(&data).context("measuring the data directory")?,
        };
        let removed = removed_tasks(&c).await;
        println!(
            "{:>7.0} {:>10} {:>10} {:>8} {:>8} {:>10} {:>9.1} {:>9.1}",
            s.at_s,
            counts.acked.load(Ordering::Relaxed),
            counts.finished.load(Ordering::Relaxed),
            counts.refused.load(Ordering::Relaxed),
            counts.not_offered.load(Ordering::Relaxed),
            removed,
            s.rss as f64 / MIB,
            s.disk as f64 / MIB
        );
        samples.push(s);
        if at >= a.duration {
            break;
        }
    }
    load.abort();
    feed.abort();
    let failed = counts.failed.load(Ordering::Relaxed);
    let acked = counts.acked.load(Ordering::Relaxed);
    println!(
        "{acked} acknowledged ({:.0}/s), {} refused with RESOURCE_EXHAUSTED, {failed} other errors",
        acked as f64 / a.duration.as_secs_f64(),
        counts.refused.load(Ordering::Relaxed)
    );
    verdict(&samples, steady_after(&a), a.max_growth_pct)
}

/// Where the verdict's window starts: once every key written in the first moments has
/// expired (plus a sweep and a checkpoint's worth of slack), and not before half the run,
/// because sled's free-space reuse takes minutes more to reach its balance.
fn steady_after(a: &SoakBenchArgs) -> f64 {
    let window = a.task_retention.0.max(a.key_retention.0) + Duration::from_secs(30);
    window.max(a.duration / 2).as_secs_f64()
}

/// The least-squares slope of `points` (x, y), in y per x; 0 for fewer than two points.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let (mx, my) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x / n, b + y / n));
    let (num, den) = points.iter().fold((0.0, 0.0), |(a, b), (x, y)| {
        (a + (x - mx) * (y - my), b + (x - mx) * (x - mx))
    });
    if den > 0.0 { num / den } else { 0.0 }
}

/// Fits a line to each curve from the steady point on: flat when the line rises less than
/// `max_growth_pct` of the curve's mean over that window.
fn verdict(samples: &[Sample], steady_s: f64, max_growth_pct: f64) -> anyhow::Result<()> {
    let tail: Vec<&Sample> = samples.iter().filter(|s| s.at_s >= steady_s).collect();
    if tail.len() < 3 {
        bail!(
            "fewer than 3 samples after the steady point at {steady_s:.0} s: run longer, or sample more often"
        );
    }
    let span_s = tail[tail.len() - 1].at_s - tail[0].at_s;
    let mut over = Vec::new();
    for (name, get) in [
        ("master RSS", (|s: &Sample| s.rss) as fn(&Sample) -> u64),
        ("data directory", |s| s.disk),
    ] {
        let points: Vec<(f64, f64)> = tail.iter().map(|s| (s.at_s, get(s) as f64 / MIB)).collect();
        let mean = points.iter().map(|p| p.1).sum::<f64>() / points.len() as f64;
        let (lo, hi) = points
            .iter()
            .fold((f64::MAX, 0.0f64), |(lo, hi), p| (lo.min(p.1), hi.max(p.1)));
        let per_s = slope(&points);
        let growth = per_s * span_s / mean.max(1e-9) * 100.0;
        println!(
            "{name} from {:.0} s to {:.0} s: mean {mean:.1} MiB, range {lo:.1}-{hi:.1} MiB, trend {:+.1} MiB per 10 min ({growth:+.1} % over the window)",
            tail[0].at_s,
            tail[tail.len() - 1].at_s,
            per_s * 600.0
        );
        if growth > max_growth_pct {
            over.push(format!("{name} trends up {growth:.1} %"));
        }
    }
    if over.is_empty() {
        println!("flat: neither trend rose more than {max_growth_pct} % after the steady point");
        Ok(())
    } else {
        bail!("not flat: {} (limit {max_growth_pct} %)", over.join(", "))
    }
}

/// Offers `rate` tasks/s in 10 ms ticks for `duration`, at most `max_in_flight` at a time.
async fn offer(
    ch: tonic::transport::Channel,
    rate: u64,
    duration: Duration,
    max_in_flight: usize,
    counts: Arc<Counts>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(max_in_flight.max(1)));
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let t0 = Instant::now();
    let mut sent: u64 = 0;
    while t0.elapsed() < duration {
        tick.tick().await;
        let due = (t0.elapsed().as_secs_f64() * rate as f64) as u64;
        while sent < due {
            let i = sent as usize;
            sent += 1;
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                counts.not_offered.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let (mut client, counts) = (TaskServiceClient::new(ch.clone()), counts.clone());
            tokio::spawn(async move {
                let _permit = permit;
                let r = client.submit_task(req(i)).await;
                let n = match r {
                    Ok(_) => &counts.acked,
                    Err(s) if s.code() == Code::ResourceExhausted => &counts.refused,
                    Err(s) => {
                        if counts.failed.fetch_add(1, Ordering::Relaxed) == 0 {
                            eprintln!("soak: first submit error: {}", s.message());
                        }
                        return;
                    }
                };
                n.fetch_add(1, Ordering::Relaxed);
            });
        }
    }
}

/// The process's resident set (VmRSS of /proc/PID/status).
fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .context("no VmRSS line")?;
    Ok(kib * 1024)
}

/// Disk blocks the files under `dir` occupy, as `du` counts them (sparse files count what
/// they hold, not their length).
fn disk_bytes(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let m = e.metadata()?;
        total += if m.is_dir() {
            disk_bytes(&e.path())?
        } else {
            m.blocks() * 512
        };
    }
    Ok(total)
}

/// `heatmesh_retention_removed_total{what="tasks"}` from the master's /metrics (0 before
/// the first removal).
async fn removed_tasks(c: &Cluster) -> u64 {
    let body = match scrape(c.metrics).await {
        Ok(b) => b,
        Err(_) => return 0,
    };
    body.lines()
        .filter(|l| l.starts_with("heatmesh_retention_removed_total") && l.contains("\"tasks\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

async fn scrape(addr: std::net::SocketAddr) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await?;
    let mut body = String::new();
    s.read_to_string(&mut body).await?;
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn curve(points: &[(f64, u64, u64)]) -> Vec<Sample> {
        points
            .iter()
            .map(|&(at_s, rss, disk)| Sample {
                at_s,
                rss: rss << 20,
                disk: disk << 20,
            })
            .collect()
    }

    #[test]
    fn the_verdict_reads_the_trend_after_the_steady_point() {
        // Growth before the steady point (the windows filling up) does not count, nor does
        // noise around a level.
        let flat = curve(&[
            (0.0, 70, 60),
            (30.0, 400, 600),
            (60.0, 500, 900),
            (90.0, 560, 950),
            (120.0, 500, 910),
            (150.0, 540, 940),
        ]);
        assert!(verdict(&flat, 60.0, 10.0).is_ok());
        let growing = curve(&[
            (0.0, 70, 60),
            (60.0, 500, 900),
            (90.0, 500, 1050),
            (120.0, 500, 1200),
        ]);
        let e = verdict(&growing, 60.0, 10.0).unwrap_err().to_string();
        assert!(
            e.contains("data directory trends up 28.6 %") && !e.contains("RSS"),
            "{e}"
        );
        let short = verdict(&growing, 100.0, 10.0).unwrap_err().to_string();
        assert!(short.contains("steady point at 100 s"), "{short}");
    }
}
