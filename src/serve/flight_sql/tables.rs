//! The collections as DataFusion tables, all read at one logical time.
//!
//! A [`CollectionTable`] is one collection of one statement: DataFusion calls
//! [`scan`](TableProvider::scan) with the columns the query needs and its
//! filters, and the scan reads the collection from the workers (and the
//! cluster's other processes) at the statement's `as_of` with:
//! * the principal's tenant scope, always (SPEC §9), whatever the SQL says;
//! * every `column = literal` filter on a text or integer column as a
//!   [`RowFilter`] condition: one on `tenant_id` (or `topic`) becomes the
//!   key seek of Flight reads, and the others run on the workers, so a
//!   one-tenant query copies only that tenant's rows;
//! * only the projected columns built into Arrow.
//!
//! What a scan copies counts against the statement's memory limit, beside
//! what DataFusion's own operators reserve.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    BinaryExpr, Expr, Operator, TableProviderFilterPushDown, TableType,
};
use datafusion::physical_plan::ExecutionPlan;
use serde_json::{Map, Value};
use tonic::Status;
use trimatch_dataflows::{OutputCollection, Time};

use crate::output::columns::schema;
use crate::output::filter::RowFilter;
use crate::serve::auth::Principal;
use crate::serve::gate::scoped;
use crate::serve::metrics::Metrics;
use crate::serve::reader::{ClusterReader, TableRead};

/// What every table of one statement shares: who asks, at which time, and
/// how much the scans have copied so far.
pub(super) struct StatementReads {
    pub reader: ClusterReader,
    /// Where the rows the scans copy are counted.
    pub metrics: Arc<Metrics>,
    pub principal: Principal,
    pub as_of: Time,
    /// Bytes of Arrow data the scans may copy in all.
    pub memory_limit: usize,
    copied_bytes: AtomicUsize,
}

impl StatementReads {
    pub fn new(
        reader: ClusterReader,
        metrics: Arc<Metrics>,
        principal: Principal,
        as_of: Time,
        memory_limit: usize,
    ) -> Self {
        StatementReads {
            reader,
            metrics,
            principal,
            as_of,
            memory_limit,
            copied_bytes: AtomicUsize::new(0),
        }
    }
}

/// One collection as a table of one statement.
pub(super) struct CollectionTable {
    pub collection: OutputCollection,
    pub reads: Arc<StatementReads>,
}

impl fmt::Debug for CollectionTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}", self.collection.name(), self.reads.as_of)
    }
}

/// `column = literal` (either way round), the only filter a scan takes.
fn equality(expr: &Expr) -> Option<(&str, &ScalarValue)> {
    let Expr::BinaryExpr(BinaryExpr {
        left,
        op: Operator::Eq,
        right,
    }) = expr
    else {
        return None;
    };
    match (left.as_ref(), right.as_ref()) {
        (Expr::Column(column), Expr::Literal(value, _))
        | (Expr::Literal(value, _), Expr::Column(column)) => Some((column.name.as_str(), value)),
        _ => None,
    }
}

/// The filter value (as a Flight ticket's filter holds it) a literal compared
/// with a column of `data_type` stands for, when [`RowFilter`] compares
/// exactly as SQL does: text with text, integers with integers. A NULL
/// literal never is (in SQL, `= NULL` is never true).
fn filter_value(data_type: &DataType, value: &ScalarValue) -> Option<Value> {
    match (data_type, value) {
        (DataType::Utf8, ScalarValue::Utf8(Some(text)))
        | (DataType::Utf8, ScalarValue::LargeUtf8(Some(text)))
        | (DataType::Utf8, ScalarValue::Utf8View(Some(text))) => Some(Value::from(text.clone())),
        (
            DataType::Int32 | DataType::Int64 | DataType::UInt32 | DataType::UInt64,
            ScalarValue::Int8(_)
            | ScalarValue::Int16(_)
            | ScalarValue::Int32(_)
            | ScalarValue::Int64(_)
            | ScalarValue::UInt8(_)
            | ScalarValue::UInt16(_)
            | ScalarValue::UInt32(_)
            | ScalarValue::UInt64(_),
        ) if !value.is_null() => value.to_string().parse::<i64>().ok().map(Value::from),
        _ => None,
    }
}

impl CollectionTable {
    /// The filter a scan's `filters` become (those it takes; the rest are
    /// left to DataFusion), as a ticket's `filter` object.
    fn pushed_filter(&self, filters: &[Expr]) -> Map<String, Value> {
        let schema = schema(self.collection);
        let mut pushed = Map::new();
        for (column, value) in filters.iter().filter_map(equality) {
            let Ok(field) = schema.field_with_name(column) else {
                continue;
            };
            if let Some(value) = filter_value(field.data_type(), value) {
                // Two different values for one column: no row passes, and
                // the RowFilter (which keeps the last) must not say otherwise.
                if pushed.get(column).is_some_and(|already| already != &value) {
                    pushed.insert(column.to_string(), Value::Null);
                } else {
                    pushed.insert(column.to_string(), value);
                }
            }
        }
        pushed
    }
}

#[tonic::async_trait]
impl TableProvider for CollectionTable {
    fn schema(&self) -> SchemaRef {
        schema(self.collection)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        let schema = schema(self.collection);
        Ok(filters
            .iter()
            .map(|filter| {
                let exact = equality(filter).is_some_and(|(column, value)| {
                    schema
                        .field_with_name(column)
                        .is_ok_and(|field| filter_value(field.data_type(), value).is_some())
                });
                if exact {
                    TableProviderFilterPushDown::Exact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let full = schema(self.collection);
        let projection: Vec<usize> = match projection {
            Some(projection) => projection.clone(),
            None => (0..full.fields().len()).collect(),
        };
        let pushed = self.pushed_filter(filters);
        // A refusal (another tenant, say) goes back to the client as its
        // gRPC status, through DataFusion's error.
        let external = |status: Status| DataFusionError::External(Box::new(status));
        let filter = if pushed.values().any(Value::is_null) {
            None
        } else {
            Some(
                RowFilter::parse(self.collection, &pushed)
                    .map_err(|error| external(Status::invalid_argument(error.to_string())))?,
            )
        };
        let reads = &self.reads;
        let batches = match filter {
            // Contradictory equalities: nothing to read.
            None => Vec::new(),
            Some(filter) => {
                let filter = scoped(&reads.principal, self.collection, Arc::new(filter), false)
                    .map_err(external)?;
                reads
                    .reader
                    .table(TableRead {
                        collection: self.collection,
                        filter,
                        pushed: &pushed,
                        as_of: reads.as_of,
                        projection: &projection,
                        limit,
                    })
                    .await
                    .map_err(external)?
            }
        };
        let bytes: usize = batches.iter().map(RecordBatch::get_array_memory_size).sum();
        let copied = reads.copied_bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if copied > reads.memory_limit {
            return Err(DataFusionError::ResourcesExhausted(format!(
                "the tables this statement reads hold {copied} bytes at as_of {}, more than the \
                 SQL memory limit of {} bytes; narrow the query (e.g. WHERE tenant_id = '…') or \
                 raise --sql-memory-limit",
                reads.as_of, reads.memory_limit
            )));
        }
        reads
            .metrics
            .sql_rows_scanned(batches.iter().map(RecordBatch::num_rows).sum());
        let projected = Arc::new(full.project(&projection)?);
        Ok(MemorySourceConfig::try_new_exec(
            &[batches],
            projected,
            None,
        )?)
    }
}
