//! The input documents of SPEC §1.2 as validated Rust values, the coded
//! values they carry and the exception types of SPEC §2 ([`codes`]), and the
//! identifiers the matching graph keys them by ([`keys`]).
//!
//! Documents are immutable once decoded and travel through the dataflow behind an
//! [`Arc`], so joins clone a pointer rather than a document. Text fields are
//! [`Text`] (inline or shared) for the same reason. Keys inside the graph are
//! [`Fingerprint`]s — 128-bit hashes of the identity strings, in [`keys`] — so
//! that joins and arrangements compare and hash 16 bytes instead of strings.

use std::sync::Arc;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

pub mod codes;
pub mod keys;
pub use codes::*;
pub use keys::*;

/// Logical time: milliseconds since the Unix epoch at ingestion (SPEC §4).
pub type Time = u64;

/// The wall clock as a [`Time`]: `Time::now()`, with this trait in scope, is
/// the one reading of it (0 before the epoch).
pub trait WallClock {
    fn now() -> Self;
}

impl WallClock for Time {
    fn now() -> Time {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_millis() as Time)
    }
}

/// Immutable text. Strings of up to 23 bytes — identifiers, codes, most
/// names — are stored inline, so cloning one is a copy and comparing one
/// reads no other memory; longer strings are shared behind a reference count.
///
/// It was `Arc<str>`: arrangements clone and compare every row on every
/// merge, and with several text fields per row the reference counts and the
/// pointer chases to compare were a third of a worker's time.
pub type Text = smol_str::SmolStr;

/// A purchase order (topic `purchase_orders`). Lines are sorted by `line_no`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PurchaseOrder {
    pub tenant_id: Text,
    pub po_number: Text,
    pub vendor_id: Text,
    pub currency: Currency,
    pub status: PoStatus,
    pub receipt_required: bool,
    /// The PO's match level (§12.2); `None`: from `receipt_required`.
    pub match_level: Option<MatchLevel>,
    pub lines: Vec<PoLine>,
}

/// One line of a purchase order.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PoLine {
    pub line_no: u32,
    pub sku: Option<Text>,
    /// The item category or commodity code policies may be scoped to (§12.1).
    pub category: Option<Text>,
    /// The line's own match level (§12.2); `None`: the PO's.
    pub match_level: Option<MatchLevel>,
    pub quantity: Decimal,
    pub unit_price: Decimal,
}

impl PurchaseOrder {
    /// The effective match level of `line` (§12.2): the line's, else the
    /// PO's, else `three_way` when receipts are required, else `two_way`.
    pub fn match_level(&self, line: &PoLine) -> MatchLevel {
        line.match_level
            .or(self.match_level)
            .unwrap_or(if self.receipt_required {
                MatchLevel::ThreeWay
            } else {
                MatchLevel::TwoWay
            })
    }
    /// The document's identity key.
    pub fn key(&self) -> Fingerprint {
        po_key(&self.tenant_id, &self.po_number)
    }
    /// The line with `line_no`, if the PO has one.
    pub fn line(&self, line_no: u32) -> Option<&PoLine> {
        self.line_index(line_no).map(|index| &self.lines[index])
    }
    /// Where the line with `line_no` is in `lines`, if the PO has one.
    pub fn line_index(&self, line_no: u32) -> Option<usize> {
        self.lines
            .binary_search_by_key(&line_no, |line| line.line_no)
            .ok()
    }
}

/// A goods receipt (topic `goods_receipts`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct GoodsReceipt {
    pub tenant_id: Text,
    pub receipt_id: Text,
    pub po_number: Text,
    /// RFC 3339 timestamp as sent, if any.
    pub received_at: Option<Text>,
    pub lines: Vec<ReceiptLine>,
}

/// One line of a goods receipt. A negative quantity is a return to vendor.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ReceiptLine {
    pub po_line_no: u32,
    pub quantity: Decimal,
    /// What inspection accepted of `quantity` (§12.2): the same sign, at most
    /// its size; 0 until inspected.
    pub accepted_quantity: Decimal,
}

impl GoodsReceipt {
    /// The document's identity key.
    pub fn key(&self) -> Fingerprint {
        receipt_key(&self.tenant_id, &self.receipt_id)
    }
}

/// An invoice or credit memo (topic `invoices`). Lines are sorted by `po_line_no`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Invoice {
    pub tenant_id: Text,
    pub invoice_id: Text,
    pub kind: InvoiceKind,
    pub status: InvoiceStatus,
    pub vendor_id: Text,
    pub invoice_number: Text,
    pub po_number: Text,
    pub currency: Currency,
    /// Days since 1970-01-01 (Arrow `Date32`).
    pub invoice_date: i32,
    pub lines: Vec<InvoiceLine>,
    pub tax: Decimal,
    pub freight: Decimal,
    pub total: Option<Decimal>,
}

