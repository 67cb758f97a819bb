//! Document decoding and validation: JSON → validated [`Document`]s (SPEC §1.2,
//! §1.3). How a Kafka message carries a document (the envelopes of SPEC §1.1:
//! keys, tombstones, Debezium events) is the sources' business
//! (`trimatch_connectors::envelope`); this module only validates documents
//! and identity fields.
//!
//! Every rejection is a [`DecodeError`] naming the field and the problem, e.g.
//! `lines[2].quantity: more than 4 fractional digits: "1.00001"`. Sources put
//! that sentence in the dead-letter record; nothing here panics on bad input.

use std::sync::Arc;

use rust_decimal::Decimal;

use crate::decimal::{DecimalRule, SignRule};
use crate::model::*;

mod fields;
pub mod json;
pub mod policy_changes;
use fields::*;
use json::{Json, JsonObject, NotAnObject};

/// Identifiers longer than this many bytes are rejected.
pub const MAX_IDENTIFIER_BYTES: usize = 256;
/// Documents with more lines than this are rejected.
pub const MAX_LINES: usize = 10_000;

const QUANTITY: DecimalRule = DecimalRule {
    max_fraction_digits: 4,
    sign: SignRule::Positive,
};
const RECEIPT_QUANTITY: DecimalRule = DecimalRule {
    max_fraction_digits: 4,
    sign: SignRule::NonZero,
};
/// A receipt line's `accepted_quantity` (§12.2): its sign and size are
/// checked against the line's `quantity`.
const ACCEPTED_QUANTITY: DecimalRule = DecimalRule {
    max_fraction_digits: 4,
    sign: SignRule::Any,
};
const PRICE: DecimalRule = DecimalRule {
    max_fraction_digits: 6,
    sign: SignRule::NonNegative,
};
const AMOUNT: DecimalRule = DecimalRule {
    max_fraction_digits: 6,
    sign: SignRule::Any,
};
/// The `actual` a resolution accepts: an exception's expected or actual value.
const RESOLUTION_ACTUAL: DecimalRule = DecimalRule {
    max_fraction_digits: 6,
    sign: SignRule::Any,
};
/// A payment's amount and its allocations' amounts: more than zero.
const PAYMENT_AMOUNT: DecimalRule = DecimalRule {
    max_fraction_digits: 6,
    sign: SignRule::Positive,
};
/// A resolution's `reason` longer than this many bytes is rejected.
pub const MAX_REASON_BYTES: usize = 4096;
/// Tolerances are percentages or amounts: at most 6 fractional digits, never negative.
const TOLERANCE: DecimalRule = DecimalRule {
    max_fraction_digits: 6,
    sign: SignRule::NonNegative,
};

/// Why a message was rejected: the offending field (a JSON path such as
/// `lines[2].quantity`, `key.po_number`, or `value` / `key` for the whole
/// message) and the problem. The one rejection type of every decoder, the
/// envelopes' included.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct DecodeError {
    pub field: String,
    pub problem: String,
}

impl DecodeError {
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        DecodeError {
            field: field.into(),
            problem: problem.into(),
        }
    }

    /// Bytes at `path` that are not JSON at all.
    pub fn not_json(path: &str, error: &serde_json::Error) -> Self {
        DecodeError::new(path, format!("not valid JSON: {error}"))
    }

    /// The same error for a document found at `parent` inside a larger
    /// message (a Debezium `after`): `po_number` becomes `after.po_number`.
    pub fn nested_in(self, parent: &str) -> Self {
        let field = if self.field == "value" {
            parent.to_string()
        } else {
            format!("{parent}.{}", self.field)
        };
        DecodeError { field, ..self }
    }
}

type Result<T> = std::result::Result<T, DecodeError>;

/// The identity field values of `kind` in a JSON object (a message key, or a
/// Debezium `before` image), tenant first, each validated as an identifier;
/// `path` is the object's JSON path in error messages (`key`, `before`).
pub fn identity_fields(
    kind: DocumentKind,
    object: &JsonObject<'_>,
    path: &str,
) -> Result<Vec<String>> {
    kind.identity_fields()
        .iter()
        .map(|field| {
            if kind.is_line_number_identity(field) {
                let line = optional_line_number(object, field, path)?;
                return Ok(line.map(|n| n.to_string()).unwrap_or_default());
            }
            if kind.is_optional_text_identity(field) {
                let text = optional_identifier(object, field, path)?;
                return Ok(text.map(|text| text.to_string()).unwrap_or_default());
            }
            let text = identifier(object, field, path)?;
            if *field == "exception_type" {
                exception_type_named(&text, &fields::field_path(path, field))?;
            }
            Ok(text.to_string())
        })
        .collect()
}

