//! Per PO line: what was ordered, received and billed (SPEC §2 linking, §3
//! `po_lines`), and each invoice line's `billed_to_date`.
//!
//! Every quantity here is kept per PO line, and no change reads a line's whole
//! history:
//! * `received_qty`, `accepted_qty`, `billed_qty` and `invoice_count` are sums, carried as the
//!   *differences* of one collection ([`LineTotals`]), so that differential
//!   adds them up as it consolidates and `count_total` reports one total per
//!   line — O(1) per PO, receipt or invoice line;
//! * a `po_lines` row is the PO joined with one line's totals, so a change on
//!   one line rebuilds that line's row alone;
//! * `billed_to_date` is a running sum in (`invoice_date`, `invoice_id`)
//!   order, kept by [`running_sums`] — O(log n) per invoice, plus the later
//!   invoices whose totals really change.

use std::sync::Arc;

use differential_dataflow::difference::{Abelian, IsZero, Monoid, Multiply, Semigroup};
use differential_dataflow::operators::CountTotal;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::model::*;
use crate::operators::{running_sums, Collection, KeyedArrangement};
use crate::rows::PoLineRow;
use crate::rules::LineQuantities;

/// A PO line: its PO's key and its `line_no`.
pub type LineKey = (Fingerprint, u32);

/// One active invoice's line on a PO line, in billing order.
///
/// Field order is the billing order: (`invoice_date`, `invoice_id`) first, so
/// entries sorted by value are in the order `billed_to_date` sums them.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BillingEntry {
    pub invoice_date: i32,
    pub invoice_id: Text,
    pub invoice: Fingerprint,
    pub kind: InvoiceKind,
    /// Positive for invoices, negative for credit memos.
    pub signed_quantity: Decimal,
}

/// The sums over one PO line, as a difference type: the present PO's line
/// contributes one to `ordered_lines`, a receipt line its quantity to
/// `received_qty` and its accepted quantity to `accepted_qty`, an active invoice or credit memo line its signed quantity
/// to `billed_qty` and one to `invoice_count`. Differential adds the
/// contributions of a line up; every line of a present PO has totals (its
/// `ordered_lines` is 1), so its row needs no left join.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct LineTotals {
    pub ordered_lines: i64,
    pub received_qty: Decimal,
    pub accepted_qty: Decimal,
    pub billed_qty: Decimal,
    pub invoice_count: i64,
}

impl IsZero for LineTotals {
    fn is_zero(&self) -> bool {
        self.ordered_lines == 0
            && self.received_qty.is_zero()
            && self.accepted_qty.is_zero()
            && self.billed_qty.is_zero()
            && self.invoice_count == 0
    }
}

impl Semigroup for LineTotals {
    fn plus_equals(&mut self, other: &Self) {
        self.ordered_lines += other.ordered_lines;
        self.received_qty += other.received_qty;
        self.accepted_qty += other.accepted_qty;
        self.billed_qty += other.billed_qty;
        self.invoice_count += other.invoice_count;
    }
}

impl Monoid for LineTotals {
    fn zero() -> Self {
        Self::default()
    }
}

impl Abelian for LineTotals {
    fn negate(&mut self) {
        self.ordered_lines = -self.ordered_lines;
        self.received_qty = -self.received_qty;
        self.accepted_qty = -self.accepted_qty;
        self.billed_qty = -self.billed_qty;
        self.invoice_count = -self.invoice_count;
    }
}

/// A multiplicity scales a contribution (a retraction subtracts it).
impl Multiply<isize> for LineTotals {
    type Output = Self;
    fn multiply(self, count: &isize) -> Self {
        let factor = Decimal::from(*count);
        LineTotals {
            ordered_lines: self.ordered_lines * *count as i64,
            received_qty: self.received_qty * factor,
            accepted_qty: self.accepted_qty * factor,
            billed_qty: self.billed_qty * factor,
            invoice_count: self.invoice_count * *count as i64,
        }
    }
}

/// A line of a present PO with its totals: what its `po_lines` row is made
/// of. The row (a dozen columns, most of them the PO's) is built when it is
/// read ([`PoLineFacts::to_row`]); held per line it was the widest value of the
/// graph, beside a PO that already holds its fields.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PoLineFacts {
    /// The line's position in `po.lines`: in range by construction.
    index: u32,
    totals: LineTotals,
    po: Arc<PurchaseOrder>,
}

