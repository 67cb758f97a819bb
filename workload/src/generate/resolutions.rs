//! Analysts' decisions on exceptions (SPEC §6), as the workload sends them:
//! acceptances (with the current `actual`, with a stale one, or with none),
//! rejections, withdrawals (tombstones), and decisions on invoices that have
//! not arrived yet (they wait for their exception).
//!
//! The generator does not evaluate the matching rules, so it decides on the
//! exceptions its invoices are likely to raise: price variances on a line,
//! receipts missing or over-billed, totals that do not add up, a PO not
//! found. A decision on an exception that is not raised waits harmlessly,
//! as SPEC §6 says.

use rand::Rng;
use serde_json::{json, Value};
use trimatch_dataflows::model::DocumentKind;

use super::{document, tombstone, GeneratedMessage, Workload};

/// The exception types decided on, and whether each is a line exception.
const DECIDED: [(&str, bool); 6] = [
    ("PRICE_VARIANCE", true),
    ("PRICE_VARIANCE", true),
    ("QTY_EXCEEDS_RECEIVED", true),
    ("RECEIPT_MISSING", true),
    ("TOTAL_MISMATCH", false),
    ("PO_NOT_FOUND", false),
];

const ANALYSTS: [&str; 3] = ["j.doe", "a.smith", "m.rossi"];

impl Workload {
    /// A decision on one exception of one of `tenant`'s invoices.
    pub(super) fn resolution(&mut self, tenant: usize) -> GeneratedMessage {
        let index = self.pick_po(tenant);
        let rng = &mut self.rng;
        let model = &self.tenants[tenant];
        let tenant_id = model.id.clone();
        let po = &model.pos[index];
        let (exception_type, line_level) = DECIDED[rng.random_range(0..DECIDED.len())];
        // One decision in ten is for an invoice that has not arrived yet.
        let invoice = match po.invoices.last() {
            Some(invoice) if rng.random_range(0..10) != 0 => Some(invoice.document.clone()),
            _ => None,
        };
        let invoice_id = match &invoice {
            Some(document) => document["invoice_id"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            None => format!("INV-{:06}", model.next_invoice + rng.random_range(0..3)),
        };
        // The first line's price: a price variance's `actual`.
        let first_line = invoice.as_ref().map(|document| &document["lines"][0]);
        let po_line_no = line_level.then(|| {
            first_line
                .and_then(|line| line["po_line_no"].as_u64())
                .unwrap_or(1)
        });
        let key = json!({"tenant_id": tenant_id, "invoice_id": invoice_id,
                         "exception_type": exception_type, "po_line_no": po_line_no});
        let roll = rng.random_range(0..20);
        if roll == 0 {
            return tombstone(DocumentKind::ExceptionResolution, key);
        }
        let price = first_line.and_then(|line| line["unit_price"].as_str().map(str::to_string));
        let (decision, actual): (&str, Option<String>) = match (roll, price) {
            (1..=3, _) => ("reject", None),
            // The variance the analyst saw, and one that has moved since.
            (4..=8, Some(price)) if exception_type == "PRICE_VARIANCE" => ("accept", Some(price)),
            (9..=10, Some(_)) if exception_type == "PRICE_VARIANCE" => {
                ("accept", Some("0.01".to_string()))
            }
            _ => ("accept", None),
        };
        let mut value: Value = json!({
            "tenant_id": tenant_id, "invoice_id": invoice_id,
            "exception_type": exception_type, "po_line_no": po_line_no,
            "decision": decision,
            "resolved_by": ANALYSTS[rng.random_range(0..ANALYSTS.len())],
            "resolved_at": format!("2026-11-{:02}T{:02}:15:00Z", rng.random_range(1..=28), rng.random_range(8..18)),
            "reason": if decision == "accept" { "agreed with the vendor" } else { "disputed with the vendor" },
        });
        if let Some(actual) = actual {
            value["actual"] = json!(actual);
        }
        document(DocumentKind::ExceptionResolution, key, value)
    }
}
