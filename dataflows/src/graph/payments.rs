//! SPEC §8: payments applied to invoices — by allocation, or whole by
//! reference — and what follows from them: each invoice's `paid_amount`,
//! `payment_matches`, `payment_exceptions` and `payment_suggestions`.
//!
//! Read top to bottom: applications, then (in the caller) the invoices'
//! payment columns, then the payment outputs, which also read the invoices'
//! rows (a payment to a blocked invoice is an exception).

use std::sync::Arc;

use differential_dataflow::operators::CountTotal;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use pruning::{comparable_lengths, AmountBuckets};

mod pruning;
use super::policies::{with_header_policies, Policies};
use crate::model::*;
use crate::operators::{left_join, reduce_arranged, Collection, CountedSum, KeyedArrangement};
use crate::rows::*;
use crate::rules::{self, Closeness};

/// The most suggestions a payment gets.
pub const MAX_SUGGESTIONS: usize = 3;

/// Part of a payment applied to one invoice.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Applied {
    pub payment_key: Fingerprint,
    pub payment: Arc<Payment>,
    pub amount: Decimal,
    pub by: PaymentMatchedBy,
}

/// What `applications` derives.
pub struct Applications<'s> {
    /// Keyed by the invoice applied to.
    pub applied: Collection<'s, (Fingerprint, Applied)>,
    /// Allocations naming an invoice that is not present, keyed by payment.
    pub unknown: Collection<'s, (Fingerprint, (Arc<Payment>, Allocation))>,
}

/// Who is in a reference group: the active invoices whose normalized
/// number is the group's, and the payments without allocations whose
/// normalized reference is. Invoices sort first.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
enum ReferenceMember {
    Invoice(Fingerprint),
    Payment(Fingerprint, Arc<Payment>),
}

/// Every amount an active payment applies to a present invoice.
///
/// Per change: an allocation meets its invoice by key, O(1) per allocation;
/// a payment without allocations, or an invoice, reads its (tenant, vendor,
/// normalized number) group — the invoices with that number and the
/// payments naming it, a handful.
pub(super) fn applications<'s>(
    payments: Collection<'s, (Fingerprint, Arc<Payment>)>,
    invoices: Collection<'s, (Fingerprint, Arc<Invoice>)>,
) -> Applications<'s> {
    let active = payments.filter(|(_, payment)| payment.is_active());
    let allocations = active
        .clone()
        .flat_map(|(key, payment)| {
            let allocations: Vec<_> = payment
                .allocations
                .iter()
                .map(|allocation| {
                    let invoice = invoice_key(&payment.tenant_id, &allocation.invoice_id);
                    (invoice, (key, payment.clone(), allocation.clone()))
                })
                .collect();
            allocations
        })
        .arrange_by_key_named("allocations by invoice");
    let present = invoices
        .clone()
        .map(|(key, _)| (key, ()))
        .arrange_by_key_named("present invoices");
    let allocated = left_join(&allocations, &present);
    let unknown = allocated
        .clone()
        .flat_map(|(_, (key, payment, allocation), found)| {
            found.is_none().then_some((key, (payment, allocation)))
        });
    let by_allocation = allocated.flat_map(|(invoice, (key, payment, allocation), found)| {
        found.map(|()| {
            let applied = Applied {
                payment_key: key,
                payment,
                amount: allocation.amount,
                by: PaymentMatchedBy::Allocation,
            };
            (invoice, applied)
        })
    });

    let referenced = active.flat_map(|(key, payment)| {
        let reference = payment.reference.as_deref().map(normalize_document_number);
        let group = reference
            .filter(|reference| payment.allocations.is_empty() && !reference.is_empty())
            .map(|reference| reference_key(&payment.tenant_id, &payment.vendor_id, &reference));
        group.map(|group| (group, ReferenceMember::Payment(key, payment)))
    });
    let numbered = invoices.flat_map(|(key, invoice)| {
        let number = normalize_document_number(&invoice.invoice_number);
        let eligible =
            invoice.is_active() && invoice.kind == InvoiceKind::Invoice && !number.is_empty();
        eligible.then(|| {
            let group = reference_key(&invoice.tenant_id, &invoice.vendor_id, &number);
            (group, ReferenceMember::Invoice(key))
        })
    });
    let by_reference = referenced
        .concat(numbered)
        .reduce_named("payments by reference", |_, members, output| {
            // Applied only when exactly one invoice has the number.
            let invoices: Vec<Fingerprint> = members
                .iter()
                .filter_map(|(member, _)| match member {
                    ReferenceMember::Invoice(key) => Some(*key),
                    ReferenceMember::Payment(..) => None,
                })
                .collect();
            let [invoice] = invoices.as_slice() else {
                return;
            };
            for (member, _) in members {
                if let ReferenceMember::Payment(key, payment) = member {
                    let applied = Applied {
                        payment_key: *key,
                        payment: payment.clone(),
                        amount: payment.amount,
                        by: PaymentMatchedBy::Reference,
                    };
                    output.push(((*invoice, applied), 1));
                }
            }
        })
        .map(|(_, application)| application);
    Applications {
        applied: by_allocation.concat(by_reference),
        unknown,
    }
}

