//! A synthetic accounts-payable workload: tenants and vendors, POs of 1–N
//! lines, receipts (partial, and returns), invoices (clean matches, price and
//! quantity variances, duplicates, credit memos, cancellations), analysts'
//! resolutions of their exceptions (`generate/resolutions.rs`), payments
//! (`generate/payments.rs`), tolerance policies at every scope
//! (`generate/policies.rs`), four-way POs whose receipts carry inspection
//! results, updates and deletes,
//! documents that arrive before the ones they refer to, and an adjustable
//! share of bad messages. Deterministic for a given seed.
//!
//! It yields messages in the upsert envelope, keyed by document identity (a
//! JSON object), exactly as an upstream producer would send them.

use std::collections::VecDeque;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use trimatch_dataflows::model::DocumentKind;

mod malformed;
mod payments;
mod policies;
mod resolutions;

/// The shape of a workload.
#[derive(Clone, Debug)]
pub struct WorkloadConfig {
    pub seed: u64,
    pub tenants: usize,
    pub vendors_per_tenant: usize,
    /// POs have 1 to this many lines.
    pub max_po_lines: usize,
    /// The share of messages (0–1) that are malformed and must be dead-lettered.
    pub bad_share: f64,
    /// How many of its recent POs a tenant keeps referring to; bounds memory
    /// on long runs.
    pub live_pos_per_tenant: usize,
    /// The share of messages (0–[`DEFAULT_POLICY_SHARE`]) that change a tenant's
    /// match policy. A policy change re-evaluates every invoice of its tenant,
    /// so benchmarks of steady-state matching keep it rare; the rest of its
    /// default share goes to invoices.
    pub policy_share: f64,
    /// The share of messages (0–1) that are payments (SPEC §8). The rest keep
    /// their proportions: POs, receipts, invoices, amendments, cancellations,
    /// resolutions, policies.
    pub payment_share: f64,
}

/// How many messages are payments by default: about one per four invoices.
pub const DEFAULT_PAYMENT_SHARE: f64 = 5.0 / 108.0;

/// How often policies change by default: often enough that tests see tenants
/// gain, change and lose policies while invoices flow.
pub const DEFAULT_POLICY_SHARE: f64 = 0.03;

impl Default for WorkloadConfig {
    fn default() -> Self {
        WorkloadConfig {
            seed: 1,
            tenants: 5,
            vendors_per_tenant: 20,
            max_po_lines: 5,
            bad_share: 0.01,
            live_pos_per_tenant: 2_000,
            policy_share: DEFAULT_POLICY_SHARE,
            payment_share: DEFAULT_PAYMENT_SHARE,
        }
    }
}

/// One message for an input topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeneratedMessage {
    pub kind: DocumentKind,
    pub key: Option<Vec<u8>>,
    /// `None` is a tombstone.
    pub value: Option<Vec<u8>>,
    /// Whether the generator meant it to be rejected.
    pub malformed: bool,
}

struct PoModel {
    number: String,
    vendor: String,
    currency: &'static str,
    lines: Vec<(u32, Decimal, Decimal)>,
    received: Vec<Decimal>,
    /// Quantities billed so far per line (invoices minus credit memos).
    billed: Vec<Decimal>,
    status: &'static str,
    receipt_required: bool,
    /// `Some("four_way")` for one PO in eight: its receipts carry inspection
    /// results, some partial (SPEC §12.2).
    match_level: Option<&'static str>,
    receipts: Vec<String>,
    invoices: Vec<InvoiceModel>,
}

#[derive(Clone)]
struct InvoiceModel {
    id: String,
    document: Value,
}

struct TenantModel {
    id: String,
    pos: VecDeque<PoModel>,
    next_po: u64,
    next_receipt: u64,
    next_invoice: u64,
    next_payment: u64,
}

/// The generator: an endless iterator of messages.
pub struct Workload {
    config: WorkloadConfig,
    rng: SmallRng,
    tenants: Vec<TenantModel>,
    /// Messages held back to arrive later than documents that refer to them.
    delayed: VecDeque<(u64, GeneratedMessage)>,
    emitted: u64,
}

