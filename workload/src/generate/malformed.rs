//! Messages that break SPEC §1.3, as the workload sends them so the
//! dead-letter path is exercised: truncated JSON, a lower-case currency, an
//! impossible date, a quantity with too many decimals, a key naming another
//! document than its value, and a tombstone without an identity key.

use rand::Rng;
use serde_json::{json, Value};
use trimatch_dataflows::model::DocumentKind;

use super::{invoice_key, GeneratedMessage, Workload};

impl Workload {
    /// A message that breaks SPEC §1.3 in one of several ways.
    pub(super) fn malformed(&mut self) -> GeneratedMessage {
        let tenant = self.rng.random_range(0..self.tenants.len());
        let tenant_id = self.tenants[tenant].id.clone();
        let id = format!("BAD-{}", self.emitted);
        let (kind, key, value): (DocumentKind, Value, Option<Vec<u8>>) = match self.rng.random_range(0..6) {
            0 => (
                DocumentKind::Invoice,
                invoice_key(&tenant_id, &id),
                Some(b"{\"tenant_id\": \"truncated".to_vec()),
            ),
            1 => (
                DocumentKind::PurchaseOrder,
                json!({"tenant_id": tenant_id, "po_number": id}),
                Some(json!({"tenant_id": tenant_id, "po_number": id, "vendor_id": "V-1", "currency": "usd",
                            "lines": [{"line_no": 1, "quantity": "1", "unit_price": "1"}]}).to_string().into_bytes()),
            ),
            2 => (
                DocumentKind::Invoice,
                invoice_key(&tenant_id, &id),
                Some(json!({"tenant_id": tenant_id, "invoice_id": id, "vendor_id": "V-1", "invoice_number": "X",
                            "po_number": "PO-000001", "currency": "USD", "invoice_date": "2026-02-30",
                            "lines": [{"po_line_no": 1, "quantity": "1", "unit_price": "1"}]}).to_string().into_bytes()),
            ),
            3 => (
                DocumentKind::GoodsReceipt,
                json!({"tenant_id": tenant_id, "receipt_id": id}),
                Some(json!({"tenant_id": tenant_id, "receipt_id": id, "po_number": "PO-000001",
                            "lines": [{"po_line_no": 1, "quantity": "1.00001"}]}).to_string().into_bytes()),
            ),
            4 => (
                // The key names another document than the value.
                DocumentKind::Invoice,
                invoice_key(&tenant_id, "INV-000001"),
                Some(json!({"tenant_id": tenant_id, "invoice_id": id, "vendor_id": "V-1", "invoice_number": "X",
                            "po_number": "PO-000001", "currency": "USD", "invoice_date": "2026-11-02",
                            "lines": [{"po_line_no": 1, "quantity": "1", "unit_price": "1"}]}).to_string().into_bytes()),
            ),
            _ => (
                // A tombstone without an identity key.
                DocumentKind::PurchaseOrder,
                json!("PO-000001"),
                None,
            ),
        };
        GeneratedMessage {
            kind,
            key: Some(key.to_string().into_bytes()),
            value,
            malformed: true,
        }
    }
}