impl PoLineFacts {
    /// The facts of the line with `line_no`, if the PO has one.
    fn of(po: &Arc<PurchaseOrder>, line_no: u32, totals: LineTotals) -> Option<Self> {
        let index = po.line_index(line_no)?;
        Some(PoLineFacts {
            index: index as u32,
            totals,
            po: po.clone(),
        })
    }

    /// The PO the line belongs to.
    pub fn po(&self) -> &PurchaseOrder {
        &self.po
    }

    /// The line.
    pub fn line(&self) -> &PoLine {
        &self.po.lines[self.index as usize]
    }

    /// Its `po_lines` row.
    pub fn to_row(&self) -> PoLineRow {
        po_line_row(&self.po, self.line(), &self.totals)
    }
}

/// What the quantity rules need of a PO line besides `billed_to_date`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct LineReceipts {
    /// The line's effective match level (§12.2).
    match_level: MatchLevel,
    /// The PO line's category: which policies its invoice lines read (§12.1).
    category: Option<Text>,
    ordered_qty: Decimal,
    received_qty: Decimal,
    accepted_qty: Decimal,
}

/// What the graph derives per PO line.
pub struct LineOutputs<'s> {
    /// The lines of the `po_lines` rows, keyed by PO (whose keys sort by tenant).
    pub po_lines: KeyedArrangement<'s, Fingerprint, PoLineFacts>,
    /// For each active `kind = invoice` line on a line of a present PO, keyed
    /// by invoice: the quantities its quantity rules read.
    pub billed_lines: KeyedArrangement<'s, Fingerprint, LineQuantities>,
}

/// Every line of every present PO, with its totals, its `po_lines` row, and
/// the quantities of each invoice line billed on it. Receipt and invoice
/// lines naming a line the PO does not have count towards no row.
pub fn po_lines<'s>(
    purchase_orders: &KeyedArrangement<'s, Fingerprint, Arc<PurchaseOrder>>,
    goods_receipts: Collection<'s, (Fingerprint, Arc<GoodsReceipt>)>,
    active_invoices: Collection<'s, (Fingerprint, Arc<Invoice>)>,
) -> LineOutputs<'s> {
    let billing = billing_entries(active_invoices);
    let totals = line_totals(purchase_orders, goods_receipts, billing.clone())
        .map(|((po_key, line_no), totals)| (po_key, (line_no, totals)))
        .arrange_by_key_named("line totals");
    // Per change: one line's totals meet its PO — O(1); a PO change re-derives
    // its own lines, O(its lines). Lines with receipts or billing but no PO
    // line find none.
    let lines = purchase_orders
        .clone()
        .join_core(totals, |po_key, po, (line_no, totals)| {
            PoLineFacts::of(po, *line_no, *totals).map(|facts| (*po_key, facts))
        });
    let po_lines = lines.clone().arrange_by_key_named("po_lines");
    // Only what the quantity rules read: a change of a line's billing alone
    // leaves these values as they were, and consolidates away before the join.
    let receipts = lines
        .map(|(po_key, facts)| {
            let line = facts.line();
            let receipts = LineReceipts {
                match_level: facts.po.match_level(line),
                category: line.category.clone(),
                ordered_qty: line.quantity,
                received_qty: facts.totals.received_qty,
                accepted_qty: facts.totals.accepted_qty,
            };
            ((po_key, line.line_no), receipts)
        })
        .arrange_by_key_named("line receipts");
    // Per change: an invoice line meets its PO line's receipts — O(1); a
    // receipt (or PO) change re-checks every invoice line billed on that PO
    // line, O(invoices on the line), inherent: each one's rules read
    // `received_qty`.
    let billed_lines = billed_to_date(billing)
        .arrange_by_key_named("billed_to_date by line")
        .join_core(
            receipts,
            |(_, line_no), (invoice, billed_to_date), receipts| {
                let quantities = LineQuantities {
                    po_line_no: *line_no,
                    match_level: receipts.match_level,
                    category: receipts.category.clone(),
                    ordered_qty: receipts.ordered_qty,
                    received_qty: receipts.received_qty,
                    accepted_qty: receipts.accepted_qty,
                    billed_to_date: *billed_to_date,
                };
                Some((*invoice, quantities))
            },
        )
        .arrange_by_key_named("billed lines");
    LineOutputs {
        po_lines,
        billed_lines,
    }
}

