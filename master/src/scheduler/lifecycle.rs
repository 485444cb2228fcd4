//! The task lifecycle as one table: `(state, event) -> state`, or a refusal. Every status
//! change of every task goes through [`next`], acceptance and an operator's RetryFailed
//! included, and the per-state counts move only with it ([`Counts`]).
//!
//! Architecture Invariant: nothing here knows about actors, the ledger or time; the
//! scheduler decides *when* an event happens, this module alone decides *whether* it may.
//! `every_pair_is_decided_as_written` spells out the whole matrix independently of
//! [`TABLE`], so a row added, dropped or changed without the test fails.

use crate::task::Status;
use std::fmt;

/// What can happen to a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    /// A client's submit became durable.
    Accept,
    /// Sent to an agent under a new attempt.
    Dispatch,
    /// Its agent reported a result for the current attempt.
    Complete,
    /// The attempt failed (agent error, crash, lease expiry) and attempts remain.
    Retry,
    /// No attempt remains, the failure is not retryable, or it was orphaned too often.
    GiveUp,
    /// Its plant or node went away while it waited there, or its plant left the fleet.
    Orphan,
    /// An orphan goes back to its plant's queue.
    Requeue,
    /// The master restarted while the task was out; the attempt's fate is unknown.
    Restart,
    /// Its deadline passed.
    Expire,
    /// An operator cancelled it (or cleared it as a long-orphaned task).
    Cancel,
    /// An operator put a failed task back (RetryFailed).
    RetryFailed,
}

impl Event {
    /// Every event, for tests and tables.
    pub const ALL: [Event; 11] = [
        Event::Accept,
        Event::Dispatch,
        Event::Complete,
        Event::Retry,
        Event::GiveUp,
        Event::Orphan,
        Event::Requeue,
        Event::Restart,
        Event::Expire,
        Event::Cancel,
        Event::RetryFailed,
    ];

    /// Lower-case name, as logs and refusals show it.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Accept => "accept",
            Event::Dispatch => "dispatch",
            Event::Complete => "complete",
            Event::Retry => "retry",
            Event::GiveUp => "give up",
            Event::Orphan => "orphan",
            Event::Requeue => "requeue",
            Event::Restart => "restart",
            Event::Expire => "expire",
            Event::Cancel => "cancel",
            Event::RetryFailed => "retry-failed",
        }
    }
}

use Event as E;
use Status as S;

/// The legal moves. `None` as the source is a task that does not exist yet.
pub const TABLE: &[(Option<Status>, Event, Status)] = &[
    (None, E::Accept, S::Pending),
    (Some(S::Pending), E::Dispatch, S::Dispatched),
    (Some(S::Pending), E::Orphan, S::Orphaned),
    (Some(S::Pending), E::Expire, S::Failed),
    (Some(S::Pending), E::Cancel, S::Cancelled),
    (Some(S::Dispatched), E::Complete, S::Completed),
    (Some(S::Dispatched), E::Retry, S::Pending),
    (Some(S::Dispatched), E::GiveUp, S::Failed),
    (Some(S::Dispatched), E::Orphan, S::Orphaned),
    (Some(S::Dispatched), E::Restart, S::Pending),
    (Some(S::Dispatched), E::Expire, S::Failed),
    (Some(S::Dispatched), E::Cancel, S::Cancelled),
    (Some(S::Orphaned), E::Requeue, S::Pending),
    (Some(S::Orphaned), E::GiveUp, S::Failed),
    (Some(S::Orphaned), E::Expire, S::Failed),
    (Some(S::Orphaned), E::Cancel, S::Cancelled),
    (Some(S::Failed), E::RetryFailed, S::Pending),
];

/// A move the table does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// State it was in (None: not accepted yet).
    pub from: Option<Status>,
    /// What was attempted.
    pub event: Event,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.from {
            Some(s) => write!(f, "a {} task cannot {}", s.as_str(), self.event.as_str()),
            None => write!(f, "a task not yet accepted cannot {}", self.event.as_str()),
        }
    }
}

impl std::error::Error for Refused {}

