//! Exact decimal parsing and comparison.
//!
//! Money and quantities arrive as JSON strings or JSON numbers. Both are parsed
//! here from their text — exponent forms included — straight into a mantissa and
//! a scale, never through binary floating point. The comparisons the tolerance
//! rules need (`a × b > c × d`) are done on the exact integer mantissas.

use std::cmp::Ordering;

use rust_decimal::Decimal;

/// How many fractional digits a field may carry, and which values it admits.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct DecimalRule {
    /// Most significant fractional digits (trailing zeros do not count).
    pub max_fraction_digits: u32,
    /// Which sign the value must have.
    pub sign: SignRule,
}

/// A sign constraint on a decimal field.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum SignRule {
    /// Any value.
    Any,
    /// `> 0`.
    Positive,
    /// `>= 0`.
    NonNegative,
    /// `!= 0`.
    NonZero,
}

/// Every absolute value is below 10^9 (SPEC §1.2).
const MAX_INTEGER_DIGITS: u32 = 9;

/// Parses decimal `text` (`-12.5`, `"0.10"`, `1.5e3`, `25E-1`) exactly under `rule`.
///
/// Returns a reason a person can act on when the text is not a decimal, has too
/// many fractional digits, is out of range, or has the wrong sign.
pub fn parse_decimal(text: &str, rule: DecimalRule) -> Result<Decimal, String> {
    let not_a_number = || format!("not a decimal number: {text:?}");
    let bytes = text.as_bytes();
    let mut pos = 0;
    let negative = match bytes.first() {
        Some(b'-') => {
            pos += 1;
            true
        }
        Some(b'+') => {
            pos += 1;
            false
        }
        _ => false,
    };
    // Significant digits (leading zeros dropped) and the position of the point.
    let mut digits: Vec<u8> = Vec::with_capacity(24);
    let mut fraction_digits: i64 = 0;
    let mut seen_digit = false;
    let mut seen_point = false;
    while pos < bytes.len() {
        match bytes[pos] {
            c @ b'0'..=b'9' => {
                seen_digit = true;
                if !(digits.is_empty() && c == b'0') {
                    digits.push(c - b'0');
                }
                if seen_point {
                    fraction_digits += 1;
                }
            }
            b'.' if !seen_point => seen_point = true,
            _ => break,
        }
        pos += 1;
    }
    if !seen_digit {
        return Err(not_a_number());
    }
    let mut exponent: i64 = 0;
    if pos < bytes.len() {
        if bytes[pos] != b'e' && bytes[pos] != b'E' {
            return Err(not_a_number());
        }
        pos += 1;
        let exponent_text = &text[pos..];
        let unsigned = exponent_text.trim_start_matches(['+', '-']);
        if unsigned.is_empty()
            || exponent_text.len() - unsigned.len() > 1
            || !unsigned.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(not_a_number());
        }
        // Exponents beyond a few dozen can only yield out-of-range or over-precise values.
        exponent = unsigned.parse::<i64>().unwrap_or(i64::MAX).min(1_000);
        if exponent_text.starts_with('-') {
            exponent = -exponent;
        }
    }
    // value = digits × 10^(exponent − fraction_digits); drop trailing zeros into the exponent.
    let mut power = exponent - fraction_digits;
    while digits.len() > 1 && digits.last() == Some(&0) {
        digits.pop();
        power += 1;
    }
    if digits.is_empty() {
        digits.push(0);
        power = 0;
    }
    let is_zero = digits == [0];
    let scale = if power < 0 { (-power) as u64 } else { 0 };
    if !is_zero && scale > rule.max_fraction_digits as u64 {
        return Err(format!(
            "more than {} fractional digits: {text:?}",
            rule.max_fraction_digits
        ));
    }
    let integer_digits = digits.len() as i64 + power;
    if !is_zero && integer_digits > MAX_INTEGER_DIGITS as i64 {
        return Err(format!(
            "out of range (absolute value must be below 10^9): {text:?}"
        ));
    }
    let mut mantissa: i128 = 0;
    for digit in &digits {
        mantissa = mantissa * 10 + *digit as i128;
    }
    for _ in 0..power.max(0) {
        mantissa *= 10;
    }
    if negative {
        mantissa = -mantissa;
    }
    let value = Decimal::from_i128_with_scale(mantissa, scale as u32);
    let sign_ok = match rule.sign {
        SignRule::Any => true,
        SignRule::Positive => value > Decimal::ZERO,
        SignRule::NonNegative => value >= Decimal::ZERO,
        SignRule::NonZero => !value.is_zero(),
    };
    if !sign_ok {
        let wanted = match rule.sign {
            SignRule::Positive => "greater than 0",
            SignRule::NonNegative => "0 or more",
            SignRule::NonZero => "non-zero",
            SignRule::Any => unreachable!("every value satisfies SignRule::Any"),
        };
        return Err(format!("must be {wanted}, got {text}"));
    }
    Ok(value)
}

