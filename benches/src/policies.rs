//! Policy changes (SPEC §12.1, §12.4) — the graph alone, no Kafka:
//! * the latency of one vendor-scoped policy change in a tenant of N
//!   invoices where that vendor has 100 of them (N = 1,000 and 100,000):
//!   its cost should follow the vendor's invoices, not the tenant's;
//! * one preview of a tenant-wide policy change over a tenant of 100,000
//!   invoices, on one worker (the whole tenant on one shard: the slowest
//!   case), from the tenant's policies to the sorted answer.
//!
//! The tenant's invoices are 100 per vendor, each vendor billing its own PO
//! 4 % over the PO price, so each raises a `PRICE_VARIANCE` a 5 % policy
//! releases.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use rust_decimal::Decimal;
use serde::Serialize;
use trimatch_dataflows::model::*;
use trimatch_dataflows::preview::{self, PolicyChanges, PreviewShards};
use trimatch_dataflows::{MatchConfig, Matcher};

use super::group_size::{invoice_on, time_probes, TENANT};
use super::measure::percentile;

/// Invoices per vendor.
const PER_VENDOR: usize = 100;

/// The shape of a policy run.
#[derive(Clone, Debug, Serialize)]
pub struct PolicyBenchConfig {
    /// Tenant sizes (invoices) for the vendor-scoped change.
    pub sizes: Vec<usize>,
    /// Changes timed per size.
    pub probes: usize,
    pub workers: usize,
    /// The tenant size of the preview.
    pub preview_invoices: usize,
    /// Previews timed.
    pub previews: usize,
}

/// One tenant size.
#[derive(Clone, Debug, Serialize)]
pub struct PolicyMeasurement {
    pub tenant_invoices: usize,
    pub vendor_invoices: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
}

/// What a policy run measured.
#[derive(Clone, Debug, Serialize)]
pub struct PolicyBenchReport {
    pub config: PolicyBenchConfig,
    pub vendor_change: Vec<PolicyMeasurement>,
    /// Wall time of each preview, ms.
    pub preview_ms: Vec<f64>,
    /// Exception changes in the preview's answer.
    pub preview_changes: usize,
}

pub fn run(config: &PolicyBenchConfig) -> PolicyBenchReport {
    let vendor_change = config
        .sizes
        .iter()
        .map(|&size| {
            let probes = (0..config.probes)
                .map(|_| {
                    let policy = vendor_policy(&vendor(0));
                    Document::MatchPolicy(Arc::new(policy))
                })
                .collect();
            let mut latencies = time_probes(config.workers, tenant(size), probes);
            latencies.sort_by(f64::total_cmp);
            let at = |p| percentile(&latencies, p).unwrap_or(f64::NAN);
            PolicyMeasurement {
                tenant_invoices: size,
                vendor_invoices: PER_VENDOR.min(size),
                p50_ms: at(50.0),
                p90_ms: at(90.0),
            }
        })
        .collect();
    let (preview_ms, preview_changes) = time_previews(config.preview_invoices, config.previews);
    PolicyBenchReport {
        config: config.clone(),
        vendor_change,
        preview_ms,
        preview_changes,
    }
}

fn vendor(index: usize) -> String {
    format!("V-{index:05}")
}

/// "`vendor` may bill 5 % over the PO price".
fn vendor_policy(vendor: &str) -> MatchPolicy {
    MatchPolicy {
        tenant_id: TENANT.into(),
        vendor_id: Some(vendor.into()),
        price_tolerance_pct: Some(Decimal::from(5)),
        ..MatchPolicy::default()
    }
}

/// A tenant of `size` invoices, 100 per vendor, each vendor on a PO of its
/// own (received in full) billed 4 % over its price.
fn tenant(size: usize) -> Vec<Document> {
    let mut documents = Vec::new();
    for v in 0..size.div_ceil(PER_VENDOR) {
        let po_number = format!("PO-{v:05}");
        documents.push(Document::PurchaseOrder(Arc::new(PurchaseOrder {
            tenant_id: TENANT.into(),
            po_number: po_number.clone().into(),
            vendor_id: vendor(v).into(),
            currency: Currency(*b"USD"),
            status: PoStatus::Open,
            receipt_required: true,
            match_level: None,
            lines: vec![PoLine {
                line_no: 1,
                sku: None,
                category: None,
                match_level: None,
                quantity: Decimal::from(1_000_000),
                unit_price: Decimal::new(1250, 2),
            }],
        })));
        documents.push(Document::GoodsReceipt(Arc::new(GoodsReceipt {
            tenant_id: TENANT.into(),
            receipt_id: format!("GR-{v:05}").into(),
            po_number: po_number.clone().into(),
            received_at: None,
            lines: vec![ReceiptLine {
                po_line_no: 1,
                quantity: Decimal::from(1_000_000),
                accepted_quantity: Decimal::ZERO,
            }],
        })));
        for i in 0..PER_VENDOR.min(size - v * PER_VENDOR) {
            let mut invoice = invoice_on(
                po_number.clone(),
                format!("INV-{v:05}-{i:03}"),
                i,
                Decimal::from(3),
            );
            invoice.vendor_id = vendor(v).into();
            invoice.lines[0].unit_price = Decimal::new(1300, 2); // 4 % over
            documents.push(Document::Invoice(Arc::new(invoice)));
        }
    }
    documents
}

