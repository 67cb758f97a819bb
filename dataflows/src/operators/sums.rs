//! [`CountedSum`]: a decimal sum carried as the differences of a collection,
//! so that differential adds the contributions up as it consolidates and
//! `count_total` reports one total per key in O(1) per change.

use differential_dataflow::difference::{Abelian, IsZero, Monoid, Multiply, Semigroup};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// How many contributions, and their sum. The count keeps a key's total
/// from being zero (and vanishing) while it has contributions that sum to
/// zero: a PO with nothing open still has an open amount, 0.
///
/// Per change: `count_total` over contributions carried as differences
/// updates its key's total in O(1), however many contributions the key has.
///
/// # Examples
///
/// ```
/// use differential_dataflow::input::Input;
/// use differential_dataflow::operators::CountTotal;
/// use rust_decimal::Decimal;
/// use timely::dataflow::operators::capture::{Capture, Extract};
/// use trimatch_dataflows::operators::CountedSum;
///
/// // Per account, how many (account, amount) entries it has and their sum.
/// let captured = timely::execute_directly(|worker| {
///     let (mut input, captured) = worker.dataflow::<u64, _, _>(|scope| {
///         let (input, entries) = scope.new_collection::<(char, i64), isize>();
///         let totals = entries
///             .explode(|(account, amount)| Some((account, CountedSum::one(amount.into()))))
///             .count_total();
///         (input, totals.inner.capture())
///     });
///     // Account `a`'s entries sum to zero: it still has a total, 0.
///     input.insert(('a', 10));
///     input.insert(('a', -10));
///     input.insert(('b', 7));
///     input.advance_to(1);
///     input.insert(('b', 3));
///     captured
/// });
///
/// let sum = |count, sum: i64| CountedSum { count, sum: Decimal::from(sum) };
/// // Every change, as (time, update, diff).
/// let mut changes: Vec<_> = captured.extract().into_iter().flat_map(|(_, batch)| batch)
///     .map(|(update, time, diff)| (time, update, diff))
///     .collect();
/// changes.sort();
/// assert_eq!(
///     changes,
///     [
///         (0, ('a', sum(2, 0)), 1),
///         (0, ('b', sum(1, 7)), 1),
///         (1, ('b', sum(1, 7)), -1),
///         (1, ('b', sum(2, 10)), 1),
///     ]
/// );
/// ```
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct CountedSum {
    pub count: i64,
    pub sum: Decimal,
}

impl CountedSum {
    /// One contribution of `amount`.
    pub fn one(amount: Decimal) -> Self {
        CountedSum {
            count: 1,
            sum: amount,
        }
    }
}

impl IsZero for CountedSum {
    fn is_zero(&self) -> bool {
        self.count == 0 && self.sum.is_zero()
    }
}
impl Semigroup for CountedSum {
    fn plus_equals(&mut self, other: &Self) {
        self.count += other.count;
        self.sum += other.sum;
    }
}
impl Monoid for CountedSum {
    fn zero() -> Self {
        Self::default()
    }
}
impl Abelian for CountedSum {
    fn negate(&mut self) {
        self.count = -self.count;
        self.sum = -self.sum;
    }
}
/// A multiplicity scales a contribution (a retraction subtracts it).
impl Multiply<isize> for CountedSum {
    type Output = Self;
    fn multiply(self, count: &isize) -> Self {
        CountedSum {
            count: self.count * *count as i64,
            sum: self.sum * Decimal::from(*count),
        }
    }
}
