//! The three-way-match dataflow: SPEC §2 as differential-dataflow operators.
//!
//! Input: the *current* documents — collections of `(identity key, document)`,
//! one element per present document (upserts have already been resolved; see
//! [`crate::engine`]). Output: the collections of SPEC §3, keyed by `tenant_id`
//! so that readers can seek one tenant's rows.
//!
//! Read top to bottom, the graph follows the SPEC:
//! 1. the effective policy of every active invoice, and its PO (or none);
//! 2. header and price exceptions, local to an invoice and its PO;
//! 3. per PO line: `received_qty`, and `billed_to_date` in (`invoice_date`,
//!    `invoice_id`) order — one reduce per PO, so a receipt or invoice of three
//!    lines replays one group, not three;
//! 4. quantity exceptions from those per-line facts;
//! 5. duplicates per (tenant, vendor, normalized invoice number) group;
//! 6. the output rows. `po_lines` is not arranged again: its rows are the
//!    per-PO facts of step 3, whose PO keys sort by tenant (see
//!    [`po_key`]), so readers seek one tenant there.

use std::sync::Arc;

use differential_dataflow::operators::arrange::{Arranged, TraceAgent};
use differential_dataflow::trace::implementations::{ValBuilder, ValSpine};
use differential_dataflow::VecCollection;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::model::*;
use crate::rows::*;
use crate::rules::{self, LineQuantities, Raised};

/// A collection of the graph, at logical time [`Time`], with integer multiplicities.
pub type Collection<'s, D> = VecCollection<'s, Time, D, isize>;

/// An arrangement keyed by `K` with values `V`.
pub type KeyedArrangement<'s, K, V> = Arranged<'s, TraceAgent<ValSpine<K, V, Time, isize>>>;

/// The present documents the graph matches.
pub struct Documents<'s> {
    pub purchase_orders: Collection<'s, (Fingerprint, Arc<PurchaseOrder>)>,
    pub goods_receipts: Collection<'s, (Fingerprint, Arc<GoodsReceipt>)>,
    pub invoices: Collection<'s, (Fingerprint, Arc<Invoice>)>,
    pub match_policies: Collection<'s, (Fingerprint, Arc<MatchPolicy>)>,
}

/// The output collections of SPEC §3, keyed by `tenant_id` — except
/// `po_lines`, which is the arrangement of per-PO facts its rows live in.
pub struct MatchOutputs<'s> {
    pub invoice_matches: Collection<'s, (Text, InvoiceMatchRow)>,
    pub match_exceptions: Collection<'s, (Text, ExceptionRow)>,
    /// Keyed by PO; the `po_lines` rows are its [`LineFact::Row`] values.
    pub po_lines: KeyedArrangement<'s, Fingerprint, LineFact>,
    pub exception_summary: Collection<'s, (Text, ExceptionSummaryRow)>,
}

/// An active invoice with everything its header and price rules need.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct InvoiceContext {
    pub invoice: Arc<Invoice>,
    pub tolerances: Tolerances,
    /// The PO the invoice names, if it exists.
    pub po: Option<Arc<PurchaseOrder>>,
}

/// What happens on one PO: the PO itself, receipt lines, and billing.
///
/// The variant order matters: a PO's reduce sees the PO first, then receipt
/// lines, then billing entries in (`invoice_date`, `invoice_id`) order.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PoActivity {
    /// The PO.
    Ordered(Arc<PurchaseOrder>),
    /// A receipt line: the PO line and its quantity (negative for returns).
    Received(u32, Decimal),
    /// An active invoice or credit memo line.
    Billed(BillingEntry),
}

/// One active invoice's line on a PO line, in billing order.
///
/// Field order is the billing order: (`invoice_date`, `invoice_id`) first, so
/// entries sorted by value are sorted for `billed_to_date` on every line.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BillingEntry {
    pub invoice_date: i32,
    pub invoice_id: Text,
    pub invoice: Fingerprint,
    pub kind: InvoiceKind,
    /// Positive for invoices, negative for credit memos.
    pub signed_quantity: Decimal,
    pub po_line_no: u32,
}

