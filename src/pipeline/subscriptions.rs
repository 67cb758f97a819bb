//! Change subscriptions: every worker reports the changes of its shard of the
//! outputs; once a time is complete on every worker, the hub hands each
//! subscriber the changes at that time that pass its filter, in time order,
//! followed by a progress time (SPEC §5).
//!
//! Ingestion never waits for subscribers: workers only append to a buffer, and
//! a separate publisher thread fans out. A collection nobody subscribes to
//! costs nothing: the workers build its changes only while it has a
//! subscriber ([`ChangeSink::wants`]).
//!
//! Turning a collection on is exact: a change the workers did not build was
//! in a batch they finished before the collection was turned on, so its time
//! is at most the input time read right after (every local worker's input
//! had passed it, or the batch could not have been sealed). The subscriber
//! reads the changes up to that time from the retained history, and the hub
//! sends it only the later ones. Each subscriber has a bounded backlog
//! of events (each change counts one, and so does each progress time, so a
//! reader that stops reading is cut off even when its filter matches nothing);
//! one that falls behind it is cut off with a clear error rather than growing
//! memory.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use trimatch_dataflows::{Change, ChangeSink, OutputCollection, Time};

/// How many output collections there are (the hub counts interest in each).
const COLLECTIONS: usize = OutputCollection::ALL.len();

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

    /// A handle that tells whether the hub cut this subscriber off, for the
    /// task that writes to its client (and may be blocked on a client that
    /// does not read).
    pub fn cut_off(&self) -> CutOff {
        CutOff(self.state.clone())
    }
}

/// Whether the hub cut a subscriber off; see [`Subscription::cut_off`].
#[derive(Clone)]
pub struct CutOff(Arc<SubscriberState>);

impl CutOff {
    pub fn is_set(&self) -> bool {
        self.0.overflowed.load(Ordering::SeqCst)
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
    /// It is sent the changes at times after this one (earlier ones it
    /// reads from the retained history).
    from: Time,
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
    /// Subscribers per collection (indexed by `OutputCollection as usize`):
    /// the workers build a collection's changes only while it has one.
    interest: [AtomicUsize; COLLECTIONS],
    /// Per collection, since it was last turned on: every change at a later
    /// time reaches the hub.
    complete_after: [AtomicU64; COLLECTIONS],
    /// The latest time any local worker's input has reached (the pipeline's).
    input_time: Arc<AtomicU64>,
}

impl Hub {
    /// A hub whose subscribers may have `backlog_limit` events waiting;
    /// `input_time` is where the workers record the latest time their input
    /// has reached (they must record it before they step the dataflow).
    pub fn new(backlog_limit: usize, input_time: Arc<AtomicU64>) -> Arc<Hub> {
        Arc::new(Hub {
            pending: Mutex::new(BTreeMap::new()),
            subscribers: Mutex::new(Vec::new()),
            published: AtomicU64::new(0),
            backlog_limit,
            active: AtomicUsize::new(0),
            interest: std::array::from_fn(|_| AtomicUsize::new(0)),
            complete_after: std::array::from_fn(|_| AtomicU64::new(0)),
            input_time,
        })
    }

    /// A change sink for one worker's engine.
    pub fn sink(self: &Arc<Self>) -> Box<dyn ChangeSink> {
        Box::new(HubSink { hub: self.clone() })
    }

    /// Whether `collection` has a subscriber.
    fn wants(&self, collection: OutputCollection) -> bool {
        self.interest[collection as usize].load(Ordering::SeqCst) > 0
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
        // Under the subscribers lock, `published` cannot move and interest
        // changes one subscriber at a time: the subscriber gets every change
        // after `published_through` from the hub.
        let mut subscribers = self.subscribers.lock().expect("subscribers lock");
        let index = collection as usize;
        if self.interest[index].fetch_add(1, Ordering::SeqCst) == 0 {
            // Turned on: changes up to the input time now may not have been
            // built (see the module doc). SeqCst after the increment above.
            let input_time = self.input_time.load(Ordering::SeqCst);
            self.complete_after[index].store(input_time, Ordering::SeqCst);
        }
        let published_through = self
            .published
            .load(Ordering::SeqCst)
            .max(self.complete_after[index].load(Ordering::SeqCst));
        subscribers.push(Subscriber {
            collection,
            filter,
            from: published_through,
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
            let stays = self.deliver(subscriber, &ready, complete);
            if !stays {
                self.interest[subscriber.collection as usize].fetch_sub(1, Ordering::SeqCst);
            }
            stays
        });
        self.active.store(subscribers.len(), Ordering::SeqCst);
        self.published.store(complete, Ordering::SeqCst);
    }

