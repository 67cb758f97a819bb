//! The oracle's SPEC §8: payments applied to invoices, `paid_amount` and
//! `payment_status`, and the payment collections, by nested loops over the
//! final documents, written from the SPEC text (its own edit distance).

use rust_decimal::Decimal;
use trimatch_dataflows::model::*;
use trimatch_dataflows::rows::*;

use super::super::Snapshot;
use super::normalize;

/// An invoice's gross amount: Σ quantity × unit_price + tax + freight.
pub(super) fn gross_of(invoice: &Invoice) -> Decimal {
    let lines: Decimal = invoice
        .lines
        .iter()
        .map(|l| l.quantity * l.unit_price)
        .sum();
    lines + invoice.tax + invoice.freight
}

/// One amount of a payment applied to an invoice.
pub(super) struct Application<'d> {
    payment: &'d Payment,
    invoice: &'d Invoice,
    amount: Decimal,
    by_allocation: bool,
}

/// SPEC §8 "Applying a payment", as written: allocations to the named
/// present invoices; else the whole amount to the one active invoice of
/// the tenant and vendor whose normalized number is the normalized reference.
pub(super) fn apply_payments<'d>(
    payments: &[&'d Payment],
    invoices: &[&'d Invoice],
) -> Vec<Application<'d>> {
    let mut applications = Vec::new();
    for payment in payments
        .iter()
        .filter(|p| p.status == PaymentStatus::Active)
    {
        if !payment.allocations.is_empty() {
            for allocation in &payment.allocations {
                if let Some(invoice) = invoices.iter().find(|i| {
                    i.tenant_id == payment.tenant_id && i.invoice_id == allocation.invoice_id
                }) {
                    applications.push(Application {
                        payment,
                        invoice,
                        amount: allocation.amount,
                        by_allocation: true,
                    });
                }
            }
            continue;
        }
        let reference = normalize(payment.reference.as_deref().unwrap_or(""));
        if reference.is_empty() {
            continue;
        }
        let named: Vec<&&Invoice> = invoices
            .iter()
            .filter(|i| {
                i.status == InvoiceStatus::Active
                    && i.kind == InvoiceKind::Invoice
                    && i.tenant_id == payment.tenant_id
                    && i.vendor_id == payment.vendor_id
                    && normalize(&i.invoice_number) == reference
            })
            .collect();
        if let [invoice] = named.as_slice() {
            applications.push(Application {
                payment,
                invoice,
                amount: payment.amount,
                by_allocation: false,
            });
        }
    }
    applications
}

