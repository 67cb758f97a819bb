//! One SQL statement, from its text (and bound parameters) to a DataFusion
//! plan over the collections at one logical time (SPEC §10).
//!
//! * Every table a statement names is read at one `as_of`, resolved once:
//!   the newest complete time, or the one the statement pins.
//! * Only queries run: DDL, DML and other statements (`SET`, transactions)
//!   are refused by DataFusion's SQL options before planning goes further.
//! * Memory is bounded: DataFusion's operators reserve from a pool of the
//!   configured size (no spilling to disk), and what the scans copy counts
//!   against the same limit; a statement that would pass it fails with
//!   RESOURCE_EXHAUSTED.
//! * Readers call DataFusion's functions less those whose output size they
//!   would choose (`functions`), and a statement's text is at most
//!   `max_statement_bytes`.
//! * A statement travels between calls as a sealed [`StatementHandle`]
//!   (`handle`).

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::error::DataFusionError;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::{DataFrame, SQLOptions, SessionConfig, SessionContext};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
use tonic::Status;
use trimatch_dataflows::{OutputCollection, Time};

use super::functions;
use super::handle::StatementHandle;
use super::limits::SqlSettings;
use super::tables::{CollectionTable, StatementReads};
use crate::serve::auth::Principal;
use crate::serve::gate::may_read;
use crate::serve::metrics::Metrics;
use crate::serve::reader::ClusterReader;

/// The catalog and schema every collection is a table of (SPEC §10).
pub const CATALOG: &str = "trimatch";
pub const SCHEMA: &str = "live";

fn internal(error: impl std::fmt::Display) -> Status {
    Status::internal(error.to_string())
}

/// A planned statement: ready to run, or to say its result's schema.
pub(super) struct PlannedStatement {
    pub frame: DataFrame,
    pub as_of: Time,
}

impl PlannedStatement {
    /// The result's schema (before the time and offsets are added).
    pub fn schema(&self) -> SchemaRef {
        self.frame.schema().inner().clone()
    }

    /// The placeholders' types, `$1` first, as the parameter schema of a
    /// prepared statement (a type DataFusion could not infer is Null).
    pub fn parameter_schema(&self) -> Result<Schema, Status> {
        let types = self
            .frame
            .logical_plan()
            .get_parameter_types()
            .map_err(|error| sql_error(error, &[]))?;
        let mut names: Vec<(usize, String)> = types
            .keys()
            .map(|name| {
                (
                    name.trim_start_matches('$').parse().unwrap_or(usize::MAX),
                    name.clone(),
                )
            })
            .collect();
        names.sort();
        Ok(Schema::new(
            names
                .into_iter()
                .map(|(_, name)| {
                    let data_type = types[&name].clone().unwrap_or(DataType::Null);
                    Field::new(name, data_type, true)
                })
                .collect::<Vec<_>>(),
        ))
    }
}

/// `?` placeholders (what ADBC and JDBC send) numbered `$1`, `$2`, … (what
/// DataFusion binds). Tokens are rewritten, so a `?` inside a string
/// literal or a comment stays as it is.
fn number_placeholders(sql: &str) -> Result<String, Status> {
    if !sql.contains('?') {
        return Ok(sql.to_string());
    }
    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize()
        .map_err(|error| Status::invalid_argument(format!("the SQL does not parse: {error}")))?;
    let mut next = 0;
    Ok(tokens
        .into_iter()
        .map(|token| match token {
            Token::Placeholder(text) if text == "?" => {
                next += 1;
                format!("${next}")
            }
            other => other.to_string(),
        })
        .collect())
}

/// The tables `principal` may read, by name.
fn readable_tables(principal: &Principal) -> Vec<OutputCollection> {
    OutputCollection::ALL
        .into_iter()
        .filter(|collection| may_read(principal, *collection))
        .collect()
}