/// An identity field's value as [`identity_fields`] writes it, if `value`
/// is a valid one: a string's text; for a line-number field a number in
/// decimal, or empty for null.
pub fn identity_text(kind: DocumentKind, field: &str, value: Json<'_>) -> Option<String> {
    if kind.is_line_number_identity(field) {
        if value.is_null() {
            return Some(String::new());
        }
        return value
            .as_number()
            .and_then(|number| number.parse::<u32>().ok())
            .map(|n| n.to_string());
    }
    if kind.is_optional_text_identity(field) && value.is_null() {
        return Some(String::new());
    }
    value.as_str().map(|text| text.into_owned())
}

/// The identity field values of a document, tenant first.
pub fn document_identity(document: &Document) -> Vec<String> {
    match document {
        Document::PurchaseOrder(po) => vec![po.tenant_id.to_string(), po.po_number.to_string()],
        Document::GoodsReceipt(gr) => vec![gr.tenant_id.to_string(), gr.receipt_id.to_string()],
        Document::Invoice(inv) => vec![inv.tenant_id.to_string(), inv.invoice_id.to_string()],
        Document::MatchPolicy(policy) => vec![
            policy.tenant_id.to_string(),
            policy.vendor_id.as_deref().unwrap_or_default().to_string(),
            policy.category.as_deref().unwrap_or_default().to_string(),
        ],
        Document::ExceptionResolution(resolution) => vec![
            resolution.tenant_id.to_string(),
            resolution.invoice_id.to_string(),
            resolution.exception_type.as_str().to_string(),
            resolution
                .po_line_no
                .map(|n| n.to_string())
                .unwrap_or_default(),
        ],
        Document::Payment(payment) => vec![
            payment.tenant_id.to_string(),
            payment.payment_id.to_string(),
        ],
    }
}

/// Decodes and validates one document of `kind` from JSON bytes.
pub fn decode_document(kind: DocumentKind, bytes: &[u8]) -> Result<Document> {
    document_from_object(kind, &json_object(bytes, "value")?)
}

/// Reads `bytes` as a JSON object, or says why not; `path` names the bytes
/// in the error (`value`, `key`).
pub fn json_object<'a>(bytes: &'a [u8], path: &str) -> Result<JsonObject<'a>> {
    JsonObject::parse(bytes).map_err(|error| match error {
        NotAnObject::Invalid(error) => DecodeError::not_json(path, &error),
        NotAnObject::OtherType(got) => {
            DecodeError::new(path, format!("expected a JSON object, got {got}"))
        }
    })
}

/// Validates a JSON value found inside another message (a Debezium `after`)
/// as a document of `kind`.
pub fn document_from_json(kind: DocumentKind, value: Json<'_>) -> Result<Document> {
    let object = value.as_object().ok_or_else(|| {
        DecodeError::new(
            "value",
            format!("expected a JSON object, got {}", value.type_name()),
        )
    })?;
    document_from_object(kind, &object)
}

/// Validates a JSON object as a document of `kind`.
pub fn document_from_object(kind: DocumentKind, object: &JsonObject<'_>) -> Result<Document> {
    Ok(match kind {
        DocumentKind::PurchaseOrder => Document::PurchaseOrder(Arc::new(purchase_order(object)?)),
        DocumentKind::GoodsReceipt => Document::GoodsReceipt(Arc::new(goods_receipt(object)?)),
        DocumentKind::Invoice => Document::Invoice(Arc::new(invoice(object)?)),
        DocumentKind::MatchPolicy => Document::MatchPolicy(Arc::new(match_policy(object)?)),
        DocumentKind::ExceptionResolution => {
            Document::ExceptionResolution(Arc::new(exception_resolution(object)?))
        }
        DocumentKind::Payment => Document::Payment(Arc::new(payment(object)?)),
    })
}