/// `paid_amount` of every invoice something is applied to: the sum of the
/// applied amounts, carried as differences — O(1) per application.
pub(super) fn paid_amounts<'s>(
    applied: Collection<'s, (Fingerprint, Applied)>,
) -> Collection<'s, (Fingerprint, Decimal)> {
    applied
        .explode(|(invoice, applied)| Some((invoice, CountedSum::one(applied.amount))))
        .count_total()
        .map(|(invoice, paid)| (invoice, paid.sum))
}

/// The payment collections of SPEC §8.
pub struct PaymentOutputs<'s> {
    /// Keyed by payment, with the payment (the payment keys of one tenant
    /// sort together, so a tenant's rows are read by a seek).
    pub payment_matches: KeyedArrangement<'s, Fingerprint, (PaymentMatchRow, Arc<Payment>)>,
    pub payment_exceptions: Collection<'s, (Text, PaymentExceptionRow)>,
    pub payment_suggestions: Collection<'s, (Text, PaymentSuggestionRow)>,
}

/// What the per-payment reduce of `payment_matches` sees.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
enum PaymentFact {
    Document(Arc<Payment>),
    Applied(Decimal, PaymentMatchedBy),
}

/// An invoice as payment suggestions compare it: eligible (an active
/// `kind = invoice`, unpaid or partly paid), with its normalized number,
/// open amount and tolerance.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct OpenInvoice {
    invoice_id: Text,
    number: String,
    open_amount: Decimal,
    tolerance: Decimal,
}

/// A suggested invoice, ordered best first: by similarity, then `invoice_id`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct PaymentCandidate {
    closeness: Closeness,
    invoice_id: Text,
    amount_difference: Decimal,
    tenant_id: Text,
    payment_id: Text,
}

