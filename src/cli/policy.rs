//! `trimatch policy preview FILE`: asks a running trimatch what a policy
//! change would do before it is produced (the `preview_policy` Flight
//! action, SPEC §12.4), and prints the exceptions it would raise and
//! release, the invoices whose status would change, and a one-line summary.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use arrow::array::{Array, Int64Array, StringArray};
use arrow::ipc::reader::StreamReader;
use arrow::record_batch::RecordBatch;
use arrow_flight::Action;
use clap::{Args, Subcommand};
use futures::TryStreamExt;
use serde_json::Value;
use trimatch_dataflows::decode::policy_changes::policy_changes;
use trimatch_dataflows::preview::summary_line;

use super::connection::Connection;
use super::print::{rows_as_text, write_table};

#[derive(Args)]
pub struct PolicyArgs {
    #[command(subcommand)]
    command: PolicyCommand,
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Show what a policy change would raise and release, and which invoices
    /// would change status, without changing anything (admins of the tenant).
    Preview(PreviewArgs),
}

#[derive(Args)]
struct PreviewArgs {
    /// A JSON file: {"upsert": [policy, …], "delete": [identity, …]}, or an
    /// array of policies (upserts).
    file: PathBuf,
    /// The tenant of documents that name none (a document naming another
    /// tenant is refused).
    #[arg(long)]
    tenant: Option<String>,
    #[command(flatten)]
    connection: Connection,
}

/// The columns of the exception changes the table shows.
const EXCEPTION_COLUMNS: [&str; 7] = [
    "invoice_id",
    "exception_type",
    "po_line_no",
    "expected",
    "actual",
    "resolution",
    "vendor_id",
];

pub fn run(args: PolicyArgs) -> Result<()> {
    match args.command {
        PolicyCommand::Preview(args) => preview(args),
    }
}

fn preview(args: PreviewArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    let mut body: Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not JSON", args.file.display()))?;
    if let Some(tenant) = &args.tenant {
        with_tenant(&mut body, tenant)?;
    }
    let body = body.to_string();
    // The server validates too; checking here names the problem before connecting.
    policy_changes(body.as_bytes())
        .map_err(|error| anyhow::anyhow!("{}: {error}", args.file.display()))?;
    let runtime = tokio::runtime::Runtime::new()?;
    let streams: Vec<Vec<u8>> = runtime.block_on(async {
        let mut client = args.connection.connect().await?;
        let action = Action::new("preview_policy", body);
        let results = client.do_action(action).await?;
        let results: Vec<_> = results.try_collect().await?;
        Ok::<_, anyhow::Error>(results.into_iter().map(|bytes| bytes.to_vec()).collect())
    })?;
    let [exceptions, statuses] = streams.as_slice() else {
        bail!("the server answered with {} results, not 2", streams.len());
    };
    let exceptions = read_stream(exceptions)?;
    let statuses = read_stream(statuses)?;
    print(&exceptions, &statuses, &mut std::io::stdout().lock())
}

/// Sets `tenant_id` on every document of the body that has none; refuses one
/// of another tenant.
fn with_tenant(body: &mut Value, tenant: &str) -> Result<()> {
    let documents: Vec<&mut Value> = match body {
        Value::Array(policies) => policies.iter_mut().collect(),
        Value::Object(object) => object
            .iter_mut()
            .filter_map(|(_, list)| list.as_array_mut())
            .flatten()
            .collect(),
        _ => bail!("expected {{\"upsert\": […], \"delete\": […]}} or an array of policies"),
    };
    for document in documents {
        let Some(document) = document.as_object_mut() else {
            continue; // the server names it
        };
        match document.get("tenant_id").and_then(Value::as_str) {
            None => {
                document.insert("tenant_id".to_string(), tenant.into());
            }
            Some(other) if other != tenant => {
                bail!("a document of tenant {other:?} in a preview for --tenant {tenant:?}")
            }
            Some(_) => {}
        }
    }
    Ok(())
}

fn read_stream(bytes: &[u8]) -> Result<Vec<RecordBatch>> {
    Ok(StreamReader::try_new(bytes, None)?.collect::<Result<_, _>>()?)
}

/// The two tables and the summary line.
fn print(exceptions: &[RecordBatch], statuses: &[RecordBatch], out: &mut impl Write) -> Result<()> {
    let (mut released, mut raised) = (0, 0);
    let mut rows = Vec::new();
    for batch in exceptions {
        let schema = batch.schema();
        let columns: Vec<usize> = EXCEPTION_COLUMNS
            .iter()
            .map(|name| schema.index_of(name))
            .collect::<Result<_, _>>()?;
        let diffs = batch
            .column_by_name("_diff")
            .and_then(|column| column.as_any().downcast_ref::<Int64Array>())
            .context("the exception changes have no _diff column")?;
        let text = rows_as_text(&[batch.project(&columns)?])?;
        for (row, diff) in text.into_iter().zip(diffs.values()) {
            let change = if *diff < 0 { "released" } else { "raised" };
            if *diff < 0 {
                released += 1;
            } else {
                raised += 1;
            }
            rows.push(
                std::iter::once(Some(change.to_string()))
                    .chain(row)
                    .collect(),
            );
        }
    }
    if !rows.is_empty() {
        let header: Vec<String> = std::iter::once("change")
            .chain(EXCEPTION_COLUMNS)
            .map(String::from)
            .collect();
        write_table(out, &header, &rows, &[3, 4, 5])?;
        writeln!(out)?;
    }
    let mut becoming: BTreeMap<String, usize> = BTreeMap::new();
    let status_rows = rows_as_text(statuses)?;
    for batch in statuses {
        let after = batch
            .column_by_name("status_after")
            .and_then(|column| column.as_any().downcast_ref::<StringArray>())
            .context("the status changes have no status_after column")?;
        for status in after.iter().flatten() {
            *becoming.entry(status.to_string()).or_default() += 1;
        }
    }
    if !status_rows.is_empty() {
        let header: Vec<String> = ["tenant_id", "invoice_id", "status_before", "status_after"]
            .map(String::from)
            .to_vec();
        write_table(out, &header, &status_rows, &[])?;
        writeln!(out)?;
    }
    let becoming: BTreeMap<&str, usize> = becoming
        .iter()
        .map(|(status, n)| (status.as_str(), *n))
        .collect();
    writeln!(out, "{}", summary_line(released, raised, &becoming))?;
    Ok(())
}
