//! Group-size scaling: the latency of one change to a group that already holds
//! N documents, for N = 100 … 100,000 — the graph alone, no Kafka.
//!
//! Two groups AP teams grow without bound:
//! * **a blanket PO line**: one PO with one line (and a receipt), holding N
//!   invoices (ten a day); the change is one more invoice, dated after all
//!   of them (the common case: its `billed_to_date` changes nothing earlier);
//! * **an `exception_summary` group**: N invoices of one tenant, each raising
//!   `PO_NOT_FOUND` (each names its own missing PO); the change is one more.
//!
//! Each probe is timed from handing the invoice to the engine until its time
//! is complete on every worker (its rows are readable and its changes have
//! reached subscribers); the probe is then deleted again, untimed, so every
//! probe meets a group of exactly N.

use std::sync::Arc;
use std::time::Instant;

use rust_decimal::Decimal;
use serde::Serialize;
use trimatch_dataflows::model::*;
use trimatch_dataflows::{MatchConfig, Matcher};

use super::measure::percentile;

/// The shape of a group-size run.
#[derive(Clone, Debug, Serialize)]
pub struct GroupSizeConfig {
    pub sizes: Vec<usize>,
    /// Probes per size and group.
    pub probes: usize,
    pub workers: usize,
}

/// Which group a measurement grew.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Group {
    /// Invoices on one PO line.
    PoLine,
    /// Exceptions of one (tenant, exception type).
    ExceptionSummary,
}

/// One group at one size.
#[derive(Clone, Debug, Serialize)]
pub struct GroupMeasurement {
    pub group: Group,
    pub size: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
}

/// What a group-size run measured.
#[derive(Clone, Debug, Serialize)]
pub struct GroupSizeReport {
    pub config: GroupSizeConfig,
    pub measurements: Vec<GroupMeasurement>,
}

pub(crate) const TENANT: &str = "acme";
pub(crate) const VENDOR: &str = "V-1";
pub(crate) const BLANKET_PO: &str = "PO-BLANKET";
/// The first invoice date (days since 1970-01-01; 2024-01-01).
pub(crate) const FIRST_DAY: i32 = 19_723;

/// Runs every group at every size.
pub fn run(config: &GroupSizeConfig) -> GroupSizeReport {
    let mut measurements = Vec::new();
    for group in [Group::PoLine, Group::ExceptionSummary] {
        for &size in &config.sizes {
            let mut latencies = probe(group, size, config.probes, config.workers);
            latencies.sort_by(f64::total_cmp);
            let at = |p| percentile(&latencies, p).unwrap_or(f64::NAN);
            measurements.push(GroupMeasurement {
                group,
                size,
                p50_ms: at(50.0),
                p90_ms: at(90.0),
                p99_ms: at(99.0),
            });
        }
    }
    GroupSizeReport {
        config: config.clone(),
        measurements,
    }
}

/// The blanket PO: one line, ordered and received far beyond any size here,
/// so every invoice on it is clean.
pub(crate) fn blanket_po() -> PurchaseOrder {
    PurchaseOrder {
        tenant_id: TENANT.into(),
        po_number: BLANKET_PO.into(),
        vendor_id: VENDOR.into(),
        currency: Currency(*b"USD"),
        status: PoStatus::Open,
        receipt_required: true,
        match_level: None,
        lines: vec![PoLine {
            category: None,
            match_level: None,
            line_no: 1,
            sku: None,
            quantity: Decimal::from(1_000_000_000),
            unit_price: Decimal::new(1250, 2),
        }],
    }
}

pub(crate) fn blanket_receipt() -> GoodsReceipt {
    GoodsReceipt {
        tenant_id: TENANT.into(),
        receipt_id: "GR-BLANKET".into(),
        po_number: BLANKET_PO.into(),
        received_at: None,
        lines: vec![ReceiptLine {
            po_line_no: 1,
            quantity: Decimal::from(1_000_000_000),
            accepted_quantity: Decimal::ZERO,
        }],
    }
}

/// Invoice `index` of `group`: on the blanket PO (dated ten a day), or on a PO
/// of its own that does not exist.
fn invoice(group: Group, id: String, index: usize) -> Invoice {
    let po_number = match group {
        Group::PoLine => BLANKET_PO.to_string(),
        Group::ExceptionSummary => format!("PO-MISSING-{index}"),
    };
    invoice_on(po_number, id, index, Decimal::from(3))
}

