//! Change subscriptions: every worker reports the changes of its shard of the
//! outputs; once a time is complete on every worker, the hub hands each
//! subscriber the changes at that time that pass its filter, in time order,
//! followed by a progress time (SPEC §5).
//!
//! Ingestion never waits for subscribers: workers only append to a buffer, and
//! a separate publisher thread fans out. Each subscriber has a bounded backlog
//! of events (each change counts one, and so does each progress time, so a
//! reader that stops reading is cut off even when its filter matches nothing);
//! one that falls behind it is cut off with a clear error rather than growing
//! memory.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use trimatch_dataflows::{Change, ChangeSink, OutputCollection, Time};

use crate::output::filter::RowFilter;

/// What a subscriber receives.
#[derive(Debug)]
pub enum Published {
    /// Changes at times before the next progress, sorted by time.
    Changes(Vec<Change>),
    /// Every change at a time before this one has been sent.
    Progress(Time),
}

/// A subscriber's end: events, and how it learns it was cut off.
pub struct Subscription {
    pub events: UnboundedReceiver<Published>,
    /// Every change at a time after this one arrives through `events`; earlier
    /// ones must be read from the retained history.
    pub published_through: Time,
    state: Arc<SubscriberState>,
}

impl Subscription {
    /// Marks `count` events (changes, or one progress time) as taken off the
    /// backlog.
    pub fn consumed(&self, count: usize) {
        self.state.backlog.fetch_sub(count, Ordering::SeqCst);
    }

    /// Whether the hub cut this subscriber off for falling behind.
    pub fn overflowed(&self) -> bool {
        self.state.overflowed.load(Ordering::SeqCst)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.state.closed.store(true, Ordering::SeqCst);
    }
}

struct SubscriberState {
    backlog: AtomicUsize,
    overflowed: AtomicBool,
    closed: AtomicBool,
}

struct Subscriber {
    collection: OutputCollection,
    filter: Arc<RowFilter>,
    sender: UnboundedSender<Published>,
    state: Arc<SubscriberState>,
}

/// The subscription hub of one process.
pub struct Hub {
    /// Changes reported by the workers, by time, not yet published.
    pending: Mutex<BTreeMap<Time, Vec<Change>>>,
    subscribers: Mutex<Vec<Subscriber>>,
    /// The newest time published (0 before the first).
    published: AtomicU64,
    /// The most changes a subscriber may have waiting.
    backlog_limit: usize,
    active: AtomicUsize,
}

impl Hub {
    pub fn new(backlog_limit: usize) -> Arc<Hub> {
        Arc::new(Hub {
            pending: Mutex::new(BTreeMap::new()),
            subscribers: Mutex::new(Vec::new()),
            published: AtomicU64::new(0),
            backlog_limit,
            active: AtomicUsize::new(0),
        })
    }

    /// A change sink for one worker's engine.
    pub fn sink(self: &Arc<Self>) -> ChangeSink {
        let hub = self.clone();
        Box::new(move |changes: &mut Vec<Change>| {
            let mut pending = hub.pending.lock().expect("pending lock");
            for change in changes.drain(..) {
                pending.entry(change.1).or_default().push(change);
            }
        })
    }

    /// How many subscribers are connected.
    pub fn subscribers(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    /// Registers a subscriber to `collection`'s changes that pass `filter`.
    pub fn subscribe(&self, collection: OutputCollection, filter: Arc<RowFilter>) -> Subscription {
        let (sender, events) = unbounded_channel();
        let state = Arc::new(SubscriberState {
            backlog: AtomicUsize::new(0),
            overflowed: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        });
        // Under the subscribers lock, `published` cannot move: the subscriber
        // gets every change after `published_through` from the hub.
        let mut subscribers = self.subscribers.lock().expect("subscribers lock");
        let published_through = self.published.load(Ordering::SeqCst);
        subscribers.push(Subscriber {
            collection,
            filter,
            sender,
            state: state.clone(),
        });
        self.active.store(subscribers.len(), Ordering::SeqCst);
        Subscription {
            events,
            published_through,
            state,
        }
    }

    /// Publishes every change at a time up to `complete` (which every worker
    /// has completed) and the progress `complete + 1`.
    pub fn publish(&self, complete: Time) {
        if complete <= self.published.load(Ordering::SeqCst) {
            return;
        }
        let ready: Vec<Change> = {
            let mut pending = self.pending.lock().expect("pending lock");
            let later = pending.split_off(&(complete + 1));
            std::mem::replace(&mut *pending, later)
                .into_values()
                .flatten()
                .collect()
        };
        let mut subscribers = self.subscribers.lock().expect("subscribers lock");
        subscribers.retain(|subscriber| {
            if subscriber.state.closed.load(Ordering::SeqCst) {
                return false;
            }
            let mut changes: Vec<Change> = ready
                .iter()
                .filter(|(row, _, _)| {
                    row.collection() == subscriber.collection && subscriber.filter.matches(row)
                })
                .cloned()
                .collect();
            // In time order, and within a time retractions before insertions,
            // so an update reads as "- old, + new".
            changes.sort_by_key(|(_, time, diff)| (*time, *diff));
            // The changes, and one for the progress time.
            let events = changes.len() + 1;
            let backlog = subscriber.state.backlog.fetch_add(events, Ordering::SeqCst) + events;
            if backlog > self.backlog_limit {
                subscriber.state.overflowed.store(true, Ordering::SeqCst);
                return false;
            }
            if !changes.is_empty() && subscriber.sender.send(Published::Changes(changes)).is_err() {
                return false;
            }
            subscriber
                .sender
                .send(Published::Progress(complete + 1))
                .is_ok()
        });
        self.active.store(subscribers.len(), Ordering::SeqCst);
        self.published.store(complete, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that takes nothing is cut off once its backlog is full, even
    /// when its filter matches no change: progress times count too.
    #[test]
    fn a_reader_that_stops_reading_is_cut_off_by_progress_alone() {
        let hub = Hub::new(10);
        let subscription = hub.subscribe(OutputCollection::MatchExceptions, Arc::default());
        for time in 1..=9 {
            hub.publish(time);
        }
        assert!(!subscription.overflowed());
        assert_eq!(hub.subscribers(), 1);
        for time in 10..=20 {
            hub.publish(time);
        }
        assert!(subscription.overflowed());
        assert_eq!(hub.subscribers(), 0, "the hub let it go");
    }

    /// A reader that takes what it is sent is never cut off.
    #[test]
    fn a_reader_that_keeps_up_stays() {
        let hub = Hub::new(10);
        let mut subscription = hub.subscribe(OutputCollection::MatchExceptions, Arc::default());
        for time in 1..=100 {
            hub.publish(time);
            while let Ok(event) = subscription.events.try_recv() {
                match event {
                    Published::Changes(changes) => subscription.consumed(changes.len()),
                    Published::Progress(_) => subscription.consumed(1),
                }
            }
        }
        assert!(!subscription.overflowed());
    }
}
