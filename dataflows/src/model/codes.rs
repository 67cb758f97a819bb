//! The coded values documents carry — currency codes, statuses, kinds and
//! decisions — and the exception types of SPEC §2 that resolutions and the
//! outputs name, each with its wire spelling.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A three-letter ISO 4217 currency code (validated upper-case ASCII).
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Currency(pub [u8; 3]);

impl Currency {
    /// The code as text.
    pub fn as_str(&self) -> &str {
        // Constructed only from three ASCII upper-case letters.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }
}
impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `status` of a purchase order.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PoStatus {
    Open,
    Closed,
    Cancelled,
}
impl PoStatus {
    /// The wire spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            PoStatus::Open => "open",
            PoStatus::Closed => "closed",
            PoStatus::Cancelled => "cancelled",
        }
    }
}

/// How many documents a PO line is matched against (SPEC §12.2): the
/// invoice and the PO (`two_way`), and the receipts (`three_way`), and what
/// inspection accepted (`four_way`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum MatchLevel {
    TwoWay,
    ThreeWay,
    FourWay,
}
impl MatchLevel {
    /// Every level, as spelled on the wire.
    pub const ALL: [MatchLevel; 3] = [
        MatchLevel::TwoWay,
        MatchLevel::ThreeWay,
        MatchLevel::FourWay,
    ];

    /// The wire spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            MatchLevel::TwoWay => "two_way",
            MatchLevel::ThreeWay => "three_way",
            MatchLevel::FourWay => "four_way",
        }
    }

    /// The level with this wire spelling.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|level| level.as_str() == name)
    }

    /// Whether receipts are checked (`RECEIPT_MISSING`, `QTY_EXCEEDS_RECEIVED`).
    pub fn checks_receipts(&self) -> bool {
        *self != MatchLevel::TwoWay
    }
}

/// `kind` of an invoice document.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum InvoiceKind {
    Invoice,
    CreditMemo,
}
impl InvoiceKind {
    /// The wire spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            InvoiceKind::Invoice => "invoice",
            InvoiceKind::CreditMemo => "credit_memo",
        }
    }
}

/// `status` of an invoice document.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum InvoiceStatus {
    Active,
    Cancelled,
}
impl InvoiceStatus {
    /// The wire spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            InvoiceStatus::Active => "active",
            InvoiceStatus::Cancelled => "cancelled",
        }
    }
}

/// `decision` of an exception resolution.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Decision {
    Accept,
    Reject,
}
impl Decision {
    /// The wire spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            Decision::Accept => "accept",
            Decision::Reject => "reject",
        }
    }
}

/// The exception types of SPEC §2.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ExceptionType {
    PoNotFound,
    PoClosed,
    VendorMismatch,
    CurrencyMismatch,
    DuplicateInvoice,
    TotalMismatch,
    LineNotOnPo,
    PriceVariance,
    ReceiptMissing,
    QtyExceedsReceived,
    QtyExceedsOrdered,
    /// §12.2: a four-way line billed past what inspection accepted.
    QtyExceedsAccepted,
}

/// How much an exception matters: blocking ones keep an invoice from `matched`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Severity {
    Blocking,
    Warning,
}

impl Severity {
    /// The wire spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            Severity::Blocking => "blocking",
            Severity::Warning => "warning",
        }
    }
}

impl ExceptionType {
    /// Every exception type, in SPEC order.
    pub const ALL: [ExceptionType; 12] = [
        ExceptionType::PoNotFound,
        ExceptionType::PoClosed,
        ExceptionType::VendorMismatch,
        ExceptionType::CurrencyMismatch,
        ExceptionType::DuplicateInvoice,
        ExceptionType::TotalMismatch,
        ExceptionType::LineNotOnPo,
        ExceptionType::PriceVariance,
        ExceptionType::ReceiptMissing,
        ExceptionType::QtyExceedsReceived,
        ExceptionType::QtyExceedsOrdered,
        ExceptionType::QtyExceedsAccepted,
    ];

    /// The wire spelling, e.g. `PRICE_VARIANCE`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ExceptionType::PoNotFound => "PO_NOT_FOUND",
            ExceptionType::PoClosed => "PO_CLOSED",
            ExceptionType::VendorMismatch => "VENDOR_MISMATCH",
            ExceptionType::CurrencyMismatch => "CURRENCY_MISMATCH",
            ExceptionType::DuplicateInvoice => "DUPLICATE_INVOICE",
            ExceptionType::TotalMismatch => "TOTAL_MISMATCH",
            ExceptionType::LineNotOnPo => "LINE_NOT_ON_PO",
            ExceptionType::PriceVariance => "PRICE_VARIANCE",
            ExceptionType::ReceiptMissing => "RECEIPT_MISSING",
            ExceptionType::QtyExceedsReceived => "QTY_EXCEEDS_RECEIVED",
            ExceptionType::QtyExceedsOrdered => "QTY_EXCEEDS_ORDERED",
            ExceptionType::QtyExceedsAccepted => "QTY_EXCEEDS_ACCEPTED",
        }
    }

    /// The type with this wire spelling.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// Whether the type is raised for a PO line (it has a `po_line_no`).
    pub fn is_line_level(&self) -> bool {
        matches!(
            self,
            ExceptionType::LineNotOnPo
                | ExceptionType::PriceVariance
                | ExceptionType::ReceiptMissing
                | ExceptionType::QtyExceedsReceived
                | ExceptionType::QtyExceedsOrdered
                | ExceptionType::QtyExceedsAccepted
        )
    }

    /// Only `TOTAL_MISMATCH` is a warning; every other type blocks.
    pub fn severity(&self) -> Severity {
        match self {
            ExceptionType::TotalMismatch => Severity::Warning,
            _ => Severity::Blocking,
        }
    }

    /// The types the quantity rules raise (over `billed_to_date`).
    pub const QUANTITY: [ExceptionType; 4] = [
        ExceptionType::ReceiptMissing,
        ExceptionType::QtyExceedsReceived,
        ExceptionType::QtyExceedsOrdered,
        ExceptionType::QtyExceedsAccepted,
    ];

    /// Whether a document of `kind` can raise this type (SPEC §2): an
    /// invoice any; a credit memo only `PO_NOT_FOUND`, `VENDOR_MISMATCH`,
    /// `CURRENCY_MISMATCH`, `LINE_NOT_ON_PO` and `TOTAL_MISMATCH`.
    pub fn applies_to(&self, kind: InvoiceKind) -> bool {
        match kind {
            InvoiceKind::Invoice => true,
            InvoiceKind::CreditMemo => matches!(
                self,
                ExceptionType::PoNotFound
                    | ExceptionType::VendorMismatch
                    | ExceptionType::CurrencyMismatch
                    | ExceptionType::LineNotOnPo
                    | ExceptionType::TotalMismatch
            ),
        }
    }
}

impl fmt::Display for ExceptionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `status` of a payment.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PaymentStatus {
    Active,
    Void,
}
impl PaymentStatus {
    /// The wire spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            PaymentStatus::Active => "active",
            PaymentStatus::Void => "void",
        }
    }
}