/// `payment_matches`, `payment_exceptions` and `payment_suggestions`, given
/// the applications, every present invoice's row (keyed by invoice) with its
/// `total_tolerance_abs`, and the policies (a payment's `total_tolerance_abs`
/// is its vendor's, else its tenant's, else `default_tolerances`': §12.1's
/// header levels).
pub(super) fn payment_outputs<'s>(
    payments: Collection<'s, (Fingerprint, Arc<Payment>)>,
    applications: Applications<'s>,
    rows_by_invoice: &KeyedArrangement<'s, Fingerprint, (InvoiceMatchRow, Decimal)>,
    policies: &Policies<'s>,
    default_tolerances: Tolerances,
) -> PaymentOutputs<'s> {
    let Applications { applied, unknown } = applications;

    // One row per active payment. Per change: O(the payment's applications).
    let facts = payments
        .filter(|(_, payment)| payment.is_active())
        .map(|(key, payment)| (key, PaymentFact::Document(payment)))
        .concat(
            applied
                .clone()
                .map(|(_, a)| (a.payment_key, PaymentFact::Applied(a.amount, a.by))),
        );
    let matches = reduce_arranged(facts, "payment_matches", |_, facts, output| {
        let PaymentFact::Document(payment) = facts[0].0 else {
            return; // applications of a payment no longer present
        };
        let mut applied_amount = Decimal::ZERO;
        let mut by_reference = false;
        for (fact, count) in &facts[1..] {
            if let PaymentFact::Applied(amount, by) = fact {
                applied_amount += *amount * Decimal::from(*count);
                by_reference |= *by == PaymentMatchedBy::Reference;
            }
        }
        let matched_by = if !payment.allocations.is_empty() {
            PaymentMatchedBy::Allocation
        } else if by_reference {
            PaymentMatchedBy::Reference
        } else {
            PaymentMatchedBy::None
        };
        let row = PaymentMatchRow {
            tenant_id: payment.tenant_id.clone(),
            payment_id: payment.payment_id.clone(),
            vendor_id: payment.vendor_id.clone(),
            currency: payment.currency,
            amount: payment.amount,
            applied_amount,
            matched_by,
            status: PaymentApplication::of(applied_amount, payment.amount),
        };
        output.push(((row, payment.clone()), 1));
    });

    // Exceptions. Per change: an invoice's row change re-checks the payments
    // applied to it (inherent: each one's exceptions read the invoice); a
    // payment's change its own applications.
    let unapplied = matches.clone().flat_map_ref(|_, (row, payment)| {
        row.applied_amount.is_zero().then(|| {
            rules::payment_exception(
                payment,
                None,
                PaymentExceptionType::UnappliedPayment,
                None,
                Some(payment.amount),
            )
        })
    });
    let unknown = unknown.map(|(_, (payment, allocation))| {
        rules::payment_exception(
            &payment,
            Some(allocation.invoice_id.clone()),
            PaymentExceptionType::UnknownInvoice,
            None,
            Some(allocation.amount),
        )
    });
    let against_invoices = applied
        .arrange_by_key_named("applications by invoice")
        .join_core(rows_by_invoice.clone(), |_, applied, (row, _)| {
            let mut raised = Vec::new();
            rules::application_exceptions(
                &applied.payment,
                applied.by,
                applied.amount,
                row,
                &mut raised,
            );
            raised
        });
    let payment_exceptions = unapplied
        .concat(unknown)
        .concat(against_invoices)
        .map(|row| (row.tenant_id.clone(), row));

    let payment_suggestions =
        payment_suggestions(&matches, rows_by_invoice, policies, default_tolerances);

    PaymentOutputs {
        payment_matches: matches,
        payment_exceptions,
        payment_suggestions,
    }
}