fn purchase_order(object: &JsonObject<'_>) -> Result<PurchaseOrder> {
    let tenant_id = identifier(object, "tenant_id", "")?;
    let po_number = identifier(object, "po_number", "")?;
    let vendor_id = identifier(object, "vendor_id", "")?;
    let currency = currency(object)?;
    let status = match optional_str(object, "status", "")?.as_deref() {
        None | Some("open") => PoStatus::Open,
        Some("closed") => PoStatus::Closed,
        Some("cancelled") => PoStatus::Cancelled,
        Some(other) => return Err(unknown_value("status", other, "open, closed or cancelled")),
    };
    let receipt_required = match object.present("receipt_required") {
        None => true,
        Some(value) => value
            .as_bool()
            .ok_or_else(|| wrong_type("receipt_required", "true or false", value))?,
    };
    let po_match_level = match_level(object, "")?;
    let mut seen = SeenLineNumbers::default();
    let mut lines = lines_of(object, |line, path| {
        let line_no = line_number(line, "line_no", path)?;
        if !seen.insert(line_no) {
            return Err(DecodeError::new(
                format!("{path}.line_no"),
                format!("line {line_no} appears more than once"),
            ));
        }
        Ok(PoLine {
            line_no,
            sku: optional_identifier(line, "sku", path)?,
            category: optional_identifier(line, "category", path)?,
            match_level: match_level(line, path)?,
            quantity: decimal(line, "quantity", path, QUANTITY)?,
            unit_price: decimal(line, "unit_price", path, PRICE)?,
        })
    })?;
    lines.sort_by_key(|line| line.line_no);
    Ok(PurchaseOrder {
        tenant_id,
        po_number,
        vendor_id,
        currency,
        status,
        receipt_required,
        match_level: po_match_level,
        lines,
    })
}

/// An optional `match_level` (§12.2) of a PO or of one of its lines.
fn match_level(object: &JsonObject<'_>, parent: &str) -> Result<Option<MatchLevel>> {
    match optional_str(object, "match_level", parent)?.as_deref() {
        None => Ok(None),
        Some(name) => MatchLevel::from_name(name).map(Some).ok_or_else(|| {
            unknown_value(
                &field_path(parent, "match_level"),
                name,
                "two_way, three_way or four_way",
            )
        }),
    }
}

/// A receipt line's `accepted_quantity` (§12.2): absent is 0 (not inspected
/// yet); otherwise the sign of `quantity` or zero, and no larger than it.
fn accepted_quantity(line: &JsonObject<'_>, parent: &str, quantity: Decimal) -> Result<Decimal> {
    let Some(accepted) = optional_decimal(line, "accepted_quantity", parent, ACCEPTED_QUANTITY)?
    else {
        return Ok(Decimal::ZERO);
    };
    let problem =
        if !accepted.is_zero() && accepted.is_sign_negative() != quantity.is_sign_negative() {
            Some("must have the sign of quantity (or be 0)")
        } else if accepted.abs() > quantity.abs() {
            Some("must not be larger than quantity")
        } else {
            None
        };
    match problem {
        Some(problem) => Err(DecodeError::new(
            field_path(parent, "accepted_quantity"),
            format!("{problem}: {accepted} against quantity {quantity}"),
        )),
        None => Ok(accepted),
    }
}

fn goods_receipt(object: &JsonObject<'_>) -> Result<GoodsReceipt> {
    let tenant_id = identifier(object, "tenant_id", "")?;
    let receipt_id = identifier(object, "receipt_id", "")?;
    let po_number = identifier(object, "po_number", "")?;
    let received_at = match optional_str(object, "received_at", "")?.as_deref() {
        None => None,
        Some(text) => {
            chrono::DateTime::parse_from_rfc3339(text).map_err(|_| {
                DecodeError::new(
                    "received_at",
                    format!("not an RFC 3339 timestamp (e.g. 2026-11-02T09:30:00Z): {text:?}"),
                )
            })?;
            Some(Text::from(text))
        }
    };
    let lines = lines_of(object, |line, path| {
        let po_line_no = line_number(line, "po_line_no", path)?;
        let quantity = decimal(line, "quantity", path, RECEIPT_QUANTITY)?;
        Ok(ReceiptLine {
            po_line_no,
            quantity,
            accepted_quantity: accepted_quantity(line, path, quantity)?,
        })
    })?;
    Ok(GoodsReceipt {
        tenant_id,
        receipt_id,
        po_number,
        received_at,
        lines,
    })
}

