//! Durable task changes delivered to those who asked for them.
//!
//! A watcher of one task receives only that task's changes; a feed receives only the
//! changes its filter passes. Each subscription has its own bounded queue: a subscriber
//! that does not keep up is cut off (its queue closes and [`Subscription::lagged`] says
//! so) instead of slowing the ledger or the other subscribers down. With no subscriber a
//! change costs one lock and two map lookups; nothing is cloned.

use crate::task::TaskRecord;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// Queue bound of a single-task watcher: a task changes a handful of times.
pub const TASK_QUEUE: usize = 256;
/// Queue bound of a feed.
pub const FEED_QUEUE: usize = 65_536;

/// Which changes a feed receives.
#[derive(Debug, Clone, Copy, Default)]
pub struct Filter {
    /// Only completed, failed and cancelled tasks.
    pub terminal_only: bool,
}

struct Sub {
    tx: mpsc::Sender<Arc<TaskRecord>>,
    lagged: Arc<AtomicBool>,
}

#[derive(Default)]
struct Inner {
    next: u64,
    tasks: HashMap<u64, HashMap<u64, Sub>>,
    feeds: HashMap<u64, (Filter, Sub)>,
}

/// The subscriptions of one ledger.
#[derive(Default, Clone)]
pub struct Hub {
    inner: Arc<Mutex<Inner>>,
}

enum Key {
    Task(u64),
    Feed,
}

/// A live subscription; dropping it unsubscribes.
pub struct Subscription {
    rx: mpsc::Receiver<Arc<TaskRecord>>,
    lagged: Arc<AtomicBool>,
    hub: Hub,
    key: Key,
    id: u64,
}

impl Subscription {
    /// The next change, or `None` once the subscription was cut off or the ledger closed.
    pub async fn recv(&mut self) -> Option<Arc<TaskRecord>> {
        self.rx.recv().await
    }

    /// True when the subscription was cut off because its queue was full: changes were
    /// missed, so the subscriber must reconcile from the ledger.
    pub fn lagged(&self) -> bool {
        self.lagged.load(Ordering::Acquire)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut g = self.hub.lock();
        match self.key {
            Key::Task(task) => {
                if let Some(subs) = g.tasks.get_mut(&task) {
                    subs.remove(&self.id);
                    if subs.is_empty() {
                        g.tasks.remove(&task);
                    }
                }
            }
            Key::Feed => {
                g.feeds.remove(&self.id);
            }
        }
    }
}

/// Offers a change; false when the subscriber is gone or was cut off for lagging.
fn offer(sub: &Sub, rec: &Arc<TaskRecord>) -> bool {
    match sub.tx.try_send(rec.clone()) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(_)) => {
            sub.lagged.store(true, Ordering::Release);
            false
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}

impl Hub {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn subscribe(&self, key: Key, bound: usize, filter: Filter) -> Subscription {
        let (tx, rx) = mpsc::channel(bound);
        let lagged = Arc::new(AtomicBool::new(false));
        let sub = Sub {
            tx,
            lagged: lagged.clone(),
        };
        let mut g = self.lock();
        g.next += 1;
        let id = g.next;
        match key {
            Key::Task(task) => {
                g.tasks.entry(task).or_default().insert(id, sub);
            }
            Key::Feed => {
                g.feeds.insert(id, (filter, sub));
            }
        }
        drop(g);
        Subscription {
            rx,
            lagged,
            hub: self.clone(),
            key,
            id,
        }
    }

    /// Subscribes to the changes of one task.
    pub fn watch(&self, task: u64) -> Subscription {
        self.subscribe(Key::Task(task), TASK_QUEUE, Filter::default())
    }

    /// Subscribes to every change the filter passes.
    pub fn feed(&self, filter: Filter) -> Subscription {
        self.subscribe(Key::Feed, FEED_QUEUE, filter)
    }

    /// Delivers durable changes, in order, to the subscriptions that want them.
    pub fn publish(&self, changes: Vec<TaskRecord>) {
        let mut g = self.lock();
        if g.tasks.is_empty() && g.feeds.is_empty() {
            return;
        }
        let Inner { tasks, feeds, .. } = &mut *g;
        for rec in changes {
            let watchers = tasks.get_mut(&rec.id);
            let terminal = rec.status.is_terminal();
            let wanted = feeds.values().any(|(f, _)| terminal || !f.terminal_only);
            if watchers.is_none() && !wanted {
                continue;
            }
            let rec = Arc::new(rec);
            if let Some(w) = watchers {
                w.retain(|_, s| offer(s, &rec));
                if w.is_empty() {
                    tasks.remove(&rec.id);
                }
            }
            feeds.retain(|_, (f, s)| (f.terminal_only && !terminal) || offer(s, &rec));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::Status;

    fn rec(id: u64, status: Status) -> TaskRecord {
        TaskRecord {
            status,
            seq: id,
            ..TaskRecord::pending(id, "P", "GL-009", "{}".into())
        }
    }

    #[tokio::test]
    async fn each_subscriber_gets_only_what_it_asked_for() {
        let hub = Hub::default();
        let mut one = hub.watch(2);
        let mut terminal = hub.feed(Filter {
            terminal_only: true,
        });
        let mut all = hub.feed(Filter::default());
        hub.publish(vec![
            rec(1, Status::Pending),
            rec(2, Status::Pending),
            rec(1, Status::Completed),
            rec(2, Status::Failed),
        ]);
        let ids = |v: Vec<Arc<TaskRecord>>| v.iter().map(|r| (r.id, r.status)).collect::<Vec<_>>();
        let mut got = Vec::new();
        for _ in 0..2 {
            got.push(one.recv().await.unwrap());
        }
        assert_eq!(ids(got), [(2, Status::Pending), (2, Status::Failed)]);
        let mut got = Vec::new();
        for _ in 0..2 {
            got.push(terminal.recv().await.unwrap());
        }
        assert_eq!(ids(got), [(1, Status::Completed), (2, Status::Failed)]);
        let mut n = 0;
        while let Ok(Some(_)) =
            tokio::time::timeout(std::time::Duration::from_millis(20), all.recv()).await
        {
            n += 1;
        }
        assert_eq!(n, 4);
    }

    #[tokio::test]
    async fn a_slow_subscriber_is_cut_off_and_told_others_are_not() {
        let hub = Hub::default();
        let mut slow = hub.watch(7);
        let mut other = hub.watch(8);
        hub.publish(
            (0..TASK_QUEUE as u64 + 1)
                .map(|_| rec(7, Status::Pending))
                .collect(),
        );
        hub.publish(vec![rec(8, Status::Completed)]);
        let mut n = 0;
        while slow.recv().await.is_some() {
            n += 1;
        }
        assert_eq!(
            n, TASK_QUEUE,
            "what fitted is delivered, then the queue closes"
        );
        assert!(slow.lagged());
        assert_eq!(other.recv().await.unwrap().id, 8);
        assert!(!other.lagged());
    }

    #[tokio::test]
    async fn dropping_a_subscription_unsubscribes() {
        let hub = Hub::default();
        let w = hub.watch(3);
        let f = hub.feed(Filter::default());
        assert_eq!(hub.lock().tasks.len(), 1);
        drop(w);
        drop(f);
        let g = hub.lock();
        assert!(g.tasks.is_empty() && g.feeds.is_empty());
    }
}
