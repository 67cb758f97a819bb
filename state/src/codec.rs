//! The checkpoint's typed binary encoding of documents and bookkeeping rows.
//!
//! A restore must not parse JSON or decimal strings again, so values are
//! written field by field in a fixed order: lengths and integers as LEB128
//! varints (zig-zag for signed ones), decimals as their scale and mantissa
//! (exact, and 2–4 bytes for a typical amount), text as length and UTF-8
//! bytes. The layout is versioned by [`FORMAT_VERSION`]: any change to it, or
//! to the model types, must bump it, and a checkpoint of another version is
//! refused rather than misread.
//!
//! Hand-written rather than serde-derived: the model's decimals serialize as
//! strings through serde (the JSON contract needs that), and the encoding
//! must be exact and stable across builds.

use std::sync::Arc;

use rust_decimal::Decimal;
use trimatch_dataflows::model::{
    Allocation, Currency, Decision, Document, ExceptionResolution, ExceptionType, GoodsReceipt,
    Invoice, InvoiceKind, InvoiceLine, InvoiceStatus, MatchLevel, MatchPolicy, Payment,
    PaymentStatus, PoLine, PoStatus, PurchaseOrder, ReceiptLine, Text,
};
use trimatch_dataflows::rows::{DeadLetterRow, PartitionHealth, SourceProgressRow};
use trimatch_dataflows::SourceRow;

/// The version of the encoding (and of the manifest's meaning). 3: invoice
/// and payment keys carry their tenant's prefix, as PO keys do (a checkpoint
/// stores the keys it was fed with). 4: policies have a scope (vendor,
/// category) and the fields of SPEC §12.1; PO lines a category. 5: POs and
/// PO lines have a match level, receipt lines an accepted quantity (§12.2).
pub const FORMAT_VERSION: u32 = 5;

/// Why bytes could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("the encoded value ends early")]
    Truncated,
    #[error("unknown {what} tag {tag}")]
    UnknownTag { what: &'static str, tag: u64 },
    #[error("a varint is too long")]
    VarintOverflow,
    #[error("text is not UTF-8")]
    NotUtf8,
    #[error("a decimal's scale {0} is out of range")]
    BadScale(u32),
    #[error("{0} bytes are left over after the value")]
    TrailingBytes(usize),
}

/// Appends values to a byte buffer.
#[derive(Default)]
pub struct Encoder {
    pub bytes: Vec<u8>,
}

impl Encoder {
    fn varint(&mut self, mut value: u128) {
        while value >= 0x80 {
            self.bytes.push((value as u8) | 0x80);
            value >>= 7;
        }
        self.bytes.push(value as u8);
    }
    fn unsigned(&mut self, value: u64) {
        self.varint(value as u128);
    }
    fn signed(&mut self, value: i128) {
        self.varint(((value << 1) ^ (value >> 127)) as u128);
    }
    fn text(&mut self, text: &str) {
        self.unsigned(text.len() as u64);
        self.bytes.extend_from_slice(text.as_bytes());
    }
    fn optional_text(&mut self, text: Option<&str>) {
        match text {
            None => self.bytes.push(0),
            Some(text) => {
                self.bytes.push(1);
                self.text(text);
            }
        }
    }
    fn optional_match_level(&mut self, level: Option<MatchLevel>) {
        match level {
            None => self.bytes.push(0),
            Some(level) => {
                self.bytes.push(1);
                self.bytes.push(level as u8);
            }
        }
    }
    fn decimal(&mut self, value: Decimal) {
        self.bytes.push(value.scale() as u8);
        self.signed(value.mantissa());
    }
    fn optional_decimal(&mut self, value: Option<Decimal>) {
        match value {
            None => self.bytes.push(0),
            Some(value) => {
                self.bytes.push(1);
                self.decimal(value);
            }
        }
    }

