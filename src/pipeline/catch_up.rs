//! Telling every worker of the computation — in every process of a cluster —
//! when each worker's source caught up, so that readiness can mean "a read
//! here reflects every source up to the high watermarks seen at start".
//!
//! A process serves the whole cluster's state (its Flight service asks its
//! peers for their shards at the same `as_of`), so its readiness must wait for
//! the workers of the other processes too, and for the latest of their
//! catch-up times to be complete (see `progress`). A worker announces its
//! catch-up time once; a tiny dataflow broadcasts the announcements, and each
//! worker collects them until it has heard from every peer.

use std::cell::RefCell;
use std::rc::Rc;

use timely::dataflow::operators::vec::input::Input;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::Inspect;
use timely::dataflow::InputHandleVec;
use timely::worker::Worker;
use trimatch_dataflows::Time;

/// One worker's end of the announcements.
pub(super) struct CatchUp {
    /// Closed (dropped) once this worker has announced.
    input: Option<InputHandleVec<Time, (usize, Time)>>,
    /// Catch-up time by global worker index, as heard so far.
    heard: Rc<RefCell<Vec<Option<Time>>>>,
    /// Whether `take_everyone_caught_up_by` has given its answer.
    reported: bool,
    worker: usize,
}

impl CatchUp {
    /// Builds the announcement dataflow on `worker`. Every worker builds it, in
    /// the same order relative to the other dataflows.
    pub(super) fn build(worker: &mut Worker) -> CatchUp {
        let heard = Rc::new(RefCell::new(vec![None; worker.peers()]));
        let record = heard.clone();
        let mut input = InputHandleVec::new();
        worker.dataflow::<Time, _, _>(|scope| {
            scope.input_from(&mut input).broadcast().inspect(
                move |(worker, time): &(usize, Time)| {
                    record.borrow_mut()[*worker] = Some(*time);
                },
            );
        });
        CatchUp {
            input: Some(input),
            heard,
            reported: false,
            worker: worker.index(),
        }
    }

    /// This worker's source caught up by `time`: every message below the high
    /// watermarks seen at start is in a batch sealed at or before it. Only the
    /// first announcement counts; the input closes with it.
    pub(super) fn announce(&mut self, time: Time) {
        if let Some(mut input) = self.input.take() {
            input.send((self.worker, time));
        }
    }

    /// Whether this worker has announced its catch-up time.
    pub(super) fn has_announced(&self) -> bool {
        self.input.is_none()
    }

    /// The latest of every worker's catch-up time, once all have announced;
    /// given once (`None` before and after). The announcements arrive as the
    /// worker steps its dataflows.
    pub(super) fn take_everyone_caught_up_by(&mut self) -> Option<Time> {
        if self.reported {
            return None;
        }
        let latest = self
            .heard
            .borrow()
            .iter()
            .try_fold(0, |latest: Time, time| Some(latest.max((*time)?)))?;
        self.reported = true;
        Some(latest)
    }
}