/// One line of an invoice; `quantity` is positive for both kinds.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct InvoiceLine {
    pub po_line_no: u32,
    pub quantity: Decimal,
    pub unit_price: Decimal,
}

impl Invoice {
    /// The document's identity key.
    pub fn key(&self) -> Fingerprint {
        invoice_key(&self.tenant_id, &self.invoice_id)
    }
    /// The key of the PO the invoice names.
    pub fn po_key(&self) -> Fingerprint {
        po_key(&self.tenant_id, &self.po_number)
    }
    /// Whether the invoice takes part in sums, ordering and duplicate checks.
    pub fn is_active(&self) -> bool {
        self.status == InvoiceStatus::Active
    }
    /// A line's quantity as it counts towards `billed_to_date`: negative for credit memos.
    pub fn signed_quantity(&self, line: &InvoiceLine) -> Decimal {
        match self.kind {
            InvoiceKind::Invoice => line.quantity,
            InvoiceKind::CreditMemo => -line.quantity,
        }
    }
    /// Σ quantity × unit_price over the lines.
    pub fn invoice_amount(&self) -> Decimal {
        self.lines
            .iter()
            .map(|line| line.quantity * line.unit_price)
            .sum()
    }
}

/// A tolerance policy (topic `match_policies`, SPEC §2 and §12.1): the
/// tenant's, or scoped to a vendor, an item category, or both. Absent fields
/// fall back level by level ([`Tolerances::resolve`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MatchPolicy {
    pub tenant_id: Text,
    /// The vendor the policy is for; `None`: every vendor.
    pub vendor_id: Option<Text>,
    /// The PO line category the policy is for; `None`: every line.
    pub category: Option<Text>,
    pub price_tolerance_pct: Option<Decimal>,
    pub price_tolerance_abs: Option<Decimal>,
    pub price_tolerance_max_abs: Option<Decimal>,
    pub qty_tolerance_pct: Option<Decimal>,
    pub qty_tolerance_abs: Option<Decimal>,
    pub total_tolerance_abs: Option<Decimal>,
    pub amount_tolerance_pct: Option<Decimal>,
    pub amount_tolerance_abs: Option<Decimal>,
}

impl MatchPolicy {
    /// The document's identity key: (tenant, vendor, category), the
    /// tenant's key for a tenant policy.
    pub fn key(&self) -> Fingerprint {
        policy_key(
            &self.tenant_id,
            self.vendor_id.as_deref(),
            self.category.as_deref(),
        )
    }
}

/// An analyst's decision on one exception (topic `exception_resolutions`,
/// SPEC §6). It applies to the raised exception with the same key, if any.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ExceptionResolution {
    pub tenant_id: Text,
    pub invoice_id: Text,
    pub exception_type: ExceptionType,
    /// Null for header exceptions.
    pub po_line_no: Option<u32>,
    pub decision: Decision,
    /// The exception's `actual` the analyst accepted, if stated.
    pub actual: Option<Decimal>,
    pub resolved_by: Text,
    /// Milliseconds since the Unix epoch, UTC (finer digits truncated).
    pub resolved_at: i64,
    pub reason: Option<Text>,
}

impl ExceptionResolution {
    /// The document's identity key, which is also its exception's.
    pub fn key(&self) -> Fingerprint {
        resolution_key(
            &self.tenant_id,
            &self.invoice_id,
            self.exception_type,
            self.po_line_no,
        )
    }
}

/// A payment to a vendor (topic `payments`, SPEC §8). Allocations are
/// sorted by `invoice_id`; none (or an empty list) means it is matched to
/// an invoice by its `reference`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Payment {
    pub tenant_id: Text,
    pub payment_id: Text,
    pub vendor_id: Text,
    pub currency: Currency,
    pub amount: Decimal,
    /// Days since 1970-01-01 (Arrow `Date32`).
    pub paid_at: i32,
    pub status: PaymentStatus,
    pub reference: Option<Text>,
    pub allocations: Vec<Allocation>,
}

/// The part of a payment applied to one named invoice.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Allocation {
    pub invoice_id: Text,
    pub amount: Decimal,
}

