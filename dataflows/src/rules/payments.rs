//! SPEC §8's rules as pure functions: what an applied payment raises against
//! the invoice it is applied to, and how close a payment's reference is to
//! an invoice number.

use std::cmp::Ordering;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::decimal::display_amount;
use crate::model::{InvoiceKind, Payment, Text};
use crate::rows::{
    InvoiceMatchRow, InvoicePaymentStatus, MatchStatus, PaymentExceptionRow, PaymentExceptionType,
    PaymentMatchedBy,
};

/// A `payment_exceptions` row of `payment` (about `invoice_id`, if any).
pub fn payment_exception(
    payment: &Payment,
    invoice_id: Option<Text>,
    exception_type: PaymentExceptionType,
    expected: Option<Decimal>,
    actual: Option<Decimal>,
) -> PaymentExceptionRow {
    let on = invoice_id
        .as_ref()
        .map(|id| format!(" to invoice {id}"))
        .unwrap_or_default();
    let detail = match exception_type {
        PaymentExceptionType::UnappliedPayment => format!(
            "Payment {} of {} {} applies to no present invoice.",
            payment.payment_id,
            display_amount(payment.amount),
            payment.currency
        ),
        PaymentExceptionType::UnknownInvoice => format!(
            "Payment {} allocates {}{on}, which is not present.",
            payment.payment_id,
            display_amount(actual.unwrap_or_default())
        ),
        PaymentExceptionType::PaidWhileBlocked => format!(
            "Payment {} applies {}{on}, which has an open blocking exception.",
            payment.payment_id,
            display_amount(actual.unwrap_or_default())
        ),
        PaymentExceptionType::Overpayment => format!(
            "Payment {} applies{on}, which is paid {} against a gross amount of {}.",
            payment.payment_id,
            display_amount(actual.unwrap_or_default()),
            display_amount(expected.unwrap_or_default())
        ),
        PaymentExceptionType::PaymentVendorMismatch => format!(
            "Payment {} to vendor {} is allocated{on} of another vendor.",
            payment.payment_id, payment.vendor_id
        ),
        PaymentExceptionType::PaymentCurrencyMismatch => format!(
            "Payment {} in {} applies{on} in another currency.",
            payment.payment_id, payment.currency
        ),
        PaymentExceptionType::PaidCancelledInvoice => format!(
            "Payment {} applies {}{on}, which is cancelled or a credit memo.",
            payment.payment_id,
            display_amount(actual.unwrap_or_default())
        ),
    };
    PaymentExceptionRow {
        tenant_id: payment.tenant_id.clone(),
        payment_id: payment.payment_id.clone(),
        vendor_id: payment.vendor_id.clone(),
        invoice_id,
        exception_type,
        expected,
        actual,
        detail: detail.into(),
    }
}

/// The exceptions `amount` of `payment` (applied by `by`) raises against
/// the invoice whose current row is `invoice` (SPEC §8's table).
pub fn application_exceptions(
    payment: &Payment,
    by: PaymentMatchedBy,
    amount: Decimal,
    invoice: &InvoiceMatchRow,
    raised: &mut Vec<PaymentExceptionRow>,
) {
    let mut raise = |exception_type, expected, actual| {
        raised.push(payment_exception(
            payment,
            Some(invoice.invoice_id.clone()),
            exception_type,
            expected,
            actual,
        ))
    };
    if invoice.status == MatchStatus::Exception {
        raise(PaymentExceptionType::PaidWhileBlocked, None, Some(amount));
    }
    if invoice.payment_status == InvoicePaymentStatus::Overpaid {
        raise(
            PaymentExceptionType::Overpayment,
            Some(invoice.gross_amount),
            Some(invoice.paid_amount),
        );
    }
    if by == PaymentMatchedBy::Allocation && invoice.vendor_id != payment.vendor_id {
        raise(PaymentExceptionType::PaymentVendorMismatch, None, None);
    }
    if invoice.currency != payment.currency {
        raise(PaymentExceptionType::PaymentCurrencyMismatch, None, None);
    }
    if invoice.status == MatchStatus::Cancelled || invoice.kind == InvoiceKind::CreditMemo {
        raise(
            PaymentExceptionType::PaidCancelledInvoice,
            None,
            Some(amount),
        );
    }
}

/// How close a normalized reference is to a normalized invoice number: the
/// similarity 1 − distance / length as an exact fraction in lowest terms
/// (so equal similarities are equal values). Ordered most similar first.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Closeness {
    pub distance: u32,
    pub length: u32,
}

impl Closeness {
    /// The Levenshtein distance (in characters) of `a` and `b` over the
    /// longer length, if that is at least 1.
    pub fn of(a: &str, b: &str) -> Option<Closeness> {
        let length = a.chars().count().max(b.chars().count()) as u32;
        if length == 0 {
            return None;
        }
        // strsim: a well-kept implementation of the edit distances, counted
        // in characters as SPEC §8 says.
        let distance = strsim::levenshtein(a, b) as u32;
        let divisor = gcd(distance, length);
        Some(Closeness {
            distance: distance / divisor,
            length: length / divisor,
        })
    }

    /// SPEC §8's threshold, similarity ≥ 0.8, compared exactly.
    pub fn is_close(&self) -> bool {
        5 * u64::from(self.distance) <= u64::from(self.length)
    }
}

impl Ord for Closeness {
    /// Smaller distance / length first (higher similarity first).
    fn cmp(&self, other: &Self) -> Ordering {
        (u64::from(self.distance) * u64::from(other.length))
            .cmp(&(u64::from(other.distance) * u64::from(self.length)))
    }
}
impl PartialOrd for Closeness {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closeness_is_exact_and_in_lowest_terms() {
        let one_off = Closeness::of("A3342", "A3343").unwrap();
        assert_eq!((one_off.distance, one_off.length), (1, 5));
        assert!(one_off.is_close(), "0.8 is close enough");
        let two_off = Closeness::of("A3342", "A3353").unwrap();
        assert!(!two_off.is_close());
        // 1/4 and 2/8 are one value.
        assert_eq!(
            Closeness::of("AB12", "AB13"),
            Closeness::of("ABCDEFGH", "ABCDEFXY")
        );
        assert!(one_off < two_off);
        assert_eq!(Closeness::of("", ""), None);
        // Characters, not bytes.
        assert_eq!(Closeness::of("É1", "E1").map(|c| c.distance), Some(1));
    }
}
