//! Focused tests for SPEC §6: analysts' decisions on exceptions, and the
//! `approved` status they lead to, run through decoder, engine and snapshot
//! reads on two workers.

mod common;

use serde_json::json;
use trimatch_dataflows::model::{DocumentKind, ExceptionType::*};
use trimatch_dataflows::rows::{MatchStatus, Resolution};

use common::fixtures::*;
use common::*;

const WORKERS: usize = 2;

/// An invoice billing line 1 at 2.55 against a PO price of 2.50, with its
/// receipt: exactly one exception, `PRICE_VARIANCE` on line 1 (2.50 / 2.55).
fn price_variance(engine: &mut TestEngine) -> Snapshot {
    let out = engine.put(vec![
        po(po_doc("PO-1", &[(1, "100", "2.50")])),
        receipt(receipt_doc("GR-1", "PO-1", &[(1, "100")])),
        invoice(invoice_doc(
            "INV-1",
            "PO-1",
            "2026-11-03",
            &[(1, "10", "2.55")],
        )),
    ]);
    assert_eq!(out.exceptions_of("INV-1"), vec![(PriceVariance, Some(1))]);
    out
}

fn resolution_of(out: &Snapshot) -> Option<Resolution> {
    let row = out
        .exception("INV-1", PriceVariance, Some(1))
        .expect("raised");
    row.resolution.as_ref().map(|record| record.resolution)
}

#[test]
fn an_acceptance_closes_the_exception_and_approves_the_invoice() {
    let mut engine = TestEngine::start(WORKERS);
    let out = price_variance(&mut engine);
    assert_eq!(resolution_of(&out), None);
    let row = out.invoice("INV-1");
    assert_eq!(
        (row.status, row.blocking_count, row.accepted_count),
        (MatchStatus::Exception, 1, 0)
    );

    let out = engine.put(vec![resolution(resolution_doc(
        "INV-1",
        "PRICE_VARIANCE",
        Some(1),
        "accept",
        None,
    ))]);
    let exception = out.exception("INV-1", PriceVariance, Some(1)).unwrap();
    let record = exception.resolution.as_ref().expect("resolved");
    assert_eq!(record.resolution, Resolution::Accepted);
    assert_eq!(&*record.resolved_by, "j.doe");
    // Milliseconds, UTC; finer digits are truncated.
    assert_eq!(record.resolved_at, 1_793_786_400_123);
    assert_eq!(record.reason.as_deref(), Some("agreed with the vendor"));
    // Every §2 value is as before; only the counts and status move.
    assert_eq!(
        (exception.expected, exception.actual),
        (Some(dec("2.50")), Some(dec("2.55")))
    );
    let row = out.invoice("INV-1");
    assert_eq!(
        (
            row.status,
            row.exception_count,
            row.blocking_count,
            row.accepted_count
        ),
        (MatchStatus::Approved, 1, 0, 1)
    );
    let summary = &out.exception_summary[0];
    assert_eq!(
        (
            summary.exception_count,
            summary.invoice_count,
            summary.open_count
        ),
        (1, 1, 0)
    );
}

#[test]
fn an_acceptance_holds_for_an_equal_actual_and_lapses_when_it_changes() {
    let mut engine = TestEngine::start(WORKERS);
    price_variance(&mut engine);
    // 2.550 equals 2.55 as a decimal.
    let accept = resolution_doc("INV-1", "PRICE_VARIANCE", Some(1), "accept", Some("2.550"));
    let out = engine.put(vec![resolution(accept)]);
    assert_eq!(resolution_of(&out), Some(Resolution::Accepted));
    assert_eq!(out.invoice("INV-1").status, MatchStatus::Approved);

    // The vendor re-invoices at 2.60: the variance the analyst accepted is gone.
    let out = engine.put(vec![invoice(invoice_doc(
        "INV-1",
        "PO-1",
        "2026-11-03",
        &[(1, "10", "2.60")],
    ))]);
    assert_eq!(resolution_of(&out), Some(Resolution::Lapsed));
    let row = out.invoice("INV-1");
    assert_eq!(
        (row.status, row.blocking_count, row.accepted_count),
        (MatchStatus::Exception, 1, 0)
    );
    assert_eq!(out.exception_summary[0].open_count, 1);

    // Back at 2.55, the acceptance holds again.
    let out = engine.put(vec![invoice(invoice_doc(
        "INV-1",
        "PO-1",
        "2026-11-03",
        &[(1, "10", "2.55")],
    ))]);
    assert_eq!(resolution_of(&out), Some(Resolution::Accepted));
}

