//! The join keys that bound what a payment suggestion compares (SPEC §8,
//! `payment_suggestions`): a payment meets only the open invoices of its
//! (tenant, vendor, currency) whose number *length* admits similarity 0.8
//! with its reference and whose open *amount* can be within tolerance of its
//! amount. Both filters are exact bounds, never heuristics: every pair the
//! rule accepts shares a key (tested below), so pruning drops no suggestion.
//!
//! Why keys rather than a filter inside the join: a filter still visits every
//! open invoice of the vendor; keys make the arrangement hand the payment
//! only the invoices that can qualify.

use std::ops::RangeInclusive;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// The number lengths a normalized reference of `length` characters can be
/// within similarity 0.8 of: from ⌈0.8·length⌉ to ⌊1.25·length⌋ (a distance
/// is at least the difference of the lengths, and 5·distance ≤ the longer).
pub(super) fn comparable_lengths(length: u32) -> RangeInclusive<u32> {
    (4 * length).div_ceil(5)..=(5 * length) / 4
}

/// The least bucket width: 10⁻⁶, the unit of a payment's amount (SPEC §8
/// allows at most 6 fractional digits).
const LEAST_EXPONENT: i32 = -6;

/// Open amounts cut into buckets of width W = 10^exponent, the least power
/// of ten ≥ a tenant's `total_tolerance_abs` T (and ≥ 10⁻⁶).
///
/// Invariant: if |open − amount| ≤ T, then `bucket(open)` lies in
/// `around(amount, T)` (floor is monotone, and `around` spans
/// ⌊(amount − T)/W⌋ ..= ⌊(amount + T)/W⌋). Since 2T ≤ 2W, that range has at
/// most three buckets, and one bucket holds open amounts within a window of
/// W ≤ 10·T: a payment reads the open invoices within about ±2W of its
/// amount, not all of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub(super) struct AmountBuckets {
    exponent: i32,
}

impl AmountBuckets {
    /// The buckets for a tolerance (a tenant's `total_tolerance_abs`).
    pub(super) fn for_tolerance(tolerance: Decimal) -> AmountBuckets {
        let mut exponent = LEAST_EXPONENT;
        let mut width = Decimal::new(1, LEAST_EXPONENT.unsigned_abs());
        while width < tolerance {
            match width.checked_mul(Decimal::TEN) {
                Some(wider) => {
                    width = wider;
                    exponent += 1;
                }
                // Beyond 10²⁸ every amount is in bucket 0 or −1.
                None => return AmountBuckets { exponent: 29 },
            }
        }
        AmountBuckets { exponent }
    }

    /// ⌊amount / W⌋, exactly (integer arithmetic on the decimal's mantissa).
    pub(super) fn bucket(self, amount: Decimal) -> i128 {
        // amount = mantissa × 10^−scale, so amount / W = mantissa × 10^−shift.
        let mantissa = amount.mantissa();
        let shift = amount.scale() as i32 + self.exponent;
        if shift <= 0 {
            // −shift ≤ 6 (scale ≥ 0, exponent ≥ −6): |mantissa| < 2⁹⁶, so the
            // product stays below 2⁹⁶·10⁶ < 2¹²⁷.
            mantissa * 10i128.pow(shift.unsigned_abs())
        } else if shift > 38 {
            // |mantissa| < 10²⁹ < 10^shift.
            if mantissa < 0 {
                -1
            } else {
                0
            }
        } else {
            mantissa.div_euclid(10i128.pow(shift as u32))
        }
    }

