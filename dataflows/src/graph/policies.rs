//! SPEC §12.1: which policies an invoice, each of its lines and a payment
//! read, resolved field by field.
//!
//! Policies are arranged by their identity, which is their scope
//! ([`policy_key`]: tenant, vendor, category; a tenant policy's key is its
//! tenant's). Whoever needs a policy asks for the keys its scopes could
//! have, and a join brings the policies present under them:
//! * an invoice's header (and a payment): (tenant, vendor) and (tenant) —
//!   levels 2 and 4;
//! * an active invoice on a present PO, for each category of the PO lines it
//!   bills: (tenant, vendor, category) and (tenant, category) — levels 1
//!   and 3.
//!
//! So a policy change meets exactly the invoices whose effective policy it
//! can change: a vendor policy that vendor's invoices, a (vendor, category)
//! policy that vendor's invoices billing a line of that category, a
//! category policy the tenant's invoices billing such a line, and a tenant
//! policy the tenant's invoices — each once. Per change, beside each
//! function.

use std::sync::Arc;

use differential_dataflow::ExchangeData;
use serde::{Deserialize, Serialize};

use crate::model::*;
use crate::operators::{left_join, Collection, KeyedArrangement};

/// The present policies, by scope.
pub type Policies<'s> = KeyedArrangement<'s, Fingerprint, Arc<MatchPolicy>>;

/// Arranges the present policies by their scope (their identity key).
pub fn by_scope<'s>(
    match_policies: Collection<'s, (Fingerprint, Arc<MatchPolicy>)>,
) -> Policies<'s> {
    match_policies.arrange_by_key_named("policies by scope")
}

/// The policies a header-level rule reads (levels 2 and 4).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct HeaderPolicies {
    /// (tenant, vendor).
    pub vendor: Option<Arc<MatchPolicy>>,
    /// (tenant).
    pub tenant: Option<Arc<MatchPolicy>>,
}

impl HeaderPolicies {
    /// The header's tolerances: the vendor's fields, then the tenant's, then
    /// `default`'s.
    pub fn tolerances(&self, default: &Tolerances) -> Tolerances {
        Tolerances::resolve([self.vendor.as_deref(), self.tenant.as_deref()], default)
    }
}

/// Each `(tenant, vendor, item)` as `(item, its header policies)`.
///
/// Per change: an item change is two lookups — O(1); a vendor policy change
/// re-pairs that vendor's items, a tenant policy change the tenant's, once.
pub fn with_header_policies<'s, D: ExchangeData>(
    items: Collection<'s, (Text, Text, D)>,
    policies: &Policies<'s>,
    name: &str,
) -> Collection<'s, (D, HeaderPolicies)> {
    let by_vendor = items
        .map(|(tenant, vendor, item)| (policy_key(&tenant, Some(&vendor), None), (tenant, item)))
        .arrange_by_key_named(&format!("{name} by vendor policy"));
    let by_tenant = left_join(&by_vendor, policies)
        .map(|(_, (tenant, item), vendor)| (tenant_key(&tenant), (item, vendor)))
        .arrange_by_key_named(&format!("{name} by tenant policy"));
    left_join(&by_tenant, policies)
        .map(|(_, (item, vendor), tenant)| (item, HeaderPolicies { vendor, tenant }))
}

/// The tolerances an invoice's rules apply: the header's, and each
/// category's (for the lines on PO lines of that category).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct InvoiceTolerances {
    pub header: Tolerances,
    /// Sorted by category; only categories with a policy of their own.
    categories: Vec<(Text, Tolerances)>,
}

impl InvoiceTolerances {
    /// The same tolerances for the header and every line.
    pub fn uniform(tolerances: Tolerances) -> Self {
        InvoiceTolerances {
            header: tolerances,
            categories: Vec::new(),
        }
    }

    /// The tolerances of a line on a PO line of `category`: levels 1–4.
    /// Without a category, or without a category policy, those are levels 2
    /// and 4: the header's.
    pub fn line(&self, category: Option<&str>) -> &Tolerances {
        category
            .and_then(|category| {
                self.categories
                    .binary_search_by(|(other, _)| (**other).cmp(category))
                    .ok()
            })
            .map_or(&self.header, |index| &self.categories[index].1)
    }
}

/// Which level a category policy is at.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum CategoryLevel {
    /// Level 1: (tenant, vendor, category).
    VendorCategory,
    /// Level 3: (tenant, category).
    Category,
}

/// An active invoice, the PO it names, and its header policies.
pub type InvoiceOnPo = (Arc<Invoice>, Arc<PurchaseOrder>, HeaderPolicies);

