//! Tolerance policies as the workload sends them (SPEC §12.1): the tenant's,
//! a vendor's, a PO line category's, or a vendor's for a category, with
//! fields left out now and then so that resolution falls back level by
//! level, caps that bind, and deletions.

use rand::Rng;
use serde_json::json;
use trimatch_dataflows::model::DocumentKind;

use super::{document, tombstone, GeneratedMessage, Workload, CATEGORIES};

impl Workload {
    /// A policy of the tenant, its vendors, the PO line categories or both
    /// (SPEC §12.1), with fields left out now and then so that resolution
    /// falls back level by level; a quarter are deletions.
    pub(super) fn policy(&mut self, tenant: usize) -> GeneratedMessage {
        let tenant_id = self.tenants[tenant].id.clone();
        let vendor = format!(
            "V-{:03}",
            self.rng
                .random_range(0..self.config.vendors_per_tenant.max(1))
        );
        let category = CATEGORIES[self.rng.random_range(0..CATEGORIES.len())];
        let (vendor, category) = match self.rng.random_range(0..4) {
            0 => (None, None),
            1 => (Some(vendor), None),
            2 => (None, Some(category)),
            _ => (Some(vendor), Some(category)),
        };
        let key = json!({"tenant_id": tenant_id, "vendor_id": vendor, "category": category});
        if self.rng.random_range(0..4) == 0 {
            return tombstone(DocumentKind::MatchPolicy, key);
        }
        let mut value = json!({"tenant_id": tenant_id});
        if let Some(vendor) = &vendor {
            value["vendor_id"] = vendor.clone().into();
        }
        if let Some(category) = category {
            value["category"] = category.into();
        }
        let fields: [(&str, String); 6] = [
            (
                "price_tolerance_pct",
                self.rng.random_range(0..=5).to_string(),
            ),
            ("price_tolerance_abs", "0.05".to_string()),
            (
                "price_tolerance_max_abs",
                format!("{}.00", self.rng.random_range(0..=3)),
            ),
            (
                "qty_tolerance_pct",
                self.rng.random_range(0..=10).to_string(),
            ),
            (
                "qty_tolerance_abs",
                self.rng.random_range(0..=2).to_string(),
            ),
            ("total_tolerance_abs", "1.00".to_string()),
        ];
        for (field, text) in fields {
            // A tenant policy gives most fields; a scoped one some.
            let given = if vendor.is_none() && category.is_none() {
                4
            } else {
                2
            };
            if self.rng.random_range(0..5) < given {
                value[field] = text.into();
            }
        }
        document(DocumentKind::MatchPolicy, key, value)
    }
}