    /// Sends `subscriber` its share of `ready` and the progress
    /// `complete + 1`; whether it stays subscribed.
    fn deliver(&self, subscriber: &Subscriber, ready: &[Change], complete: Time) -> bool {
        if subscriber.state.closed.load(Ordering::SeqCst) {
            return false;
        }
        let mut changes: Vec<Change> = ready
            .iter()
            .filter(|(row, time, _)| {
                *time > subscriber.from
                    && row.collection() == subscriber.collection
                    && subscriber.filter.matches(row)
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
    }
}

/// One worker's end of the hub: it builds and hands over the changes of the
/// collections that have a subscriber.
struct HubSink {
    hub: Arc<Hub>,
}

impl ChangeSink for HubSink {
    fn wants(&self, collection: OutputCollection) -> bool {
        self.hub.wants(collection)
    }

    fn take(&mut self, changes: &mut Vec<Change>) {
        let mut pending = self.hub.pending.lock().expect("pending lock");
        for change in changes.drain(..) {
            pending.entry(change.1).or_default().push(change);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that takes nothing is cut off once its backlog is full, even
    /// when its filter matches no change: progress times count too.
    #[test]
    fn a_reader_that_stops_reading_is_cut_off_by_progress_alone() {
        let hub = Hub::new(10, Arc::default());
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
        let hub = Hub::new(10, Arc::default());
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

    /// The workers build a collection's changes only while it has a
    /// subscriber, and one that turns a collection on is sent only changes
    /// after the input time then (earlier ones may never have been built:
    /// it reads them from the retained history).
    #[test]
    fn changes_are_built_only_for_collections_someone_reads() {
        let input_time = Arc::new(AtomicU64::new(0));
        let hub = Hub::new(100, input_time.clone());
        let mut sink = hub.sink();
        assert!(!sink.wants(OutputCollection::MatchExceptions));
        input_time.store(7, Ordering::SeqCst);
        let mut subscription = hub.subscribe(OutputCollection::MatchExceptions, Arc::default());
        assert_eq!(
            subscription.published_through, 7,
            "changes up to 7 may be missing"
        );
        assert!(sink.wants(OutputCollection::MatchExceptions));
        assert!(!sink.wants(OutputCollection::PoLines));
        let change = |time: Time| (exception_row(), time, 1);
        // A worker that built time 6 in part before the collection was on.
        sink.take(&mut vec![change(6), change(8)]);
        hub.publish(8);
        let mut times = Vec::new();
        while let Ok(event) = subscription.events.try_recv() {
            if let Published::Changes(changes) = event {
                times.extend(changes.iter().map(|(_, time, _)| *time));
            }
        }
        assert_eq!(times, vec![8], "time 6 comes from the history, once");
        // A second subscriber to the same collection: the bound stands.
        let second = hub.subscribe(OutputCollection::MatchExceptions, Arc::default());
        assert_eq!(second.published_through, 8);
        drop(subscription);
        drop(second);
        hub.publish(9);
        assert!(
            !sink.wants(OutputCollection::MatchExceptions),
            "no subscriber left: off again"
        );
    }

    fn exception_row() -> trimatch_dataflows::Row {
        use trimatch_dataflows::model::ExceptionType;
        use trimatch_dataflows::rows::ExceptionRow;
        trimatch_dataflows::Row::Exception(ExceptionRow {
            tenant_id: "acme".into(),
            invoice_id: "INV-1".into(),
            po_number: "PO-1".into(),
            vendor_id: "V-1".into(),
            po_line_no: None,
            exception_type: ExceptionType::PoNotFound,
            expected: None,
            actual: None,
            detail: "".into(),
            resolution: None,
        })
    }
}
