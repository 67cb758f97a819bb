//! SPEC §12.4 across a cluster: a policy preview asked of either process of
//! a two-process cluster reads every process's shards (the processes ask
//! each other with `preview_policy_shard`), and equals the difference
//! between the plain evaluation of the produced history with and without
//! the policy.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Int32Type, Int64Type};
use arrow::ipc::reader::StreamReader;
use arrow_flight::Action;
use futures::TryStreamExt;
use rust_decimal::Decimal;
use serde_json::json;
use support::cluster::*;
use support::*;
use trimatch_dataflows::model::{Document, MatchPolicy};
use trimatch_workload::{Workload, WorkloadConfig};

const TENANT: &str = "tenant-001";

/// (invoice, exception type, line, ±1).
type ExceptionChange = (String, String, Option<i32>, i64);
/// (invoice, status before, status after).
type StatusChange = (String, String, String);

/// What the plain evaluation says the policy changes for the tenant.
fn expected_change(
    before: &Snapshot,
    after: &Snapshot,
) -> (BTreeSet<ExceptionChange>, BTreeSet<StatusChange>) {
    // Whole rows: a row whose detail changes is released and raised again.
    let rows = |snapshot: &Snapshot| -> BTreeSet<_> {
        snapshot
            .match_exceptions
            .iter()
            .filter(|row| &*row.tenant_id == TENANT)
            .cloned()
            .collect()
    };
    let (was, is) = (rows(before), rows(after));
    let change = |row: &trimatch_dataflows::rows::ExceptionRow, diff: i64| {
        let line = row.po_line_no.map(|line| line as i32);
        let kind = row.exception_type.as_str().to_string();
        (row.invoice_id.to_string(), kind, line, diff)
    };
    let exceptions = was
        .difference(&is)
        .map(|row| change(row, -1))
        .chain(is.difference(&was).map(|row| change(row, 1)))
        .collect();
    let statuses_before: BTreeMap<String, &str> = before
        .invoice_matches
        .iter()
        .filter(|row| &*row.tenant_id == TENANT)
        .map(|row| (row.invoice_id.to_string(), row.status.as_str()))
        .collect();
    let statuses = after
        .invoice_matches
        .iter()
        .filter(|row| &*row.tenant_id == TENANT)
        .filter_map(|row| {
            let was = statuses_before.get(&*row.invoice_id)?;
            (*was != row.status.as_str()).then(|| {
                (
                    row.invoice_id.to_string(),
                    was.to_string(),
                    row.status.as_str().to_string(),
                )
            })
        })
        .collect();
    (exceptions, statuses)
}

/// The changes that change an exception's key columns: the plain evaluation
/// writes no `detail`, so a row the preview releases and raises again with a
/// new detail (a tolerance named in it) is the same row to it.
fn net(changes: &BTreeSet<ExceptionChange>) -> BTreeSet<ExceptionChange> {
    changes
        .iter()
        .filter(|(invoice, kind, line, diff)| {
            !changes.contains(&(invoice.clone(), kind.clone(), *line, -diff))
        })
        .cloned()
        .collect()
}

/// The preview of `body` asked of the process at `flight`.
async fn preview(
    flight: &str,
    body: &serde_json::Value,
) -> (BTreeSet<ExceptionChange>, BTreeSet<StatusChange>) {
    let mut client = trimatch::cli::connection::Connection::plain(flight)
        .connect()
        .await
        .unwrap();
    let results: Vec<_> = client
        .do_action(Action::new("preview_policy", body.to_string()))
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(results.len(), 2, "two Arrow IPC streams");
    let read = |bytes: &[u8]| -> Vec<arrow::record_batch::RecordBatch> {
        StreamReader::try_new(bytes, None)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    let mut exceptions = BTreeSet::new();
    for batch in read(&results[0]) {
        let text = |name: &str| {
            batch
                .column_by_name(name)
                .unwrap()
                .as_string::<i32>()
                .clone()
        };
        let (invoices, kinds) = (text("invoice_id"), text("exception_type"));
        let lines = batch
            .column_by_name("po_line_no")
            .unwrap()
            .as_primitive::<Int32Type>()
            .clone();
        let diffs = batch
            .column_by_name("_diff")
            .unwrap()
            .as_primitive::<Int64Type>()
            .clone();
        for row in 0..batch.num_rows() {
            let line = (!lines.is_null(row)).then(|| lines.value(row));
            exceptions.insert((
                invoices.value(row).to_string(),
                kinds.value(row).to_string(),
                line,
                diffs.value(row),
            ));
        }
    }
    let mut statuses = BTreeSet::new();
    for batch in read(&results[1]) {
        let text = |name: &str| {
            batch
                .column_by_name(name)
                .unwrap()
                .as_string::<i32>()
                .clone()
        };
        let (invoices, was, is) = (
            text("invoice_id"),
            text("status_before"),
            text("status_after"),
        );
        for row in 0..batch.num_rows() {
            statuses.insert((
                invoices.value(row).to_string(),
                was.value(row).to_string(),
                is.value(row).to_string(),
            ));
        }
    }
    (exceptions, statuses)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_preview_asked_of_either_process_covers_the_whole_cluster() {
    let broker = Tansu::start();
    create_input_topics(&broker.address, [3, 2, 3, 1, 1, 1]);
    let messages: Vec<_> = Workload::new(WorkloadConfig {
        seed: 77,
        tenants: 2,
        bad_share: 0.0,
        ..WorkloadConfig::default()
    })
    .take(1_500)
    .collect();
    produce(&broker.address, &messages);
    let documents = final_documents(&messages);
    // The tenant's own policy, generous on price and quantity.
    let policy = MatchPolicy {
        tenant_id: TENANT.into(),
        price_tolerance_pct: Some(Decimal::from(10)),
        qty_tolerance_pct: Some(Decimal::from(50)),
        ..MatchPolicy::default()
    };
    let mut with_policy = documents.clone();
    with_policy.insert(policy.key(), Document::MatchPolicy(Arc::new(policy)));
    let (exceptions, statuses) =
        expected_change(&expected_state(&documents), &expected_state(&with_policy));
    assert!(
        exceptions.iter().any(|change| change.3 < 0) && !statuses.is_empty(),
        "the policy releases something: {exceptions:?}"
    );

    let cluster = Cluster::start([&broker.address, &broker.address]);
    for (process, addr) in cluster.metrics.iter().enumerate() {
        wait_ready(
            &format!("process {process} ready"),
            addr,
            Duration::from_secs(90),
        );
    }
    let body = json!({"upsert": [{"tenant_id": TENANT, "price_tolerance_pct": "10", "qty_tolerance_pct": "50"}]});
    for flight in &cluster.flights {
        let (previewed, changed) = preview(flight, &body).await;
        assert_eq!(
            net(&previewed),
            net(&exceptions),
            "the preview asked of {flight}"
        );
        assert_eq!(changed, statuses, "the statuses previewed by {flight}");
    }
}