    /// Appends one document.
    pub fn document(&mut self, document: &Document) {
        match document {
            Document::PurchaseOrder(po) => {
                self.bytes.push(0);
                self.text(&po.tenant_id);
                self.text(&po.po_number);
                self.text(&po.vendor_id);
                self.bytes.extend_from_slice(&po.currency.0);
                self.bytes.push(po.status as u8);
                self.bytes.push(po.receipt_required as u8);
                self.optional_match_level(po.match_level);
                self.unsigned(po.lines.len() as u64);
                for line in &po.lines {
                    self.unsigned(line.line_no as u64);
                    self.optional_text(line.sku.as_deref());
                    self.optional_text(line.category.as_deref());
                    self.optional_match_level(line.match_level);
                    self.decimal(line.quantity);
                    self.decimal(line.unit_price);
                }
            }
            Document::GoodsReceipt(receipt) => {
                self.bytes.push(1);
                self.text(&receipt.tenant_id);
                self.text(&receipt.receipt_id);
                self.text(&receipt.po_number);
                self.optional_text(receipt.received_at.as_deref());
                self.unsigned(receipt.lines.len() as u64);
                for line in &receipt.lines {
                    self.unsigned(line.po_line_no as u64);
                    self.decimal(line.quantity);
                    self.decimal(line.accepted_quantity);
                }
            }
            Document::Invoice(invoice) => {
                self.bytes.push(2);
                self.text(&invoice.tenant_id);
                self.text(&invoice.invoice_id);
                self.bytes.push(invoice.kind as u8);
                self.bytes.push(invoice.status as u8);
                self.text(&invoice.vendor_id);
                self.text(&invoice.invoice_number);
                self.text(&invoice.po_number);
                self.bytes.extend_from_slice(&invoice.currency.0);
                self.signed(invoice.invoice_date as i128);
                self.unsigned(invoice.lines.len() as u64);
                for line in &invoice.lines {
                    self.unsigned(line.po_line_no as u64);
                    self.decimal(line.quantity);
                    self.decimal(line.unit_price);
                }
                self.decimal(invoice.tax);
                self.decimal(invoice.freight);
                self.optional_decimal(invoice.total);
            }
            Document::MatchPolicy(policy) => {
                self.bytes.push(3);
                self.text(&policy.tenant_id);
                self.optional_text(policy.vendor_id.as_deref());
                self.optional_text(policy.category.as_deref());
                for field in [
                    policy.price_tolerance_pct,
                    policy.price_tolerance_abs,
                    policy.price_tolerance_max_abs,
                    policy.qty_tolerance_pct,
                    policy.qty_tolerance_abs,
                    policy.total_tolerance_abs,
                    policy.amount_tolerance_pct,
                    policy.amount_tolerance_abs,
                ] {
                    self.optional_decimal(field);
                }
            }
            Document::ExceptionResolution(resolution) => {
                self.bytes.push(4);
                self.text(&resolution.tenant_id);
                self.text(&resolution.invoice_id);
                self.bytes.push(resolution.exception_type as u8);
                match resolution.po_line_no {
                    None => self.bytes.push(0),
                    Some(line) => {
                        self.bytes.push(1);
                        self.unsigned(line as u64);
                    }
                }
                self.bytes.push(resolution.decision as u8);
                self.optional_decimal(resolution.actual);
                self.text(&resolution.resolved_by);
                self.signed(resolution.resolved_at as i128);
                self.optional_text(resolution.reason.as_deref());
            }
            Document::Payment(payment) => {
                self.bytes.push(5);
                self.text(&payment.tenant_id);
                self.text(&payment.payment_id);
                self.text(&payment.vendor_id);
                self.bytes.extend_from_slice(&payment.currency.0);
                self.decimal(payment.amount);
                self.signed(payment.paid_at as i128);
                self.bytes.push(payment.status as u8);
                self.optional_text(payment.reference.as_deref());
                self.unsigned(payment.allocations.len() as u64);
                for allocation in &payment.allocations {
                    self.text(&allocation.invoice_id);
                    self.decimal(allocation.amount);
                }
            }
        }
    }

    /// Appends one bookkeeping row.
    pub fn source_row(&mut self, row: &SourceRow) {
        match row {
            SourceRow::DeadLetter(row) => {
                self.bytes.push(0);
                self.text(&row.topic);
                self.signed(row.partition as i128);
                self.signed(row.offset as i128);
                self.optional_text(row.key.as_deref());
                self.text(&row.reason);
                self.signed(row.rejected_at as i128);
            }
            SourceRow::Progress(row) => {
                self.bytes.push(1);
                self.text(&row.topic);
                self.signed(row.partition as i128);
                self.signed(row.next_offset as i128);
                self.signed(row.high_watermark as i128);
                self.unsigned(row.lag);
                self.bytes.push(row.state as u8);
                self.optional_text(row.state_reason.as_deref());
            }
        }
    }

    /// Appends a fingerprint (16 bytes, little-endian).
    pub fn fingerprint(&mut self, key: u128) {
        self.bytes.extend_from_slice(&key.to_le_bytes());
    }
}

/// Reads values back from a byte slice, in the order they were written.
pub struct Decoder<'a> {
    bytes: &'a [u8],
}

