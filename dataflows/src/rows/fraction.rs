//! Exact fractions of decimals, rounded once to a float: what SPEC §7 means
//! by "the exact fraction rounded".
//!
//! Dividing the decimals first (`rust_decimal` keeps 28 significant digits)
//! and converting the quotient to `f64` rounds twice, and lands one unit in
//! the last place away from the nearest float for some fractions. Here the
//! fraction is taken as a ratio of integers (a decimal is an integer
//! mantissa over a power of ten), divided in big integers with enough
//! quotient bits, and rounded once, to nearest with ties to even.
//!
//! ```
//! use rust_decimal::Decimal;
//! use trimatch_dataflows::rows::nearest_f64;
//! let third = nearest_f64(Decimal::ONE, Decimal::from(3));
//! assert_eq!(third, 1.0 / 3.0); // IEEE division rounds once, too
//! ```

use num_bigint::BigUint;
use rust_decimal::Decimal;

/// `numerator / denominator` rounded once to the nearest `f64` (ties to
/// even); 0 when either is zero. Signs are taken from both.
pub fn nearest_f64(numerator: Decimal, denominator: Decimal) -> f64 {
    if numerator.is_zero() || denominator.is_zero() {
        return 0.0;
    }
    let negative = numerator.is_sign_negative() != denominator.is_sign_negative();
    // n = mn / 10^sn and d = md / 10^sd, so n / d = (mn · 10^sd) / (md · 10^sn).
    let ten = |power: u32| BigUint::from(10u32).pow(power);
    let top = BigUint::from(numerator.mantissa().unsigned_abs()) * ten(denominator.scale());
    let bottom = BigUint::from(denominator.mantissa().unsigned_abs()) * ten(numerator.scale());
    let magnitude = nearest_ratio(&top, &bottom);
    if negative {
        -magnitude
    } else {
        magnitude
    }
}

/// `top / bottom` (both > 0) rounded once to the nearest `f64`.
fn nearest_ratio(top: &BigUint, bottom: &BigUint) -> f64 {
    // Scale so that the integer quotient has 55 or 56 bits: 53 for the
    // significand, and at least two more to round with (with the remainder
    // as the sticky bit).
    let shift = 55 - (top.bits() as i64 - bottom.bits() as i64);
    let (scaled_top, scaled_bottom) = if shift >= 0 {
        (top << shift as u64, bottom.clone())
    } else {
        (top.clone(), bottom << (-shift) as u64)
    };
    let quotient = &scaled_top / &scaled_bottom;
    let inexact = &quotient * &scaled_bottom != scaled_top;
    let quotient = quotient.iter_u64_digits().next().unwrap_or(0);
    let extra = 64 - quotient.leading_zeros() as i64 - 53;
    let mut significand = quotient >> extra;
    let dropped = quotient & ((1u64 << extra) - 1);
    let half = 1u64 << (extra - 1);
    if dropped > half || (dropped == half && (inexact || significand & 1 == 1)) {
        significand += 1; // may reach 2^53, still exact as a float
    }
    // significand · 2^(extra − shift), a power-of-two scaling: exact.
    significand as f64 * 2f64.powi((extra - shift) as i32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn decimal(text: &str) -> Decimal {
        Decimal::from_str(text).unwrap()
    }

    #[test]
    fn fractions_of_floats_round_once() {
        for (top, bottom) in [
            (1, 3),
            (2, 3),
            (1, 10),
            (7, 9),
            (1, 1),
            (5, 4),
            (999_999, 1_000_000),
        ] {
            assert_eq!(
                nearest_f64(Decimal::from(top), Decimal::from(bottom)),
                top as f64 / bottom as f64,
                "{top}/{bottom}"
            );
        }
        assert_eq!(nearest_f64(decimal("-1"), decimal("4")), -0.25);
        assert_eq!(nearest_f64(Decimal::ZERO, decimal("4")), 0.0);
    }

    /// |x − top/bottom| · bottom · 2^1100, exactly (every finite f64 is an
    /// integer times 2^-1074, so the product is an integer).
    fn scaled_error(x: f64, top: &BigUint, bottom: &BigUint) -> num_bigint::BigInt {
        use num_bigint::BigInt;
        let bits = x.to_bits();
        let exponent = ((bits >> 52) & 0x7ff) as i64;
        let fraction = bits & ((1u64 << 52) - 1);
        let (mantissa, power) = if exponent == 0 {
            (fraction, -1074)
        } else {
            (fraction | (1u64 << 52), exponent - 1075)
        };
        let x_scaled = BigInt::from(mantissa) << (power + 1100) as u64;
        let error =
            x_scaled * BigInt::from(bottom.clone()) - (BigInt::from(top.clone()) << 1100u64);
        if error.sign() == num_bigint::Sign::Minus {
            -error
        } else {
            error
        }
    }

    #[test]
    fn no_float_is_nearer_the_fraction_than_the_one_chosen() {
        // The decimals of scores: open amounts and invoice amounts (up to
        // 10 fractional digits), and their differences.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut checked = 0;
        while checked < 20_000 {
            let bottom = Decimal::new((next() % 10_000_000_000) as i64 + 1, (next() % 11) as u32);
            let shortfall = Decimal::new((next() % 1_000_000) as i64, (next() % 11) as u32);
            let top = bottom - shortfall;
            if top <= Decimal::ZERO {
                continue;
            }
            let chosen = nearest_f64(top, bottom);
            let ten = |power: u32| BigUint::from(10u32).pow(power);
            let exact_top = BigUint::from(top.mantissa().unsigned_abs()) * ten(bottom.scale());
            let exact_bottom = BigUint::from(bottom.mantissa().unsigned_abs()) * ten(top.scale());
            let error = scaled_error(chosen, &exact_top, &exact_bottom);
            for neighbour in [
                f64::from_bits(chosen.to_bits() - 1),
                f64::from_bits(chosen.to_bits() + 1),
            ] {
                let other = scaled_error(neighbour, &exact_top, &exact_bottom);
                assert!(
                    error < other || (error == other && chosen.to_bits().is_multiple_of(2)),
                    "{top}/{bottom}: chose {chosen:e}, but {neighbour:e} is as near or nearer"
                );
            }
            checked += 1;
        }
    }
}
