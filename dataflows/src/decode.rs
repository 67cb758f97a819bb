//! Wire decoding and validation: JSON bytes → validated [`Document`]s (SPEC §1.2,
//! §1.3), and the upsert-envelope key rules of SPEC §1.1.
//!
//! Every rejection is a [`DecodeError`] naming the field and the problem, e.g.
//! `lines[2].quantity: more than 4 fractional digits: "1.00001"`. Sources put
//! that sentence in the dead-letter record; nothing here panics on bad input.

use std::collections::HashSet;
use std::fmt::Write;
use std::sync::Arc;

use rust_decimal::Decimal;
use serde_json::{Map, Value};

use crate::decimal::{parse_decimal, DecimalRule, SignRule};
use crate::model::*;

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
const PRICE: DecimalRule = DecimalRule {
    max_fraction_digits: 6,
    sign: SignRule::NonNegative,
};
const AMOUNT: DecimalRule = DecimalRule {
    max_fraction_digits: 6,
    sign: SignRule::Any,
};
/// Tolerances are percentages or amounts: at most 6 fractional digits, never negative.
const TOLERANCE: DecimalRule = DecimalRule {
    max_fraction_digits: 6,
    sign: SignRule::NonNegative,
};

/// Why a message was rejected: the offending field (a JSON path such as
/// `lines[2].quantity`, or `value` / `key` for the whole message) and the problem.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct DecodeError {
    pub field: String,
    pub problem: String,
}

impl DecodeError {
    fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        DecodeError {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

type Result<T> = std::result::Result<T, DecodeError>;

/// One change to one document, as an upsert: the identity key and the new
/// version, or `None` for a delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upsert {
    pub kind: DocumentKind,
    pub key: Fingerprint,
    /// The identity field values, tenant first (for logs and dead letters).
    pub identity: Vec<String>,
    pub document: Option<Document>,
}

impl Upsert {
    /// A new version of `document`.
    pub fn put(document: Document) -> Upsert {
        Upsert {
            kind: document.kind(),
            key: document.key(),
            identity: document_identity(&document),
            document: Some(document),
        }
    }

    /// The deletion of the document of `kind` with these identity values.
    pub fn delete(kind: DocumentKind, identity: Vec<String>) -> Upsert {
        let parts: Vec<&str> = identity.iter().map(String::as_str).collect();
        Upsert {
            kind,
            key: kind.key_of(&parts),
            identity,
            document: None,
        }
    }
}

/// Decodes a message of the **upsert** envelope (SPEC §1.1).
///
/// `value = None` is a tombstone and needs a JSON-object key carrying the
/// identity fields. With a value, the key is optional; if it is a JSON object its
/// identity fields must agree with the document's.
pub fn decode_upsert(
    kind: DocumentKind,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) -> Result<Upsert> {
    let key_object = match key {
        Some(bytes) => match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Object(object)) => Some(object),
            _ => None,
        },
        None => None,
    };
    match value {
        None => {
            let object = key_object.ok_or_else(|| {
                DecodeError::new(
                    "key",
                    "a tombstone (null value) needs a JSON-object key with the identity fields",
                )
            })?;
            Ok(Upsert::delete(kind, identity_from_key(kind, &object)?))
        }
        Some(bytes) => {
            let upsert = Upsert::put(decode_document(kind, bytes)?);
            if let Some(object) = key_object {
                check_key_agrees(kind, &object, &upsert.identity)?;
            }
            Ok(upsert)
        }
    }
}

/// The identity field values of a JSON-object key (SPEC §1.1).
pub fn identity_from_key(kind: DocumentKind, key: &Map<String, Value>) -> Result<Vec<String>> {
    kind.identity_fields()
        .iter()
        .map(|field| identifier(key, field, "key").map(|text| text.to_string()))
        .collect()
}

