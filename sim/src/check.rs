//! The invariants every drill must keep, checked after the drill from the ledger, what the
//! client saw and (in-process) what the network carried, in the manner of a Jepsen checker:
//! the history is collected first, then judged.

use crate::harness::EndState;
use crate::net::Observation;
use crate::workload::{Log, Outcome};
use heatmesh_master::ledger::Store;
use heatmesh_master::task::{Status, TaskRecord, Transition};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};

/// Most violations listed per invariant; the count is always complete.
const SHOWN: usize = 5;

/// One invariant's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// Invariant name.
    pub name: &'static str,
    /// What it asserts.
    pub rule: &'static str,
    /// Whether it held.
    pub ok: bool,
    /// How many cases were checked.
    pub checked: u64,
    /// How many violated it.
    pub violations: u64,
    /// The first few violations, in words.
    pub examples: Vec<String>,
}

struct Judge {
    name: &'static str,
    rule: &'static str,
    checked: u64,
    violations: u64,
    examples: Vec<String>,
}

impl Judge {
    fn new(name: &'static str, rule: &'static str) -> Judge {
        Judge {
            name,
            rule,
            checked: 0,
            violations: 0,
            examples: Vec::new(),
        }
    }

    fn case(&mut self, ok: bool, why: impl FnOnce() -> String) {
        self.checked += 1;
        if !ok {
            self.violations += 1;
            if self.examples.len() < SHOWN {
                self.examples.push(why());
            }
        }
    }

    fn done(self) -> Verdict {
        Verdict {
            name: self.name,
            rule: self.rule,
            ok: self.violations == 0,
            checked: self.checked,
            violations: self.violations,
            examples: self.examples,
        }
    }
}

/// A task as the ledger holds it, with its journal.
pub struct TaskHistory {
    /// The record.
    pub rec: TaskRecord,
    /// Its transitions in journal order.
    pub journal: Vec<Transition>,
}

/// Reads every task and its journal.
pub fn read_ledger(ledger: &dyn Store) -> Result<Vec<TaskHistory>, String> {
    let mut recs = Vec::new();
    ledger
        .scan(&mut |rec| {
            recs.push(rec);
            Ok(())
        })
        .map_err(|e| e.to_string())?;
    recs.into_iter()
        .map(|rec| {
            let journal = ledger.history(rec.id).map_err(|e| e.to_string())?;
            Ok(TaskHistory { rec, journal })
        })
        .collect()
}

/// Time spans (unix µs) in which nothing could run a task: the master down, or no node
/// reachable. Redispatch deadlines do not run during them.
pub type Blackouts = Vec<(u64, u64)>;

fn blacked_out(b: &Blackouts, from: u64, to: u64) -> u64 {
    b.iter()
        .map(|(s, e)| {
            let (s, e) = ((*s).max(from), (*e).min(to));
            e.saturating_sub(s)
        })
        .sum()
}

/// What the checker needs besides the end state.
pub struct Inputs<'a> {
    /// The client's log.
    pub log: &'a Log,
    /// The ledger's tasks.
    pub tasks: &'a [TaskHistory],
    /// The mesh at the end.
    pub end: &'a EndState,
    /// Bound on orphan-to-redispatch outside blackouts, µs.
    pub redispatch_bound_us: u64,
    /// Spans when no node could run work.
    pub blackouts: &'a Blackouts,
    /// The ledger's placements: (plant, node, epoch).
    pub placements: &'a [(String, String, u64)],
    /// Unix µs of the network's clock origin (in-process observations).
    pub net_origin: Option<(std::time::Instant, u64)>,
}

/// Judges every invariant.
pub fn check(i: &Inputs) -> Vec<Verdict> {
    let by_id: HashMap<u64, &TaskHistory> = i.tasks.iter().map(|t| (t.rec.id, t)).collect();
    vec![
        acked_terminal(i, &by_id),
        committed_once(i),
        epochs_increase(i),
        no_fenced_result(i),
        no_phantom(i, &by_id),
        redispatch_bound(i),
        ledger_nodes_agree(i),
    ]
}

fn acked_terminal(i: &Inputs, by_id: &HashMap<u64, &TaskHistory>) -> Verdict {
    let mut j = Judge::new(
        "acked_tasks_terminal",
        "every acknowledged task reaches a terminal state",
    );
    for s in &i.log.sent {
        if let Outcome::Acked { id, .. } = s.outcome {
            match by_id.get(&id) {
                None => j.case(false, || {
                    format!("task {id} ({}) acknowledged but not in the ledger", s.key)
                }),
                Some(t) => j.case(t.rec.status.is_terminal(), || {
                    format!("task {id} ({}) is {}", s.key, t.rec.status.as_str())
                }),
            }
        }
    }
    j.done()
}

