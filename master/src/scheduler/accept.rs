//! Acceptance: a submit becomes a durable pending task, or returns the task its
//! idempotency key already names.

use super::lifecycle::{self, Event};
use super::{Active, ApiError, MasterMsg, MasterState, NewTask, Submitted};
use crate::ledger::{Callback, Commit, LedgerError, Op};
use crate::task::{TaskRecord, Transition};
use ractor::RpcReplyPort;

/// An idempotency key names one request: the same key with another plant, kind or payload
/// is a client bug (or two clients sharing keys), refused rather than answered with a task
/// that is not the one asked for.
fn same_request(key: &str, first: &TaskRecord, t: &NewTask) -> Result<(), ApiError> {
    let differs = if first.plant_id != t.plant_id {
        format!("plant_id {:?}, not {:?}", first.plant_id, t.plant_id)
    } else if first.agent_kind != t.agent_kind {
        format!("agent kind {}, not {}", first.agent_kind, t.agent_kind)
    } else if first.payload != t.payload {
        "a different payload".to_string()
    } else {
        return Ok(());
    };
    Err(ApiError::Conflict(format!(
        "idempotency_key: {key:?} was first used for task {} with {differs}; a key names one request",
        first.id
    )))
}

impl MasterState {
    /// Accepts `t`; `reply` is answered once the acceptance is durable (or found earlier).
    pub(super) fn submit(&mut self, t: NewTask, reply: RpcReplyPort<Result<Submitted, ApiError>>) {
        if let Some(key) = &t.idempotency_key {
            if let Some(&id) = self.idem.get(key)
                && let Some(a) = self.active.get_mut(&id)
            {
                if let Err(e) = same_request(key, &a.rec, &t) {
                    let _ = reply.send(Err(e));
                } else if a.durable {
                    let _ = reply.send(Ok(Submitted {
                        task: a.rec.clone(),
                        duplicate: true,
                    }));
                } else {
                    a.waiters.push(reply);
                }
                return;
            }
            let first = self.ledger.idempotent(key).and_then(|id| match id {
                Some(id) => self.ledger.get(id).map(|rec| Some((id, rec))),
                None => Ok(None),
            });
            let answer = match first {
                Ok(None) => None,
                Ok(Some((_, Some(rec)))) => Some(same_request(key, &rec, &t).map(|()| Submitted {
                    task: rec,
                    duplicate: true,
                })),
                // The key outlives its task (retention removed the task first): a retry
                // must not run the request twice.
                Ok(Some((id, None))) => Some(Err(ApiError::Conflict(format!(
                    "idempotency_key: {key:?} was first used for task {id}, which retention has since removed; a key names one request for {} after it",
                    self.cfg.retention.idempotency_keys
                )))),
                Err(e) => Some(Err(e.into())),
            };
            if let Some(answer) = answer {
                let _ = reply.send(answer);
                return;
            }
        }
        let status = lifecycle::next(None, Event::Accept).expect("acceptance is in the table");
        let id = self.next_id;
        self.next_id += 1;
        self.seq += 1;
        let now = self.wall_us;
        let rec = TaskRecord {
            priority: t.priority,
            status,
            max_attempts: t.max_attempts.unwrap_or(self.cfg.scheduler.max_attempts),
            idempotency_key: t.idempotency_key,
            created_us: now,
            updated_us: now,
            deadline_us: t.deadline.map(|d| now + d.as_micros() as u64),
            seq: self.seq,
            ..TaskRecord::pending(id, &t.plant_id, &t.agent_kind, t.payload)
        };
        let mut ops = vec![
            Op::Put(rec.clone()),
            Op::Journal {
                id,
                seq: self.seq,
                entry: Transition {
                    from: None,
                    to: status,
                    at_us: now,
                    attempt: 0,
                    epoch: 0,
                    node: String::new(),
                    detail: format!("accepted ({} priority)", rec.priority.as_str()),
                },
            },
        ];
        if let Some(k) = &rec.idempotency_key {
            ops.push(Op::Idem(k.clone(), id));
            self.idem.insert(k.clone(), id);
        }
        if let Some(d) = rec.deadline_us {
            self.deadlines.insert((d, id));
        }
        self.counts.moved(None, Some(status));
        metrics::counter!("heatmesh_tasks_submitted_total").increment(1);
        self.active.insert(
            id,
            Active {
                durable: false,
                ..Self::loaded(rec.clone())
            },
        );
        let master = self.myself.clone();
        let answer = rec.clone();
        // Tell the master before the client: anything the client sends after the ack then
        // reaches the master after the task is queued.
        let done: Callback = Box::new(move |r| {
            if let Some(m) = master {
                m(MasterMsg::Durable(id, r.clone()));
            }
            let _ = reply.send(
                r.map(|_| Submitted {
                    task: answer,
                    duplicate: false,
                })
                .map_err(ApiError::from),
            );
        });
        self.write(Commit {
            ops,
            events: vec![rec],
            done: Some(done),
            applied: None,
        });
    }

    /// The ledger's answer on an acceptance: queue the task, or forget it entirely.
    pub(super) fn on_durable(&mut self, id: u64, r: Result<(), LedgerError>) {
        let Some(t) = self.active.get_mut(&id) else {
            return;
        };
        let waiters = std::mem::take(&mut t.waiters);
        match r {
            Ok(()) => {
                t.durable = true;
                for w in waiters {
                    let _ = w.send(Ok(Submitted {
                        task: t.rec.clone(),
                        duplicate: true,
                    }));
                }
                let key = Self::queue_key(&t.rec);
                self.enqueue(id);
                self.pump(&key);
            }
            Err(e) => {
                // Never acknowledged: it never existed.
                let t = self.active.remove(&id).expect("present");
                self.counts.moved(Some(t.rec.status), None);
                if let Some(k) = &t.rec.idempotency_key {
                    self.idem.remove(k);
                }
                for w in waiters {
                    let _ = w.send(Err(e.clone().into()));
                }
            }
        }
    }
}
