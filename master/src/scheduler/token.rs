//! The fencing token a dispatch carries, and the one place that decides whether a report
//! (a result, a plant's own news) is current.
//!
//! A dispatch is identified by the task's attempt, the plant's placement epoch and the node
//! session (node id and node epoch) the plant incarnation runs in. A result counts only if
//! all three match what the master holds; anything else is stale (an older attempt or
//! incarnation, e.g. a partitioned node's late answer) or foreign (sent on another node's
//! session, which a correct node never does).
//!
//! Architecture Invariant: no other code compares attempts, epochs or sessions of reports;
//! the scheduler asks [`judge`]. The drill checker's `no_fenced_result_accepted` and the
//! tests below keep it honest.

use heatmesh_mesh::NodeSession;

/// What a dispatch was sent under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DispatchToken {
    /// The task's dispatch count at the time.
    pub attempt: u32,
    /// The plant's placement epoch.
    pub epoch: u64,
    /// The node session that runs that plant incarnation.
    pub session: NodeSession,
}

/// A report's standing against the dispatch the master holds. An answer to an earlier
/// dispatch is stale wherever it comes from; only a claim on the dispatch outstanding made
/// on another node's session is foreign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It answers the current dispatch.
    Current,
    /// It answers an earlier attempt or plant incarnation.
    Stale,
    /// It arrived on a session other than the one that holds the dispatch.
    Foreign,
}

impl Verdict {
    /// Label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Current => "current",
            Verdict::Stale => "stale",
            Verdict::Foreign => "foreign",
        }
    }
}

/// Judges a task result reported as `(attempt, epoch)` on session `from` against `held`,
/// the dispatch outstanding (None: nothing is outstanding, so any result is stale).
pub fn judge(
    held: Option<&DispatchToken>,
    attempt: u32,
    epoch: u64,
    from: &NodeSession,
) -> Verdict {
    let Some(h) = held else {
        return Verdict::Stale;
    };
    if h.attempt != attempt || h.epoch != epoch {
        // An earlier dispatch's answer, wherever it comes from (a fenced node's late result).
        return Verdict::Stale;
    }
    if h.session == *from {
        Verdict::Current
    } else if h.session.node == from.node {
        // An older session of the same node still delivering.
        Verdict::Stale
    } else {
        // Another node claiming the dispatch outstanding: never a correct node's doing.
        Verdict::Foreign
    }
}

/// Judges a plant-level report (plant down, agent status) for the incarnation `epoch`
/// arriving on `from`, against the incarnation the master placed: `(epoch, session)`.
pub fn judge_plant(held: Option<(u64, &NodeSession)>, epoch: u64, from: &NodeSession) -> Verdict {
    match held {
        None => Verdict::Stale,
        Some((e, _)) if e != epoch => Verdict::Stale,
        Some((_, s)) if s == from => Verdict::Current,
        Some((_, s)) if s.node == from.node => Verdict::Stale,
        Some(_) => Verdict::Foreign,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(node: &str, node_epoch: u64) -> NodeSession {
        NodeSession {
            node: node.into(),
            node_epoch,
        }
    }

    #[test]
    fn results_are_judged_on_attempt_epoch_and_session() {
        let held = DispatchToken {
            attempt: 2,
            epoch: 5,
            session: s("node-1", 3),
        };
        let cases = [
            (2, 5, s("node-1", 3), Verdict::Current),
            (1, 5, s("node-1", 3), Verdict::Stale),
            (2, 4, s("node-1", 3), Verdict::Stale),
            (3, 5, s("node-1", 3), Verdict::Stale),
            (2, 5, s("node-1", 2), Verdict::Stale),
            (2, 5, s("node-2", 3), Verdict::Foreign),
            (1, 1, s("node-2", 1), Verdict::Stale),
        ];
        for (attempt, epoch, from, want) in cases {
            assert_eq!(
                judge(Some(&held), attempt, epoch, &from),
                want,
                "{attempt} {epoch} {from:?}"
            );
        }
        assert_eq!(judge(None, 2, 5, &s("node-1", 3)), Verdict::Stale);
    }

    #[test]
    fn plant_reports_are_judged_on_incarnation_and_session() {
        let on = s("node-1", 3);
        let cases = [
            (7, s("node-1", 3), Verdict::Current),
            (6, s("node-1", 3), Verdict::Stale),
            (7, s("node-1", 2), Verdict::Stale),
            (7, s("node-2", 1), Verdict::Foreign),
            (6, s("node-2", 1), Verdict::Stale),
        ];
        for (epoch, from, want) in cases {
            assert_eq!(
                judge_plant(Some((7, &on)), epoch, &from),
                want,
                "{epoch} {from:?}"
            );
        }
        assert_eq!(judge_plant(None, 7, &on), Verdict::Stale);
    }
}
