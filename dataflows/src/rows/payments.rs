//! Rows of the payment collections of SPEC §8: `payment_matches`,
//! `payment_exceptions` and `payment_suggestions`, and the payment columns
//! of `invoice_matches`.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::model::{Currency, Severity, Text};

/// `payment_status` of an invoice in `invoice_matches`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum InvoicePaymentStatus {
    Unpaid,
    PartiallyPaid,
    Paid,
    Overpaid,
}

impl InvoicePaymentStatus {
    /// The wire spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            InvoicePaymentStatus::Unpaid => "unpaid",
            InvoicePaymentStatus::PartiallyPaid => "partially_paid",
            InvoicePaymentStatus::Paid => "paid",
            InvoicePaymentStatus::Overpaid => "overpaid",
        }
    }

    /// SPEC §8: `unpaid` when nothing is paid, else against `gross` within
    /// `tolerance` (the invoice's `total_tolerance_abs`).
    pub fn of(paid: Decimal, gross: Decimal, tolerance: Decimal) -> Self {
        if paid.is_zero() {
            InvoicePaymentStatus::Unpaid
        } else if paid < gross - tolerance {
            InvoicePaymentStatus::PartiallyPaid
        } else if paid > gross + tolerance {
            InvoicePaymentStatus::Overpaid
        } else {
            InvoicePaymentStatus::Paid
        }
    }
}

/// `matched_by` of a `payment_matches` row.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PaymentMatchedBy {
    /// The payment names its invoices.
    Allocation,
    /// Applied whole to the one invoice its reference names.
    Reference,
    /// Neither.
    None,
}

impl PaymentMatchedBy {
    /// The wire spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            PaymentMatchedBy::Allocation => "allocation",
            PaymentMatchedBy::Reference => "reference",
            PaymentMatchedBy::None => "none",
        }
    }
}

/// `status` of a `payment_matches` row (exact, no tolerance).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PaymentApplication {
    Applied,
    PartiallyApplied,
    Unapplied,
}

impl PaymentApplication {
    /// The wire spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            PaymentApplication::Applied => "applied",
            PaymentApplication::PartiallyApplied => "partially_applied",
            PaymentApplication::Unapplied => "unapplied",
        }
    }

    /// `applied` when all of `amount` is applied, `unapplied` when none is.
    pub fn of(applied: Decimal, amount: Decimal) -> Self {
        if applied == amount {
            PaymentApplication::Applied
        } else if applied.is_zero() {
            PaymentApplication::Unapplied
        } else {
            PaymentApplication::PartiallyApplied
        }
    }
}

/// A row of `payment_matches`: one per present active payment.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PaymentMatchRow {
    pub tenant_id: Text,
    pub payment_id: Text,
    pub vendor_id: Text,
    pub currency: Currency,
    pub amount: Decimal,
    pub applied_amount: Decimal,
    pub matched_by: PaymentMatchedBy,
    pub status: PaymentApplication,
}

impl PaymentMatchRow {
    /// `amount − applied_amount`.
    pub fn unapplied_amount(&self) -> Decimal {
        self.amount - self.applied_amount
    }
}

/// The payment exception types of SPEC §8.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PaymentExceptionType {
    UnappliedPayment,
    UnknownInvoice,
    PaidWhileBlocked,
    Overpayment,
    PaymentVendorMismatch,
    PaymentCurrencyMismatch,
    PaidCancelledInvoice,
}

impl PaymentExceptionType {
    /// Every type, in SPEC order.
    pub const ALL: [PaymentExceptionType; 7] = [
        PaymentExceptionType::UnappliedPayment,
        PaymentExceptionType::UnknownInvoice,
        PaymentExceptionType::PaidWhileBlocked,
        PaymentExceptionType::Overpayment,
        PaymentExceptionType::PaymentVendorMismatch,
        PaymentExceptionType::PaymentCurrencyMismatch,
        PaymentExceptionType::PaidCancelledInvoice,
    ];

    /// The wire spelling, e.g. `PAID_WHILE_BLOCKED`.
    pub fn as_str(&self) -> &'static str {
        match self {
            PaymentExceptionType::UnappliedPayment => "UNAPPLIED_PAYMENT",
            PaymentExceptionType::UnknownInvoice => "UNKNOWN_INVOICE",
            PaymentExceptionType::PaidWhileBlocked => "PAID_WHILE_BLOCKED",
            PaymentExceptionType::Overpayment => "OVERPAYMENT",
            PaymentExceptionType::PaymentVendorMismatch => "PAYMENT_VENDOR_MISMATCH",
            PaymentExceptionType::PaymentCurrencyMismatch => "PAYMENT_CURRENCY_MISMATCH",
            PaymentExceptionType::PaidCancelledInvoice => "PAID_CANCELLED_INVOICE",
        }
    }

    /// Only an unapplied payment is a warning; every other type blocks.
    pub fn severity(&self) -> Severity {
        match self {
            PaymentExceptionType::UnappliedPayment => Severity::Warning,
            _ => Severity::Blocking,
        }
    }
}

/// A row of `payment_exceptions`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PaymentExceptionRow {
    pub tenant_id: Text,
    pub payment_id: Text,
    pub vendor_id: Text,
    /// Null for `UNAPPLIED_PAYMENT`.
    pub invoice_id: Option<Text>,
    pub exception_type: PaymentExceptionType,
    pub expected: Option<Decimal>,
    pub actual: Option<Decimal>,
    /// A sentence for the AP analyst.
    pub detail: Text,
}

/// A row of `payment_suggestions`: one of the (at most three) invoices an
/// unapplied payment most likely pays (SPEC §8).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PaymentSuggestionRow {
    pub tenant_id: Text,
    pub payment_id: Text,
    /// 1 to 3, best first.
    pub rank: u32,
    pub invoice_id: Text,
    /// The Levenshtein distance of the normalized reference and invoice
    /// number, and the longer one's length in characters: the similarity
    /// is 1 − distance / length, kept exact.
    pub distance: u32,
    pub length: u32,
    /// The invoice's open amount (gross − paid) − the payment's amount.
    pub amount_difference: Decimal,
}

impl PaymentSuggestionRow {
    /// The similarity, rounded to a float.
    pub fn similarity(&self) -> f64 {
        (self.length - self.distance) as f64 / self.length as f64
    }
}