pub(super) fn paid_on(applications: &[Application<'_>], invoice: &Invoice) -> Decimal {
    applications
        .iter()
        .filter(|a| std::ptr::eq(a.invoice, invoice))
        .map(|a| a.amount)
        .sum()
}

pub(super) fn payment_status_of(
    paid: Decimal,
    gross: Decimal,
    tolerance: Decimal,
) -> InvoicePaymentStatus {
    if paid == Decimal::ZERO {
        InvoicePaymentStatus::Unpaid
    } else if paid < gross - tolerance {
        InvoicePaymentStatus::PartiallyPaid
    } else if paid > gross + tolerance {
        InvoicePaymentStatus::Overpaid
    } else {
        InvoicePaymentStatus::Paid
    }
}

/// Levenshtein distance in characters, by the textbook dynamic programme.
fn levenshtein(a: &str, b: &str) -> u32 {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<u32> = (0..=b.len() as u32).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut current = vec![i as u32 + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + u32::from(ca != cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a.max(1)
    } else {
        gcd(b, a % b)
    }
}

/// `payment_matches`, `payment_exceptions` (details empty) and
/// `payment_suggestions`, from the applications and the invoice rows.
pub(super) fn payment_outputs(
    payments: &[&Payment],
    applications: &[Application<'_>],
    snapshot: &mut Snapshot,
    tolerance_of: &dyn Fn(&str, &str) -> Decimal,
) {
    let row_of = |snapshot: &Snapshot, invoice: &Invoice| -> InvoiceMatchRow {
        snapshot
            .invoice_matches
            .iter()
            .find(|r| r.tenant_id == invoice.tenant_id && r.invoice_id == invoice.invoice_id)
            .expect("every present invoice has a row")
            .clone()
    };
    let exception =
        |payment: &Payment, invoice_id: Option<Text>, exception_type, expected, actual| {
            PaymentExceptionRow {
                tenant_id: payment.tenant_id.clone(),
                payment_id: payment.payment_id.clone(),
                vendor_id: payment.vendor_id.clone(),
                invoice_id,
                exception_type,
                expected,
                actual,
                detail: "".into(),
            }
        };
    for payment in payments
        .iter()
        .filter(|p| p.status == PaymentStatus::Active)
    {
        let mine: Vec<&Application> = applications
            .iter()
            .filter(|a| std::ptr::eq(a.payment, *payment))
            .collect();
        let applied: Decimal = mine.iter().map(|a| a.amount).sum();
        let status = if applied == payment.amount {
            PaymentApplication::Applied
        } else if applied == Decimal::ZERO {
            PaymentApplication::Unapplied
        } else {
            PaymentApplication::PartiallyApplied
        };
        snapshot.payment_matches.push(PaymentMatchRow {
            tenant_id: payment.tenant_id.clone(),
            payment_id: payment.payment_id.clone(),
            vendor_id: payment.vendor_id.clone(),
            currency: payment.currency,
            amount: payment.amount,
            applied_amount: applied,
            matched_by: if !payment.allocations.is_empty() {
                PaymentMatchedBy::Allocation
            } else if !mine.is_empty() {
                PaymentMatchedBy::Reference
            } else {
                PaymentMatchedBy::None
            },
            status,
        });
        if mine.is_empty() {
            snapshot.payment_exceptions.push(exception(
                payment,
                None,
                PaymentExceptionType::UnappliedPayment,
                None,
                Some(payment.amount),
            ));
        }
        for allocation in &payment.allocations {
            if !mine
                .iter()
                .any(|a| a.invoice.invoice_id == allocation.invoice_id)
            {
                snapshot.payment_exceptions.push(exception(
                    payment,
                    Some(allocation.invoice_id.clone()),
                    PaymentExceptionType::UnknownInvoice,
                    None,
                    Some(allocation.amount),
                ));
            }
        }
        for application in &mine {
            let row = row_of(snapshot, application.invoice);
            let id = Some(row.invoice_id.clone());
            if row.status == MatchStatus::Exception {
                snapshot.payment_exceptions.push(exception(
                    payment,
                    id.clone(),
                    PaymentExceptionType::PaidWhileBlocked,
                    None,
                    Some(application.amount),
                ));
            }
            if row.payment_status == InvoicePaymentStatus::Overpaid {
                snapshot.payment_exceptions.push(exception(
                    payment,
                    id.clone(),
                    PaymentExceptionType::Overpayment,
                    Some(row.gross_amount),
                    Some(row.paid_amount),
                ));
            }
            if application.by_allocation && row.vendor_id != payment.vendor_id {
                snapshot.payment_exceptions.push(exception(
                    payment,
                    id.clone(),
                    PaymentExceptionType::PaymentVendorMismatch,
                    None,
                    None,
                ));
            }
            if row.currency != payment.currency {
                snapshot.payment_exceptions.push(exception(
                    payment,
                    id.clone(),
                    PaymentExceptionType::PaymentCurrencyMismatch,
                    None,
                    None,
                ));
            }
            if application.invoice.status == InvoiceStatus::Cancelled
                || application.invoice.kind == InvoiceKind::CreditMemo
            {
                snapshot.payment_exceptions.push(exception(
                    payment,
                    id,
                    PaymentExceptionType::PaidCancelledInvoice,
                    None,
                    Some(application.amount),
                ));
            }
        }
        // Suggestions for an unapplied payment with a reference.
        let reference = normalize(payment.reference.as_deref().unwrap_or(""));
        if status != PaymentApplication::Unapplied || reference.is_empty() {
            continue;
        }
        // (distance, length, invoice_id, difference)
        let mut candidates: Vec<(u32, u32, Text, Decimal)> = Vec::new();
        for row in &snapshot.invoice_matches {
            if row.tenant_id != payment.tenant_id
                || row.vendor_id != payment.vendor_id
                || row.currency != payment.currency
                || row.kind != InvoiceKind::Invoice
                || row.status == MatchStatus::Cancelled
                || !matches!(
                    row.payment_status,
                    InvoicePaymentStatus::Unpaid | InvoicePaymentStatus::PartiallyPaid
                )
            {
                continue;
            }
            let number = normalize(&row.invoice_number);
            let length = reference.chars().count().max(number.chars().count()) as u32;
            let distance = levenshtein(&reference, &number);
            // similarity = 1 − distance / length ≥ 0.8, exactly.
            if Decimal::ONE - Decimal::from(distance) / Decimal::from(length) < Decimal::new(8, 1) {
                continue;
            }
            let difference = (row.gross_amount - row.paid_amount) - payment.amount;
            if difference.abs() > tolerance_of(&payment.tenant_id, &payment.vendor_id) {
                continue;
            }
            candidates.push((distance, length, row.invoice_id.clone(), difference));
        }
        candidates.sort_by(|a, b| {
            (u64::from(a.0) * u64::from(b.1))
                .cmp(&(u64::from(b.0) * u64::from(a.1)))
                .then_with(|| a.2.as_bytes().cmp(b.2.as_bytes()))
        });
        for (rank, (distance, length, invoice_id, difference)) in
            candidates.into_iter().take(3).enumerate()
        {
            let divisor = gcd(distance, length);
            snapshot.payment_suggestions.push(PaymentSuggestionRow {
                tenant_id: payment.tenant_id.clone(),
                payment_id: payment.payment_id.clone(),
                rank: rank as u32 + 1,
                invoice_id,
                distance: distance / divisor,
                length: length / divisor,
                amount_difference: difference,
            });
        }
    }
}