/// Builds the matching graph over the present documents.
pub fn three_way_match<'s>(
    documents: Documents<'s>,
    default_tolerances: Tolerances,
) -> MatchOutputs<'s> {
    let Documents {
        purchase_orders,
        goods_receipts,
        invoices,
        match_policies,
    } = documents;

    let active_invoices = invoices.clone().filter(|(_, invoice)| invoice.is_active());
    let purchase_orders = purchase_orders.arrange_by_key();

    // 1. Every active invoice with its effective tolerances and its PO, if any.
    let with_tolerances =
        effective_tolerances(active_invoices.clone(), match_policies, default_tolerances);
    let contexts = invoice_contexts(with_tolerances, &purchase_orders);

    // 2. Exceptions local to an invoice and its PO.
    let local_exceptions = contexts.clone().flat_map(|(id, context)| {
        let mut raised = Vec::new();
        rules::header_exceptions(
            &context.invoice,
            context.po.as_deref(),
            &context.tolerances,
            &mut raised,
        );
        if let Some(po) = &context.po {
            rules::line_exceptions(&context.invoice, po, &context.tolerances, &mut raised);
        }
        raised
            .into_iter()
            .map(move |r| (id, (context.invoice.clone(), r)))
    });

    // 3. Per PO line: what was ordered, received and billed.
    let po_activity =
        po_activity(&purchase_orders, goods_receipts, active_invoices.clone()).arrange_by_key();
    let line_facts = line_facts(&po_activity);
    let billing = line_facts
        .clone()
        .flat_map_ref(|_, fact| match fact {
            LineFact::Billed(invoice, quantities) => Some((*invoice, quantities.clone())),
            LineFact::Row(_) => None,
        })
        .arrange_by_key();

    // 4. Quantity exceptions of each billed line, under its invoice's
    //    tolerances. Per change: a join by invoice, O(the invoice's lines).
    let contexts = contexts.arrange_by_key();
    let quantity_exceptions = billing.join_core(contexts, |id, quantities, context| {
        let mut raised = Vec::new();
        rules::quantity_exceptions(quantities, &context.tolerances, &mut raised);
        let id = *id;
        let invoice = context.invoice.clone();
        raised.into_iter().map(move |r| (id, (invoice.clone(), r)))
    });

    // 5. Duplicates.
    let duplicate_exceptions = duplicates(active_invoices);

    let exceptions = local_exceptions
        .concat(quantity_exceptions)
        .concat(duplicate_exceptions);

    // 6. Output rows.
    MatchOutputs {
        invoice_matches: invoice_match_rows(invoices, exceptions.clone()),
        exception_summary: exception_summary_rows(exceptions.clone()),
        match_exceptions: exceptions.map(|(_, (invoice, raised))| {
            let row = exception_row(&invoice, raised);
            (row.tenant_id.clone(), row)
        }),
        po_lines: line_facts,
    }
}

/// Each active invoice paired with its tenant's tolerances: the tenant's policy
/// field by field over `default`, or `default` for a tenant without a policy.
///
/// Per change: an invoice change is one lookup of its tenant's policy; a
/// policy change re-pairs every active invoice of its tenant, once —
/// O(invoices of the tenant), which SPEC §2 makes inherent (every invoice is
/// re-checked under the new tolerances).
fn effective_tolerances<'s>(
    active_invoices: Collection<'s, (Fingerprint, Arc<Invoice>)>,
    match_policies: Collection<'s, (Fingerprint, Arc<MatchPolicy>)>,
    default: Tolerances,
) -> Collection<'s, (Fingerprint, (Arc<Invoice>, Tolerances))> {
    let tenant_tolerances = match_policies
        .map(move |(tenant, policy)| (tenant, policy.resolve(&default)))
        .arrange_by_key();
    let by_tenant = active_invoices
        .map(|(id, invoice)| (tenant_key(&invoice.tenant_id), (id, invoice)))
        .arrange_by_key();
    left_join(&by_tenant, &tenant_tolerances)
        .map(move |(_, (id, invoice), tolerances)| (id, (invoice, tolerances.unwrap_or(default))))
}

/// Each active invoice with its tolerances and the PO it names (or `None`).
///
/// Per change: an invoice change is one lookup of its PO; a PO change (an
/// amendment) re-pairs every active invoice naming it — O(invoices on the
/// PO), inherent: their price and header checks read the PO's lines.
fn invoice_contexts<'s>(
    with_tolerances: Collection<'s, (Fingerprint, (Arc<Invoice>, Tolerances))>,
    purchase_orders: &KeyedArrangement<'s, Fingerprint, Arc<PurchaseOrder>>,
) -> Collection<'s, (Fingerprint, InvoiceContext)> {
    let by_po = with_tolerances
        .map(|(id, (invoice, tolerances))| (invoice.po_key(), (id, invoice, tolerances)))
        .arrange_by_key();
    left_join(&by_po, purchase_orders).map(|(_, (id, invoice, tolerances), po)| {
        (
            id,
            InvoiceContext {
                invoice,
                tolerances,
                po,
            },
        )
    })
}

