//! Payments (SPEC §8) through the graph alone, no Kafka:
//!
//! * **throughput at a 1M-invoice state**: a generated history (20 tenants,
//!   no payments) until about `invoices` invoices are live, then a stream of
//!   payments only — allocated, by reference (some with a typo), partial,
//!   over, duplicate, voided — timed through the graph in batches;
//! * **vendor size**: the latency of one payment for a vendor with 100,
//!   1,000 and 10,000 open invoices. The payment names no invoice and its
//!   reference is a typo of one invoice's number, so it is unapplied and the
//!   suggestion rule runs: the worst case of a payment's cost. The
//!   invoices' numbers all have the same length (no help from the length
//!   bound) and their open amounts are distinct, as a vendor's are; the
//!   amount window is what keeps the cost flat.

use std::sync::Arc;

use rust_decimal::Decimal;
use serde::Serialize;
use trimatch_dataflows::model::*;
use trimatch_workload::{Present, Workload, WorkloadConfig};

use super::graph::{decode_all, time_graph};
use super::group_size::{blanket_po, blanket_receipt, invoice_on, time_probes};
use super::group_size::{BLANKET_PO, FIRST_DAY, TENANT, VENDOR};
use super::measure::percentile;

/// The shape of a payments run.
#[derive(Clone, Debug, Serialize)]
pub struct PaymentsBenchConfig {
    pub workers: usize,
    /// Live invoices to reach before the payments are timed.
    pub invoices: usize,
    /// Payments timed through the graph.
    pub payments: usize,
    /// Changes per logical time.
    pub batch: usize,
    /// Open invoices of the one vendor, per vendor-size measurement.
    pub vendor_sizes: Vec<usize>,
    /// Payments timed per vendor size.
    pub probes: usize,
    pub seed: u64,
    /// Print each worker's largest arrangements at the invoice state and its
    /// busiest operators.
    pub operator_profile: bool,
}

/// One vendor size.
#[derive(Clone, Debug, Serialize)]
pub struct VendorMeasurement {
    pub open_invoices: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
}

/// What a payments run measured.
#[derive(Clone, Debug, Serialize)]
pub struct PaymentsReport {
    pub config: PaymentsBenchConfig,
    /// Invoices and documents live when the payments began.
    pub live_invoices: usize,
    pub live_documents: usize,
    pub payments_seconds: f64,
    pub payments_per_second: f64,
    pub vendor_sizes: Vec<VendorMeasurement>,
}

/// Runs both measurements.
pub fn run(config: &PaymentsBenchConfig) -> PaymentsReport {
    let (live_invoices, live_documents, payments_seconds) = throughput(config);
    let vendor_sizes = config
        .vendor_sizes
        .iter()
        .map(|&size| {
            let mut latencies = vendor_probe(size, config.probes, config.workers);
            latencies.sort_by(f64::total_cmp);
            let at = |p| percentile(&latencies, p).unwrap_or(f64::NAN);
            VendorMeasurement {
                open_invoices: size,
                p50_ms: at(50.0),
                p90_ms: at(90.0),
                p99_ms: at(99.0),
            }
        })
        .collect();
    PaymentsReport {
        config: config.clone(),
        live_invoices,
        live_documents,
        payments_seconds,
        payments_per_second: config.payments as f64 / payments_seconds,
        vendor_sizes,
    }
}

