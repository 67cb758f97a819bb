//! `reduce_arranged`: `reduce`, returning the output's arrangement rather
//! than a collection of it, so that an output read or joined by its key is
//! held once.

use differential_dataflow::trace::implementations::{ValBuilder, ValSpine};
use differential_dataflow::{ExchangeData, Hashable};

use super::collection::{Collection, KeyedArrangement};
use crate::model::Time;

/// `reduce_named`, returning the output's arrangement (keyed like the input)
/// rather than a collection of it: an output that is read or joined by that
/// same key is then held once, not arranged a second time downstream.
///
/// `logic` sees a key's values with their counts, in order, and pushes the
/// key's output values with theirs.
///
/// Per change: `logic` runs once for each key whose values changed, over all
/// of that key's values — O(the key's group), as any `reduce`.
///
/// # Examples
///
/// ```
/// use differential_dataflow::input::Input;
/// use timely::dataflow::operators::capture::{Capture, Extract};
/// use trimatch_dataflows::operators::reduce_arranged;
///
/// // The largest value of each key, kept as an arrangement by key.
/// let captured = timely::execute_directly(|worker| {
///     let (mut input, captured) = worker.dataflow::<u64, _, _>(|scope| {
///         let (input, values) = scope.new_collection::<(char, u32), isize>();
///         let largest = reduce_arranged(values, "largest", |_key, values, output| {
///             let (largest, _) = values[values.len() - 1];
///             output.push((*largest, 1));
///         });
///         let rows = largest.as_collection(|key, value| (*key, *value));
///         (input, rows.consolidate().inner.capture())
///     });
///     input.insert(('a', 5));
///     input.insert(('a', 3));
///     input.insert(('b', 7));
///     input.advance_to(1);
///     input.remove(('a', 5));
///     captured
/// });
///
/// // Every change, as (time, update, diff).
/// let mut changes: Vec<_> = captured.extract().into_iter().flat_map(|(_, batch)| batch)
///     .map(|(update, time, diff)| (time, update, diff))
///     .collect();
/// changes.sort();
/// assert_eq!(
///     changes,
///     [
///         (0, ('a', 5), 1),
///         (0, ('b', 7), 1),
///         (1, ('a', 3), 1),
///         (1, ('a', 5), -1),
///     ]
/// );
/// ```
pub fn reduce_arranged<'s, K, V, V2, L>(
    collection: Collection<'s, (K, V)>,
    name: &str,
    logic: L,
) -> KeyedArrangement<'s, K, V2>
where
    K: ExchangeData + Hashable,
    V: ExchangeData,
    V2: ExchangeData,
    L: FnMut(&K, &[(&V, isize)], &mut Vec<(V2, isize)>) + 'static,
{
    collection
        .arrange_by_key_named(&format!("Arrange: {name}"))
        .reduce_abelian::<_, ValBuilder<K, V2, Time, isize>, ValSpine<K, V2, Time, isize>, _, _>(
            name,
            logic,
            |updates, key, outputs| {
                updates.clear();
                updates.extend(
                    outputs
                        .drain(..)
                        .map(|(value, time, diff)| ((key.clone(), value), time, diff)),
                );
            },
        )
}