/// Every `(key, value)` of `left` with the value `right` holds for its key, or
/// `None`. `right` must hold at most one value per key (it does here: both
/// sides it is used with are keyed by document identity).
///
/// Written with one join: the pairs without a match are `left` minus the
/// left sides of the matched pairs. `antijoin` would arrange `left` (and the
/// keys of `right`) a second time.
fn left_join<'s, K, V, W>(
    left: &KeyedArrangement<'s, K, V>,
    right: &KeyedArrangement<'s, K, W>,
) -> Collection<'s, (K, V, Option<W>)>
where
    K: differential_dataflow::ExchangeData + differential_dataflow::Hashable,
    V: differential_dataflow::ExchangeData,
    W: differential_dataflow::ExchangeData,
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

/// Everything that happens on each PO, keyed by the PO.
fn po_activity<'s>(
    purchase_orders: &KeyedArrangement<'s, Fingerprint, Arc<PurchaseOrder>>,
    goods_receipts: Collection<'s, (Fingerprint, Arc<GoodsReceipt>)>,
    active_invoices: Collection<'s, (Fingerprint, Arc<Invoice>)>,
) -> Collection<'s, (Fingerprint, PoActivity)> {
    let ordered = purchase_orders
        .clone()
        .as_collection(|key, po| (*key, PoActivity::Ordered(po.clone())));
    let received = goods_receipts.flat_map(|(_, receipt)| {
        let po = po_key(&receipt.tenant_id, &receipt.po_number);
        (0..receipt.lines.len()).map(move |index| {
            let line = &receipt.lines[index];
            (po, PoActivity::Received(line.po_line_no, line.quantity))
        })
    });
    let billed = active_invoices.flat_map(|(id, invoice)| {
        let po = invoice.po_key();
        (0..invoice.lines.len()).map(move |index| {
            let line = &invoice.lines[index];
            let entry = BillingEntry {
                invoice_date: invoice.invoice_date,
                invoice_id: invoice.invoice_id.clone(),
                invoice: id,
                kind: invoice.kind,
                signed_quantity: invoice.signed_quantity(line),
                po_line_no: line.po_line_no,
            };
            (po, PoActivity::Billed(entry))
        })
    });
    ordered.concat(received).concat(billed)
}

/// What one PO's reduce derives: a `po_lines` row per line, and for each
/// billed invoice line the quantities its quantity rules need.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum LineFact {
    /// A line's `po_lines` row.
    Row(PoLineRow),
    /// An active `kind = invoice` line on a PO line, with its `billed_to_date`.
    Billed(Fingerprint, LineQuantities),
}

/// Running totals of one PO line while a PO's activity is replayed.
#[derive(Clone, Copy, Default)]
struct LineTotals {
    received_qty: Decimal,
    billed_to_date: Decimal,
    invoice_count: u32,
}