/// Every line of every active invoice and credit memo, keyed by the PO line
/// it bills.
fn billing_entries<'s>(
    active_invoices: Collection<'s, (Fingerprint, Arc<Invoice>)>,
) -> Collection<'s, (LineKey, BillingEntry)> {
    active_invoices.flat_map(|(id, invoice)| {
        let po = invoice.po_key();
        (0..invoice.lines.len()).map(move |index| {
            let line = &invoice.lines[index];
            let entry = BillingEntry {
                invoice_date: invoice.invoice_date,
                invoice_id: invoice.invoice_id.clone(),
                invoice: id,
                kind: invoice.kind,
                signed_quantity: invoice.signed_quantity(line),
            };
            ((po, line.po_line_no), entry)
        })
    })
}

/// The [`LineTotals`] of every line of a present PO, and of every PO line
/// with receipts or billing (whether or not its PO has it).
///
/// Per change: O(1) per document line — each adds its contribution as a
/// difference, and `count_total` keeps one accumulated value per line.
fn line_totals<'s>(
    purchase_orders: &KeyedArrangement<'s, Fingerprint, Arc<PurchaseOrder>>,
    goods_receipts: Collection<'s, (Fingerprint, Arc<GoodsReceipt>)>,
    billing: Collection<'s, (LineKey, BillingEntry)>,
) -> Collection<'s, (LineKey, LineTotals)> {
    let ordered = purchase_orders
        .clone()
        .as_collection(|key, po| (*key, po.clone()))
        .explode(|(key, po)| {
            let lines: Vec<_> = po
                .lines
                .iter()
                .map(|line| {
                    let totals = LineTotals {
                        ordered_lines: 1,
                        ..LineTotals::default()
                    };
                    ((key, line.line_no), totals)
                })
                .collect();
            lines
        });
    let received = goods_receipts.explode(|(_, receipt)| {
        let po = po_key(&receipt.tenant_id, &receipt.po_number);
        let lines: Vec<_> = receipt
            .lines
            .iter()
            .map(|line| {
                let totals = LineTotals {
                    received_qty: line.quantity,
                    accepted_qty: line.accepted_quantity,
                    ..LineTotals::default()
                };
                ((po, line.po_line_no), totals)
            })
            .collect();
        lines
    });
    let billed = billing.explode(|(key, entry)| {
        let totals = LineTotals {
            billed_qty: entry.signed_quantity,
            invoice_count: 1,
            ..LineTotals::default()
        };
        Some((key, totals))
    });
    ordered.concat(received).concat(billed).count_total()
}

/// `billed_to_date` of every active `kind = invoice` line (the lines the
/// quantity rules check), keyed by the PO line it bills: the signed sum over
/// the line's active invoices and credit memos up to and including it in
/// (`invoice_date`, `invoice_id`) order.
///
/// Per change: O(log n) in the invoices on the line, plus one change per
/// later invoice whose `billed_to_date` really moves (none for an invoice
/// dated after all others; k for one back-dated before k others).
fn billed_to_date<'s>(
    billing: Collection<'s, (LineKey, BillingEntry)>,
) -> Collection<'s, (LineKey, (Fingerprint, Decimal))> {
    let checked = |entry: &BillingEntry| {
        ExceptionType::QUANTITY
            .iter()
            .any(|rule| rule.applies_to(entry.kind))
    };
    running_sums(
        "billed_to_date",
        billing,
        |entry: &BillingEntry| entry.signed_quantity,
        move |line: &LineKey, entry: &BillingEntry| {
            checked(entry).then_some((*line, entry.invoice))
        },
    )
    .map(|((line, invoice), billed_to_date)| (line, (invoice, billed_to_date)))
}

/// The `po_lines` row of one PO line.
fn po_line_row(po: &PurchaseOrder, line: &PoLine, totals: &LineTotals) -> PoLineRow {
    PoLineRow {
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
        billed_qty: totals.billed_qty,
        invoice_count: totals.invoice_count as u32,
        match_level: po.match_level(line),
        category: line.category.clone(),
        accepted_qty: totals.accepted_qty,
    }
}