/// `payment_suggestions`: for each unapplied payment with a reference, the
/// vendor's open invoices in the payment's currency whose number is close to
/// the reference and whose open amount is the payment's within tolerance,
/// best three.
///
/// The join is keyed by (tenant, vendor, currency, number length, amount
/// bucket) — see [`pruning`]: a payment with a reference of L characters
/// probes the ⌊1.25·L⌋ − ⌈0.8·L⌉ + 1 lengths that admit similarity 0.8
/// (5 for L = 10) times at most 3 amount buckets; an open invoice sits under
/// one key. Per change: a payment compares its reference with the vendor's
/// open invoices of those lengths whose open amount is within about ±2W of
/// its amount (W ≤ 10 × the tenant's `total_tolerance_abs`), not with every
/// open invoice of the vendor; an invoice's change meets the unapplied
/// payments under its one key. A policy change re-keys the tenant's unapplied
/// payments and open invoices (SPEC §8 makes it re-check them all).
fn payment_suggestions<'s>(
    matches: &KeyedArrangement<'s, Fingerprint, (PaymentMatchRow, Arc<Payment>)>,
    rows_by_invoice: &KeyedArrangement<'s, Fingerprint, (InvoiceMatchRow, Decimal)>,
    policies: &Policies<'s>,
    default_tolerances: Tolerances,
) -> Collection<'s, (Text, PaymentSuggestionRow)> {
    let waiting = matches.clone().flat_map_ref(|key, (row, payment)| {
        let reference = payment
            .reference
            .as_deref()
            .map(normalize_document_number)
            .filter(|reference| !reference.is_empty())
            .filter(|_| row.status == PaymentApplication::Unapplied)?;
        Some((
            payment.tenant_id.clone(),
            payment.vendor_id.clone(),
            (*key, reference, payment.clone()),
        ))
    });
    let waiting = with_header_policies(waiting, policies, "unapplied payments").flat_map(
        move |((key, reference, payment), header)| {
            let tolerance = header.tolerances(&default_tolerances).total_tolerance_abs;
            let buckets = AmountBuckets::for_tolerance(tolerance);
            let group =
                vendor_currency_key(&payment.tenant_id, &payment.vendor_id, payment.currency);
            let lengths = comparable_lengths(reference.chars().count() as u32);
            let mut keys = Vec::new();
            for length in lengths {
                for bucket in buckets.around(payment.amount, tolerance) {
                    let candidate_key = (group, length, buckets, bucket);
                    keys.push((candidate_key, (key, reference.clone(), payment.clone())));
                }
            }
            keys
        },
    );
    let open_invoices = rows_by_invoice.clone().flat_map_ref(|_, (row, tolerance)| {
        let eligible = row.kind == InvoiceKind::Invoice
            && row.status != MatchStatus::Cancelled
            && matches!(
                row.payment_status,
                InvoicePaymentStatus::Unpaid | InvoicePaymentStatus::PartiallyPaid
            );
        eligible.then(|| {
            let group = vendor_currency_key(&row.tenant_id, &row.vendor_id, row.currency);
            let number = normalize_document_number(&row.invoice_number);
            let length = number.chars().count() as u32;
            let buckets = AmountBuckets::for_tolerance(*tolerance);
            let open_amount = row.gross_amount - row.paid_amount;
            let candidate_key = (group, length, buckets, buckets.bucket(open_amount));
            let open = OpenInvoice {
                invoice_id: row.invoice_id.clone(),
                number,
                open_amount,
                tolerance: *tolerance,
            };
            (candidate_key, open)
        })
    });
    waiting
        .arrange_by_key_named("unapplied payments by candidate key")
        .join_core(
            open_invoices.arrange_by_key_named("open invoices by candidate key"),
            |_, (key, reference, payment), invoice| {
                let closeness = Closeness::of(reference, &invoice.number)?;
                let difference = invoice.open_amount - payment.amount;
                (closeness.is_close() && difference.abs() <= invoice.tolerance).then(|| {
                    let candidate = PaymentCandidate {
                        closeness,
                        invoice_id: invoice.invoice_id.clone(),
                        amount_difference: difference,
                        tenant_id: payment.tenant_id.clone(),
                        payment_id: payment.payment_id.clone(),
                    };
                    (*key, candidate)
                })
            },
        )
        .reduce_named("payment_suggestions", |_, candidates, output| {
            // Candidates arrive sorted, best first.
            for (rank, (candidate, _)) in candidates.iter().take(MAX_SUGGESTIONS).enumerate() {
                let row = PaymentSuggestionRow {
                    tenant_id: candidate.tenant_id.clone(),
                    payment_id: candidate.payment_id.clone(),
                    rank: rank as u32 + 1,
                    invoice_id: candidate.invoice_id.clone(),
                    distance: candidate.closeness.distance,
                    length: candidate.closeness.length,
                    amount_difference: candidate.amount_difference,
                };
                output.push((row, 1));
            }
        })
        .map(|(_, row)| (row.tenant_id.clone(), row))
}