fn invoice(object: &JsonObject<'_>) -> Result<Invoice> {
    let tenant_id = identifier(object, "tenant_id", "")?;
    let invoice_id = identifier(object, "invoice_id", "")?;
    let kind = match optional_str(object, "kind", "")?.as_deref() {
        None | Some("invoice") => InvoiceKind::Invoice,
        Some("credit_memo") => InvoiceKind::CreditMemo,
        Some(other) => return Err(unknown_value("kind", other, "invoice or credit_memo")),
    };
    let status = match optional_str(object, "status", "")?.as_deref() {
        None | Some("active") => InvoiceStatus::Active,
        Some("cancelled") => InvoiceStatus::Cancelled,
        Some(other) => return Err(unknown_value("status", other, "active or cancelled")),
    };
    let vendor_id = identifier(object, "vendor_id", "")?;
    let invoice_number = identifier(object, "invoice_number", "")?;
    let po_number = identifier(object, "po_number", "")?;
    let currency = currency(object)?;
    let invoice_date = date(object, "invoice_date")?;
    let mut seen = SeenLineNumbers::default();
    let mut lines = lines_of(object, |line, path| {
        let po_line_no = line_number(line, "po_line_no", path)?;
        if !seen.insert(po_line_no) {
            return Err(DecodeError::new(
                format!("{path}.po_line_no"),
                format!("PO line {po_line_no} appears more than once on the invoice"),
            ));
        }
        Ok(InvoiceLine {
            po_line_no,
            quantity: decimal(line, "quantity", path, QUANTITY)?,
            unit_price: decimal(line, "unit_price", path, PRICE)?,
        })
    })?;
    lines.sort_by_key(|line| line.po_line_no);
    Ok(Invoice {
        tenant_id,
        invoice_id,
        kind,
        status,
        vendor_id,
        invoice_number,
        po_number,
        currency,
        invoice_date,
        lines,
        tax: optional_decimal(object, "tax", "", AMOUNT)?.unwrap_or(Decimal::ZERO),
        freight: optional_decimal(object, "freight", "", AMOUNT)?.unwrap_or(Decimal::ZERO),
        total: optional_decimal(object, "total", "", AMOUNT)?,
    })
}

fn match_policy(object: &JsonObject<'_>) -> Result<MatchPolicy> {
    let tolerance = |field| optional_decimal(object, field, "", TOLERANCE);
    Ok(MatchPolicy {
        tenant_id: identifier(object, "tenant_id", "")?,
        vendor_id: optional_identifier(object, "vendor_id", "")?,
        category: optional_identifier(object, "category", "")?,
        price_tolerance_pct: tolerance("price_tolerance_pct")?,
        price_tolerance_abs: tolerance("price_tolerance_abs")?,
        price_tolerance_max_abs: tolerance("price_tolerance_max_abs")?,
        qty_tolerance_pct: tolerance("qty_tolerance_pct")?,
        qty_tolerance_abs: tolerance("qty_tolerance_abs")?,
        total_tolerance_abs: tolerance("total_tolerance_abs")?,
        amount_tolerance_pct: tolerance("amount_tolerance_pct")?,
        amount_tolerance_abs: tolerance("amount_tolerance_abs")?,
    })
}

fn exception_resolution(object: &JsonObject<'_>) -> Result<ExceptionResolution> {
    let tenant_id = identifier(object, "tenant_id", "")?;
    let invoice_id = identifier(object, "invoice_id", "")?;
    let exception_type =
        exception_type_named(&identifier(object, "exception_type", "")?, "exception_type")?;
    let po_line_no = optional_line_number(object, "po_line_no", "")?;
    let decision = match optional_str(object, "decision", "")?.as_deref() {
        Some("accept") => Decision::Accept,
        Some("reject") => Decision::Reject,
        Some(other) => return Err(unknown_value("decision", other, "accept or reject")),
        None => return Err(DecodeError::new("decision", "missing")),
    };
    let reason = match optional_str(object, "reason", "")? {
        Some(text) if text.len() > MAX_REASON_BYTES => {
            return Err(DecodeError::new(
                "reason",
                format!(
                    "longer than {MAX_REASON_BYTES} bytes ({} bytes)",
                    text.len()
                ),
            ))
        }
        reason => reason.map(|text| Text::from(text.as_ref())),
    };
    Ok(ExceptionResolution {
        tenant_id,
        invoice_id,
        exception_type,
        po_line_no,
        decision,
        actual: optional_decimal(object, "actual", "", RESOLUTION_ACTUAL)?,
        resolved_by: identifier(object, "resolved_by", "")?,
        resolved_at: timestamp_millis(object, "resolved_at")?,
        reason,
    })
}