/// Preloads until `config.invoices` invoices are live, then times
/// `config.payments` payments; returns (live invoices, live documents,
/// seconds the payments took).
fn throughput(config: &PaymentsBenchConfig) -> (usize, usize, f64) {
    let mut workload = Workload::new(WorkloadConfig {
        seed: config.seed,
        tenants: 20,
        bad_share: 0.0,
        live_pos_per_tenant: 5_000,
        policy_share: 0.0001,
        payment_share: 0.0,
        ..WorkloadConfig::default()
    });
    let mut present = Present::keeping(|document| matches!(document, Document::Invoice(_)));
    let mut preload = Vec::new();
    let invoices = |present: &Present<bool>| present.values().filter(|is| **is).count();
    while invoices(&present) < config.invoices {
        let chunk: Vec<_> = workload.by_ref().take(100_000).collect();
        let upserts = decode_all(&chunk);
        for upsert in &upserts {
            present.apply_upsert(upsert);
        }
        preload.extend(upserts);
    }
    workload.set_payment_share(1.0);
    let messages: Vec<_> = workload
        .filter(|message| message.kind == DocumentKind::Payment)
        .take(config.payments)
        .collect();
    let payments = decode_all(&messages);
    let timing = time_graph(
        config.workers,
        config.batch,
        Arc::new(preload),
        Arc::new(payments),
        config.operator_profile,
    );
    (
        invoices(&present),
        present.len(),
        timing.elapsed.as_secs_f64(),
    )
}

/// A clean invoice on the blanket PO: `index + 1` units, so every invoice of
/// the vendor has its own open amount (12.50 apart).
fn open_invoice(index: usize) -> Invoice {
    let quantity = Decimal::from(index as u64 + 1);
    invoice_on(
        BLANKET_PO.into(),
        format!("INV-{index:07}"),
        index,
        quantity,
    )
}

/// A payment of invoice `index`'s amount whose reference is its number with
/// one character too many: no invoice's number equals it, so the payment is
/// unapplied, and the invoice is its suggestion.
fn unapplied_payment(probe: usize, index: usize) -> Payment {
    let invoice = open_invoice(index);
    Payment {
        tenant_id: TENANT.into(),
        payment_id: format!("PAY-{probe:06}").into(),
        vendor_id: VENDOR.into(),
        currency: Currency(*b"USD"),
        amount: invoice.lines[0].quantity * invoice.lines[0].unit_price,
        paid_at: FIRST_DAY + 400,
        status: PaymentStatus::Active,
        reference: Some(format!("{}7", invoice.invoice_number).into()),
        allocations: Vec::new(),
    }
}

/// Loads a vendor with `size` open invoices, then times `probes` payments.
fn vendor_probe(size: usize, probes: usize, workers: usize) -> Vec<f64> {
    let mut load = vec![
        Document::PurchaseOrder(Arc::new(blanket_po())),
        Document::GoodsReceipt(Arc::new(blanket_receipt())),
    ];
    load.extend((0..size).map(|index| Document::Invoice(Arc::new(open_invoice(index)))));
    let probes = (0..probes)
        .map(|probe| {
            let payment = unapplied_payment(probe, (probe * 7_919) % size.max(1));
            Document::Payment(Arc::new(payment))
        })
        .collect();
    time_probes(workers, load, probes)
}

/// The human summary.
pub fn summary(report: &PaymentsReport) -> Vec<String> {
    let mut lines = vec![format!(
        "payments through the graph: {:.0} payments/s on {} worker(s) over {} live invoices \
         ({} live documents; {} payments in batches of {}, {:.2} s)",
        report.payments_per_second,
        report.config.workers,
        report.live_invoices,
        report.live_documents,
        report.config.payments,
        report.config.batch,
        report.payments_seconds
    )];
    lines.push(format!(
        "one unapplied payment with a reference (the suggestion rule runs), until its time is \
         complete, {} probes per size:",
        report.config.probes
    ));
    for measurement in &report.vendor_sizes {
        lines.push(format!(
            "  vendor with {:>6} open invoices: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms",
            measurement.open_invoices, measurement.p50_ms, measurement.p90_ms, measurement.p99_ms
        ));
    }
    if let (Some(first), Some(last)) = (report.vendor_sizes.first(), report.vendor_sizes.last()) {
        lines.push(format!(
            "  p50 at {} is {:.2}x p50 at {} (target: within 2x)",
            last.open_invoices,
            last.p50_ms / first.p50_ms,
            first.open_invoices
        ));
    }
    lines
}
