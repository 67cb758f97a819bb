//! Focused tests for SPEC §12.1: policies scoped to a vendor, a category or
//! both, resolved field by field and level by level; caps; the absolute
//! quantity tolerance; and what each scope's change re-checks. Run through
//! decoder, engine and snapshot reads on two workers.

mod common;

use serde_json::{json, Value};
use trimatch_dataflows::model::{DocumentKind, ExceptionType::*};

use common::fixtures::*;
use common::*;

const WORKERS: usize = 2;

/// PO-1 of V-17: line 1 "packaging", line 2 "lab-equipment", line 3 no
/// category; 100 ordered at 10.00 each, all received.
fn categorized_po() -> Value {
    let mut po = po_doc(
        "PO-1",
        &[
            (1, "100", "10.00"),
            (2, "100", "10.00"),
            (3, "100", "10.00"),
        ],
    );
    po["lines"][0]["category"] = json!("packaging");
    po["lines"][1]["category"] = json!("lab-equipment");
    po
}

/// An invoice on every line of PO-1 at `price` a unit.
fn invoice_at(id: &str, vendor: &str, price: &str) -> Value {
    with(
        invoice_doc(
            id,
            "PO-1",
            "2026-11-03",
            &[(1, "1", price), (2, "1", price), (3, "1", price)],
        ),
        "vendor_id",
        json!(vendor),
    )
}

fn started() -> TestEngine {
    let mut engine = TestEngine::start(WORKERS);
    engine.put(vec![
        po(categorized_po()),
        receipt(receipt_doc(
            "GR-1",
            "PO-1",
            &[(1, "100"), (2, "100"), (3, "100")],
        )),
    ]);
    engine
}

fn price_variances(out: &Snapshot, invoice: &str) -> Vec<Option<u32>> {
    out.exceptions_of(invoice)
        .into_iter()
        .filter(|(kind, _)| *kind == PriceVariance)
        .map(|(_, line)| line)
        .collect()
}

#[test]
fn each_level_decides_its_lines() {
    let mut engine = started();
    // 10.40 is 4 % over: a variance on every line under the default.
    let out = engine.put(vec![invoice(invoice_at("INV-1", "V-17", "10.40"))]);
    assert_eq!(
        price_variances(&out, "INV-1"),
        vec![Some(1), Some(2), Some(3)]
    );
    // Level 4, the tenant: 5 % for everyone.
    let out = engine.put(vec![policy(
        json!({"tenant_id": "acme", "price_tolerance_pct": "5"}),
    )]);
    assert_eq!(price_variances(&out, "INV-1"), vec![]);
    // Level 3, a category: packaging only 1 %.
    let out = engine.put(vec![policy(
        json!({"tenant_id": "acme", "category": "packaging", "price_tolerance_pct": "1"}),
    )]);
    assert_eq!(price_variances(&out, "INV-1"), vec![Some(1)]);
    // Level 2, the vendor: V-17 3 % — it comes before the category, so
    // packaging is within again, and every line of V-17 is at 3 %.
    let out = engine.put(vec![policy(
        json!({"tenant_id": "acme", "vendor_id": "V-17", "price_tolerance_pct": "3"}),
    )]);
    assert_eq!(
        price_variances(&out, "INV-1"),
        vec![Some(1), Some(2), Some(3)]
    );
    // Level 1, vendor and category: V-17 on lab equipment 4 %.
    let out = engine.put(vec![policy(json!({
        "tenant_id": "acme", "vendor_id": "V-17", "category": "lab-equipment",
        "price_tolerance_pct": "4"
    }))]);
    assert_eq!(price_variances(&out, "INV-1"), vec![Some(1), Some(3)]);
    // Deleting the vendor policy falls back: packaging to its category's
    // 1 %, the uncategorized line to the tenant's 5 %.
    let out = engine.apply(vec![Feed::delete(tombstone_key(
        DocumentKind::MatchPolicy,
        json!({"tenant_id": "acme", "vendor_id": "V-17", "category": null}),
    ))]);
    assert_eq!(price_variances(&out, "INV-1"), vec![Some(1)]);
}