/// Per line of a present PO: its `po_lines` row, and for each active
/// `kind = invoice` line billed on it, its `billed_to_date` (in (`invoice_date`,
/// `invoice_id`) order) with the line's ordered and received quantities.
///
/// One reduce per PO derives both: receipts and invoices touch about three
/// lines of one PO, and one group per PO replays them once instead of three
/// times (the per-key cost of a reduce dominated when it was keyed by line).
/// Receipt and invoice lines naming a line the PO does not have are ignored.
///
/// Per change: O(the PO's activity) — every receipt line and billing entry
/// of the PO is replayed, and every `po_lines` row and `billed_to_date` of
/// the PO is re-emitted (differential then retracts what did not change).
/// This grows with the PO: a blanket PO with thousands of invoices pays for
/// all of them on each one (issue 19 replaces it with per-line sums and an
/// incremental prefix sum).
fn line_facts<'s>(
    activity: &KeyedArrangement<'s, Fingerprint, PoActivity>,
) -> KeyedArrangement<'s, Fingerprint, LineFact> {
    activity
        .clone()
        .reduce_abelian::<_, ValBuilder<_, _, _, _>, ValSpine<Fingerprint, LineFact, Time, isize>, _, _>(
            "po line facts",
            |_, activity, output| {
                // The PO sorts first (`PoActivity`'s variant order); without it,
                // no line exists.
                let Some((PoActivity::Ordered(po), _)) = activity.first() else { return };
                let line_index = |line_no: u32| {
                    po.lines.binary_search_by_key(&line_no, |line| line.line_no).ok()
                };
                let mut totals = vec![LineTotals::default(); po.lines.len()];
                // Receipts sort before billing, so `received_qty` is final
                // before the first billing entry is seen.
                for (entry, count) in activity {
                    if let PoActivity::Received(line_no, quantity) = entry {
                        if let Some(index) = line_index(*line_no) {
                            totals[index].received_qty += *quantity * Decimal::from(*count);
                        }
                    }
                }
                // Billing entries arrive sorted by (invoice_date, invoice_id).
                for (entry, count) in activity {
                    let PoActivity::Billed(billing) = entry else { continue };
                    let Some(index) = line_index(billing.po_line_no) else { continue };
                    let line = &mut totals[index];
                    line.billed_to_date += billing.signed_quantity * Decimal::from(*count);
                    line.invoice_count += *count as u32;
                    let quantity_rules_apply = ExceptionType::QUANTITY
                        .iter()
                        .any(|rule| rule.applies_to(billing.kind));
                    if quantity_rules_apply {
                        let quantities = LineQuantities {
                            po_line_no: billing.po_line_no,
                            receipt_required: po.receipt_required,
                            ordered_qty: po.lines[index].quantity,
                            received_qty: line.received_qty,
                            billed_to_date: line.billed_to_date,
                        };
                        output.push((LineFact::Billed(billing.invoice, quantities), 1));
                    }
                }
                for (line, totals) in po.lines.iter().zip(totals) {
                    let row = PoLineRow {
                        tenant_id: po.tenant_id.clone(),
                        po_number: po.po_number.clone(),
                        line_no: line.line_no,
                        vendor_id: po.vendor_id.clone(),
                        currency: po.currency,
                        po_status: po.status,
                        sku: line.sku.clone(),
                        ordered_qty: line.quantity,
                        unit_price: line.unit_price,
                        received_qty: totals.received_qty,
                        billed_qty: totals.billed_to_date,
                        invoice_count: totals.invoice_count,
                    };
                    output.push((LineFact::Row(row), 1));
                }
            },
            |buffer, key, updates| {
                buffer.clear();
                buffer.extend(updates.drain(..).map(|(v, t, r)| ((*key, v), t, r)));
            },
        )
}

/// An invoice in its duplicate group, ordered as SPEC §2 orders invoices: by
/// (`invoice_date`, `invoice_id`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct DuplicateCandidate {
    invoice_date: i32,
    invoice_id: Text,
    id: Fingerprint,
    invoice: Arc<Invoice>,
}

/// `DUPLICATE_INVOICE`: within each (tenant, vendor, normalized invoice number)
/// group of active invoices, every one but the first in (`invoice_date`,
/// `invoice_id`) order.
///
/// Per change: O(the duplicate group) — the invoices sharing one vendor and
/// normalized number, one or two in practice; which one is the original
/// depends on all of them, so reading the group is inherent.
fn duplicates<'s>(
    active_invoices: Collection<'s, (Fingerprint, Arc<Invoice>)>,
) -> Collection<'s, (Fingerprint, (Arc<Invoice>, Raised))> {
    active_invoices
        .filter(|(_, invoice)| ExceptionType::DuplicateInvoice.applies_to(invoice.kind))
        .map(|(id, invoice)| {
            let group = duplicate_group_key(
                &invoice.tenant_id,
                &invoice.vendor_id,
                &invoice.invoice_number,
            );
            let candidate = DuplicateCandidate {
                invoice_date: invoice.invoice_date,
                invoice_id: invoice.invoice_id.clone(),
                id,
                invoice,
            };
            (group, candidate)
        })
        .reduce_named("duplicates", |_, group, output| {
            let original = &group[0].0.invoice_id;
            for (candidate, _) in &group[1..] {
                let duplicate = (candidate.id, candidate.invoice.clone(), original.clone());
                output.push((duplicate, 1));
            }
        })
        .map(|(_, (id, invoice, original))| {
            let raised = rules::duplicate_exception(&invoice, &original);
            (id, (invoice, raised))
        })
}