fn committed_once(i: &Inputs) -> Verdict {
    let mut j = Judge::new(
        "committed_once",
        "no task is committed twice: at most one terminal transition, none after it, and the record agrees with its journal",
    );
    for t in i.tasks {
        let terminal: Vec<usize> = t
            .journal
            .iter()
            .enumerate()
            .filter(|(_, x)| x.to.is_terminal())
            .map(|(k, _)| k)
            .collect();
        let last = t.journal.last().map(|x| x.to);
        j.case(
            terminal.len() <= 1
                && terminal.first().is_none_or(|k| *k + 1 == t.journal.len())
                && last == Some(t.rec.status),
            || {
                let seq: Vec<&str> = t.journal.iter().map(|x| x.to.as_str()).collect();
                format!(
                    "task {}: journal {} but record {}",
                    t.rec.id,
                    seq.join(">"),
                    t.rec.status.as_str()
                )
            },
        );
    }
    j.done()
}

fn epochs_increase(i: &Inputs) -> Verdict {
    let mut j = Judge::new(
        "epochs_increase",
        "placement and node epochs only increase; a task's attempts only increase",
    );
    let mut per_plant: BTreeMap<&str, Vec<(u64, u64, u64)>> = BTreeMap::new();
    for t in i.tasks {
        let mut last_attempt = 0;
        for x in t.journal.iter().filter(|x| x.to == Status::Dispatched) {
            j.case(x.attempt > last_attempt, || {
                format!(
                    "task {}: attempt {} after attempt {last_attempt}",
                    t.rec.id, x.attempt
                )
            });
            last_attempt = x.attempt;
            per_plant
                .entry(&t.rec.plant_id)
                .or_default()
                .push((x.at_us, x.epoch, t.rec.id));
        }
    }
    let placed: HashMap<&str, u64> = i
        .placements
        .iter()
        .map(|(p, _, e)| (p.as_str(), *e))
        .collect();
    for (plant, mut ds) in per_plant {
        ds.sort();
        for w in ds.windows(2) {
            // Same microsecond: order unknown, nothing to judge.
            if w[0].0 < w[1].0 {
                j.case(w[0].1 <= w[1].1, || {
                    format!(
                        "{plant}: task {} dispatched under epoch {} after task {} under {}",
                        w[1].2, w[1].1, w[0].2, w[0].1
                    )
                });
            }
        }
        let max = ds.iter().map(|d| d.1).max().unwrap_or(0);
        let p = placed.get(plant).copied().unwrap_or(0);
        j.case(max <= p, || {
            format!("{plant}: dispatched under epoch {max} but the ledger's placement epoch is {p}")
        });
    }
    if let Some(delivered) = &i.end.delivered {
        let mut node_epochs: HashMap<&str, u64> = HashMap::new();
        // Per node: spawns sent to different nodes travel different links, so a frame held
        // on a cut link may land after a newer epoch reached another node (fencing stops
        // that incarnation); one node must never see a plant's epoch go back.
        let mut spawns: HashMap<(&str, &str), u64> = HashMap::new();
        for d in delivered {
            match &d.what {
                Observation::Welcome { node_epoch } => {
                    let prev = node_epochs.insert(&d.node, *node_epoch).unwrap_or(0);
                    j.case(*node_epoch > prev, || {
                        format!(
                            "node {} welcomed under node epoch {node_epoch} after {prev}",
                            d.node
                        )
                    });
                }
                Observation::Spawn { plant, epoch } => {
                    let prev = spawns.insert((&d.node, plant), *epoch).unwrap_or(0);
                    j.case(*epoch > prev, || {
                        format!(
                            "{plant} spawned on {} under epoch {epoch} after {prev}",
                            d.node
                        )
                    });
                }
                _ => {}
            }
        }
    }
    j.done()
}

fn no_fenced_result(i: &Inputs) -> Verdict {
    let mut j = Judge::new(
        "no_fenced_result_accepted",
        "a committed result comes from the task's current dispatch (same attempt and epoch); none from a fenced one",
    );
    for t in i.tasks {
        let mut current: Option<(u32, u64)> = None;
        for x in &t.journal {
            if x.to == Status::Completed {
                let from_dispatch = x.from == Some(Status::Dispatched);
                j.case(from_dispatch && current == Some((x.attempt, x.epoch)), || {
                    format!(
                        "task {}: result of attempt {} epoch {} committed while {} (current dispatch {:?})",
                        t.rec.id,
                        x.attempt,
                        x.epoch,
                        x.from.map_or("new", |s| s.as_str()),
                        current
                    )
                });
            }
            current = (x.to == Status::Dispatched).then_some((x.attempt, x.epoch));
        }
    }
    j.done()
}

