//! [`CountedSum`]: a decimal sum carried as the differences of a collection,
//! so that differential adds the contributions up as it consolidates and
//! `count_total` reports one total per key in O(1) per change.

use differential_dataflow::difference::{Abelian, IsZero, Monoid, Multiply, Semigroup};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// How many contributions, and their sum. The count keeps a key's total
/// from being zero (and vanishing) while it has contributions that sum to
/// zero: a PO with nothing open still has an open amount, 0.
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
