//! `running_sums`: per key, the running total of an amount over entries kept
//! in order — SPEC §2's `billed_to_date` as an operator whose cost per change
//! does not grow with the group.
//!
//! differential-dataflow's `reduce` hands its logic the whole group on every
//! change, so a running sum written as a reduce re-reads and re-emits every
//! entry of the group: a blanket PO line with 30,000 invoices paid for all of
//! them on each new one. Its `prefix_sum` algorithm (aggregates over dyadic
//! intervals, assembled through an `iterate`) is data-parallel but keeps a
//! record per entry per level and needs positions that are dense integers,
//! which (`invoice_date`, `invoice_id`) is not.
//!
//! This operator keeps the present entries in a B-tree, in (key, entry)
//! order, each with the running total of its key through it. Times are totally ordered, so the
//! changes of one complete time can be applied in order, as `upsert` does:
//! * finding where a change lands is O(log n);
//! * the running totals from the first changed entry on are updated, and the
//!   walk stops at the first entry past the last change whose total did not
//!   move (the change summed to zero) — so an entry appended after all others
//!   touches nothing before it, and a back-dated one touches exactly the k
//!   later entries whose totals really change (and each emits one change);
//! * only entries whose total changed emit a change (a retraction of the old
//!   total and the new one).
//!
//! The state is derived from the input alone, so a restore rebuilds it from
//! the documents fed at the checkpoint's time.

use std::collections::BTreeMap;

use differential_dataflow::consolidation::consolidate;
use differential_dataflow::{AsCollection, ExchangeData, Hashable};
use rust_decimal::Decimal;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;

use super::collection::Collection;
use crate::model::Time;

/// The updates of one time not yet complete, with a capability to emit at it.
type Pending<K, V> = (Capability<Time>, Vec<((K, V), isize)>);

/// One present entry of a sequence.
struct Slot {
    /// Its multiplicity (1 for a present document; the operator allows any).
    count: isize,
    /// The amounts of every entry up to and including this one.
    running: Decimal,
}

