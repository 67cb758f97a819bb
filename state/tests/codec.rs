//! The checkpoint codec: every document kind and bookkeeping row survives an
//! encode and decode exactly (scales included), and damaged bytes are errors,
//! never panics.

use std::str::FromStr;
use std::sync::Arc;

use rust_decimal::Decimal;
use trimatch_dataflows::model::{
    Allocation, Currency, Decision, Document, ExceptionResolution, ExceptionType, GoodsReceipt,
    Invoice, InvoiceKind, InvoiceStatus, MatchLevel, MatchPolicy, Payment, PaymentStatus, PoLine,
    PoStatus, PurchaseOrder, ReceiptLine,
};
use trimatch_dataflows::rows::{DeadLetterRow, PartitionHealth, SourceProgressRow};
use trimatch_dataflows::SourceRow;
use trimatch_state::codec::{CodecError, Decoder, Encoder};

fn dec(text: &str) -> Decimal {
    Decimal::from_str(text).unwrap()
}

fn documents() -> Vec<Document> {
    vec![
        Document::PurchaseOrder(Arc::new(PurchaseOrder {
            tenant_id: "t-1".into(),
            po_number: "PO-1".into(),
            vendor_id: "v".into(),
            currency: Currency(*b"EUR"),
            status: PoStatus::Cancelled,
            receipt_required: true,
            match_level: Some(MatchLevel::TwoWay),
            lines: vec![PoLine {
                category: Some("packaging".into()),
                match_level: Some(MatchLevel::FourWay),
                line_no: 3,
                sku: Some("a much longer sku than twenty-three bytes".into()),
                quantity: dec("-0.0001"),
                unit_price: dec("79228162514264337593543950335"),
            }],
        })),
        Document::GoodsReceipt(Arc::new(GoodsReceipt {
            tenant_id: "t".into(),
            receipt_id: "r".into(),
            po_number: "PO".into(),
            received_at: None,
            lines: vec![ReceiptLine {
                po_line_no: u32::MAX,
                quantity: dec("-5"),
                accepted_quantity: dec("-4.5"),
            }],
        })),
        Document::Invoice(Arc::new(Invoice {
            tenant_id: "t".into(),
            invoice_id: "i".into(),
            kind: InvoiceKind::CreditMemo,
            status: InvoiceStatus::Cancelled,
            vendor_id: "v".into(),
            invoice_number: "N".into(),
            po_number: "PO".into(),
            currency: Currency(*b"USD"),
            invoice_date: -3,
            lines: vec![],
            tax: dec("1.10"),
            freight: Decimal::ZERO,
            total: Some(dec("0.00")),
        })),
        Document::MatchPolicy(Arc::new(MatchPolicy {
            tenant_id: "t".into(),
            price_tolerance_pct: Some(dec("2.5")),
            ..MatchPolicy::default()
        })),
        Document::MatchPolicy(Arc::new(MatchPolicy {
            tenant_id: "t".into(),
            vendor_id: Some("V-17".into()),
            category: Some("packaging".into()),
            price_tolerance_max_abs: Some(dec("50")),
            qty_tolerance_abs: Some(dec("0.000001")),
            amount_tolerance_pct: Some(dec("3")),
            amount_tolerance_abs: Some(dec("12.5")),
            ..MatchPolicy::default()
        })),
        Document::ExceptionResolution(Arc::new(ExceptionResolution {
            tenant_id: "t".into(),
            invoice_id: "i".into(),
            exception_type: ExceptionType::QtyExceedsOrdered,
            po_line_no: Some(3),
            decision: Decision::Accept,
            actual: Some(dec("-2.500")),
            resolved_by: "j.doe".into(),
            resolved_at: -1_000,
            reason: None,
        })),
        Document::ExceptionResolution(Arc::new(ExceptionResolution {
            tenant_id: "t".into(),
            invoice_id: "i".into(),
            exception_type: ExceptionType::PoNotFound,
            po_line_no: None,
            decision: Decision::Reject,
            actual: None,
            resolved_by: "a".into(),
            resolved_at: 1_764_000_000_000,
            reason: Some("disputed".into()),
        })),
        Document::Payment(Arc::new(Payment {
            tenant_id: "t".into(),
            payment_id: "p".into(),
            vendor_id: "v".into(),
            currency: Currency(*b"EUR"),
            amount: dec("162.000001"),
            paid_at: 20_412,
            status: PaymentStatus::Void,
            reference: Some("A 3342".into()),
            allocations: vec![Allocation {
                invoice_id: "i".into(),
                amount: dec("0.50"),
            }],
        })),
    ]
}

#[test]
fn documents_and_rows_round_trip_exactly() {
    let rows = vec![
        SourceRow::DeadLetter(DeadLetterRow {
            topic: "invoices".into(),
            partition: 2,
            offset: i64::MAX,
            key: None,
            reason: "lines[0].quantity: not a decimal".into(),
            rejected_at: -1,
        }),
        SourceRow::Progress(SourceProgressRow {
            topic: "t".into(),
            partition: 0,
            next_offset: 10,
            high_watermark: 12,
            lag: 2,
            state: PartitionHealth::Skipped,
            state_reason: Some("why".into()),
        }),
    ];
    let mut encoder = Encoder::default();
    for document in documents() {
        encoder.document(&document);
    }
    for row in &rows {
        encoder.source_row(row);
    }
    let mut decoder = Decoder::new(&encoder.bytes);
    for document in documents() {
        let decoded = decoder.document().unwrap();
        assert_eq!(decoded, document);
    }
    for row in rows {
        assert_eq!(decoder.source_row().unwrap(), row);
    }
    assert!(decoder.is_empty());
    // Scales survive: 1.10 stays 1.10, not 1.1.
    let mut encoder = Encoder::default();
    encoder.document(&documents()[2]);
    let Document::Invoice(invoice) = Decoder::new(&encoder.bytes).document().unwrap() else {
        panic!("an invoice");
    };
    assert_eq!(invoice.tax.to_string(), "1.10");
}

#[test]
fn damaged_bytes_are_errors_not_panics() {
    let mut encoder = Encoder::default();
    for document in documents() {
        encoder.document(&document);
    }
    for cut in 0..encoder.bytes.len() {
        let mut decoder = Decoder::new(&encoder.bytes[..cut]);
        let all: Result<Vec<_>, _> = (0..documents().len()).map(|_| decoder.document()).collect();
        assert!(all.is_err(), "a cut at {cut} decoded");
    }
    let mut decoder = Decoder::new(&[9]);
    assert_eq!(
        decoder.document(),
        Err(CodecError::UnknownTag {
            what: "document",
            tag: 9
        })
    );
}