/// Plans `statement` as `principal` may run it, over the collections at
/// one time.
pub(super) async fn plan(
    reader: &ClusterReader,
    metrics: &Arc<Metrics>,
    principal: &Principal,
    statement: &StatementHandle,
    settings: &SqlSettings,
) -> Result<PlannedStatement, Status> {
    if statement.sql.len() > settings.max_statement_bytes {
        return Err(Status::invalid_argument(format!(
            "the statement is {} bytes long, more than the {} accepted \
             (--sql-max-statement-bytes)",
            statement.sql.len(),
            settings.max_statement_bytes
        )));
    }
    let as_of = reader.resolve_as_of(statement.as_of)?;
    let tables = readable_tables(principal);
    let context = session(settings)?;
    let reads = Arc::new(StatementReads::new(
        reader.clone(),
        metrics.clone(),
        principal.clone(),
        as_of,
        settings.memory_limit,
    ));
    for collection in &tables {
        let table = CollectionTable {
            collection: *collection,
            reads: reads.clone(),
        };
        context
            .register_table(collection.name(), Arc::new(table))
            .map_err(internal)?;
    }
    let sql = number_placeholders(&statement.sql)?;
    let read_only = SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    let mut frame = context
        .sql_with_options(&sql, read_only)
        .await
        .map_err(|error| sql_error(error, &tables))?;
    let parameters = statement.parameter_values().await?;
    if !parameters.is_empty() {
        frame = frame
            .with_param_values(parameters)
            .map_err(|error| sql_error(error, &tables))?;
    }
    Ok(PlannedStatement { frame, as_of })
}

/// A DataFusion session for one statement: the collections' catalog and
/// schema as the defaults, the memory pool, no spilling.
fn session(settings: &SqlSettings) -> Result<SessionContext, Status> {
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_limit(settings.memory_limit, 1.0)
        .with_disk_manager_builder(
            DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
        )
        .build_arc()
        .map_err(internal)?;
    let config = SessionConfig::new()
        .with_default_catalog_and_schema(CATALOG, SCHEMA)
        .with_create_default_catalog_and_schema(true)
        .with_information_schema(true);
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_default_features()
        .with_scalar_functions(functions::scalar_functions())
        .build();
    Ok(SessionContext::new_with_state(state))
}

/// The gRPC status of a failed statement, with what a person needs to fix
/// it: an unknown table names the tables there are; a refused statement
/// says the tables are read-only.
pub(super) fn sql_error(error: DataFusionError, tables: &[OutputCollection]) -> Status {
    if let DataFusionError::External(inner) = error.find_root() {
        if let Some(status) = inner.downcast_ref::<Status>() {
            return status.clone();
        }
    }
    let message = error.to_string();
    if let Some(refusal) = functions::refusal(&message) {
        return refusal;
    }
    match error.find_root() {
        DataFusionError::ResourcesExhausted(_) => Status::resource_exhausted(message),
        _ if message.contains("DDL not supported")
            || message.contains("DML not supported")
            || message.contains("Statement not supported") =>
        {
            Status::invalid_argument(format!(
                "trimatch's tables are read-only and only queries run ({message}); \
                 documents come in through the Kafka input topics"
            ))
        }
        _ if message.contains("not found") && message.contains("table") => {
            let names: Vec<&str> = tables.iter().map(|table| table.name()).collect();
            Status::invalid_argument(format!(
                "{message}; the tables of {CATALOG}.{SCHEMA} you may read are: {}",
                names.join(", ")
            ))
        }
        DataFusionError::Execution(_) | DataFusionError::ArrowError(..) => {
            Status::internal(message)
        }
        _ => Status::invalid_argument(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn question_marks_outside_literals_become_numbered_placeholders() {
        let sql = "SELECT '?' AS q FROM t WHERE a = ? AND b = ? -- why?\n";
        assert_eq!(
            number_placeholders(sql).unwrap(),
            "SELECT '?' AS q FROM t WHERE a = $1 AND b = $2 -- why?\n"
        );
        assert_eq!(number_placeholders("SELECT 1").unwrap(), "SELECT 1");
    }
}