/// For each `(key, entry)`, the running total of `amount` over the key's
/// entries up to and including it, in the entries' order (`Ord` of `V`):
/// `(report, total)` for the entries `report` names an output for.
///
/// Per change: O(log n) to place it among the entries (of all keys on this
/// worker), plus one step for each later entry of its key whose total
/// changes (each of which is an output change).
///
/// # Examples
///
/// ```
/// use differential_dataflow::input::Input;
/// use rust_decimal::Decimal;
/// use timely::dataflow::operators::capture::{Capture, Extract};
/// use trimatch_dataflows::operators::running_sums;
///
/// // Per account, the balance through each (day, amount) entry.
/// let captured = timely::execute_directly(|worker| {
///     let (mut input, captured) = worker.dataflow::<u64, _, _>(|scope| {
///         let (input, entries) = scope.new_collection::<(char, (u32, i64)), isize>();
///         let balances = running_sums(
///             "balances",
///             entries,
///             |&(_, amount): &(u32, i64)| Decimal::from(amount),
///             |&account: &char, &(day, _): &(u32, i64)| Some((account, day)),
///         );
///         (input, balances.inner.capture())
///     });
///     input.insert(('a', (1, 10)));
///     input.insert(('a', (3, 5)));
///     input.insert(('b', (2, 7)));
///     // A back-dated entry moves the balances after it, and only those.
///     input.advance_to(1);
///     input.insert(('a', (2, 1)));
///     captured
/// });
///
/// // Every change, as (time, update, diff).
/// let mut changes: Vec<_> = captured.extract().into_iter().flat_map(|(_, batch)| batch)
///     .map(|(update, time, diff)| (time, update, diff))
///     .collect();
/// changes.sort();
/// let total = Decimal::from;
/// assert_eq!(
///     changes,
///     [
///         (0, (('a', 1), total(10)), 1),
///         (0, (('a', 3), total(15)), 1),
///         (0, (('b', 2), total(7)), 1),
///         (1, (('a', 2), total(11)), 1),
///         (1, (('a', 3), total(15)), -1),
///         (1, (('a', 3), total(16)), 1),
///     ]
/// );
/// ```
pub fn running_sums<'s, K, V, R>(
    name: &str,
    entries: Collection<'s, (K, V)>,
    amount: impl Fn(&V) -> Decimal + 'static,
    report: impl Fn(&K, &V) -> Option<R> + 'static,
) -> Collection<'s, (R, Decimal)>
where
    K: ExchangeData + Hashable,
    V: ExchangeData,
    R: ExchangeData,
{
    let sequence = Sequence { amount, report };
    let exchange = Exchange::new(|((key, _), _, _): &((K, V), Time, isize)| key.hashed().into());
    entries
        .inner
        .unary_frontier::<CapacityContainerBuilder<Vec<_>>, _, _, _>(
            exchange,
            name,
            move |_capability, _info| {
                // Input waiting for its time to complete, and a capability to
                // emit at that time.
                let mut pending: BTreeMap<Time, Pending<K, V>> = BTreeMap::new();
                // Every key's entries in one B-tree, ordered by (key, entry):
                // most keys hold one to three entries, and a tree per key
                // would allocate a node of eleven slots for each.
                let mut sequences: BTreeMap<(K, V), Slot> = BTreeMap::new();
                let mut changes = Vec::new();
                move |(input, frontier), output| {
                    input.for_each(|capability, data| {
                        for (update, time, diff) in data.drain(..) {
                            pending
                                .entry(time)
                                .or_insert_with(|| (capability.delayed(&time, 0), Vec::new()))
                                .1
                                .push((update, diff));
                        }
                    });
                    while let Some(entry) = pending.first_entry() {
                        if frontier.less_equal(entry.key()) {
                            break; // not complete: more input may come at this time
                        }
                        let (capability, mut updates) = entry.remove();
                        // Sorted by (key, entry), netted; what cancels out is gone.
                        consolidate(&mut updates);
                        let time = *capability.time();
                        let mut session = output.session(&capability);
                        for net in updates.chunk_by(|((a, _), _), ((b, _), _)| a == b) {
                            changes.clear();
                            sequence.apply(&mut sequences, net, &mut changes);
                            session.give_iterator(
                                changes
                                    .drain(..)
                                    .map(|(report, total, diff)| ((report, total), time, diff)),
                            );
                        }
                    }
                }
            },
        )
        .as_collection()
}

/// How the entries of a sequence count and report.
struct Sequence<A, P> {
    amount: A,
    report: P,
}

