//! Where a worker's time and memory go, by operator
//! (`trimatch-bench graph --operator-profile`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

/// Time spent in each operator of one worker, from timely's schedule events,
/// and the updates each arrangement holds, from differential's batch, merge
/// and drop events: a profile by operator that needs no tools. Install it
/// before building the dataflow (operators find their loggers when built).
#[derive(Clone, Default)]
pub struct OperatorProfile {
    shared: Rc<RefCell<ProfileState>>,
}

#[derive(Default)]
struct ProfileState {
    names: HashMap<usize, String>,
    started: HashMap<usize, Duration>,
    total: HashMap<usize, Duration>,
    /// Updates held by each arranging operator's trace: batches added, less
    /// the inputs of completed merges (plus their output) and dropped batches.
    updates: HashMap<usize, isize>,
}

impl OperatorProfile {
    /// Registers the "timely" and "differential/arrange" loggers on `worker`.
    pub fn install(worker: &mut timely::worker::Worker) -> Self {
        use differential_dataflow::logging::{DifferentialEvent, DifferentialEventBuilder};
        use timely::logging::{StartStop, TimelyEvent, TimelyEventBuilder};
        let profile = OperatorProfile::default();
        let Some(mut registry) = worker.log_register() else {
            return profile;
        };
        let shared = profile.shared.clone();
        registry.insert::<TimelyEventBuilder, _>("timely", move |_, events| {
            let Some(events) = events else { return };
            let mut state = shared.borrow_mut();
            for (at, event) in events.iter() {
                match event {
                    TimelyEvent::Operates(op) => {
                        state.names.insert(op.id, op.name.clone());
                    }
                    TimelyEvent::Schedule(s) => match s.start_stop {
                        StartStop::Start => {
                            state.started.insert(s.id, *at);
                        }
                        StartStop::Stop => {
                            if let Some(start) = state.started.remove(&s.id) {
                                *state.total.entry(s.id).or_default() += *at - start;
                            }
                        }
                    },
                    _ => {}
                }
            }
        });
        let shared = profile.shared.clone();
        registry.insert::<DifferentialEventBuilder, _>("differential/arrange", move |_, events| {
            let Some(events) = events else { return };
            let mut state = shared.borrow_mut();
            for (_, event) in events.iter() {
                let (operator, change) = match event {
                    DifferentialEvent::Batch(batch) => (batch.operator, batch.length as isize),
                    DifferentialEvent::Merge(merge) => match merge.complete {
                        Some(merged) => (
                            merge.operator,
                            merged as isize - (merge.length1 + merge.length2) as isize,
                        ),
                        None => continue,
                    },
                    DifferentialEvent::Drop(drop) => (drop.operator, -(drop.length as isize)),
                    _ => continue,
                };
                *state.updates.entry(operator).or_default() += change;
            }
        });
        profile
    }

    /// Each operator ("name #id") with its total scheduled time, busiest first.
    pub fn times(&self) -> Vec<(String, Duration)> {
        let state = self.shared.borrow();
        let mut rows: Vec<_> = state
            .total
            .iter()
            .map(|(id, total)| (state.label(*id), *total))
            .collect();
        rows.sort_by_key(|(_, total)| std::cmp::Reverse(*total));
        rows
    }

    /// Each arranging operator ("name #id") with the updates its trace holds
    /// now, largest first. An update is one (key, value, time) with its
    /// difference; at a compacted time, about one per present (key, value).
    pub fn arranged_updates(&self) -> Vec<(String, isize)> {
        let state = self.shared.borrow();
        let mut rows: Vec<_> = state
            .updates
            .iter()
            .map(|(id, updates)| (state.label(*id), *updates))
            .collect();
        rows.sort_by_key(|(_, updates)| std::cmp::Reverse(*updates));
        rows
    }
}

impl ProfileState {
    fn label(&self, id: usize) -> String {
        let name = self.names.get(&id).map_or("", String::as_str);
        format!("{name} #{id}")
    }
}