    /// The buckets an open amount within `tolerance` of `amount` can be in.
    pub(super) fn around(self, amount: Decimal, tolerance: Decimal) -> RangeInclusive<i128> {
        let low = amount.checked_sub(tolerance).unwrap_or(Decimal::MIN);
        let high = amount.checked_add(tolerance).unwrap_or(Decimal::MAX);
        self.bucket(low)..=self.bucket(high)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::Closeness;

    /// The length bound never drops a pair that is close enough.
    #[test]
    fn comparable_lengths_admit_every_close_pair() {
        for reference in 1..=40u32 {
            for number in 0..=60u32 {
                let a = "A".repeat(reference as usize);
                let b = "A".repeat(number as usize);
                let close = Closeness::of(&a, &b).is_some_and(|c| c.is_close());
                assert!(
                    !close || comparable_lengths(reference).contains(&number),
                    "{reference} vs {number}"
                );
            }
        }
        assert_eq!(comparable_lengths(8), 7..=10);
        assert_eq!(comparable_lengths(5), 4..=6);
    }

    fn decimal(text: &str) -> Decimal {
        text.parse().unwrap()
    }

    #[test]
    fn buckets_are_the_least_power_of_ten_at_or_above_the_tolerance() {
        let exponent = |t: &str| AmountBuckets::for_tolerance(decimal(t)).exponent;
        assert_eq!(exponent("0"), -6);
        assert_eq!(exponent("0.000001"), -6);
        assert_eq!(exponent("0.01"), -2);
        assert_eq!(exponent("0.05"), -1);
        assert_eq!(exponent("1.00"), 0);
        assert_eq!(exponent("1.01"), 1);
        assert_eq!(exponent("250"), 3);
        assert_eq!(exponent("79228162514264337593543950335"), 29);
    }

    #[test]
    fn a_bucket_is_the_floor_of_the_amount_over_the_width() {
        let cents = AmountBuckets::for_tolerance(decimal("0.01"));
        assert_eq!(cents.bucket(decimal("162.00")), 16_200);
        assert_eq!(cents.bucket(decimal("162.009999")), 16_200);
        assert_eq!(cents.bucket(decimal("-0.001")), -1);
        let exact = AmountBuckets::for_tolerance(Decimal::ZERO);
        assert_eq!(exact.bucket(decimal("1.5")), 1_500_000);
        assert_eq!(
            exact.around(decimal("1.5"), Decimal::ZERO),
            1_500_000..=1_500_000
        );
        let huge = AmountBuckets::for_tolerance(Decimal::MAX);
        assert_eq!(huge.bucket(Decimal::MAX), 0);
        assert_eq!(huge.bucket(Decimal::MIN), -1);
        assert_eq!(huge.around(Decimal::ZERO, Decimal::MAX), -1..=0);
    }

    /// The amount bound never drops a pair within tolerance, and keeps a
    /// payment's probe to at most three buckets — exhaustively over a grid of
    /// amounts and tolerances at several scales, boundaries included.
    #[test]
    fn every_open_amount_within_tolerance_shares_a_bucket_with_the_payment() {
        let tolerances = [
            "0", "0.000001", "0.01", "0.05", "0.1", "1.00", "3.5", "1000",
        ];
        for tolerance in tolerances.map(decimal) {
            let buckets = AmountBuckets::for_tolerance(tolerance);
            for payment_cents in (1..=2_000).step_by(7) {
                let amount = Decimal::new(payment_cents, 2);
                let around = buckets.around(amount, tolerance);
                assert!(
                    around.end() - around.start() <= 2,
                    "{tolerance}: {around:?}"
                );
                // Open amounts on a micro-unit grid around the payment and
                // exactly at amount ± tolerance.
                let mut opens: Vec<Decimal> = (-3_000..=3_000)
                    .step_by(37)
                    .map(|micros| amount + Decimal::new(micros, 6) * (tolerance + Decimal::ONE))
                    .collect();
                opens.extend([amount - tolerance, amount + tolerance, amount]);
                for open in opens {
                    if (open - amount).abs() <= tolerance {
                        assert!(
                            around.contains(&buckets.bucket(open)),
                            "open {open}, payment {amount}, tolerance {tolerance}"
                        );
                    }
                }
            }
        }
    }
}