fn payment(object: &JsonObject<'_>) -> Result<Payment> {
    let tenant_id = identifier(object, "tenant_id", "")?;
    let payment_id = identifier(object, "payment_id", "")?;
    let vendor_id = identifier(object, "vendor_id", "")?;
    let currency = currency(object)?;
    let amount = decimal(object, "amount", "", PAYMENT_AMOUNT)?;
    let paid_at = date(object, "paid_at")?;
    let status = match optional_str(object, "status", "")?.as_deref() {
        None | Some("active") => PaymentStatus::Active,
        Some("void") => PaymentStatus::Void,
        Some(other) => return Err(unknown_value("status", other, "active or void")),
    };
    let reference = match optional_str(object, "reference", "")? {
        Some(text) if text.len() > MAX_IDENTIFIER_BYTES => {
            return Err(DecodeError::new(
                "reference",
                format!(
                    "longer than {MAX_IDENTIFIER_BYTES} bytes ({} bytes)",
                    text.len()
                ),
            ))
        }
        reference => reference.map(|text| Text::from(text.as_ref())),
    };
    let mut seen = std::collections::HashSet::new();
    let mut allocations = optional_entries(object, "allocations", "allocation", |entry, path| {
        let invoice_id = identifier(entry, "invoice_id", path)?;
        if !seen.insert(invoice_id.clone()) {
            return Err(DecodeError::new(
                format!("{path}.invoice_id"),
                format!("invoice {invoice_id:?} is allocated more than once"),
            ));
        }
        Ok(Allocation {
            invoice_id,
            amount: decimal(entry, "amount", path, PAYMENT_AMOUNT)?,
        })
    })?;
    let allocated: Decimal = allocations.iter().map(|allocation| allocation.amount).sum();
    if allocated > amount {
        return Err(DecodeError::new(
            "allocations",
            format!("they add up to {allocated}, more than the payment's amount {amount}"),
        ));
    }
    allocations.sort_by(|a, b| a.invoice_id.cmp(&b.invoice_id));
    Ok(Payment {
        tenant_id,
        payment_id,
        vendor_id,
        currency,
        amount,
        paid_at,
        status,
        reference,
        allocations,
    })
}

/// One of SPEC §2's exception types, by its wire name; `path` names the field.
fn exception_type_named(name: &str, path: &str) -> Result<ExceptionType> {
    ExceptionType::from_name(name).ok_or_else(|| {
        DecodeError::new(
            path,
            format!(
                "unknown exception type {name:?} (expected one of SPEC §2's, e.g. PRICE_VARIANCE)"
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PO whose lines are numbered `line_numbers`, in that order.
    fn po_with_lines(line_numbers: &[u32]) -> Vec<u8> {
        let lines: Vec<serde_json::Value> = line_numbers
            .iter()
            .map(|n| serde_json::json!({"line_no": n, "quantity": "1", "unit_price": "1"}))
            .collect();
        serde_json::json!({
            "tenant_id": "acme", "po_number": "PO-1", "vendor_id": "V-1",
            "currency": "USD", "lines": lines
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn a_repeated_line_number_is_named_in_short_and_long_documents() {
        for count in [3u32, 16, 17, 40] {
            let mut numbers: Vec<u32> = (1..=count).collect();
            let bytes = po_with_lines(&numbers);
            assert!(decode_document(DocumentKind::PurchaseOrder, &bytes).is_ok());
            // Repeat the first line, and then (separately) the last one, at the end.
            for repeated in [1, count] {
                numbers.push(repeated);
                let bytes = po_with_lines(&numbers);
                let error = decode_document(DocumentKind::PurchaseOrder, &bytes).unwrap_err();
                assert_eq!(
                    error.to_string(),
                    format!("lines[{count}].line_no: line {repeated} appears more than once")
                );
                numbers.pop();
            }
        }
    }
}