impl<'a> Decoder<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Decoder { bytes }
    }

    /// Whether every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    fn take(&mut self, count: usize) -> Result<&'a [u8], CodecError> {
        if self.bytes.len() < count {
            return Err(CodecError::Truncated);
        }
        let (taken, rest) = self.bytes.split_at(count);
        self.bytes = rest;
        Ok(taken)
    }
    fn byte(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }
    fn varint(&mut self) -> Result<u128, CodecError> {
        let mut value = 0u128;
        for shift in (0..128).step_by(7) {
            let byte = self.byte()?;
            value |= ((byte & 0x7f) as u128) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(CodecError::VarintOverflow)
    }
    fn unsigned(&mut self) -> Result<u64, CodecError> {
        u64::try_from(self.varint()?).map_err(|_| CodecError::VarintOverflow)
    }
    fn small(&mut self) -> Result<u32, CodecError> {
        u32::try_from(self.unsigned()?).map_err(|_| CodecError::VarintOverflow)
    }
    fn signed(&mut self) -> Result<i128, CodecError> {
        let value = self.varint()?;
        Ok(((value >> 1) as i128) ^ -((value & 1) as i128))
    }
    fn signed_as<T: TryFrom<i128>>(&mut self) -> Result<T, CodecError> {
        T::try_from(self.signed()?).map_err(|_| CodecError::VarintOverflow)
    }
    fn text(&mut self) -> Result<Text, CodecError> {
        let len = self.unsigned()? as usize;
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes)
            .map(Text::from)
            .map_err(|_| CodecError::NotUtf8)
    }
    fn optional<T>(
        &mut self,
        read: impl FnOnce(&mut Self) -> Result<T, CodecError>,
    ) -> Result<Option<T>, CodecError> {
        match self.byte()? {
            0 => Ok(None),
            1 => read(self).map(Some),
            tag => Err(CodecError::UnknownTag {
                what: "option",
                tag: tag as u64,
            }),
        }
    }
    fn decimal(&mut self) -> Result<Decimal, CodecError> {
        let scale = self.byte()? as u32;
        let mantissa = self.signed()?;
        Decimal::try_from_i128_with_scale(mantissa, scale).map_err(|_| CodecError::BadScale(scale))
    }
    fn match_level(&mut self) -> Result<MatchLevel, CodecError> {
        self.tag("match level", &MatchLevel::ALL)
    }
    fn currency(&mut self) -> Result<Currency, CodecError> {
        let bytes = self.take(3)?;
        Ok(Currency([bytes[0], bytes[1], bytes[2]]))
    }
    fn tag<T>(&mut self, what: &'static str, values: &[T]) -> Result<T, CodecError>
    where
        T: Copy,
    {
        let tag = self.byte()?;
        values
            .get(tag as usize)
            .copied()
            .ok_or(CodecError::UnknownTag {
                what,
                tag: tag as u64,
            })
    }
    fn lines<T>(
        &mut self,
        mut read: impl FnMut(&mut Self) -> Result<T, CodecError>,
    ) -> Result<Vec<T>, CodecError> {
        let count = self.unsigned()? as usize;
        // Each line takes at least one byte: a corrupt count cannot make
        // the allocation larger than what is left.
        let mut lines = Vec::with_capacity(count.min(self.bytes.len()));
        for _ in 0..count {
            lines.push(read(self)?);
        }
        Ok(lines)
    }

    /// Reads one document.
    pub fn document(&mut self) -> Result<Document, CodecError> {
        let kind = self.byte()?;
        Ok(match kind {
            0 => Document::PurchaseOrder(Arc::new(PurchaseOrder {
                tenant_id: self.text()?,
                po_number: self.text()?,
                vendor_id: self.text()?,
                currency: self.currency()?,
                status: self.tag(
                    "PO status",
                    &[PoStatus::Open, PoStatus::Closed, PoStatus::Cancelled],
                )?,
                receipt_required: self.tag("bool", &[false, true])?,
                match_level: self.optional(Self::match_level)?,
                lines: self.lines(|d| {
                    Ok(PoLine {
                        line_no: d.small()?,
                        sku: d.optional(Self::text)?,
                        category: d.optional(Self::text)?,
                        match_level: d.optional(Self::match_level)?,
                        quantity: d.decimal()?,
                        unit_price: d.decimal()?,
                    })
                })?,
            })),
            1 => Document::GoodsReceipt(Arc::new(GoodsReceipt {
                tenant_id: self.text()?,
                receipt_id: self.text()?,
                po_number: self.text()?,
                received_at: self.optional(Self::text)?,
                lines: self.lines(|d| {
                    Ok(ReceiptLine {
                        po_line_no: d.small()?,
                        quantity: d.decimal()?,
                        accepted_quantity: d.decimal()?,
                    })
                })?,
            })),
            2 => Document::Invoice(Arc::new(Invoice {
                tenant_id: self.text()?,
                invoice_id: self.text()?,
                kind: self.tag(
                    "invoice kind",
                    &[InvoiceKind::Invoice, InvoiceKind::CreditMemo],
                )?,
                status: self.tag(
                    "invoice status",
                    &[InvoiceStatus::Active, InvoiceStatus::Cancelled],
                )?,
                vendor_id: self.text()?,
                invoice_number: self.text()?,
                po_number: self.text()?,
                currency: self.currency()?,
                invoice_date: self.signed_as()?,
                lines: self.lines(|d| {
                    Ok(InvoiceLine {
                        po_line_no: d.small()?,
                        quantity: d.decimal()?,
                        unit_price: d.decimal()?,
                    })
                })?,
                tax: self.decimal()?,
                freight: self.decimal()?,
                total: self.optional(Self::decimal)?,
            })),
            3 => Document::MatchPolicy(Arc::new(MatchPolicy {
                tenant_id: self.text()?,
                vendor_id: self.optional(Self::text)?,
                category: self.optional(Self::text)?,
                price_tolerance_pct: self.optional(Self::decimal)?,
                price_tolerance_abs: self.optional(Self::decimal)?,
                price_tolerance_max_abs: self.optional(Self::decimal)?,
                qty_tolerance_pct: self.optional(Self::decimal)?,
                qty_tolerance_abs: self.optional(Self::decimal)?,
                total_tolerance_abs: self.optional(Self::decimal)?,
                amount_tolerance_pct: self.optional(Self::decimal)?,
                amount_tolerance_abs: self.optional(Self::decimal)?,
            })),
            4 => Document::ExceptionResolution(Arc::new(ExceptionResolution {
                tenant_id: self.text()?,
                invoice_id: self.text()?,
                exception_type: self.tag("exception type", &ExceptionType::ALL)?,
                po_line_no: self.optional(Self::small)?,
                decision: self.tag("decision", &[Decision::Accept, Decision::Reject])?,
                actual: self.optional(Self::decimal)?,
                resolved_by: self.text()?,
                resolved_at: self.signed_as()?,
                reason: self.optional(Self::text)?,
            })),
            5 => Document::Payment(Arc::new(Payment {
                tenant_id: self.text()?,
                payment_id: self.text()?,
                vendor_id: self.text()?,
                currency: self.currency()?,
                amount: self.decimal()?,
                paid_at: self.signed_as()?,
                status: self.tag(
                    "payment status",
                    &[PaymentStatus::Active, PaymentStatus::Void],
                )?,
                reference: self.optional(Self::text)?,
                allocations: self.lines(|d| {
                    Ok(Allocation {
                        invoice_id: d.text()?,
                        amount: d.decimal()?,
                    })
                })?,
            })),
            tag => {
                return Err(CodecError::UnknownTag {
                    what: "document",
                    tag: tag as u64,
                })
            }
        })
    }

    /// Reads one bookkeeping row.
    pub fn source_row(&mut self) -> Result<SourceRow, CodecError> {
        let kind = self.byte()?;
        Ok(match kind {
            0 => SourceRow::DeadLetter(DeadLetterRow {
                topic: self.text()?,
                partition: self.signed_as()?,
                offset: self.signed_as()?,
                key: self.optional(Self::text)?,
                reason: self.text()?,
                rejected_at: self.signed_as()?,
            }),
            1 => SourceRow::Progress(SourceProgressRow {
                topic: self.text()?,
                partition: self.signed_as()?,
                next_offset: self.signed_as()?,
                high_watermark: self.signed_as()?,
                lag: self.unsigned()?,
                state: self.tag(
                    "partition state",
                    &[
                        PartitionHealth::Ok,
                        PartitionHealth::Stalled,
                        PartitionHealth::Skipped,
                    ],
                )?,
                state_reason: self.optional(Self::text)?,
            }),
            tag => {
                return Err(CodecError::UnknownTag {
                    what: "bookkeeping row",
                    tag: tag as u64,
                })
            }
        })
    }

    /// Reads a fingerprint.
    pub fn fingerprint(&mut self) -> Result<u128, CodecError> {
        let bytes = self.take(16)?;
        let mut array = [0u8; 16];
        array.copy_from_slice(bytes);
        Ok(u128::from_le_bytes(array))
    }
}