#[test]
fn an_actual_for_an_exception_without_one_lapses() {
    let mut engine = TestEngine::start(WORKERS);
    engine.put(vec![invoice(invoice_doc(
        "INV-1",
        "PO-404",
        "2026-11-03",
        &[(1, "1", "1")],
    ))]);
    let out = engine.put(vec![resolution(resolution_doc(
        "INV-1",
        "PO_NOT_FOUND",
        None,
        "accept",
        Some("1"),
    ))]);
    let row = out.exception("INV-1", PoNotFound, None).unwrap();
    assert_eq!(
        row.resolution.as_ref().unwrap().resolution,
        Resolution::Lapsed
    );
    assert_eq!(out.invoice("INV-1").status, MatchStatus::Exception);
}

#[test]
fn a_rejection_keeps_the_exception_open() {
    let mut engine = TestEngine::start(WORKERS);
    price_variance(&mut engine);
    let out = engine.put(vec![resolution(resolution_doc(
        "INV-1",
        "PRICE_VARIANCE",
        Some(1),
        "reject",
        None,
    ))]);
    assert_eq!(resolution_of(&out), Some(Resolution::Rejected));
    let row = out.invoice("INV-1");
    assert_eq!(
        (row.status, row.blocking_count, row.accepted_count),
        (MatchStatus::Exception, 1, 0)
    );
    assert_eq!(out.exception_summary[0].open_count, 1);
}

#[test]
fn a_withdrawn_resolution_reopens_the_exception() {
    let mut engine = TestEngine::start(WORKERS);
    price_variance(&mut engine);
    let out = engine.put(vec![resolution(resolution_doc(
        "INV-1",
        "PRICE_VARIANCE",
        Some(1),
        "accept",
        None,
    ))]);
    assert_eq!(out.invoice("INV-1").status, MatchStatus::Approved);
    let key = tombstone_key(
        DocumentKind::ExceptionResolution,
        json!({"tenant_id": "acme", "invoice_id": "INV-1", "exception_type": "PRICE_VARIANCE", "po_line_no": 1}),
    );
    let out = engine.apply(vec![Feed::delete(key)]);
    assert_eq!(resolution_of(&out), None);
    assert_eq!(out.invoice("INV-1").status, MatchStatus::Exception);
}

#[test]
fn a_resolution_before_its_exception_applies_when_it_is_raised() {
    let mut engine = TestEngine::start(WORKERS);
    let out = engine.put(vec![resolution(resolution_doc(
        "INV-1",
        "PRICE_VARIANCE",
        Some(1),
        "accept",
        Some("2.55"),
    ))]);
    assert!(out.match_exceptions.is_empty() && out.invoice_matches.is_empty());
    let out = price_variance(&mut engine);
    assert_eq!(resolution_of(&out), Some(Resolution::Accepted));
    assert_eq!(out.invoice("INV-1").status, MatchStatus::Approved);
}