impl Payment {
    /// The document's identity key.
    pub fn key(&self) -> Fingerprint {
        payment_key(&self.tenant_id, &self.payment_id)
    }
    /// Whether it takes part in matching (it is not void).
    pub fn is_active(&self) -> bool {
        self.status == PaymentStatus::Active
    }
}

/// A fully resolved policy: the tolerances the rules of SPEC §2 and §12
/// apply to one invoice (header) or one invoice line.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Tolerances {
    pub price_tolerance_pct: Decimal,
    pub price_tolerance_abs: Decimal,
    /// The cap on the price allowance, if any (§12.1).
    pub price_tolerance_max_abs: Option<Decimal>,
    pub qty_tolerance_pct: Decimal,
    pub qty_tolerance_abs: Decimal,
    pub total_tolerance_abs: Decimal,
    pub amount_tolerance_pct: Decimal,
    pub amount_tolerance_abs: Decimal,
}

impl Default for Tolerances {
    /// The SPEC's global default: exact prices and quantities, totals to
    /// the cent, no cap.
    fn default() -> Self {
        Tolerances {
            price_tolerance_pct: Decimal::ZERO,
            price_tolerance_abs: Decimal::ZERO,
            price_tolerance_max_abs: None,
            qty_tolerance_pct: Decimal::ZERO,
            qty_tolerance_abs: Decimal::ZERO,
            total_tolerance_abs: Decimal::new(1, 2),
            amount_tolerance_pct: Decimal::ZERO,
            amount_tolerance_abs: Decimal::ZERO,
        }
    }
}

impl Tolerances {
    /// SPEC §12.1's field-by-field resolution: each field from the first of
    /// `levels` (most specific first; absent levels are `None`) that gives
    /// it, else from `default`.
    ///
    /// ```
    /// # use trimatch_dataflows::model::*;
    /// # use rust_decimal::Decimal;
    /// let vendor = MatchPolicy { price_tolerance_pct: Some(Decimal::new(5, 0)), ..Default::default() };
    /// let category = MatchPolicy { price_tolerance_max_abs: Some(Decimal::new(50, 0)), ..Default::default() };
    /// let line = Tolerances::resolve([None, Some(&vendor), Some(&category), None], &Tolerances::default());
    /// assert_eq!(line.price_tolerance_pct, Decimal::new(5, 0));
    /// assert_eq!(line.price_tolerance_max_abs, Some(Decimal::new(50, 0)));
    /// ```
    pub fn resolve<'a>(
        levels: impl IntoIterator<Item = Option<&'a MatchPolicy>> + Clone,
        default: &Tolerances,
    ) -> Tolerances {
        let field = |get: fn(&MatchPolicy) -> Option<Decimal>| {
            levels.clone().into_iter().flatten().find_map(get)
        };
        Tolerances {
            price_tolerance_pct: field(|p| p.price_tolerance_pct)
                .unwrap_or(default.price_tolerance_pct),
            price_tolerance_abs: field(|p| p.price_tolerance_abs)
                .unwrap_or(default.price_tolerance_abs),
            price_tolerance_max_abs: field(|p| p.price_tolerance_max_abs)
                .or(default.price_tolerance_max_abs),
            qty_tolerance_pct: field(|p| p.qty_tolerance_pct).unwrap_or(default.qty_tolerance_pct),
            qty_tolerance_abs: field(|p| p.qty_tolerance_abs).unwrap_or(default.qty_tolerance_abs),
            total_tolerance_abs: field(|p| p.total_tolerance_abs)
                .unwrap_or(default.total_tolerance_abs),
            amount_tolerance_pct: field(|p| p.amount_tolerance_pct)
                .unwrap_or(default.amount_tolerance_pct),
            amount_tolerance_abs: field(|p| p.amount_tolerance_abs)
                .unwrap_or(default.amount_tolerance_abs),
        }
    }
}

/// Which input topic a document comes from.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum DocumentKind {
    PurchaseOrder,
    GoodsReceipt,
    Invoice,
    MatchPolicy,
    ExceptionResolution,
    Payment,
}

