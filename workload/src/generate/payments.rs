//! Payments to vendors (SPEC §8), as the workload sends them: allocated to
//! an invoice, or by a remittance reference (now and then with a typo);
//! in full, partial or over; paid twice; voided; by the wrong vendor or in
//! the wrong currency; and to invoices that are blocked, cancelled or not
//! present.

use rand::Rng;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use trimatch_dataflows::model::DocumentKind;

use super::{document, GeneratedMessage, Workload};

/// How many POs a payment tries for one with an invoice to pay.
const PICKS: usize = 8;

impl Workload {
    /// A payment for one of `tenant`'s recent invoices.
    pub(super) fn payment(&mut self, tenant: usize) -> GeneratedMessage {
        // The busiest POs are the newest, which are often not invoiced yet:
        // a few picks find an invoiced one, so that `payment_share` is about
        // the share of payments sent.
        let picked = (0..PICKS).find_map(|_| {
            let index = self.pick_po(tenant);
            let invoice = self.tenants[tenant].pos[index].invoices.last()?;
            Some((index, invoice.document.clone()))
        });
        let Some((index, invoice)) = picked else {
            // Nothing to pay yet: the goods come first.
            return self.receipt(tenant);
        };
        let rng = &mut self.rng;
        let model = &mut self.tenants[tenant];
        let tenant_id = model.id.clone();
        let payment_id = format!("PAY-{:06}", model.next_payment);
        model.next_payment += 1;
        let po = &model.pos[index];
        let gross = gross_of(&invoice);
        let amount = match rng.random_range(0..10) {
            0 => (gross / Decimal::TWO).round_dp(2),
            1 => gross + Decimal::new(rng.random_range(100..5_000), 2),
            _ => gross,
        }
        .max(Decimal::new(1, 2));
        let invoice_id = invoice["invoice_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let mut value = json!({
            "tenant_id": tenant_id, "payment_id": payment_id, "vendor_id": po.vendor,
            "currency": po.currency, "amount": amount.to_string(),
            "paid_at": format!("2026-11-{:02}", rng.random_range(1..=28)),
        });
        match rng.random_range(0..10) {
            // By reference: the invoice's number, one in four with a typo.
            0..=3 => {
                let mut reference = invoice["invoice_number"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                if rng.random_range(0..4) == 0 {
                    reference.push('7');
                }
                value["reference"] = json!(reference);
            }
            // To an invoice that does not exist.
            4 => {
                value["allocations"] =
                    json!([{"invoice_id": format!("{invoice_id}-X"), "amount": amount.to_string()}])
            }
            _ => {
                value["allocations"] =
                    json!([{"invoice_id": invoice_id, "amount": amount.to_string()}])
            }
        }
        match rng.random_range(0..40) {
            // Remitted by another vendor, or in another currency.
            0 => value["vendor_id"] = json!(format!("{}-REMIT", po.vendor)),
            1 => value["currency"] = json!(if po.currency == "USD" { "EUR" } else { "USD" }),
            _ => {}
        }
        if rng.random_range(0..15) == 0 {
            value["status"] = json!("void");
        }
        document(
            DocumentKind::Payment,
            json!({"tenant_id": tenant_id, "payment_id": payment_id}),
            value,
        )
    }
}

/// An invoice document's gross amount: Σ quantity × unit_price + tax + freight.
fn gross_of(invoice: &Value) -> Decimal {
    let decimal = |value: &Value| -> Decimal {
        value
            .as_str()
            .and_then(|text| text.parse().ok())
            .unwrap_or_default()
    };
    let lines: Decimal = invoice["lines"]
        .as_array()
        .map(|lines| {
            lines
                .iter()
                .map(|line| decimal(&line["quantity"]) * decimal(&line["unit_price"]))
                .sum()
        })
        .unwrap_or_default();
    lines + decimal(&invoice["tax"]) + decimal(&invoice["freight"])
}