impl Workload {
    pub fn new(config: WorkloadConfig) -> Self {
        let tenants = (0..config.tenants.max(1))
            .map(|index| TenantModel {
                id: format!("tenant-{index:03}"),
                pos: VecDeque::new(),
                next_po: 1,
                next_receipt: 1,
                next_invoice: 1,
                next_payment: 1,
            })
            .collect();
        Workload {
            rng: SmallRng::seed_from_u64(config.seed),
            config,
            tenants,
            delayed: VecDeque::new(),
            emitted: 0,
        }
    }

    /// From the next message on, `share` (0–1) of the messages are payments:
    /// a benchmark builds a state of invoices, then times payments alone.
    pub fn set_payment_share(&mut self, share: f64) {
        self.config.payment_share = share;
    }

    fn next_message(&mut self) -> GeneratedMessage {
        if let Some((due, _)) = self.delayed.front() {
            if *due <= self.emitted {
                return self.delayed.pop_front().expect("front exists").1;
            }
        }
        if self.rng.random_bool(self.config.bad_share.clamp(0.0, 1.0)) {
            return self.malformed();
        }
        let tenant = self.rng.random_range(0..self.tenants.len());
        let has_pos = !self.tenants[tenant].pos.is_empty();
        if has_pos
            && self
                .rng
                .random_bool(self.config.payment_share.clamp(0.0, 1.0))
        {
            return self.payment(tenant);
        }
        let roll = self.rng.random_range(0..103);
        match roll {
            _ if !has_pos => self.new_po(tenant),
            100.. => self.resolution(tenant),
            0..=19 => self.new_po(tenant),
            20..=39 => self.receipt(tenant),
            40..=79 => self.invoice(tenant),
            80..=86 => self.amend_po(tenant),
            87..=92 => self.cancel_or_delete_invoice(tenant),
            93..=96 => self.delete_receipt(tenant),
            _ => {
                let share = (self.config.policy_share / DEFAULT_POLICY_SHARE).clamp(0.0, 1.0);
                if self.rng.random_bool(share) {
                    self.policy(tenant)
                } else {
                    self.invoice(tenant)
                }
            }
        }
    }

    fn pick_po(&mut self, tenant: usize) -> usize {
        let count = self.tenants[tenant].pos.len();
        // Recent POs are busier than old ones.
        let back = (self.rng.random_range(0.0f64..1.0).powi(3) * count as f64) as usize;
        count - 1 - back.min(count - 1)
    }

    fn new_po(&mut self, tenant: usize) -> GeneratedMessage {
        let rng = &mut self.rng;
        let vendor = format!(
            "V-{:03}",
            rng.random_range(0..self.config.vendors_per_tenant.max(1))
        );
        let line_count = rng.random_range(1..=self.config.max_po_lines.max(1));
        let lines: Vec<(u32, Decimal, Decimal)> = (1..=line_count as u32)
            .map(|line_no| {
                let quantity = Decimal::from(rng.random_range(1..=50u32) * 10);
                let price = Decimal::new(rng.random_range(50..20_000), 2);
                (line_no, quantity, price)
            })
            .collect();
        let model = &mut self.tenants[tenant];
        let po = PoModel {
            number: format!("PO-{:06}", model.next_po),
            vendor,
            currency: if rng.random_range(0..10) == 0 {
                "EUR"
            } else {
                "USD"
            },
            received: vec![Decimal::ZERO; lines.len()],
            billed: vec![Decimal::ZERO; lines.len()],
            lines,
            status: "open",
            receipt_required: rng.random_range(0..10) != 0,
            match_level: (rng.random_range(0..8) == 0).then_some("four_way"),
            receipts: Vec::new(),
            invoices: Vec::new(),
        };
        model.next_po += 1;
        let message = po_message(&model.id, &po);
        model.pos.push_back(po);
        if model.pos.len() > self.config.live_pos_per_tenant.max(1) {
            model.pos.pop_front();
        }
        // One PO in ten arrives late: its receipts and invoices may come first.
        if self.rng.random_range(0..10) == 0 {
            let due = self.emitted + self.rng.random_range(2..40);
            let at = self.delayed.partition_point(|(other, _)| *other <= due);
            self.delayed.insert(at, (due, message));
            return self.receipt(tenant);
        }
        message
    }