fn check_key_agrees(
    kind: DocumentKind,
    key: &Map<String, Value>,
    identity: &[String],
) -> Result<()> {
    for (field, value) in kind.identity_fields().iter().zip(identity) {
        match key.get(*field) {
            Some(Value::String(in_key)) if in_key == value => {}
            Some(other) => {
                return Err(DecodeError::new(
                    format!("key.{field}"),
                    format!("contradicts the value: key has {other}, document has {value:?}"),
                ))
            }
            None => {
                return Err(DecodeError::new(
                    format!("key.{field}"),
                    "missing: a JSON-object key must carry the identity fields",
                ))
            }
        }
    }
    Ok(())
}

/// The identity field values of a document, tenant first.
pub fn document_identity(document: &Document) -> Vec<String> {
    match document {
        Document::PurchaseOrder(po) => vec![po.tenant_id.to_string(), po.po_number.to_string()],
        Document::GoodsReceipt(gr) => vec![gr.tenant_id.to_string(), gr.receipt_id.to_string()],
        Document::Invoice(inv) => vec![inv.tenant_id.to_string(), inv.invoice_id.to_string()],
        Document::MatchPolicy(policy) => vec![policy.tenant_id.to_string()],
    }
}

/// Decodes and validates one document of `kind` from JSON bytes.
pub fn decode_document(kind: DocumentKind, bytes: &[u8]) -> Result<Document> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|error| DecodeError::new("value", format!("not valid JSON: {error}")))?;
    document_from_json(kind, &value)
}

/// Validates an already parsed JSON value as a document of `kind` (used by
/// envelopes that carry the document inside another object, e.g. Debezium).
pub fn document_from_json(kind: DocumentKind, value: &Value) -> Result<Document> {
    let object = value.as_object().ok_or_else(|| {
        DecodeError::new(
            "value",
            format!("expected a JSON object, got {}", type_name(value)),
        )
    })?;
    Ok(match kind {
        DocumentKind::PurchaseOrder => Document::PurchaseOrder(Arc::new(purchase_order(object)?)),
        DocumentKind::GoodsReceipt => Document::GoodsReceipt(Arc::new(goods_receipt(object)?)),
        DocumentKind::Invoice => Document::Invoice(Arc::new(invoice(object)?)),
        DocumentKind::MatchPolicy => Document::MatchPolicy(Arc::new(match_policy(object)?)),
    })
}

fn purchase_order(object: &Map<String, Value>) -> Result<PurchaseOrder> {
    let tenant_id = identifier(object, "tenant_id", "")?;
    let po_number = identifier(object, "po_number", "")?;
    let vendor_id = identifier(object, "vendor_id", "")?;
    let currency = currency(object)?;
    let status = match optional_str(object, "status", "")? {
        None | Some("open") => PoStatus::Open,
        Some("closed") => PoStatus::Closed,
        Some("cancelled") => PoStatus::Cancelled,
        Some(other) => return Err(unknown_value("status", other, "open, closed or cancelled")),
    };
    let receipt_required = match present(object, "receipt_required") {
        None => true,
        Some(Value::Bool(flag)) => *flag,
        Some(other) => return Err(wrong_type("receipt_required", "true or false", other)),
    };
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
        lines,
    })
}