/// Compares `a × b` with `c × d` exactly.
///
/// The products are formed on the integer mantissas in `i128`, so no digit is
/// rounded away; only if a product would overflow 128 bits (far beyond the
/// ranges SPEC §1.2 admits) does it fall back to `rust_decimal`'s 96-bit
/// arithmetic.
pub fn compare_products(a: Decimal, b: Decimal, c: Decimal, d: Decimal) -> Ordering {
    let exact = || -> Option<Ordering> {
        let left = a.mantissa().checked_mul(b.mantissa())?;
        let right = c.mantissa().checked_mul(d.mantissa())?;
        let left_scale = a.scale() + b.scale();
        let right_scale = c.scale() + d.scale();
        let common = left_scale.max(right_scale);
        let left = left.checked_mul(10i128.checked_pow(common - left_scale)?)?;
        let right = right.checked_mul(10i128.checked_pow(common - right_scale)?)?;
        Some(left.cmp(&right))
    };
    exact().unwrap_or_else(|| (a * b).cmp(&(c * d)))
}

/// An amount as the exceptions' details print it: at least two decimal
/// places, and no trailing zeros beyond them (`26600.4` and `26600.400`
/// both print `26600.40`, `0.125` stays `0.125`). A sum's scale depends on
/// the order its terms were added and retracted in, which differs between
/// runs; its text must not.
pub fn display_amount(amount: Decimal) -> String {
    let mut amount = amount.normalize();
    if amount.scale() < 2 {
        amount.rescale(2);
    }
    amount.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const QTY: DecimalRule = DecimalRule {
        max_fraction_digits: 4,
        sign: SignRule::Any,
    };

    fn parse(text: &str) -> Result<String, String> {
        parse_decimal(text, QTY).map(|d| d.normalize().to_string())
    }

    #[test]
    fn parses_plain_and_exponent_forms_exactly() {
        assert_eq!(parse("2.50").unwrap(), "2.5");
        assert_eq!(parse("-0.0001").unwrap(), "-0.0001");
        assert_eq!(parse("1.5e3").unwrap(), "1500");
        assert_eq!(parse("25E-1").unwrap(), "2.5");
        assert_eq!(parse("1e+2").unwrap(), "100");
        assert_eq!(parse("000.1000").unwrap(), "0.1");
        assert_eq!(parse("0e999999").unwrap(), "0");
        assert_eq!(parse("999999999.9999").unwrap(), "999999999.9999");
        // 0.1 + 0.2 style values are exact: no binary floating point involved.
        let sum = parse_decimal("0.1", QTY).unwrap() + parse_decimal("0.2", QTY).unwrap();
        assert_eq!(sum, parse_decimal("0.3", QTY).unwrap());
    }

    #[test]
    fn rejects_over_precise_out_of_range_and_garbage() {
        assert!(parse("0.00001")
            .unwrap_err()
            .contains("more than 4 fractional digits"));
        assert!(parse("1e-5")
            .unwrap_err()
            .contains("more than 4 fractional digits"));
        assert!(parse("1000000000").unwrap_err().contains("out of range"));
        assert!(parse("1e9").unwrap_err().contains("out of range"));
        assert!(parse("1e99999999999999999999")
            .unwrap_err()
            .contains("out of range"));
        for garbage in [
            "", "-", ".", "abc", "1.2.3", "1e", "1e+-2", "0x10", " 1", "NaN", "1,5",
        ] {
            assert!(parse(garbage).is_err(), "{garbage:?} should be rejected");
        }
    }

    #[test]
    fn enforces_sign_rules() {
        let positive = DecimalRule {
            max_fraction_digits: 4,
            sign: SignRule::Positive,
        };
        assert!(parse_decimal("0", positive).is_err());
        assert!(parse_decimal("-1", positive).is_err());
        assert!(parse_decimal("0.0001", positive).is_ok());
        let non_zero = DecimalRule {
            sign: SignRule::NonZero,
            ..positive
        };
        assert!(parse_decimal("-0.000", non_zero).is_err());
        assert!(parse_decimal("-3", non_zero).is_ok());
    }

    #[test]
    fn amounts_display_the_same_whatever_their_scale() {
        let d = |s: &str| s.parse::<Decimal>().unwrap();
        for (amount, shown) in [
            ("26600.4", "26600.40"),
            ("26600.400", "26600.40"),
            ("26600.40", "26600.40"),
            ("0.125", "0.125"),
            ("7", "7.00"),
            ("-3.5000", "-3.50"),
            ("0.000", "0.00"),
        ] {
            assert_eq!(display_amount(d(amount)), shown, "{amount}");
        }
    }

    #[test]
    fn compares_products_exactly() {
        let d = |s: &str| s.parse::<Decimal>().unwrap();
        assert_eq!(
            compare_products(
                d("999999999.999999"),
                d("999999999.999999"),
                d("999999999.999999"),
                d("999999999.999998")
            ),
            Ordering::Greater
        );
        assert_eq!(
            compare_products(d("0.5"), d("4"), d("2"), d("1")),
            Ordering::Equal
        );
        assert_eq!(
            compare_products(d("-1"), d("3"), d("1"), d("1")),
            Ordering::Less
        );
    }
}
