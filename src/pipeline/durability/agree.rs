//! Choosing the checkpoint to restore, the same on every worker of every
//! process: a shard holds documents by key, not by partition, so a restore
//! is only exact when every worker restores its shard of the same time.
//!
//! Each worker announces the times its process could restore; a tiny
//! dataflow broadcasts the announcements, and the choice is the newest time
//! every process has. A process with checkpoints where another has none
//! that fit is an error: going on would silently lose one side's state.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;

use anyhow::{bail, Result};
use timely::dataflow::operators::vec::input::Input;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::{Inspect, Probe};
use timely::dataflow::{InputHandleVec, ProbeHandle};
use timely::worker::Worker;
use trimatch_dataflows::Time;

/// A process id and the checkpoints it could restore: (time, the time from
/// which its state was unchanged).
type Announcement = (usize, Vec<(Time, Time)>);

/// Agrees with every worker on the checkpoint time to restore (`None`: start
/// without one). `candidates` are this process's restorable times. Every
/// worker must call it, before building the other dataflows.
pub(in crate::pipeline) fn agree_on_checkpoint(
    worker: &mut Worker,
    candidates: &[(Time, Time)],
    process: usize,
) -> Result<Option<(Time, Time)>> {
    let heard: Rc<RefCell<Vec<Announcement>>> = Rc::new(RefCell::new(Vec::new()));
    let record = heard.clone();
    let mut input = InputHandleVec::new();
    let probe = ProbeHandle::new();
    worker.dataflow::<u64, _, _>(|scope| {
        scope
            .input_from(&mut input)
            .broadcast()
            .inspect(move |announcement: &Announcement| {
                record.borrow_mut().push(announcement.clone())
            })
            .probe_with(&probe);
    });
    input.send((process, candidates.to_vec()));
    input.advance_to(1);
    drop(input);
    while probe.less_than(&1) {
        worker.step();
    }
    let heard = heard.borrow();
    if heard.iter().all(|(_, times)| times.is_empty()) {
        return Ok(None);
    }
    let mut common: Option<BTreeSet<Time>> = None;
    for (_, times) in heard.iter() {
        let times: BTreeSet<Time> = times.iter().map(|(time, _)| *time).collect();
        common = Some(match common {
            None => times,
            Some(common) => common.intersection(&times).copied().collect(),
        });
    }
    match common.and_then(|common| common.last().copied()) {
        Some(time) => {
            // The state was unchanged from the latest of the processes' last
            // batches before the checkpoint.
            let unchanged_since = heard
                .iter()
                .flat_map(|(_, times)| times.iter())
                .filter(|(candidate, _)| *candidate == time)
                .map(|(_, since)| *since)
                .max()
                .unwrap_or(time);
            Ok(Some((time, unchanged_since)))
        }
        None => {
            let mut by_process: Vec<String> = heard
                .iter()
                .map(|(process, times)| format!("process {process}: {times:?}"))
                .collect();
            by_process.sort();
            by_process.dedup();
            bail!(
                "the processes have no checkpoint time in common ({}); start every process with \
                 --reset-state to read the topics again",
                by_process.join("; ")
            )
        }
    }
}