    fn receipt(&mut self, tenant: usize) -> GeneratedMessage {
        let index = self.pick_po(tenant);
        let rng = &mut self.rng;
        let model = &mut self.tenants[tenant];
        let receipt_id = format!("GR-{:06}", model.next_receipt);
        model.next_receipt += 1;
        let po = &mut model.pos[index];
        let mut lines = Vec::new();
        for (position, (line_no, ordered, _)) in po.lines.iter().enumerate() {
            if rng.random_range(0..3) == 0 && !lines.is_empty() {
                continue;
            }
            let outstanding = *ordered - po.received[position];
            let quantity = if outstanding > Decimal::ZERO && rng.random_range(0..12) != 0 {
                // Partial or full delivery.
                let share = Decimal::new(rng.random_range(3..=10), 1);
                (outstanding * share).round_dp(0).max(Decimal::ONE)
            } else if po.received[position] > Decimal::ZERO {
                // A return to vendor.
                -(po.received[position] / Decimal::TWO)
                    .round_dp(0)
                    .max(Decimal::ONE)
            } else {
                Decimal::ONE
            };
            po.received[position] += quantity;
            let mut line = json!({"po_line_no": line_no, "quantity": quantity.to_string()});
            if po.match_level == Some("four_way") && quantity > Decimal::ZERO {
                // Inspection accepts all of a delivery, part of it, or has
                // not looked yet (no accepted_quantity).
                let accepted = match rng.random_range(0..10) {
                    0..=6 => Some(quantity),
                    7 | 8 => Some((quantity / Decimal::TWO).floor()),
                    _ => None,
                };
                if let Some(accepted) = accepted {
                    line["accepted_quantity"] = accepted.to_string().into();
                }
            }
            lines.push(line);
        }
        po.receipts.push(receipt_id.clone());
        let day = rng.random_range(1..=28);
        document(
            DocumentKind::GoodsReceipt,
            json!({"tenant_id": model.id, "receipt_id": receipt_id}),
            json!({"tenant_id": model.id, "receipt_id": receipt_id, "po_number": po.number,
                   "received_at": format!("2026-10-{day:02}T09:30:00Z"), "lines": lines}),
        )
    }