/// The state `event` moves a task in state `from` to, or why it may not.
pub fn next(from: Option<Status>, event: Event) -> Result<Status, Refused> {
    TABLE
        .iter()
        .find(|(f, e, _)| *f == from && *e == event)
        .map(|(_, _, to)| *to)
        .ok_or(Refused { from, event })
}

/// Tasks per state among those the master holds, moved only by [`Counts::moved`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts([u64; 6]);

fn slot(s: Status) -> usize {
    Status::ALL
        .iter()
        .position(|x| *x == s)
        .expect("Status::ALL lists every state")
}

impl Counts {
    /// A task left `from` (None: it is new) for `to` (None: the master let go of it).
    pub fn moved(&mut self, from: Option<Status>, to: Option<Status>) {
        if let Some(f) = from {
            let n = &mut self.0[slot(f)];
            debug_assert!(*n > 0, "count of {} would go below zero", f.as_str());
            *n = n.saturating_sub(1);
        }
        if let Some(t) = to {
            self.0[slot(t)] += 1;
        }
    }

    /// Tasks in state `s`.
    pub fn get(&self, s: Status) -> u64 {
        self.0[slot(s)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole matrix, written out by hand: `-` is refused, a letter the target
    /// (P pending, D dispatched, C completed, F failed, O orphaned, X cancelled).
    /// Columns follow `Event::ALL`:
    /// accept dispatch complete retry give-up orphan requeue restart expire cancel retry-failed
    const MATRIX: [(Option<Status>, &str); 7] = [
        (None, "P----------"),
        (Some(S::Pending), "-D---O--FX-"),
        (Some(S::Dispatched), "--CPFO-PFX-"),
        (Some(S::Completed), "-----------"),
        (Some(S::Failed), "----------P"),
        (Some(S::Orphaned), "----F-P-FX-"),
        (Some(S::Cancelled), "-----------"),
    ];

    fn letter(s: Status) -> char {
        match s {
            S::Pending => 'P',
            S::Dispatched => 'D',
            S::Completed => 'C',
            S::Failed => 'F',
            S::Orphaned => 'O',
            S::Cancelled => 'X',
        }
    }

    #[test]
    fn every_pair_is_decided_as_written() {
        let mut legal = 0;
        for (from, row) in MATRIX {
            for (event, want) in Event::ALL.into_iter().zip(row.chars()) {
                let got = next(from, event);
                match want {
                    '-' => assert_eq!(got, Err(Refused { from, event }), "{from:?} {event:?}"),
                    w => {
                        legal += 1;
                        assert_eq!(got.map(letter), Ok(w), "{from:?} {event:?}")
                    }
                }
            }
        }
        assert_eq!(legal, TABLE.len(), "every table row is in the matrix once");
    }

    #[test]
    fn terminal_states_only_leave_through_an_operator_retry() {
        for s in Status::ALL.into_iter().filter(|s| s.is_terminal()) {
            let exits: Vec<Event> = Event::ALL
                .into_iter()
                .filter(|e| next(Some(s), *e).is_ok())
                .collect();
            let want: &[Event] = if s == S::Failed {
                &[E::RetryFailed]
            } else {
                &[]
            };
            assert_eq!(exits, want, "{}", s.as_str());
        }
    }

    #[test]
    fn refusals_name_the_state_and_the_event() {
        let r = next(Some(S::Completed), E::Complete).unwrap_err();
        assert_eq!(r.to_string(), "a completed task cannot complete");
        let r = next(None, E::Dispatch).unwrap_err();
        assert_eq!(r.to_string(), "a task not yet accepted cannot dispatch");
    }

    #[test]
    fn counts_follow_moves_and_releases() {
        let mut c = Counts::default();
        c.moved(None, Some(S::Pending));
        c.moved(None, Some(S::Pending));
        c.moved(Some(S::Pending), Some(S::Dispatched));
        assert_eq!((c.get(S::Pending), c.get(S::Dispatched)), (1, 1));
        c.moved(Some(S::Dispatched), Some(S::Completed));
        c.moved(Some(S::Completed), None);
        assert_eq!(c, {
            let mut w = Counts::default();
            w.moved(None, Some(S::Pending));
            w
        });
    }
}