/// A `match_exceptions` row.
fn exception_row(invoice: &Invoice, raised: Raised) -> ExceptionRow {
    ExceptionRow {
        tenant_id: invoice.tenant_id.clone(),
        invoice_id: invoice.invoice_id.clone(),
        po_number: invoice.po_number.clone(),
        vendor_id: invoice.vendor_id.clone(),
        po_line_no: raised.po_line_no,
        exception_type: raised.exception_type,
        expected: raised.expected,
        actual: raised.actual,
        detail: raised.detail,
    }
}

/// What the per-invoice reduce of `invoice_matches` sees: the document and the
/// severity of each exception raised for it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
enum InvoiceFact {
    Document(Arc<Invoice>),
    Raised(Severity),
}

/// One `invoice_matches` row per present invoice, with its exception counts.
///
/// Per change: O(the invoice's exceptions), keyed by invoice — independent of
/// its PO, vendor or tenant.
fn invoice_match_rows<'s>(
    invoices: Collection<'s, (Fingerprint, Arc<Invoice>)>,
    exceptions: Collection<'s, (Fingerprint, (Arc<Invoice>, Raised))>,
) -> Collection<'s, (Text, InvoiceMatchRow)> {
    let documents = invoices.map(|(id, invoice)| (id, InvoiceFact::Document(invoice)));
    let severities = exceptions
        .map(|(id, (_, raised))| (id, InvoiceFact::Raised(raised.exception_type.severity())));
    documents
        .concat(severities)
        .reduce_named("invoice_matches", |_, facts, output| {
            let InvoiceFact::Document(invoice) = facts[0].0 else {
                return; // exceptions of an invoice that is no longer present
            };
            let mut exception_count = 0u32;
            let mut blocking_count = 0u32;
            for (fact, count) in &facts[1..] {
                if let InvoiceFact::Raised(severity) = fact {
                    exception_count += *count as u32;
                    if *severity == Severity::Blocking {
                        blocking_count += *count as u32;
                    }
                }
            }
            let status = if !invoice.is_active() {
                MatchStatus::Cancelled
            } else if blocking_count > 0 {
                MatchStatus::Exception
            } else {
                MatchStatus::Matched
            };
            let row = InvoiceMatchRow {
                tenant_id: invoice.tenant_id.clone(),
                invoice_id: invoice.invoice_id.clone(),
                invoice_number: invoice.invoice_number.clone(),
                kind: invoice.kind,
                vendor_id: invoice.vendor_id.clone(),
                po_number: invoice.po_number.clone(),
                currency: invoice.currency,
                invoice_date: invoice.invoice_date,
                status,
                line_count: invoice.lines.len() as u32,
                invoice_amount: invoice.invoice_amount(),
                exception_count,
                blocking_count,
            };
            output.push((row, 1));
        })
        .map(|(_, row)| (row.tenant_id.clone(), row))
}

/// One `exception_summary` row per (tenant, exception type) that has exceptions.
///
/// Per change: O(1) in the size of the (tenant, type) group. `count` keeps
/// one accumulated number per group (its reduce sees a single `()` value with
/// the summed multiplicity), and the distinct invoices are counted the same
/// way after a `distinct` per (group, invoice), which reads only that
/// invoice's exceptions of the type; the two counts meet in a join of
/// single-valued keys. A reduce over the group's membership read every
/// invoice of the tenant with that type, on every change.
fn exception_summary_rows<'s>(
    exceptions: Collection<'s, (Fingerprint, (Arc<Invoice>, Raised))>,
) -> Collection<'s, (Text, ExceptionSummaryRow)> {
    let by_group = exceptions
        .map(|(id, (invoice, raised))| ((invoice.tenant_id.clone(), raised.exception_type), id));
    let exception_counts = by_group.clone().map(|(group, _)| group).count();
    let invoice_counts = by_group.distinct().map(|(group, _)| group).count();
    exception_counts.join_map(
        invoice_counts,
        |(tenant_id, exception_type), exception_count, invoice_count| {
            let row = ExceptionSummaryRow {
                tenant_id: tenant_id.clone(),
                exception_type: *exception_type,
                exception_count: *exception_count as u64,
                invoice_count: *invoice_count as u64,
            };
            (row.tenant_id.clone(), row)
        },
    )
}