fn no_phantom(i: &Inputs, by_id: &HashMap<u64, &TaskHistory>) -> Verdict {
    let mut j = Judge::new(
        "no_phantom",
        "every task in the ledger was submitted (one per idempotency key), and every result answers an assignment",
    );
    let keys: HashSet<&str> = i.log.sent.iter().map(|s| s.key.as_str()).collect();
    let mut seen: HashMap<&str, u64> = HashMap::new();
    for t in i.tasks {
        let key = t.rec.idempotency_key.as_deref().unwrap_or("");
        j.case(keys.contains(key), || {
            format!("task {} has key {key:?}, never sent", t.rec.id)
        });
        if let Some(other) = seen.insert(key, t.rec.id) {
            j.case(false, || {
                format!("key {key} holds tasks {other} and {}", t.rec.id)
            });
        }
    }
    for s in &i.log.sent {
        if let Outcome::Acked { id, .. } = s.outcome {
            let ok = by_id
                .get(&id)
                .is_some_and(|t| t.rec.idempotency_key.as_deref() == Some(s.key.as_str()));
            j.case(ok, || format!("key {} acknowledged as task {id}, which the ledger does not hold under that key", s.key));
        }
    }
    if let Some(delivered) = &i.end.delivered {
        let mut assigned: HashSet<(&str, u64, u32, u64)> = HashSet::new();
        for d in delivered {
            match d.what {
                Observation::Assign {
                    task,
                    attempt,
                    epoch,
                } => {
                    assigned.insert((&d.node, task, attempt, epoch));
                }
                Observation::Result {
                    task,
                    attempt,
                    epoch,
                    ..
                } => {
                    j.case(assigned.contains(&(d.node.as_str(), task, attempt, epoch)), || {
                        format!("node {} reported task {task} attempt {attempt} epoch {epoch}, never assigned to it", d.node)
                    });
                }
                _ => {}
            }
        }
    }
    j.done()
}

fn redispatch_bound(i: &Inputs) -> Verdict {
    let mut j = Judge::new(
        "orphans_redispatched",
        "every orphaned task is dispatched again within the bound, not counting time when no node could run it",
    );
    for t in i.tasks {
        for (k, x) in t.journal.iter().enumerate() {
            if x.to != Status::Orphaned {
                continue;
            }
            let next = t.journal[k + 1..]
                .iter()
                .find(|y| y.to == Status::Dispatched || y.to.is_terminal());
            let Some(next) = next else {
                j.case(false, || {
                    format!(
                        "task {}: orphaned at {} and never dispatched again",
                        t.rec.id, x.at_us
                    )
                });
                continue;
            };
            let waited = next.at_us.saturating_sub(x.at_us);
            let excused = blacked_out(i.blackouts, x.at_us, next.at_us);
            let net = waited.saturating_sub(excused);
            j.case(net <= i.redispatch_bound_us, || {
                format!(
                    "task {}: orphaned ({}) and dispatched again {} ms later ({} ms excused)",
                    t.rec.id,
                    x.detail,
                    waited / 1000,
                    excused / 1000
                )
            });
        }
    }
    j.done()
}

fn ledger_nodes_agree(i: &Inputs) -> Verdict {
    let mut j = Judge::new(
        "ledger_and_nodes_agree",
        "at the end every plant runs once, on the node and under the epoch the ledger records, and the master says so",
    );
    for (plant, node, epoch) in i.placements {
        let m = i.end.master_view.iter().find(|p| &p.0 == plant);
        j.case(
            m.is_some_and(|m| &m.1 == node && m.2 == *epoch && m.3 == "running"),
            || format!("{plant}: ledger says {node} epoch {epoch}, master says {m:?}"),
        );
        if let Some(nodes) = &i.end.node_view {
            let runs: Vec<(&String, u64)> = nodes
                .iter()
                .flat_map(|(n, ps)| {
                    ps.iter()
                        .filter(|(p, _)| p == plant)
                        .map(move |(_, e)| (n, *e))
                })
                .collect();
            j.case(
                runs.len() == 1 && runs[0].0 == node && runs[0].1 == *epoch,
                || format!("{plant}: ledger says {node} epoch {epoch}, nodes run {runs:?}"),
            );
        }
    }
    for m in &i.end.master_view {
        j.case(i.placements.iter().any(|p| p.0 == m.0), || {
            format!("{}: known to the master, never placed in the ledger", m.0)
        });
    }
    j.done()
}

/// Stale results, computed from the network: results delivered for a dispatch the master
/// had already closed when they arrived.
pub fn stale_results(i: &Inputs) -> Option<u64> {
    let delivered = i.end.delivered.as_ref()?;
    let (origin, origin_us) = i.net_origin?;
    let mut closes: HashMap<(u64, u32, u64), u64> = HashMap::new();
    for t in i.tasks {
        for x in &t.journal {
            if x.from == Some(Status::Dispatched) {
                closes
                    .entry((t.rec.id, x.attempt, x.epoch))
                    .or_insert(x.at_us);
            }
        }
    }
    let mut n = 0;
    for d in delivered {
        if let Observation::Result {
            task,
            attempt,
            epoch,
            ..
        } = d.what
        {
            let at = origin_us + d.at.saturating_duration_since(origin).as_micros() as u64;
            // Closed more than a millisecond before this result arrived: it was not the cause.
            let stale = closes
                .get(&(task, attempt, epoch))
                .is_none_or(|closed| *closed + 1_000 < at);
            n += stale as u64;
        }
    }
    Some(n)
}