impl<A, P> Sequence<A, P> {
    /// Applies one time's net changes of one key (consolidated: sorted by
    /// entry, none zero) to its entries, pushing every change of a reported
    /// total as `(report, total, diff)`.
    fn apply<K, V, R>(
        &self,
        sequences: &mut BTreeMap<(K, V), Slot>,
        net: &[((K, V), isize)],
        changes: &mut Vec<(R, Decimal, isize)>,
    ) where
        K: Ord + Clone,
        V: Ord + Clone,
        R: Clone,
        A: Fn(&V) -> Decimal,
        P: Fn(&K, &V) -> Option<R>,
    {
        let (Some(((key, first), _)), Some(((_, last), _))) = (net.first(), net.last()) else {
            return;
        };
        // The running total before the first change: the entry before it is
        // unchanged.
        let start = (key.clone(), first.clone());
        let mut running = sequences
            .range(..&start)
            .next_back()
            .filter(|((other, _), _)| other == key)
            .map_or(Decimal::ZERO, |(_, slot)| slot.running);
        for (update, _) in net {
            sequences.entry(update.clone()).or_insert(Slot {
                count: 0,
                running: Decimal::ZERO,
            });
        }
        let mut net = net
            .iter()
            .map(|((_, entry), count)| (entry, *count))
            .peekable();
        let mut emptied = Vec::new();
        for ((other, entry), slot) in sequences.range_mut(start..) {
            if other != key {
                break; // the end of this key's entries
            }
            let change = match net.peek() {
                Some((changed, _)) if *changed == entry => net.next().map_or(0, |(_, count)| count),
                _ => 0,
            };
            let count = slot.count + change;
            if count != 0 {
                running += (self.amount)(entry) * Decimal::from(count);
            }
            if change == 0 && entry > last && running == slot.running {
                break; // past every change, and the totals from here on did not move
            }
            if (count, running) != (slot.count, slot.running) {
                if let Some(report) = (self.report)(key, entry) {
                    if slot.count != 0 {
                        changes.push((report.clone(), slot.running, -slot.count));
                    }
                    if count != 0 {
                        changes.push((report, running, count));
                    }
                }
            }
            slot.count = count;
            slot.running = running;
            if count == 0 {
                emptied.push(entry.clone());
            }
        }
        for entry in emptied {
            sequences.remove(&(key.clone(), entry));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Entries `(place, amount)` of key 1, reporting their place. Keys 0 and
    /// 2 hold an entry each, which must never be read or changed.
    fn run(
        entries: &mut BTreeMap<(u8, (u32, i64)), Slot>,
        updates: &[(u32, i64, isize)],
    ) -> Vec<(u32, i64, isize)> {
        let sequence = Sequence {
            amount: |entry: &(u32, i64)| Decimal::from(entry.1),
            report: |_: &u8, entry: &(u32, i64)| Some(entry.0),
        };
        let mut updates: Vec<_> = updates.iter().map(|&(p, a, d)| ((1, (p, a)), d)).collect();
        consolidate(&mut updates);
        let mut changes = Vec::new();
        sequence.apply(entries, &updates, &mut changes);
        let mut changes: Vec<_> = changes
            .into_iter()
            .map(|(p, total, d)| (p, i64::try_from(total.mantissa()).unwrap(), d))
            .collect();
        changes.sort();
        changes
    }
    fn with_neighbours() -> BTreeMap<(u8, (u32, i64)), Slot> {
        let slot = || Slot {
            count: 1,
            running: Decimal::from(100),
        };
        BTreeMap::from([((0, (5, 100)), slot()), ((2, (0, 100)), slot())])
    }

    #[test]
    fn an_appended_entry_changes_nothing_before_it() {
        let mut sequence = with_neighbours();
        assert_eq!(
            run(&mut sequence, &[(1, 5, 1), (2, 3, 1)]),
            [(1, 5, 1), (2, 8, 1)]
        );
        assert_eq!(run(&mut sequence, &[(3, 4, 1)]), [(3, 12, 1)]);
    }

    #[test]
    fn a_back_dated_entry_changes_exactly_the_later_ones() {
        let mut sequence = with_neighbours();
        run(&mut sequence, &[(2, 1, 1), (4, 1, 1), (6, 1, 1)]);
        assert_eq!(
            run(&mut sequence, &[(3, 10, 1)]),
            [(3, 11, 1), (4, 2, -1), (4, 12, 1), (6, 3, -1), (6, 13, 1)]
        );
        // Removing it restores the later totals; the earlier one never moves.
        assert_eq!(
            run(&mut sequence, &[(3, 10, -1)]),
            [(3, 11, -1), (4, 2, 1), (4, 12, -1), (6, 3, 1), (6, 13, -1)]
        );
    }

    #[test]
    fn a_change_that_sums_to_zero_stops_the_walk() {
        let mut sequence = with_neighbours();
        run(&mut sequence, &[(1, 2, 1), (2, 3, 1), (5, 1, 1), (9, 1, 1)]);
        // Moving an amount of 3 from place 2 to place 3 changes only 2 and 3.
        assert_eq!(
            run(&mut sequence, &[(2, 3, -1), (3, 3, 1)]),
            [(2, 5, -1), (3, 5, 1)]
        );
        assert_eq!(sequence.len(), 4 + 2);
    }

    #[test]
    fn updates_that_cancel_within_a_time_change_nothing() {
        let mut sequence = with_neighbours();
        run(&mut sequence, &[(1, 2, 1)]);
        assert!(run(&mut sequence, &[(0, 7, 1), (0, 7, -1)]).is_empty());
        assert_eq!(sequence.len(), 1 + 2);
    }
}
