//! JSON fixtures for the focused rule tests: documents of tenant `acme`,
//! vendor V-17, in USD, built from compact line tuples.
#![allow(dead_code)]

use serde_json::{json, Value};

/// A PO for tenant `acme`, vendor V-17, USD, with `lines` as (line_no, qty, price).
pub fn po_doc(number: &str, lines: &[(u32, &str, &str)]) -> Value {
    json!({
        "tenant_id": "acme", "po_number": number, "vendor_id": "V-17", "currency": "USD",
        "lines": lines.iter().map(|(n, q, p)| json!({"line_no": n, "quantity": q, "unit_price": p})).collect::<Vec<_>>()
    })
}

/// An invoice of `acme`/V-17 in USD on `po`, with `lines` as (po_line_no, qty, price).
pub fn invoice_doc(id: &str, po: &str, date: &str, lines: &[(u32, &str, &str)]) -> Value {
    json!({
        "tenant_id": "acme", "invoice_id": id, "vendor_id": "V-17", "invoice_number": id,
        "po_number": po, "currency": "USD", "invoice_date": date,
        "lines": lines.iter().map(|(n, q, p)| json!({"po_line_no": n, "quantity": q, "unit_price": p})).collect::<Vec<_>>()
    })
}

pub fn receipt_doc(id: &str, po: &str, lines: &[(u32, &str)]) -> Value {
    json!({
        "tenant_id": "acme", "receipt_id": id, "po_number": po,
        "lines": lines.iter().map(|(n, q)| json!({"po_line_no": n, "quantity": q})).collect::<Vec<_>>()
    })
}

pub fn with(mut document: Value, field: &str, value: Value) -> Value {
    document[field] = value;
    document
}

/// A resolution by j.doe of `acme`'s exception (`invoice`, `exception_type`,
/// `po_line_no`): `decision` with `actual`, if given.
pub fn resolution_doc(
    invoice: &str,
    exception_type: &str,
    po_line_no: Option<u32>,
    decision: &str,
    actual: Option<&str>,
) -> Value {
    let mut document = json!({
        "tenant_id": "acme", "invoice_id": invoice, "exception_type": exception_type,
        "po_line_no": po_line_no, "decision": decision, "resolved_by": "j.doe",
        "resolved_at": "2026-11-04T10:00:00.123789Z", "reason": "agreed with the vendor"
    });
    if let Some(actual) = actual {
        document["actual"] = json!(actual);
    }
    document
}
