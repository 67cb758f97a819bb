//! Random histories for the equivalence tests: documents over a small
//! identifier space, so that they collide, duplicate and refer to each other
//! often, and analysts' decisions on the exceptions they raise.

use std::collections::BTreeMap;
use std::sync::Arc;

use rand::rngs::SmallRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use trimatch_dataflows::model::*;
use trimatch_dataflows::preview::PolicyChanges;

use super::Feed;

const TENANTS: [&str; 2] = ["acme", "globex"];
const VENDORS: [&str; 2] = ["V-1", "V-2"];
const CATEGORIES: [&str; 2] = ["packaging", "lab-equipment"];
/// Short numbers that collide as duplicates, and long ones one or two edits
/// apart for payment references (SPEC §8's similarity needs 5 characters
/// or more to forgive an edit).
const INVOICE_NUMBERS: [&str; 8] = [
    "A-1",
    " a-1 ",
    "A-2",
    "b-7",
    "B-7 ",
    "INV-33421",
    "inv-33427",
    "INV 33412",
];

/// Builds random documents over a small identifier space, so that documents
/// collide, duplicate and refer to each other often.
pub struct History {
    rng: SmallRng,
    next_offset: i64,
    /// Whether most invoices bill one hot PO line ([`HOT_PO`] line 1), as on
    /// a blanket PO: hundreds of them, in random date order, with credit
    /// memos, cancellations and deletions among them.
    hot: bool,
}

/// The blanket PO of hot histories.
pub const HOT_PO: &str = "PO-HOT";

impl History {
    pub fn new(seed: u64, hot: bool) -> Self {
        History {
            rng: SmallRng::seed_from_u64(seed),
            next_offset: 0,
            hot,
        }
    }

    /// In a hot history, mostly `HOT_PO` of tenant `acme`.
    fn hot_po(&mut self, probability: f64) -> Option<(Text, Text)> {
        (self.hot && self.rng.random_bool(probability)).then(|| ("acme".into(), HOT_PO.into()))
    }
}

impl History {
    fn decimal(&mut self, max_units: i64, fraction_digits: u32) -> Decimal {
        let scale = 10i64.pow(fraction_digits);
        Decimal::new(
            self.rng.random_range(1..=max_units * scale),
            fraction_digits,
        )
    }

