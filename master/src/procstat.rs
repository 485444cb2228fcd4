//! CPU time and resident memory of processes, read from Linux `/proc`, and the two
//! standard Prometheus process series that carry them: the master's `/metrics` writes them
//! for its own process ([`prometheus_lines`]) and `heatmesh loadtest --master-metrics` reads
//! them back ([`from_prometheus`]) when the master runs elsewhere.

/// Cumulative CPU time and current resident set of one process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// utime + stime, seconds.
    pub cpu_s: f64,
    /// VmRSS, bytes.
    pub rss_bytes: u64,
}

/// Kernel clock ticks per second (the unit of utime and stime in /proc/<pid>/stat).
#[allow(unsafe_code)] // the workspace's one unsafe call
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a configuration value; it has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// utime + stime in ticks from the text of /proc/<pid>/stat. The command name (field 2) may
/// hold spaces and parentheses, so fields are counted after its closing parenthesis.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, utime field 14 and stime field 15.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// VmRSS in bytes from the text of /proc/<pid>/status.
fn rss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Reads one sample; `None` when the process is gone (or this is not Linux).
pub fn sample(pid: u32) -> Option<Sample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(Sample {
        cpu_s: cpu_ticks(&stat)? as f64 / ticks_per_second(),
        rss_bytes: rss_bytes(&status)?,
    })
}

fn meminfo_bytes(meminfo: &str, key: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Total memory of the machine, bytes (MemTotal of /proc/meminfo).
pub fn mem_total_bytes() -> Option<u64> {
    let m = std::fs::read_to_string("/proc/meminfo").ok()?;
    meminfo_bytes(&m, "MemTotal:")
}

/// Busy CPU time of all cores since boot, seconds: the first line of /proc/stat without
/// idle and iowait.
fn busy_ticks(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let total: u64 = f.iter().take(8).sum();
    Some(total - f.get(3)? - f.get(4).copied().unwrap_or(0))
}

/// The whole machine: busy CPU seconds (all cores) and memory in use (MemTotal -
/// MemAvailable), so a report shows how much else ran during the load.
pub fn machine() -> Option<Sample> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let m = std::fs::read_to_string("/proc/meminfo").ok()?;
    let used = meminfo_bytes(&m, "MemTotal:")?.saturating_sub(meminfo_bytes(&m, "MemAvailable:")?);
    Some(Sample {
        cpu_s: busy_ticks(&stat)? as f64 / ticks_per_second(),
        rss_bytes: used,
    })
}

/// The `process_cpu_seconds_total` and `process_resident_memory_bytes` series (Prometheus
/// text format, the names client libraries use) for this process; empty off Linux.
pub fn prometheus_lines() -> String {
    match sample(std::process::id()) {
        Some(s) => format!(
            "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n\
             # TYPE process_cpu_seconds_total counter\n\
             process_cpu_seconds_total {}\n\
             # HELP process_resident_memory_bytes Resident memory size in bytes.\n\
             # TYPE process_resident_memory_bytes gauge\n\
             process_resident_memory_bytes {}\n",
            s.cpu_s, s.rss_bytes
        ),
        None => String::new(),
    }
}

/// Reads the two process series back from a Prometheus text page; `None` unless both are
/// there with finite, non-negative values.
pub fn from_prometheus(page: &str) -> Option<Sample> {
    let value = |name: &str| -> Option<f64> {
        let line = page
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))?;
        let v: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        (v.is_finite() && v >= 0.0).then_some(v)
    };
    Some(Sample {
        cpu_s: value("process_cpu_seconds_total")?,
        rss_bytes: value("process_resident_memory_bytes")? as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_and_status() {
        let stat = "4242 (heat mesh) (x)) S 1 4242 4242 0 -1 4194560 1234 0 0 0 \
                    250 75 0 0 20 0 9 0 100 123456789 4567 18446744073709551615";
        assert_eq!(cpu_ticks(stat), Some(325));
        let status = "Name:\theatmesh\nVmPeak:\t  200000 kB\nVmRSS:\t   18432 kB\nThreads:\t9\n";
        assert_eq!(rss_bytes(status), Some(18432 * 1024));
        let stat = "cpu  100 5 50 1000 20 1 2 3 7 0\ncpu0 50 2 25 500 10 0 1 1 3 0\n";
        assert_eq!(busy_ticks(stat), Some(100 + 5 + 50 + 1 + 2 + 3));
        let meminfo =
            "MemTotal:       24684828 kB\nMemFree:  100 kB\nMemAvailable:   20000000 kB\n";
        assert_eq!(
            meminfo_bytes(meminfo, "MemAvailable:"),
            Some(20_000_000 * 1024)
        );
    }

    #[test]
    fn prometheus_lines_read_back() {
        let page = format!("heatmesh_tasks_total 3\n{}", prometheus_lines());
        let s = from_prometheus(&page).expect("both series written");
        assert!(s.rss_bytes > 1 << 20, "{page}");
        assert!(s.cpu_s > 0.0, "{page}");
        assert_eq!(from_prometheus("process_cpu_seconds_total 1.5\n"), None);
        assert_eq!(
            from_prometheus(
                "process_cpu_seconds_total_x 9\nprocess_cpu_seconds_total 1.5\nprocess_resident_memory_bytes 2048\n"
            ),
            Some(Sample {
                cpu_s: 1.5,
                rss_bytes: 2048
            })
        );
        assert_eq!(
            from_prometheus("process_cpu_seconds_total NaN\nprocess_resident_memory_bytes 1\n"),
            None
        );
    }

    #[test]
    fn samples_this_process() {
        let s = sample(std::process::id()).expect("/proc is readable");
        assert!(s.rss_bytes > 0 && s.cpu_s >= 0.0);
        assert!(mem_total_bytes().unwrap() > s.rss_bytes);
        let m = machine().unwrap();
        assert!(m.cpu_s > 0.0 && m.rss_bytes > s.rss_bytes);
        assert!(ticks_per_second() >= 1.0);
    }
}