impl DocumentKind {
    /// All kinds, in topic order.
    pub const ALL: [DocumentKind; 6] = [
        DocumentKind::PurchaseOrder,
        DocumentKind::GoodsReceipt,
        DocumentKind::Invoice,
        DocumentKind::MatchPolicy,
        DocumentKind::ExceptionResolution,
        DocumentKind::Payment,
    ];
    /// The default topic name (SPEC §1).
    pub fn default_topic(&self) -> &'static str {
        match self {
            DocumentKind::PurchaseOrder => "purchase_orders",
            DocumentKind::GoodsReceipt => "goods_receipts",
            DocumentKind::Invoice => "invoices",
            DocumentKind::MatchPolicy => "match_policies",
            DocumentKind::ExceptionResolution => "exception_resolutions",
            DocumentKind::Payment => "payments",
        }
    }
    /// The names of the identity fields, tenant first.
    pub fn identity_fields(&self) -> &'static [&'static str] {
        match self {
            DocumentKind::PurchaseOrder => &["tenant_id", "po_number"],
            DocumentKind::GoodsReceipt => &["tenant_id", "receipt_id"],
            DocumentKind::Invoice => &["tenant_id", "invoice_id"],
            DocumentKind::MatchPolicy => &["tenant_id", "vendor_id", "category"],
            DocumentKind::ExceptionResolution => {
                &["tenant_id", "invoice_id", "exception_type", "po_line_no"]
            }
            DocumentKind::Payment => &["tenant_id", "payment_id"],
        }
    }
    /// Whether identity field `field` of this kind is an optional line
    /// number (a resolution's `po_line_no`) rather than a required identifier.
    /// In identity values it is written in decimal, or empty for null.
    pub fn is_line_number_identity(&self, field: &str) -> bool {
        *self == DocumentKind::ExceptionResolution && field == "po_line_no"
    }
    /// Whether identity field `field` of this kind is an optional text (a
    /// policy's `vendor_id` and `category`). In identity values it is its
    /// text, or empty for null; a key may leave it out.
    pub fn is_optional_text_identity(&self, field: &str) -> bool {
        *self == DocumentKind::MatchPolicy && (field == "vendor_id" || field == "category")
    }
    /// Whether a key may leave identity field `field` out (it is then null).
    pub fn is_optional_identity(&self, field: &str) -> bool {
        self.is_line_number_identity(field) || self.is_optional_text_identity(field)
    }
    /// The identity key of the document with these identity field values
    /// (in the order of [`identity_fields`](Self::identity_fields)).
    pub fn key_of(&self, identity: &[&str]) -> Fingerprint {
        match (self, identity) {
            (DocumentKind::PurchaseOrder, [tenant, id]) => po_key(tenant, id),
            (DocumentKind::GoodsReceipt, [tenant, id]) => receipt_key(tenant, id),
            (DocumentKind::Invoice, [tenant, id]) => invoice_key(tenant, id),
            (DocumentKind::MatchPolicy, [tenant, vendor, category]) => policy_key(
                tenant,
                Some(*vendor).filter(|text| !text.is_empty()),
                Some(*category).filter(|text| !text.is_empty()),
            ),
            (DocumentKind::Payment, [tenant, id]) => payment_key(tenant, id),
            (DocumentKind::ExceptionResolution, [tenant, invoice, exception_type, line]) => {
                // The identity values come from the decoders, which validated
                // both (a type of SPEC §2, a line number or empty).
                let exception_type =
                    ExceptionType::from_name(exception_type).expect("a validated exception type");
                resolution_key(tenant, invoice, exception_type, line.parse().ok())
            }
            _ => panic!(
                "{self:?} identity has {} parts",
                self.identity_fields().len()
            ),
        }
    }
}

/// A decoded, validated document of any kind.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Document {
    PurchaseOrder(Arc<PurchaseOrder>),
    GoodsReceipt(Arc<GoodsReceipt>),
    Invoice(Arc<Invoice>),
    MatchPolicy(Arc<MatchPolicy>),
    ExceptionResolution(Arc<ExceptionResolution>),
    Payment(Arc<Payment>),
}

impl Document {
    /// Which topic kind the document belongs to.
    pub fn kind(&self) -> DocumentKind {
        match self {
            Document::PurchaseOrder(_) => DocumentKind::PurchaseOrder,
            Document::GoodsReceipt(_) => DocumentKind::GoodsReceipt,
            Document::Invoice(_) => DocumentKind::Invoice,
            Document::MatchPolicy(_) => DocumentKind::MatchPolicy,
            Document::ExceptionResolution(_) => DocumentKind::ExceptionResolution,
            Document::Payment(_) => DocumentKind::Payment,
        }
    }
    /// The document's identity key.
    pub fn key(&self) -> Fingerprint {
        match self {
            Document::PurchaseOrder(doc) => doc.key(),
            Document::GoodsReceipt(doc) => doc.key(),
            Document::Invoice(doc) => doc.key(),
            Document::MatchPolicy(doc) => doc.key(),
            Document::ExceptionResolution(doc) => doc.key(),
            Document::Payment(doc) => doc.key(),
        }
    }
}