fn goods_receipt(object: &Map<String, Value>) -> Result<GoodsReceipt> {
    let tenant_id = identifier(object, "tenant_id", "")?;
    let receipt_id = identifier(object, "receipt_id", "")?;
    let po_number = identifier(object, "po_number", "")?;
    let received_at = match optional_str(object, "received_at", "")? {
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
        Ok(ReceiptLine {
            po_line_no: line_number(line, "po_line_no", path)?,
            quantity: decimal(line, "quantity", path, RECEIPT_QUANTITY)?,
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

fn invoice(object: &Map<String, Value>) -> Result<Invoice> {
    let tenant_id = identifier(object, "tenant_id", "")?;
    let invoice_id = identifier(object, "invoice_id", "")?;
    let kind = match optional_str(object, "kind", "")? {
        None | Some("invoice") => InvoiceKind::Invoice,
        Some("credit_memo") => InvoiceKind::CreditMemo,
        Some(other) => return Err(unknown_value("kind", other, "invoice or credit_memo")),
    };
    let status = match optional_str(object, "status", "")? {
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

fn match_policy(object: &Map<String, Value>) -> Result<MatchPolicy> {
    Ok(MatchPolicy {
        tenant_id: identifier(object, "tenant_id", "")?,
        price_tolerance_pct: optional_decimal(object, "price_tolerance_pct", "", TOLERANCE)?,
        price_tolerance_abs: optional_decimal(object, "price_tolerance_abs", "", TOLERANCE)?,
        qty_tolerance_pct: optional_decimal(object, "qty_tolerance_pct", "", TOLERANCE)?,
        total_tolerance_abs: optional_decimal(object, "total_tolerance_abs", "", TOLERANCE)?,
    })
}

/// The line numbers of one document seen so far, to reject a repeat. A
/// document has a handful of lines, so the first few are kept inline and
/// compared one by one; a hash set (and its allocation) only for long ones.
#[derive(Default)]
struct SeenLineNumbers {
    first: [u32; Self::INLINE],
    count: usize,
    rest: HashSet<u32>,
}

impl SeenLineNumbers {
    const INLINE: usize = 16;

    /// Records `line_no`; false if it was seen before.
    fn insert(&mut self, line_no: u32) -> bool {
        let inline = self.count.min(Self::INLINE);
        if self.first[..inline].contains(&line_no) {
            return false;
        }
        if self.count < Self::INLINE {
            self.first[self.count] = line_no;
        } else if !self.rest.insert(line_no) {
            return false;
        }
        self.count += 1;
        true
    }
}

// ---------------------------------------------------------------------------
// Field helpers. `parent` is the JSON path of the enclosing object ("" at the
// top); a field's full path is built only for an error.

fn field_path(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

/// A field's value, treating JSON `null` as absent.
fn present<'a>(object: &'a Map<String, Value>, field: &str) -> Option<&'a Value> {
    object.get(field).filter(|value| !value.is_null())
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn wrong_type(path: &str, expected: &str, got: &Value) -> DecodeError {
    DecodeError::new(path, format!("expected {expected}, got {}", type_name(got)))
}

fn unknown_value(path: &str, got: &str, expected: &str) -> DecodeError {
    DecodeError::new(path, format!("unknown value {got:?} (expected {expected})"))
}

fn optional_str<'a>(
    object: &'a Map<String, Value>,
    field: &str,
    parent: &str,
) -> Result<Option<&'a str>> {
    match present(object, field) {
        None => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(other) => Err(wrong_type(&field_path(parent, field), "a string", other)),
    }
}

/// A required identifier: a non-empty string of at most 256 bytes.
fn identifier(object: &Map<String, Value>, field: &str, parent: &str) -> Result<Text> {
    optional_identifier(object, field, parent)?
        .ok_or_else(|| DecodeError::new(field_path(parent, field), "missing"))
}

fn optional_identifier(
    object: &Map<String, Value>,
    field: &str,
    parent: &str,
) -> Result<Option<Text>> {
    let Some(text) = optional_str(object, field, parent)? else {
        return Ok(None);
    };
    if text.is_empty() {
        return Err(DecodeError::new(
            field_path(parent, field),
            "must not be empty",
        ));
    }
    if text.len() > MAX_IDENTIFIER_BYTES {
        return Err(DecodeError::new(
            field_path(parent, field),
            format!(
                "longer than {MAX_IDENTIFIER_BYTES} bytes ({} bytes)",
                text.len()
            ),
        ));
    }
    Ok(Some(Text::from(text)))
}

fn currency(object: &Map<String, Value>) -> Result<Currency> {
    let text = optional_str(object, "currency", "")?
        .ok_or_else(|| DecodeError::new("currency", "missing"))?;
    match text.as_bytes() {
        [a, b, c] if text.bytes().all(|byte| byte.is_ascii_uppercase()) => {
            Ok(Currency([*a, *b, *c]))
        }
        _ => Err(DecodeError::new(
            "currency",
            format!("must be three upper-case letters (ISO 4217, e.g. USD), got {text:?}"),
        )),
    }
}

/// A `YYYY-MM-DD` calendar date as days since 1970-01-01.
fn date(object: &Map<String, Value>, field: &str) -> Result<i32> {
    let text =
        optional_str(object, field, "")?.ok_or_else(|| DecodeError::new(field, "missing"))?;
    let bad = || {
        DecodeError::new(
            field,
            format!("not a calendar date in YYYY-MM-DD form: {text:?}"),
        )
    };
    let bytes = text.as_bytes();
    let shape_ok = bytes.len() == 10
        && bytes[4] == b'-'
        && bytes[7] == b'-'
        && bytes
            .iter()
            .enumerate()
            .all(|(i, b)| i == 4 || i == 7 || b.is_ascii_digit());
    if !shape_ok {
        return Err(bad());
    }
    let date = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| bad())?;
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("the epoch is a date");
    Ok((date - epoch).num_days() as i32)
}

/// A line number: an integer from 1 to 2^31 − 1 (it is an Arrow `Int32` downstream).
fn line_number(line: &Map<String, Value>, field: &str, parent: &str) -> Result<u32> {
    let path = || field_path(parent, field);
    match present(line, field) {
        None => Err(DecodeError::new(path(), "missing")),
        Some(Value::Number(number)) => match number.as_u64() {
            Some(n) if (1..=i32::MAX as u64).contains(&n) => Ok(n as u32),
            _ => Err(DecodeError::new(
                path(),
                format!("must be an integer from 1 to {}, got {number}", i32::MAX),
            )),
        },
        Some(other) => Err(wrong_type(&path(), "an integer", other)),
    }
}

fn decimal(
    object: &Map<String, Value>,
    field: &str,
    parent: &str,
    rule: DecimalRule,
) -> Result<Decimal> {
    optional_decimal(object, field, parent, rule)?
        .ok_or_else(|| DecodeError::new(field_path(parent, field), "missing"))
}

/// A decimal given as a JSON string or a JSON number, parsed exactly from its text.
fn optional_decimal(
    object: &Map<String, Value>,
    field: &str,
    parent: &str,
    rule: DecimalRule,
) -> Result<Option<Decimal>> {
    let text = match present(object, field) {
        None => return Ok(None),
        Some(Value::String(text)) => text.as_str(),
        Some(Value::Number(number)) => number.as_str(),
        Some(other) => {
            return Err(wrong_type(
                &field_path(parent, field),
                "a decimal (string or number)",
                other,
            ))
        }
    };
    parse_decimal(text, rule)
        .map(Some)
        .map_err(|problem| DecodeError::new(field_path(parent, field), problem))
}

/// Decodes the `lines` array (1 to 10,000 objects) with `line_fn(object, path)`.
fn lines_of<T>(
    object: &Map<String, Value>,
    mut line_fn: impl FnMut(&Map<String, Value>, &str) -> Result<T>,
) -> Result<Vec<T>> {
    let lines = match present(object, "lines") {
        None => return Err(DecodeError::new("lines", "missing")),
        Some(Value::Array(lines)) => lines,
        Some(other) => return Err(wrong_type("lines", "an array of line objects", other)),
    };
    if lines.is_empty() {
        return Err(DecodeError::new(
            "lines",
            "no lines: a document needs at least one",
        ));
    }
    if lines.len() > MAX_LINES {
        return Err(DecodeError::new(
            "lines",
            format!(
                "{} lines is more than the limit of {MAX_LINES}",
                lines.len()
            ),
        ));
    }
    // One buffer for every line's path: it names fields only in errors, and
    // formatting a fresh one per line was a measurable part of decoding.
    let mut path = String::new();
    let mut decoded = Vec::with_capacity(lines.len());
    for (index, line) in lines.iter().enumerate() {
        path.clear();
        write!(path, "lines[{index}]").expect("writing to a String succeeds");
        decoded.push(match line {
            Value::Object(line) => line_fn(line, &path)?,
            other => return Err(wrong_type(&path, "a line object", other)),
        });
    }
    Ok(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PO whose lines are numbered `line_numbers`, in that order.
    fn po_with_lines(line_numbers: &[u32]) -> Vec<u8> {
        let lines: Vec<Value> = line_numbers
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
