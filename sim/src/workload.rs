//! The drill's client: submits tasks open-loop at the scenario's rate and kind mix, and fleet
//! optimizations, through the public gRPC API, the way an operator's systems would.
//!
//! Every submit carries an idempotency key (`<drill>-<n>`). When the master is unreachable
//! (crashed, restarting) the client retries the same key until it gets an answer or the
//! retry window closes, so a task is never submitted twice under two ids; the checker uses
//! the keys to tell a submitted task from a phantom one.

use crate::scenario::Workload;
use heatmesh_proto::v1 as pb;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

/// The shipped example request of an agent kind (the registry's), sent as JSON.
pub fn example_payload(kind: &str) -> Option<&'static str> {
    heatmesh_agents::registry::lookup(kind).map(|k| k.example)
}

/// How one submit ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Accepted: durable under this id, acknowledged at this time (unix µs).
    Acked {
        /// Task id.
        id: u64,
        /// When the acknowledgement arrived, unix µs.
        at_us: u64,
    },
    /// Refused by the master (the status code and message).
    Refused(String),
    /// No answer before the retry window closed (the master may or may not have it).
    Unknown(String),
}

/// One submit of the drill.
#[derive(Debug, Clone)]
pub struct Sent {
    /// Idempotency key.
    pub key: String,
    /// Plant.
    pub plant: String,
    /// Agent kind.
    pub kind: String,
    /// First send, unix µs.
    pub sent_us: u64,
    /// How it ended.
    pub outcome: Outcome,
}

/// One fleet optimization.
#[derive(Debug, Clone)]
pub struct Optimized {
    /// Start, unix µs.
    pub sent_us: u64,
    /// Duration, µs; None if it failed.
    pub took_us: Option<u64>,
    /// The error, if any.
    pub error: Option<String>,
}

/// What the client did.
#[derive(Debug, Default)]
pub struct Log {
    /// Task submits.
    pub sent: Vec<Sent>,
    /// Optimizations.
    pub optimized: Vec<Optimized>,
}

/// Live counters for a progress display.
#[derive(Debug, Default)]
pub struct Progress {
    /// Submits started.
    pub submitted: AtomicU64,
    /// Submits acknowledged.
    pub acked: AtomicU64,
}

pub use heatmesh_base::now_us;

/// Runs the workload against `uri` for its duration; returns once every submit has ended.
/// `plants` lists each plant with the agent kinds it runs.
pub async fn run(
    uri: String,
    prefix: String,
    w: Workload,
    plants: Vec<(String, Vec<String>)>,
    seed: u64,
    progress: Arc<Progress>,
) -> Log {
    let channel = Endpoint::from_shared(uri)
        .expect("drill URIs are well-formed")
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(3))
        .connect_lazy();
    let choices = task_choices(&w, &plants);
    let log = Arc::new(Mutex::new(Log::default()));
    let start = Instant::now();
    let end = start + Duration::from_millis(w.duration_ms);
    // Retries stop this long after the last scheduled submit.
    let retry_until = end + Duration::from_secs(10);
    let mut rng = crate::rng::Rng::new(seed ^ 0x5EED);
    let mut handles = Vec::new();
    let opt = (w.optimizations_per_minute > 0.0)
        .then(|| tokio::spawn(optimizations(channel.clone(), w.clone(), log.clone())));
    let mut n: u64 = 0;
    while let Some(at) = nth_send(&w, n) {
        let at = start + at;
        if at >= end || choices.is_empty() {
            break;
        }
        tokio::time::sleep_until(at.into()).await;
        let (plant, kind) = choices[rng.range(0, choices.len() as u64 - 1) as usize].clone();
        let key = format!("{prefix}-{n}");
        progress.submitted.fetch_add(1, Ordering::Relaxed);
        let (ch, log, progress) = (channel.clone(), log.clone(), progress.clone());
        handles.push(tokio::spawn(async move {
            let sent = submit(ch, key, plant, kind, retry_until).await;
            if matches!(sent.outcome, Outcome::Acked { .. }) {
                progress.acked.fetch_add(1, Ordering::Relaxed);
            }
            log.lock()
                .unwrap_or_else(|e| e.into_inner())
                .sent
                .push(sent);
        }));
        n += 1;
    }
    for h in handles {
        let _ = h.await;
    }
    if let Some(h) = opt {
        let _ = h.await;
    }
    drop(channel);
    let mut log = std::mem::take(&mut *log.lock().unwrap_or_else(|e| e.into_inner()));
    log.sent.sort_by_key(|s| s.sent_us);
    log
}

/// (plant, kind) pairs weighted by the mix: a pair appears once per unit of its kind's weight.
pub(crate) fn task_choices(
    w: &Workload,
    plants: &[(String, Vec<String>)],
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (plant, kinds) in plants {
        for k in kinds {
            // Setpoint consumers take the optimizer's setpoints, not client load.
            let setpoints =
                heatmesh_agents::registry::lookup(k).is_none_or(|a| a.accepts_setpoints);
            if setpoints || example_payload(k).is_none() {
                continue;
            }
            let weight = if w.mix.is_empty() {
                1
            } else {
                w.mix
                    .iter()
                    .find(|(m, _)| heatmesh_agents::registry::canonical_id(m) == *k)
                    .map_or(0, |(_, v)| *v)
            };
            for _ in 0..weight {
                out.push((plant.clone(), k.clone()));
            }
        }
    }
    out
}