#[test]
fn fields_fall_back_one_by_one_and_a_cap_binds_across_levels() {
    let mut engine = started();
    engine.put(vec![
        // The vendor gives the percentage, the category the cap, the tenant
        // the absolute allowance.
        policy(json!({"tenant_id": "acme", "vendor_id": "V-17", "price_tolerance_pct": "10"})),
        policy(json!({"tenant_id": "acme", "category": "lab-equipment", "price_tolerance_max_abs": "0.50"})),
        policy(json!({"tenant_id": "acme", "price_tolerance_abs": "0.05"})),
    ]);
    // 10.80: 8 % over, within V-17's 10 % (1.00) on lines 1 and 3; the
    // lab-equipment cap of 0.50 binds on line 2.
    let out = engine.put(vec![invoice(invoice_at("INV-1", "V-17", "10.80"))]);
    assert_eq!(price_variances(&out, "INV-1"), vec![Some(2)]);
    // 10.50 is at the cap: within.
    let out = engine.put(vec![invoice(invoice_at("INV-1", "V-17", "10.50"))]);
    assert_eq!(price_variances(&out, "INV-1"), vec![]);
    // Another vendor has no percentage: the tenant's 0.05 on every line
    // (the cap does not bind below it).
    let out = engine.put(vec![invoice(invoice_at("INV-2", "V-99", "10.05"))]);
    let vendor_mismatch_only: Vec<_> = price_variances(&out, "INV-2");
    assert_eq!(vendor_mismatch_only, vec![]);
    let out = engine.put(vec![invoice(invoice_at("INV-2", "V-99", "10.06"))]);
    assert_eq!(
        price_variances(&out, "INV-2"),
        vec![Some(1), Some(2), Some(3)]
    );
}

#[test]
fn qty_tolerance_abs_allows_a_few_units_per_line() {
    let mut engine = started();
    let out = engine.put(vec![invoice(with(
        invoice_doc("INV-1", "PO-1", "2026-11-03", &[(1, "102", "10.00")]),
        "vendor_id",
        json!("V-17"),
    ))]);
    assert_eq!(
        out.exceptions_of("INV-1"),
        vec![(QtyExceedsReceived, Some(1)), (QtyExceedsOrdered, Some(1))]
    );
    // Two units over is within an absolute tolerance of 2 for packaging.
    let out = engine.put(vec![policy(
        json!({"tenant_id": "acme", "category": "packaging", "qty_tolerance_abs": "2"}),
    )]);
    assert_eq!(out.exceptions_of("INV-1"), vec![]);
    // 1 % of 100 is 1: the larger of the two still allows 102.
    let out = engine.put(vec![policy(json!({
        "tenant_id": "acme", "category": "packaging", "qty_tolerance_abs": "2",
        "qty_tolerance_pct": "1"
    }))]);
    assert_eq!(out.exceptions_of("INV-1"), vec![]);
}

#[test]
fn a_header_rule_reads_the_vendor_and_the_tenant_only() {
    let mut engine = started();
    // A stated total 2.00 off: over the default 0.01.
    let out = engine.put(vec![invoice(with(
        invoice_at("INV-1", "V-17", "10.00"),
        "total",
        json!("32.00"),
    ))]);
    assert_eq!(out.exceptions_of("INV-1"), vec![(TotalMismatch, None)]);
    // A category policy's total tolerance is accepted and never used.
    let out = engine.put(vec![policy(
        json!({"tenant_id": "acme", "category": "packaging", "total_tolerance_abs": "5"}),
    )]);
    assert_eq!(out.exceptions_of("INV-1"), vec![(TotalMismatch, None)]);
    // The vendor's is.
    let out = engine.put(vec![policy(
        json!({"tenant_id": "acme", "vendor_id": "V-17", "total_tolerance_abs": "5"}),
    )]);
    assert_eq!(out.exceptions_of("INV-1"), vec![]);
}

#[test]
fn a_scoped_policy_rechecks_only_its_scope() {
    let mut engine = started();
    engine.put(vec![
        invoice(invoice_at("INV-1", "V-17", "10.40")),
        invoice(invoice_at("INV-2", "V-18", "10.40")),
    ]);
    // V-18's policy releases V-18's variances; V-17's invoice keeps its.
    let out = engine.put(vec![policy(
        json!({"tenant_id": "acme", "vendor_id": "V-18", "price_tolerance_pct": "5"}),
    )]);
    assert_eq!(price_variances(&out, "INV-2"), vec![]);
    assert_eq!(
        price_variances(&out, "INV-1"),
        vec![Some(1), Some(2), Some(3)]
    );
    // A category policy of another category leaves both as they are.
    let out = engine.put(vec![policy(
        json!({"tenant_id": "acme", "category": "furniture", "price_tolerance_pct": "9"}),
    )]);
    assert_eq!(
        price_variances(&out, "INV-1"),
        vec![Some(1), Some(2), Some(3)]
    );
    assert_eq!(price_variances(&out, "INV-2"), vec![]);
}
