//! `left_join`: every value of one arrangement with the value another holds
//! for its key, or `None` — with one join, over arrangements the caller
//! already keeps.

use differential_dataflow::{ExchangeData, Hashable};

use super::collection::{Collection, KeyedArrangement};

/// Every `(key, value)` of `left` with the value `right` holds for its key, or
/// `None`. `right` must hold at most one value per key.
///
/// Written with one join: the pairs without a match are `left` minus the
/// left sides of the matched pairs (so each further value of a key would
/// subtract another copy). `antijoin` would arrange `left` (and the
/// keys of `right`) a second time.
///
/// Per change: a change of `left` looks its key up in `right` — O(1), one
/// value at most; a change of `right` re-pairs every value of `left` under its
/// key, once — O(those values).
///
/// # Examples
///
/// ```
/// use differential_dataflow::input::Input;
/// use timely::dataflow::operators::capture::{Capture, Extract};
/// use trimatch_dataflows::operators::left_join;
///
/// // Orders (customer, item), joined with customers (customer, name).
/// let captured = timely::execute_directly(|worker| {
///     let (mut orders, mut customers, captured) = worker.dataflow::<u64, _, _>(|scope| {
///         let (orders_input, orders) = scope.new_collection::<(u32, String), isize>();
///         let (customers_input, customers) = scope.new_collection::<(u32, String), isize>();
///         let joined = left_join(&orders.arrange_by_key(), &customers.arrange_by_key());
///         (orders_input, customers_input, joined.consolidate().inner.capture())
///     });
///     orders.insert((1, "pencils".into()));
///     orders.insert((2, "paper".into()));
///     customers.insert((1, "Ada".into()));
///     // The second customer arrives later: its order then finds its name.
///     orders.advance_to(1);
///     customers.advance_to(1);
///     customers.insert((2, "Grace".into()));
///     captured
/// });
///
/// // Every change, as (time, update, diff).
/// let mut changes: Vec<_> = captured.extract().into_iter().flat_map(|(_, batch)| batch)
///     .map(|(update, time, diff)| (time, update, diff))
///     .collect();
/// changes.sort();
/// let some = |name: &str| Some(name.to_string());
/// assert_eq!(
///     changes,
///     [
///         (0, (1, "pencils".into(), some("Ada")), 1),
///         (0, (2, "paper".into(), None), 1),
///         (1, (2, "paper".into(), None), -1),
///         (1, (2, "paper".into(), some("Grace")), 1),
///     ]
/// );
/// ```
pub fn left_join<'s, K, V, W>(
    left: &KeyedArrangement<'s, K, V>,
    right: &KeyedArrangement<'s, K, W>,
) -> Collection<'s, (K, V, Option<W>)>
where
    K: ExchangeData + Hashable,
    V: ExchangeData,
    W: ExchangeData,
{
    let matched = left.clone().join_core(right.clone(), |key, value, other| {
        Some((key.clone(), value.clone(), other.clone()))
    });
    let unmatched = left
        .clone()
        .as_collection(|key, value| (key.clone(), value.clone()))
        .concat(matched.clone().map(|(key, value, _)| (key, value)).negate())
        .map(|(key, value)| (key, value, None));
    matched
        .map(|(key, value, other)| (key, value, Some(other)))
        .concat(unmatched)
}