/// Each active invoice on a present PO, with its header policies and the
/// PO, as `(invoice id, its tolerances)`.
///
/// Per change: an invoice (or its PO) change asks for two keys per category
/// of the PO lines it bills and gathers what they hold — O(its categories);
/// a category-scoped policy change meets the invoices asking for its key
/// (above), each re-gathered in O(its categories).
pub fn invoice_tolerances<'s>(
    invoices: Collection<'s, (Fingerprint, InvoiceOnPo)>,
    policies: &Policies<'s>,
    default: Tolerances,
) -> Collection<'s, (Fingerprint, InvoiceTolerances)> {
    let requests = invoices
        .clone()
        .flat_map(|(id, (invoice, po, _))| {
            categories_billed(&invoice, &po)
                .into_iter()
                .flat_map(move |category| {
                    let tenant = invoice.tenant_id.clone();
                    let vendor = invoice.vendor_id.clone();
                    [
                        (
                            policy_key(&tenant, Some(&vendor), Some(&category)),
                            (id, category.clone(), CategoryLevel::VendorCategory),
                        ),
                        (
                            policy_key(&tenant, None, Some(&category)),
                            (id, category, CategoryLevel::Category),
                        ),
                    ]
                })
        })
        .arrange_by_key_named("category policy requests");
    let found = requests
        .join_core(policies.clone(), |_, (id, category, level), policy| {
            Some((*id, (category.clone(), *level, policy.clone())))
        })
        .reduce(|_, found, out| {
            let mut found: Vec<(Text, CategoryLevel, Arc<MatchPolicy>)> =
                found.iter().map(|(entry, _)| (*entry).clone()).collect();
            found.sort();
            out.push((found, 1));
        })
        .arrange_by_key_named("category policies by invoice");
    let headers = invoices
        .map(|(id, (_, _, header))| (id, header))
        .arrange_by_key_named("header policies by invoice");
    left_join(&headers, &found).map(move |(id, header, found)| {
        (
            id,
            resolve(&header, found.as_deref().unwrap_or(&[]), &default),
        )
    })
}

/// The categories of the PO lines `invoice` bills, sorted, each once.
fn categories_billed(invoice: &Invoice, po: &PurchaseOrder) -> Vec<Text> {
    let mut categories: Vec<Text> = invoice
        .lines
        .iter()
        .filter_map(|line| po.line(line.po_line_no)?.category.clone())
        .collect();
    categories.sort();
    categories.dedup();
    categories
}

/// The tolerances of one active invoice (on `po`, if present) under the
/// policies `policy_at` finds by scope key: what [`with_header_policies`]
/// and [`invoice_tolerances`] derive in the graph, for a single invoice —
/// a policy preview's tolerances after the change (SPEC §12.4).
///
/// ```
/// use std::sync::Arc;
/// use rust_decimal::Decimal;
/// use trimatch_dataflows::graph::policies::tolerances_of;
/// use trimatch_dataflows::model::*;
///
/// let invoice = Invoice {
///     tenant_id: "acme".into(), invoice_id: "INV-1".into(), kind: InvoiceKind::Invoice,
///     status: InvoiceStatus::Active, vendor_id: "V-17".into(), invoice_number: "1".into(),
///     po_number: "PO-1".into(), currency: Currency(*b"USD"), invoice_date: 0,
///     lines: vec![], tax: Decimal::ZERO, freight: Decimal::ZERO, total: None,
/// };
/// let vendor = Arc::new(MatchPolicy {
///     tenant_id: "acme".into(), vendor_id: Some("V-17".into()),
///     price_tolerance_pct: Some(Decimal::from(5)), ..MatchPolicy::default()
/// });
/// let key = vendor.key();
/// let found = |scope: Fingerprint| (scope == key).then(|| vendor.clone());
/// let tolerances = tolerances_of(&invoice, None, found, &Tolerances::default());
/// assert_eq!(tolerances.header.price_tolerance_pct, Decimal::from(5));
/// ```
pub fn tolerances_of(
    invoice: &Invoice,
    po: Option<&PurchaseOrder>,
    policy_at: impl Fn(Fingerprint) -> Option<Arc<MatchPolicy>>,
    default: &Tolerances,
) -> InvoiceTolerances {
    let (tenant, vendor) = (&invoice.tenant_id, &invoice.vendor_id);
    let header = HeaderPolicies {
        vendor: policy_at(policy_key(tenant, Some(vendor), None)),
        tenant: policy_at(tenant_key(tenant)),
    };
    let Some(po) = po else {
        return InvoiceTolerances::uniform(header.tolerances(default));
    };
    let mut found = Vec::new();
    for category in categories_billed(invoice, po) {
        let scopes = [
            (
                policy_key(tenant, Some(vendor), Some(&category)),
                CategoryLevel::VendorCategory,
            ),
            (
                policy_key(tenant, None, Some(&category)),
                CategoryLevel::Category,
            ),
        ];
        for (key, level) in scopes {
            if let Some(policy) = policy_at(key) {
                found.push((category.clone(), level, policy));
            }
        }
    }
    found.sort();
    resolve(&header, &found, default)
}

/// §12.1's resolution for the header and each category that has a policy
/// of its own: levels 1 (vendor and category), 2 (vendor), 3 (category), 4
/// (tenant), then `default`.
fn resolve(
    header: &HeaderPolicies,
    found: &[(Text, CategoryLevel, Arc<MatchPolicy>)],
    default: &Tolerances,
) -> InvoiceTolerances {
    let mut categories: Vec<(Text, Tolerances)> = Vec::new();
    for chunk in found.chunk_by(|a, b| a.0 == b.0) {
        let at = |level| {
            chunk
                .iter()
                .find(|(_, found_level, _)| *found_level == level)
                .map(|(_, _, policy)| &**policy)
        };
        let levels = [
            at(CategoryLevel::VendorCategory),
            header.vendor.as_deref(),
            at(CategoryLevel::Category),
            header.tenant.as_deref(),
        ];
        categories.push((chunk[0].0.clone(), Tolerances::resolve(levels, default)));
    }
    InvoiceTolerances {
        header: header.tolerances(default),
        categories,
    }
}
