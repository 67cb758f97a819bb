//! Where a worker's time goes, by operator.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

/// Time spent in each operator of one worker, from timely's schedule events:
/// a profile by operator that needs no tools (`trimatch-bench graph
/// --operator-profile`). Install it before building the dataflow.
#[derive(Clone, Default)]
pub struct OperatorTimes {
    shared: Rc<RefCell<OperatorTimesInner>>,
}

#[derive(Default)]
struct OperatorTimesInner {
    names: HashMap<usize, String>,
    started: HashMap<usize, Duration>,
    total: HashMap<usize, Duration>,
}

impl OperatorTimes {
    /// Registers the "timely" logger on `worker`.
    pub fn install(worker: &mut timely::worker::Worker) -> Self {
        use timely::logging::{StartStop, TimelyEvent, TimelyEventBuilder};
        let times = OperatorTimes::default();
        let shared = times.shared.clone();
        if let Some(mut registry) = worker.log_register() {
            registry.insert::<TimelyEventBuilder, _>("timely", move |_, events| {
                let Some(events) = events else { return };
                let mut inner = shared.borrow_mut();
                for (at, event) in events.iter() {
                    match event {
                        TimelyEvent::Operates(op) => {
                            inner.names.insert(op.id, op.name.clone());
                        }
                        TimelyEvent::Schedule(s) => match s.start_stop {
                            StartStop::Start => {
                                inner.started.insert(s.id, *at);
                            }
                            StartStop::Stop => {
                                if let Some(start) = inner.started.remove(&s.id) {
                                    *inner.total.entry(s.id).or_default() += *at - start;
                                }
                            }
                        },
                        _ => {}
                    }
                }
            });
        }
        times
    }

    /// Each operator ("name #id") with its total scheduled time, busiest first.
    pub fn report(&self) -> Vec<(String, Duration)> {
        let inner = self.shared.borrow();
        let mut rows: Vec<(String, Duration)> = inner
            .total
            .iter()
            .map(|(id, total)| {
                let name = inner.names.get(id).cloned().unwrap_or_default();
                (format!("{name} #{id}"), *total)
            })
            .collect();
        rows.sort_by_key(|(_, total)| std::cmp::Reverse(*total));
        rows
    }
}