    fn pick<'a>(&mut self, options: &[&'a str]) -> &'a str {
        options.choose(&mut self.rng).unwrap()
    }

    fn id(&mut self, prefix: &str, count: u32) -> Text {
        format!("{prefix}-{}", self.rng.random_range(1..=count)).into()
    }

    fn currency(&mut self) -> Currency {
        if self.rng.random_bool(0.9) {
            Currency(*b"USD")
        } else {
            Currency(*b"EUR")
        }
    }

    fn purchase_order(&mut self) -> PurchaseOrder {
        let mut line_numbers: Vec<u32> = (1..=4).filter(|_| self.rng.random_bool(0.7)).collect();
        if line_numbers.is_empty() {
            line_numbers.push(1);
        }
        let lines: Vec<PoLine> = line_numbers
            .into_iter()
            .map(|line_no| PoLine {
                line_no,
                sku: self
                    .rng
                    .random_bool(0.5)
                    .then(|| Text::from(format!("SKU-{line_no}"))),
                category: self
                    .rng
                    .random_bool(0.7)
                    .then(|| Text::from(*CATEGORIES.choose(&mut self.rng).expect("categories"))),
                match_level: self.match_level(0.25),
                quantity: self.decimal(20, 1),
                unit_price: Decimal::new(self.rng.random_range(100..=500), 2),
            })
            .collect();
        let (tenant_id, po_number) = match self.hot_po(0.5) {
            Some(hot) => hot,
            None => (self.pick(&TENANTS).into(), self.id("PO", 5)),
        };
        // A blanket PO's lines are ordered in bulk: hundreds of invoices of
        // up to ten cross its quantity part way through.
        let lines = if *po_number == *HOT_PO {
            lines
                .into_iter()
                .map(|line| PoLine {
                    quantity: Decimal::from(self.rng.random_range(100..=600)),
                    ..line
                })
                .collect()
        } else {
            lines
        };
        PurchaseOrder {
            tenant_id,
            po_number,
            vendor_id: self.pick(&VENDORS).into(),
            currency: self.currency(),
            status: *[
                PoStatus::Open,
                PoStatus::Open,
                PoStatus::Open,
                PoStatus::Open,
                PoStatus::Closed,
                PoStatus::Cancelled,
            ]
            .choose(&mut self.rng)
            .unwrap(),
            receipt_required: self.rng.random_bool(0.8),
            match_level: self.match_level(0.4),
            lines,
        }
    }

    /// A §12.2 match level with `probability`, else none (the PO's, or
    /// `receipt_required`'s).
    fn match_level(&mut self, probability: f64) -> Option<MatchLevel> {
        self.rng
            .random_bool(probability)
            .then(|| *MatchLevel::ALL.choose(&mut self.rng).expect("levels"))
    }

    fn goods_receipt(&mut self) -> GoodsReceipt {
        let lines: Vec<ReceiptLine> = (0..self.rng.random_range(1..=3))
            .map(|_| {
                let mut quantity = self.decimal(12, 1);
                if self.rng.random_bool(0.15) {
                    quantity = -quantity; // a return to vendor
                }
                // Inspection: none yet, part, or all of it (§12.2).
                let accepted_share =
                    Decimal::new(self.rng.random_range(0..=4), 0) / Decimal::from(4);
                ReceiptLine {
                    po_line_no: self.rng.random_range(1..=4),
                    quantity,
                    accepted_quantity: quantity * accepted_share,
                }
            })
            .collect();
        let (tenant_id, po_number) = match self.hot_po(0.6) {
            Some(hot) => hot,
            None => (self.pick(&TENANTS).into(), self.id("PO", 5)),
        };
        let lines = if *po_number == *HOT_PO {
            lines
                .into_iter()
                .map(|line| ReceiptLine {
                    quantity: line.quantity * Decimal::from(20),
                    accepted_quantity: line.accepted_quantity * Decimal::from(20),
                    ..line
                })
                .collect()
        } else {
            lines
        };
        GoodsReceipt {
            tenant_id,
            receipt_id: self.id("GR", 6),
            po_number,
            received_at: None,
            lines,
        }
    }

    fn invoice(&mut self, documents: &BTreeMap<Fingerprint, Document>) -> Invoice {
        let hot = self.hot_po(0.85);
        let (tenant_id, po_number): (Text, Text) = match hot.clone() {
            Some(hot) => hot,
            // A mistyped PO number: `po-03` for `PO-3` (SPEC §7 finds it).
            None if self.rng.random_bool(0.15) => {
                let n = self.rng.random_range(1..=5);
                (self.pick(&TENANTS).into(), format!("po-0{n}").into())
            }
            None => (self.pick(&TENANTS).into(), self.id("PO", 5)),
        };
        let po = match documents.get(&po_key(&tenant_id, &po_number)) {
            Some(Document::PurchaseOrder(po)) => Some(po.clone()),
            _ => None,
        };
        let mut line_numbers: Vec<u32> = (1..=4).filter(|_| self.rng.random_bool(0.4)).collect();
        if line_numbers.is_empty() || hot.is_some() {
            line_numbers.retain(|&line| line > 1 && self.rng.random_bool(0.3));
            line_numbers.insert(0, 1);
        }
        let lines: Vec<InvoiceLine> = line_numbers
            .into_iter()
            .map(|po_line_no| {
                // Mostly the PO's price, sometimes a little or a lot above or below it.
                let base = po
                    .as_ref()
                    .and_then(|po| po.line(po_line_no))
                    .map(|line| line.unit_price)
                    .unwrap_or(Decimal::new(250, 2));
                let unit_price = match self.rng.random_range(0..10) {
                    0 => base + Decimal::new(self.rng.random_range(1..=10), 2),
                    1 => base + Decimal::new(self.rng.random_range(1..=100), 1),
                    2 if base > Decimal::ONE => base - Decimal::new(5, 1),
                    _ => base,
                };
                InvoiceLine {
                    po_line_no,
                    quantity: self.decimal(10, 1),
                    unit_price,
                }
            })
            .collect();
        let tax = if self.rng.random_bool(0.5) {
            Decimal::new(self.rng.random_range(0..500), 2)
        } else {
            Decimal::ZERO
        };
        let amount: Decimal = lines.iter().map(|l| l.quantity * l.unit_price).sum();
        let total = match self.rng.random_range(0..4) {
            0 => None,
            1 => Some(amount + tax + Decimal::new(self.rng.random_range(-300..300), 2)),
            _ => Some(amount + tax),
        };
        Invoice {
            tenant_id,
            invoice_id: self.id("INV", if hot.is_some() { 1000 } else { 10 }),
            kind: if self.rng.random_bool(0.15) {
                InvoiceKind::CreditMemo
            } else {
                InvoiceKind::Invoice
            },
            status: if self.rng.random_bool(0.1) {
                InvoiceStatus::Cancelled
            } else {
                InvoiceStatus::Active
            },
            vendor_id: if self.rng.random_bool(0.9) {
                po.as_ref()
                    .map(|po| po.vendor_id.clone())
                    .unwrap_or_else(|| "V-1".into())
            } else {
                self.pick(&VENDORS).into()
            },
            invoice_number: self.pick(&INVOICE_NUMBERS).into(),
            po_number,
            currency: po
                .as_ref()
                .filter(|_| self.rng.random_bool(0.9))
                .map(|po| po.currency)
                .unwrap_or_else(|| self.currency()),
            // Hot invoices arrive in random date order: back-dated before
            // many others as often as after all of them.
            invoice_date: 20_400
                + self
                    .rng
                    .random_range(0..if hot.is_some() { 120 } else { 4 }),
            lines,
            tax,
            freight: Decimal::ZERO,
            total,
        }
    }

    /// A policy of any scope (SPEC §12.1): the tenant's, a vendor's, a
    /// category's or a vendor's for a category, each field given or not, so
    /// that resolution falls back field by field and level by level; caps
    /// that bind and ones that do not.
    fn match_policy(&mut self) -> MatchPolicy {
        let field = |rng: &mut SmallRng, max: i64| {
            rng.random_bool(0.5)
                .then(|| Decimal::new(rng.random_range(0..=max), 2))
        };
        let vendor_id = self
            .rng
            .random_bool(0.5)
            .then(|| Text::from(self.pick(&VENDORS)));
        let category = self
            .rng
            .random_bool(0.5)
            .then(|| Text::from(*CATEGORIES.choose(&mut self.rng).expect("categories")));
        MatchPolicy {
            tenant_id: self.pick(&TENANTS).into(),
            vendor_id,
            category,
            price_tolerance_pct: field(&mut self.rng, 500),
            price_tolerance_abs: field(&mut self.rng, 20),
            price_tolerance_max_abs: field(&mut self.rng, 40),
            qty_tolerance_pct: field(&mut self.rng, 1000),
            qty_tolerance_abs: field(&mut self.rng, 300),
            total_tolerance_abs: field(&mut self.rng, 200),
            amount_tolerance_pct: field(&mut self.rng, 1000),
            amount_tolerance_abs: field(&mut self.rng, 200),
        }
    }

    /// A decision on a possible exception of a present invoice: any type,
    /// on one of its lines for a line type (now and then a header type with
    /// a line, which matches nothing). Its `actual` is absent, the invoice
    /// line's price (a `PRICE_VARIANCE`'s actual, so the acceptance holds
    /// until the price changes), or another value (it lapses).
    fn exception_resolution(
        &mut self,
        documents: &BTreeMap<Fingerprint, Document>,
    ) -> Option<ExceptionResolution> {
        let invoices: Vec<_> = documents
            .values()
            .filter_map(|document| match document {
                Document::Invoice(invoice) => Some(invoice.clone()),
                _ => None,
            })
            .collect();
        let invoice = invoices.choose(&mut self.rng)?.clone();
        let exception_type = *ExceptionType::ALL.choose(&mut self.rng).unwrap();
        let line = invoice.lines.choose(&mut self.rng).unwrap().clone();
        let po_line_no = (exception_type.is_line_level() || self.rng.random_bool(0.05))
            .then_some(line.po_line_no);
        let actual = match self.rng.random_range(0..10) {
            0..=4 => None,
            5..=7 => Some(line.unit_price),
            _ => Some(self.decimal(10, 1)),
        };
        Some(ExceptionResolution {
            tenant_id: invoice.tenant_id.clone(),
            invoice_id: invoice.invoice_id.clone(),
            exception_type,
            po_line_no,
            decision: if self.rng.random_bool(0.75) {
                Decision::Accept
            } else {
                Decision::Reject
            },
            actual,
            resolved_by: self.pick(&["j.doe", "a.smith"]).into(),
            resolved_at: 1_764_000_000_000 + self.rng.random_range(0..1_000_000),
            reason: self
                .rng
                .random_bool(0.5)
                .then(|| "agreed with the vendor".into()),
        })
    }

    /// A payment to a vendor: mostly for about an invoice's gross amount,
    /// either allocated (to one or two present invoices, or to one that is
    /// not present) or by a reference that is the invoice's number, now and
    /// then with a typo; sometimes void or in another currency.
    fn payment(&mut self, documents: &BTreeMap<Fingerprint, Document>) -> Payment {
        let invoices: Vec<_> = documents
            .values()
            .filter_map(|document| match document {
                Document::Invoice(invoice) => Some(invoice.clone()),
                _ => None,
            })
            .collect();
        let target = invoices.choose(&mut self.rng).cloned();
        let gross = target
            .as_ref()
            .map(|i| i.invoice_amount() + i.tax + i.freight)
            .filter(|gross| *gross > Decimal::ZERO)
            .unwrap_or(Decimal::new(2500, 2));
        let amount = match self.rng.random_range(0..4) {
            0 => (gross / Decimal::TWO).round_dp(2).max(Decimal::new(1, 2)),
            1 => gross + Decimal::new(self.rng.random_range(1..=300), 2),
            _ => gross,
        };
        let (tenant_id, vendor_id) = match &target {
            Some(invoice) if self.rng.random_bool(0.9) => {
                (invoice.tenant_id.clone(), invoice.vendor_id.clone())
            }
            _ => (self.pick(&TENANTS).into(), self.pick(&VENDORS).into()),
        };
        let mut allocations = Vec::new();
        let mut reference = None;
        if self.rng.random_bool(0.5) {
            let first = match &target {
                Some(invoice) if self.rng.random_bool(0.85) => invoice.invoice_id.clone(),
                _ => self.id("INV", 12),
            };
            allocations.push(Allocation {
                invoice_id: first,
                amount,
            });
            if let Some(other) = invoices.choose(&mut self.rng) {
                if self.rng.random_bool(0.2) && other.invoice_id != allocations[0].invoice_id {
                    allocations[0].amount =
                        (amount / Decimal::TWO).round_dp(2).max(Decimal::new(1, 2));
                    allocations.push(Allocation {
                        invoice_id: other.invoice_id.clone(),
                        amount: (amount - allocations[0].amount).max(Decimal::new(1, 2)),
                    });
                }
            }
            let allocated: Decimal = allocations.iter().map(|a| a.amount).sum();
            if allocated > amount {
                allocations.truncate(1);
                allocations[0].amount = amount;
            }
        } else if let Some(invoice) = &target {
            let mut number: Vec<char> = invoice.invoice_number.chars().collect();
            if self.rng.random_bool(0.3) && !number.is_empty() {
                let at = self.rng.random_range(0..number.len());
                number[at] = if number[at] == '7' { '1' } else { '7' };
            }
            reference = Some(number.into_iter().collect::<String>().into());
        }
        Payment {
            tenant_id,
            payment_id: self.id("PAY", 8),
            vendor_id,
            currency: target
                .as_ref()
                .filter(|_| self.rng.random_bool(0.95))
                .map(|invoice| invoice.currency)
                .unwrap_or_else(|| self.currency()),
            amount,
            paid_at: 20_420,
            status: if self.rng.random_bool(0.1) {
                PaymentStatus::Void
            } else {
                PaymentStatus::Active
            },
            reference,
            allocations,
        }
    }

    /// 1–3 random policy changes of one tenant (upserts at any scope, and
    /// deletions of present policies or of absent ones), as a preview would
    /// be asked for them (SPEC §12.4) and as the feeds that make them;
    /// `documents` becomes the documents present after them.
    pub fn policy_changes(
        &mut self,
        documents: &mut BTreeMap<Fingerprint, Document>,
    ) -> (PolicyChanges, Vec<Feed>) {
        let tenant: Text = self.pick(&TENANTS).into();
        let mut changes = PolicyChanges {
            tenant: tenant.clone(),
            ..PolicyChanges::default()
        };
        let mut feeds = Vec::new();
        for _ in 0..self.rng.random_range(1..=3) {
            let policy = MatchPolicy {
                tenant_id: tenant.clone(),
                ..self.match_policy()
            };
            let scope = (policy.vendor_id.clone(), policy.category.clone());
            // A scope is changed at most once per preview: the feeds of one
            // batch apply in offset order, the preview's deletions first.
            if changes.scopes().contains(&scope) {
                continue;
            }
            let key = policy.key();
            if self.rng.random_bool(0.3) {
                documents.remove(&key);
                changes.delete.push(scope);
                feeds.push(Feed::delete(key));
            } else {
                let document = Document::MatchPolicy(Arc::new(policy.clone()));
                documents.insert(key, document.clone());
                changes.upsert.push(Arc::new(policy));
                feeds.push(Feed::put(document));
            }
        }
        (changes, feeds)
    }

    /// One batch of 1–6 random changes, shuffled (a source may hand them
    /// over in any order; they take effect in offset order, the tie rule);
    /// `documents` becomes the documents present after it.
    pub fn batch(&mut self, documents: &mut BTreeMap<Fingerprint, Document>) -> Vec<Feed> {
        let size = self.rng.random_range(1..=6);
        let mut feeds = Vec::new();
        for _ in 0..size {
            let feed = self.change(documents);
            match &feed.document {
                Some(document) => documents.insert(feed.key, document.clone()),
                None => documents.remove(&feed.key),
            };
            feeds.push(feed);
        }
        feeds.shuffle(&mut self.rng);
        feeds
    }

    /// One random change given the current documents.
    fn change(&mut self, documents: &BTreeMap<Fingerprint, Document>) -> Feed {
        // Hot histories are mostly new invoices, so that the hot line grows.
        let roll = match self.rng.random_range(0..124) {
            roll if !self.hot => roll,
            roll @ 0..=59 => roll / 2,
            roll @ 60..=64 => 30 + roll - 60,
            roll @ 65..=74 => 50 + roll - 65,
            roll @ 75..=76 => 70 + roll - 75,
            roll @ 77..=86 => 75 + roll - 77,
            // Fewer payments: more invoices on the hot line.
            roll @ 116.. => (roll - 116) * 3,
            roll => roll,
        };
        let feed = match roll {
            0..=29 => Feed::put(Document::Invoice(Arc::new(self.invoice(documents)))),
            30..=49 => Feed::put(Document::PurchaseOrder(Arc::new(self.purchase_order()))),
            50..=69 => Feed::put(Document::GoodsReceipt(Arc::new(self.goods_receipt()))),
            70..=74 => Feed::put(Document::MatchPolicy(Arc::new(self.match_policy()))),
            112.. => Feed::put(Document::Payment(Arc::new(self.payment(documents)))),
            100.. => match self.exception_resolution(documents) {
                Some(resolution) => Feed::put(Document::ExceptionResolution(Arc::new(resolution))),
                None => Feed::put(Document::Invoice(Arc::new(self.invoice(documents)))),
            },
            75..=89 if !documents.is_empty() => {
                let keys: Vec<_> = documents.keys().copied().collect();
                Feed::delete(*keys.choose(&mut self.rng).unwrap())
            }
            _ => {
                let invoices: Vec<_> = documents
                    .values()
                    .filter_map(|document| match document {
                        Document::Invoice(invoice) => Some(invoice.clone()),
                        _ => None,
                    })
                    .collect();
                match invoices.choose(&mut self.rng) {
                    Some(invoice) => {
                        let mut flipped = (**invoice).clone();
                        flipped.status = match flipped.status {
                            InvoiceStatus::Active => InvoiceStatus::Cancelled,
                            InvoiceStatus::Cancelled => InvoiceStatus::Active,
                        };
                        Feed::put(Document::Invoice(Arc::new(flipped)))
                    }
                    None => Feed::put(Document::Invoice(Arc::new(self.invoice(documents)))),
                }
            }
        };
        self.next_offset += 1;
        feed.at_offset(self.next_offset)
    }
}