#[test]
fn a_resolution_whose_exception_disappears_has_no_effect_until_it_returns() {
    let mut engine = TestEngine::start(WORKERS);
    price_variance(&mut engine);
    engine.put(vec![resolution(resolution_doc(
        "INV-1",
        "PRICE_VARIANCE",
        Some(1),
        "accept",
        None,
    ))]);
    // The PO price is amended to 2.55: nothing is raised, the invoice is matched.
    let out = engine.put(vec![po(po_doc("PO-1", &[(1, "100", "2.55")]))]);
    assert!(out.match_exceptions.is_empty());
    let row = out.invoice("INV-1");
    assert_eq!((row.status, row.accepted_count), (MatchStatus::Matched, 0));
    // Amended back: the exception, and the decision on it, return.
    let out = engine.put(vec![po(po_doc("PO-1", &[(1, "100", "2.50")]))]);
    assert_eq!(resolution_of(&out), Some(Resolution::Accepted));
}

#[test]
fn resolutions_match_by_the_whole_key() {
    let mut engine = TestEngine::start(WORKERS);
    price_variance(&mut engine);
    let out = engine.put(vec![
        // Another line, another type, another invoice, and a header type with a line.
        resolution(resolution_doc(
            "INV-1",
            "PRICE_VARIANCE",
            Some(2),
            "accept",
            None,
        )),
        resolution(resolution_doc(
            "INV-1",
            "QTY_EXCEEDS_ORDERED",
            Some(1),
            "accept",
            None,
        )),
        resolution(resolution_doc(
            "INV-2",
            "PRICE_VARIANCE",
            Some(1),
            "accept",
            None,
        )),
        resolution(resolution_doc(
            "INV-1",
            "PO_NOT_FOUND",
            Some(1),
            "accept",
            None,
        )),
    ]);
    assert_eq!(resolution_of(&out), None);
    assert_eq!(out.invoice("INV-1").status, MatchStatus::Exception);
}

#[test]
fn approved_needs_every_blocking_exception_accepted_and_ignores_warnings() {
    let mut engine = TestEngine::start(WORKERS);
    // PRICE_VARIANCE and QTY_EXCEEDS_RECEIVED (blocking), TOTAL_MISMATCH (a warning).
    let out = engine.put(vec![
        po(po_doc("PO-1", &[(1, "100", "2.50")])),
        receipt(receipt_doc("GR-1", "PO-1", &[(1, "5")])),
        invoice(with(
            invoice_doc("INV-1", "PO-1", "2026-11-03", &[(1, "10", "2.55")]),
            "total",
            json!("1.00"),
        )),
    ]);
    assert_eq!(
        out.exceptions_of("INV-1"),
        vec![
            (TotalMismatch, None),
            (PriceVariance, Some(1)),
            (QtyExceedsReceived, Some(1))
        ]
    );
    let out = engine.put(vec![resolution(resolution_doc(
        "INV-1",
        "PRICE_VARIANCE",
        Some(1),
        "accept",
        None,
    ))]);
    let row = out.invoice("INV-1");
    assert_eq!(
        (row.status, row.blocking_count, row.accepted_count),
        (MatchStatus::Exception, 1, 1)
    );
    let out = engine.put(vec![resolution(resolution_doc(
        "INV-1",
        "QTY_EXCEEDS_RECEIVED",
        Some(1),
        "accept",
        None,
    ))]);
    let row = out.invoice("INV-1");
    assert_eq!(
        (row.status, row.blocking_count, row.accepted_count),
        (MatchStatus::Approved, 0, 2)
    );
    // Accepting only the warning approves nothing.
    let mut engine = TestEngine::start(WORKERS);
    engine.put(vec![
        po(po_doc("PO-1", &[(1, "100", "2.50")])),
        receipt(receipt_doc("GR-1", "PO-1", &[(1, "100")])),
        invoice(with(
            invoice_doc("INV-1", "PO-1", "2026-11-03", &[(1, "10", "2.50")]),
            "total",
            json!("1.00"),
        )),
    ]);
    let out = engine.put(vec![resolution(resolution_doc(
        "INV-1",
        "TOTAL_MISMATCH",
        None,
        "accept",
        None,
    ))]);
    let row = out.invoice("INV-1");
    assert_eq!((row.status, row.accepted_count), (MatchStatus::Matched, 0));
    assert_eq!(out.exception_summary[0].open_count, 0);
}