/// When the n-th task (0-based) is sent, from the start: the rate ramps linearly to `rate`
/// over `ramp_up_ms` and then holds (the load test's schedule). None when the rate is zero or
/// the task falls past the workload's duration.
pub fn nth_send(w: &Workload, n: u64) -> Option<Duration> {
    crate::loadtest::RateSchedule {
        target_per_s: w.rate,
        ramp_s: w.ramp_up_ms as f64 / 1000.0,
        duration_s: w.duration_ms as f64 / 1000.0,
    }
    .time_of(n + 1)
    .map(Duration::from_secs_f64)
}

async fn submit(ch: Channel, key: String, plant: String, kind: String, until: Instant) -> Sent {
    let mut c = pb::task_service_client::TaskServiceClient::new(ch);
    let sent_us = now_us();
    let req = pb::SubmitTaskRequest {
        plant_id: plant.clone(),
        idempotency_key: key.clone(),
        payload: Some(pb::TaskPayload {
            request: Some(pb::task_payload::Request::Json(pb::JsonRequest {
                agent_kind: kind.clone(),
                json: example_payload(&kind).unwrap_or("{}").to_string(),
            })),
        }),
        ..Default::default()
    };
    let mut backoff =
        heatmesh_base::Backoff::named(Duration::from_millis(50), Duration::from_millis(400), &key);
    let outcome = loop {
        match c.submit_task(req.clone()).await {
            Ok(r) => {
                let id = r
                    .into_inner()
                    .task
                    .and_then(|t| t.id.parse::<u64>().ok())
                    .unwrap_or(0);
                break Outcome::Acked {
                    id,
                    at_us: now_us(),
                };
            }
            Err(s) if may_not_have_arrived(&s) => {
                let delay = backoff.next_delay();
                if Instant::now() + delay > until {
                    break Outcome::Unknown(format!("{:?}: {}", s.code(), s.message()));
                }
                tokio::time::sleep(delay).await;
            }
            Err(s) => break Outcome::Refused(format!("{:?}: {}", s.code(), s.message())),
        }
    };
    Sent {
        key,
        plant,
        kind,
        sent_us,
        outcome,
    }
}

async fn optimizations(ch: Channel, w: Workload, log: Arc<Mutex<Log>>) {
    let every = Duration::from_secs_f64(60.0 / w.optimizations_per_minute);
    let start = Instant::now();
    let end = start + Duration::from_millis(w.duration_ms);
    let mut c = pb::optimization_service_client::OptimizationServiceClient::new(ch);
    let mut next = start + every / 2;
    while next < end {
        tokio::time::sleep_until(next.into()).await;
        next += every;
        let sent_us = now_us();
        let t = Instant::now();
        let r = c
            .run_heat_distribution(pb::RunHeatDistributionRequest {
                use_fleet: true,
                ..Default::default()
            })
            .await;
        let (took_us, error) = match r {
            Ok(_) => (Some(t.elapsed().as_micros() as u64), None),
            Err(s) => (None, Some(format!("{:?}: {}", s.code(), s.message()))),
        };
        log.lock()
            .unwrap_or_else(|e| e.into_inner())
            .optimized
            .push(Optimized {
                sent_us,
                took_us,
                error,
            });
    }
}

/// Whether a failed submit may simply not have reached a live master, so sending it again
/// under the same idempotency key is right: the connection went down (a master crash, a
/// GOAWAY) or the answer did not come in time. tonic reports a connection torn down in the
/// middle of a call as `Internal` with an "h2 protocol error" message; a master's own
/// `Internal` answers are not retried.
fn may_not_have_arrived(s: &tonic::Status) -> bool {
    match s.code() {
        Code::Unavailable | Code::Unknown | Code::DeadlineExceeded | Code::Cancelled => true,
        Code::Internal => s.message().starts_with("h2 protocol error"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ramp_then_steady_rate() {
        let w = Workload {
            rate: 100.0,
            ramp_up_ms: 1_000,
            ..Workload::default()
        };
        // 50 tasks in the 1 s ramp, then 100 per second.
        let t50 = nth_send(&w, 49).unwrap().as_secs_f64();
        assert!((t50 - 1.0).abs() < 1e-9, "{t50}");
        let t150 = nth_send(&w, 149).unwrap().as_secs_f64();
        assert!((t150 - 2.0).abs() < 1e-9, "{t150}");
        // First task of the ramp: sqrt(2 * 1 * 1 / 100).
        let t1 = nth_send(&w, 0).unwrap().as_secs_f64();
        assert!((t1 - 0.02f64.sqrt()).abs() < 1e-9);
        let flat = Workload {
            rate: 10.0,
            ramp_up_ms: 0,
            ..Workload::default()
        };
        assert!((nth_send(&flat, 9).unwrap().as_secs_f64() - 1.0).abs() < 1e-9);
        assert!(nth_send(&Workload { rate: 0.0, ..flat }, 0).is_none());
    }

    #[test]
    fn every_example_kind_has_a_payload() {
        for k in heatmesh_agents::registry::KINDS {
            if k.id != "GL-001" {
                let p = example_payload(k.id).unwrap();
                (k.validate_json)(p.as_bytes()).unwrap();
            }
        }
    }

    #[test]
    fn transport_failures_are_sent_again_refusals_are_not() {
        let again = |c, m: &str| may_not_have_arrived(&tonic::Status::new(c, m));
        assert!(again(Code::Internal, "h2 protocol error: http2 error"));
        assert!(again(Code::Unavailable, "connection refused"));
        assert!(!again(Code::Internal, "ledger: write failed"));
        assert!(!again(
            Code::InvalidArgument,
            "payload.json: expected object"
        ));
        assert!(!again(Code::ResourceExhausted, "queue full"));
    }
}