/// Loads a tenant of `size` invoices on one worker and times `count`
/// previews of "every vendor may bill 5 % over" (a tenant policy: every
/// invoice is touched). Returns the times (ms) and the answer's size.
fn time_previews(size: usize, count: usize) -> (Vec<f64>, usize) {
    let load = Arc::new(tenant(size));
    let guards = timely::execute(timely::Config::thread(), move |worker| {
        let mut matcher = Matcher::build(worker, &MatchConfig::default(), None);
        for (offset, document) in load.iter().enumerate() {
            matcher.upsert(document.key(), Some(document.clone()), offset as i64);
        }
        matcher.advance_to(2);
        while !matcher.is_complete(1) {
            worker.step();
        }
        let changes = PolicyChanges {
            tenant: TENANT.into(),
            upsert: vec![Arc::new(MatchPolicy {
                tenant_id: TENANT.into(),
                price_tolerance_pct: Some(Decimal::from(5)),
                ..MatchPolicy::default()
            })],
            delete: Vec::new(),
        };
        let mut shard = OneShard {
            matcher: &mut matcher,
            as_of: 1,
        };
        let mut times = Vec::new();
        let mut answer_size = 0;
        for _ in 0..count {
            let started = Instant::now();
            let answer = preview::preview(&mut shard, &changes, Tolerances::default(), usize::MAX)
                .expect("the state is readable");
            times.push(started.elapsed().as_secs_f64() * 1000.0);
            answer_size = answer.exceptions.len();
        }
        (times, answer_size)
    })
    .expect("timely starts");
    guards
        .join()
        .into_iter()
        .next()
        .and_then(Result::ok)
        .unwrap_or_default()
}

/// The one worker's matcher as every shard of a preview.
struct OneShard<'m> {
    matcher: &'m mut Matcher,
    as_of: Time,
}

impl PreviewShards for OneShard<'_> {
    type Error = trimatch_dataflows::ReadError;

    fn tenant_policies(&mut self, tenant: &str) -> Result<Vec<Arc<MatchPolicy>>, Self::Error> {
        self.matcher.tenant_policies(self.as_of, tenant)
    }

    fn invoices(
        &mut self,
        plan: Arc<preview::PreviewPlan>,
    ) -> Result<Vec<preview::InvoicePreview>, Self::Error> {
        self.matcher.preview_invoices(self.as_of, &plan)
    }

    fn decisions(
        &mut self,
        keys: Arc<Vec<Fingerprint>>,
    ) -> Result<Vec<(Fingerprint, Arc<ExceptionResolution>)>, Self::Error> {
        self.matcher.decisions(self.as_of, &keys)
    }
}

/// The human summary of a policy report.
pub fn summary(report: &PolicyBenchReport) -> Vec<String> {
    let mut lines = vec![format!(
        "policies: latency of one vendor-scoped policy change (the vendor has {PER_VENDOR} invoices) until its time is complete, {} probes, {} worker(s)",
        report.config.probes, report.config.workers
    )];
    for measurement in &report.vendor_change {
        lines.push(format!(
            "  tenant of {:>7} invoices: p50 {:.2} ms, p90 {:.2} ms",
            measurement.tenant_invoices, measurement.p50_ms, measurement.p90_ms
        ));
    }
    if let (Some(first), Some(last)) = (report.vendor_change.first(), report.vendor_change.last()) {
        lines.push(format!(
            "  {}× the tenant's invoices: p50 {:.2}×",
            last.tenant_invoices / first.tenant_invoices.max(1),
            last.p50_ms / first.p50_ms
        ));
    }
    let mut sorted = report.preview_ms.clone();
    sorted.sort_by(f64::total_cmp);
    let by_percentile: BTreeMap<u8, f64> = [50u8, 100]
        .into_iter()
        .map(|p| (p, percentile(&sorted, p as f64).unwrap_or(f64::NAN)))
        .collect();
    lines.push(format!(
        "preview of a tenant-wide change over {} invoices, one worker: p50 {:.0} ms, max {:.0} ms ({} exception changes)",
        report.config.preview_invoices, by_percentile[&50], by_percentile[&100], report.preview_changes
    ));
    lines
}