    fn invoice(&mut self, tenant: usize) -> GeneratedMessage {
        let index = self.pick_po(tenant);
        let rng = &mut self.rng;
        let model = &mut self.tenants[tenant];
        let invoice_id = format!("INV-{:06}", model.next_invoice);
        model.next_invoice += 1;
        let tenant_id = model.id.clone();
        let po = &mut model.pos[index];
        let variant = rng.random_range(0..100);
        // A duplicate re-sends an earlier invoice's number under a new id.
        if variant < 5 {
            if let Some(original) = po.invoices.first().cloned() {
                let mut copy = original.document.clone();
                copy["invoice_id"] = json!(invoice_id);
                po.invoices.push(InvoiceModel {
                    id: invoice_id.clone(),
                    document: copy.clone(),
                });
                return document(
                    DocumentKind::Invoice,
                    invoice_key(&tenant_id, &invoice_id),
                    copy,
                );
            }
        }
        let kind = if variant < 10 {
            "credit_memo"
        } else {
            "invoice"
        };
        // Most invoices bill what was received and not billed yet, at the PO
        // price; some arrive before the goods, and a few carry variances.
        let mut lines = Vec::new();
        let mut amount = Decimal::ZERO;
        for (position, (line_no, ordered, price)) in po.lines.iter().enumerate() {
            let unbilled = po.received[position] - po.billed[position];
            let early = rng.random_range(0..20) == 0;
            let mut quantity = match kind {
                "credit_memo" if po.billed[position] > Decimal::ZERO => (po.billed[position]
                    / Decimal::from(4))
                .round_dp(0)
                .max(Decimal::ONE),
                "credit_memo" => continue,
                _ if unbilled > Decimal::ZERO => unbilled,
                _ if early => (*ordered / Decimal::TWO).round_dp(0).max(Decimal::ONE),
                _ => continue,
            };
            let mut unit_price = *price;
            match rng.random_range(0..100) {
                0..=5 => unit_price = (*price * Decimal::new(105, 2)).round_dp(2),
                6..=9 if kind == "invoice" => {
                    quantity = (quantity * Decimal::new(13, 1))
                        .round_dp(0)
                        .max(Decimal::TWO)
                }
                10 => unit_price = (*price * Decimal::new(1005, 3)).round_dp(4),
                _ => {}
            }
            if kind == "credit_memo" {
                po.billed[position] -= quantity;
            } else {
                po.billed[position] += quantity;
            }
            amount += quantity * unit_price;
            lines.push(
                json!({"po_line_no": line_no, "quantity": quantity.to_string(),
                              "unit_price": unit_price.to_string()}),
            );
        }
        if lines.is_empty() {
            // Nothing to bill yet: the goods come first.
            return self.receipt(tenant);
        }
        let tax = (amount * Decimal::new(8, 2)).round_dp(2);
        let mut total = amount + tax;
        if rng.random_range(0..40) == 0 {
            total += Decimal::new(rng.random_range(2..500), 2);
        }
        let vendor = if rng.random_range(0..50) == 0 {
            "V-UNKNOWN".to_string()
        } else {
            po.vendor.clone()
        };
        let po_number = match rng.random_range(0..40) {
            0 => format!("PO-MISSING-{}", rng.random_range(0..1000)),
            // Mistyped: `po 0000042` for `PO-000042` (PO suggestions find it).
            1 => format!(
                "po {}",
                po.number.trim_start_matches("PO-").replacen('0', "00", 1)
            ),
            _ => po.number.clone(),
        };
        let day = rng.random_range(1..=28);
        let value = json!({
            "tenant_id": tenant_id, "invoice_id": invoice_id, "kind": kind, "status": "active",
            "vendor_id": vendor, "invoice_number": format!("A-{}", rng.random_range(0..1_000_000)),
            "po_number": po_number, "currency": po.currency,
            "invoice_date": format!("2026-11-{day:02}"), "lines": lines,
            "tax": tax.to_string(), "freight": "0", "total": total.to_string(),
        });
        po.invoices.push(InvoiceModel {
            id: invoice_id.clone(),
            document: value.clone(),
        });
        document(
            DocumentKind::Invoice,
            invoice_key(&tenant_id, &invoice_id),
            value,
        )
    }

    fn amend_po(&mut self, tenant: usize) -> GeneratedMessage {
        let index = self.pick_po(tenant);
        let rng = &mut self.rng;
        let model = &mut self.tenants[tenant];
        let po = &mut model.pos[index];
        match rng.random_range(0..10) {
            0 => po.status = "closed",
            1 => po.status = "cancelled",
            2 => po.status = "open",
            _ => {
                let line = rng.random_range(0..po.lines.len());
                po.lines[line].2 =
                    (po.lines[line].2 * Decimal::new(rng.random_range(95..=110), 2)).round_dp(2);
                po.lines[line].1 += Decimal::from(rng.random_range(0..=20u32) * 5);
            }
        }
        po_message(&model.id, po)
    }

    fn cancel_or_delete_invoice(&mut self, tenant: usize) -> GeneratedMessage {
        let index = self.pick_po(tenant);
        let rng = &mut self.rng;
        let model = &mut self.tenants[tenant];
        let po = &mut model.pos[index];
        if po.invoices.is_empty() {
            return po_message(&model.id, po);
        }
        let which = rng.random_range(0..po.invoices.len());
        if rng.random_bool(0.5) {
            let invoice = po.invoices.remove(which);
            return tombstone(DocumentKind::Invoice, invoice_key(&model.id, &invoice.id));
        }
        let invoice = &mut po.invoices[which];
        invoice.document["status"] = json!("cancelled");
        document(
            DocumentKind::Invoice,
            invoice_key(&model.id, &invoice.id),
            invoice.document.clone(),
        )
    }

    fn delete_receipt(&mut self, tenant: usize) -> GeneratedMessage {
        let index = self.pick_po(tenant);
        let model = &mut self.tenants[tenant];
        let po = &mut model.pos[index];
        match po.receipts.pop() {
            // The model's received quantities keep counting it: later invoices
            // then over-bill now and then, which is realistic enough.
            Some(receipt_id) => tombstone(
                DocumentKind::GoodsReceipt,
                json!({"tenant_id": model.id, "receipt_id": receipt_id}),
            ),
            None => po_message(&model.id, po),
        }
    }
}