/// Invoice `id` of the tenant's vendor on `po_number` (dated ten a day by
/// `index`), for `quantity` units at the blanket PO's price.
pub(crate) fn invoice_on(
    po_number: String,
    id: String,
    index: usize,
    quantity: Decimal,
) -> Invoice {
    Invoice {
        tenant_id: TENANT.into(),
        invoice_number: id.clone().into(),
        invoice_id: id.into(),
        kind: InvoiceKind::Invoice,
        status: InvoiceStatus::Active,
        vendor_id: VENDOR.into(),
        po_number: po_number.into(),
        currency: Currency(*b"USD"),
        invoice_date: FIRST_DAY + (index / 10) as i32,
        lines: vec![InvoiceLine {
            po_line_no: 1,
            quantity,
            unit_price: Decimal::new(1250, 2),
        }],
        tax: Decimal::ZERO,
        freight: Decimal::ZERO,
        total: None,
    }
}

/// Loads a group of `size`, then times `probes` single-invoice changes to it;
/// returns their latencies in milliseconds.
fn probe(group: Group, size: usize, probes: usize, workers: usize) -> Vec<f64> {
    let mut load = vec![
        Document::PurchaseOrder(Arc::new(blanket_po())),
        Document::GoodsReceipt(Arc::new(blanket_receipt())),
    ];
    for index in 0..size {
        let invoice = invoice(group, format!("INV-{index:07}"), index);
        load.push(Document::Invoice(Arc::new(invoice)));
    }
    let probes = (0..probes)
        .map(|probe| {
            let invoice = invoice(group, format!("PROBE-{probe:05}"), size + 10);
            Document::Invoice(Arc::new(invoice))
        })
        .collect();
    time_probes(workers, load, probes)
}

/// Loads `load` (in times of 10,000 documents), then for each of `probes`:
/// times its insertion until its time is complete on every worker (its rows
/// are readable and its changes have reached subscribers), and deletes it
/// again, untimed, so that every probe meets the same state. Returns the
/// latencies in milliseconds.
pub fn time_probes(workers: usize, load: Vec<Document>, probes: Vec<Document>) -> Vec<f64> {
    let (load, probes) = (Arc::new(load), Arc::new(probes));
    let config = timely::Config::process(workers.max(1));
    let guards = timely::execute(config, move |worker| {
        let mut matcher = Matcher::build(worker, &MatchConfig::default(), None);
        let feeds = worker.index() == 0;
        let mut offset = 0i64;
        let mut time = 1;
        let mut step = |matcher: &mut Matcher,
                        worker: &mut timely::worker::Worker,
                        documents: Vec<(Fingerprint, Option<Document>)>| {
            if feeds {
                for (key, document) in documents {
                    offset += 1;
                    matcher.upsert(key, document, offset);
                }
            }
            matcher.advance_to(time + 1);
            while !matcher.is_complete(time) {
                worker.step();
            }
            matcher.allow_compaction(time);
            time += 1;
        };
        let put = |document: &Document| (document.key(), Some(document.clone()));
        for chunk in load.chunks(10_000) {
            step(&mut matcher, worker, chunk.iter().map(put).collect());
        }
        let mut latencies = Vec::with_capacity(probes.len());
        for probe in probes.iter() {
            let (key, document) = put(probe);
            let started = Instant::now();
            step(&mut matcher, worker, vec![(key, document)]);
            latencies.push(started.elapsed().as_secs_f64() * 1000.0);
            step(&mut matcher, worker, vec![(key, None)]);
        }
        latencies
    })
    .expect("timely starts");
    guards
        .join()
        .into_iter()
        .map(|result| result.expect("worker finishes"))
        .next()
        .unwrap_or_default()
}

/// The human summary of a group-size report.
pub fn summary(report: &GroupSizeReport) -> Vec<String> {
    let mut lines = vec![format!(
        "group size: latency of one new invoice until its time is complete, {} probes per size, {} worker(s)",
        report.config.probes, report.config.workers
    )];
    for group in [Group::PoLine, Group::ExceptionSummary] {
        let of_group: Vec<_> = report
            .measurements
            .iter()
            .filter(|measurement| measurement.group == group)
            .collect();
        let name = match group {
            Group::PoLine => "invoices on one PO line",
            Group::ExceptionSummary => "exceptions in one exception_summary group",
        };
        for measurement in &of_group {
            lines.push(format!(
                "  {name:>42} {:>7}: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms",
                measurement.size, measurement.p50_ms, measurement.p90_ms, measurement.p99_ms
            ));
        }
        if let (Some(first), Some(last)) = (of_group.first(), of_group.last()) {
            lines.push(format!(
                "  {name:>42}: p50 at {} is {:.2}x p50 at {} (target: within 2x)",
                last.size,
                last.p50_ms / first.p50_ms,
                first.size
            ));
        }
    }
    lines
}