/// The PO line categories: a line's is `CATEGORIES[line_no % 4]`, and every
/// fourth line has none.
pub const CATEGORIES: [&str; 3] = ["packaging", "lab-equipment", "services"];

fn category_of(line_no: u32) -> Option<&'static str> {
    CATEGORIES.get(line_no as usize % 4).copied()
}

impl Iterator for Workload {
    type Item = GeneratedMessage;
    fn next(&mut self) -> Option<GeneratedMessage> {
        let message = self.next_message();
        self.emitted += 1;
        Some(message)
    }
}

fn invoice_key(tenant_id: &str, invoice_id: &str) -> Value {
    json!({"tenant_id": tenant_id, "invoice_id": invoice_id})
}

fn po_message(tenant_id: &str, po: &PoModel) -> GeneratedMessage {
    let lines: Vec<Value> = po
        .lines
        .iter()
        .map(|(line_no, quantity, price)| {
            let mut line = json!({"line_no": line_no, "sku": format!("SKU-{line_no}"),
                                  "quantity": quantity.to_string(), "unit_price": price.to_string()});
            if let Some(category) = category_of(*line_no) {
                line["category"] = category.into();
            }
            line
        })
        .collect();
    document(
        DocumentKind::PurchaseOrder,
        json!({"tenant_id": tenant_id, "po_number": po.number}),
        json!({"tenant_id": tenant_id, "po_number": po.number, "vendor_id": po.vendor,
               "currency": po.currency, "status": po.status, "receipt_required": po.receipt_required,
               "match_level": po.match_level, "lines": lines}),
    )
}

fn document(kind: DocumentKind, key: Value, value: Value) -> GeneratedMessage {
    GeneratedMessage {
        kind,
        key: Some(key.to_string().into_bytes()),
        value: Some(value.to_string().into_bytes()),
        malformed: false,
    }
}

fn tombstone(kind: DocumentKind, key: Value) -> GeneratedMessage {
    GeneratedMessage {
        kind,
        key: Some(key.to_string().into_bytes()),
        value: None,
        malformed: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trimatch_connectors::envelope::decode_upsert;

    #[test]
    fn same_seed_same_messages() {
        let config = WorkloadConfig {
            seed: 7,
            ..WorkloadConfig::default()
        };
        let first: Vec<_> = Workload::new(config.clone()).take(2_000).collect();
        let second: Vec<_> = Workload::new(config).take(2_000).collect();
        assert_eq!(first, second);
    }

    /// Every message the generator means to be valid decodes, every malformed
    /// one is rejected, and the mix covers what the workload promises.
    #[test]
    fn messages_decode_as_intended_and_cover_the_mix() {
        let config = WorkloadConfig {
            seed: 3,
            bad_share: 0.05,
            ..WorkloadConfig::default()
        };
        let mut kinds = std::collections::BTreeMap::new();
        let (mut tombstones, mut malformed, mut credit_memos, mut cancelled) = (0, 0, 0, 0);
        let (mut four_way, mut inspected) = (0, 0);
        for message in Workload::new(config).take(20_000) {
            let decoded = decode_upsert(
                message.kind,
                message.key.as_deref(),
                message.value.as_deref(),
            );
            assert_eq!(
                decoded.is_err(),
                message.malformed,
                "{message:?} decoded as {decoded:?}"
            );
            if message.malformed {
                malformed += 1;
                continue;
            }
            *kinds.entry(message.kind.default_topic()).or_insert(0) += 1;
            let text = message
                .value
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            tombstones += usize::from(message.value.is_none());
            credit_memos += usize::from(text.contains("credit_memo"));
            cancelled += usize::from(text.contains("\"cancelled\""));
            four_way += usize::from(text.contains("four_way"));
            inspected += usize::from(text.contains("accepted_quantity"));
        }
        assert!(four_way > 50 && inspected > 50, "{four_way} {inspected}");
        assert_eq!(kinds.len(), 6, "{kinds:?}");
        for count in [tombstones, malformed, credit_memos, cancelled] {
            assert!(
                count > 50,
                "{tombstones} {malformed} {credit_memos} {cancelled}"
            );
        }
    }
}
