//! The Flight SQL catalog commands (SPEC §10): one catalog `trimatch`, one
//! schema `live`, a table per collection the caller may read, the server's
//! SQL info, and primary keys (the keys of SPEC §3). Each answer is one
//! record batch, built by arrow-flight's builders where it has one.

use std::sync::{Arc, LazyLock};

use arrow::array::{ArrayRef, Int32Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::{
    CommandGetCatalogs, CommandGetDbSchemas, CommandGetPrimaryKeys, CommandGetSqlInfo,
    CommandGetTableTypes, CommandGetTables, SqlInfo,
};
use tonic::Status;
use trimatch_dataflows::OutputCollection;

use super::statement::{CATALOG, SCHEMA};
use crate::output::columns::schema;
use crate::serve::auth::Principal;
use crate::serve::gate::may_read;

/// The one table type.
const TABLE_TYPE: &str = "TABLE";

fn arrow_status(error: impl std::fmt::Display) -> Status {
    Status::internal(error.to_string())
}

/// What the server says of itself to GetSqlInfo.
static SQL_INFO: LazyLock<SqlInfoData> = LazyLock::new(|| {
    let mut builder = SqlInfoDataBuilder::new();
    builder.append(SqlInfo::FlightSqlServerName, "trimatch");
    builder.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    builder.append(SqlInfo::FlightSqlServerArrowVersion, "59");
    builder.append(SqlInfo::FlightSqlServerReadOnly, true);
    builder.append(SqlInfo::FlightSqlServerSql, true);
    builder.append(SqlInfo::FlightSqlServerSubstrait, false);
    // SqlSupportedTransaction::None: every statement reads one consistent time.
    builder.append(SqlInfo::FlightSqlServerTransaction, 0i32);
    builder.build().expect("the SQL info is well-formed")
});

/// A catalog command's answer: its schema, and (to send) its rows.
pub(super) struct CatalogAnswer {
    pub schema: SchemaRef,
    pub batch: RecordBatch,
}

pub(super) fn catalogs(command: CommandGetCatalogs) -> Result<CatalogAnswer, Status> {
    let mut builder = command.into_builder();
    builder.append(CATALOG);
    let schema = builder.schema();
    let batch = builder.build().map_err(arrow_status)?;
    Ok(CatalogAnswer { schema, batch })
}

pub(super) fn db_schemas(command: CommandGetDbSchemas) -> Result<CatalogAnswer, Status> {
    let mut builder = command.into_builder();
    builder.append(CATALOG, SCHEMA);
    let schema = builder.schema();
    let batch = builder.build().map_err(arrow_status)?;
    Ok(CatalogAnswer { schema, batch })
}

pub(super) fn tables(
    command: CommandGetTables,
    principal: &Principal,
) -> Result<CatalogAnswer, Status> {
    let mut builder = command.into_builder();
    for collection in OutputCollection::ALL {
        if may_read(principal, collection) {
            builder
                .append(
                    CATALOG,
                    SCHEMA,
                    collection.name(),
                    TABLE_TYPE,
                    &schema(collection),
                )
                .map_err(arrow_status)?;
        }
    }
    let schema = builder.schema();
    let batch = builder.build().map_err(arrow_status)?;
    Ok(CatalogAnswer { schema, batch })
}

pub(super) fn table_types(command: CommandGetTableTypes) -> Result<CatalogAnswer, Status> {
    let mut builder = command.into_builder();
    builder.append(TABLE_TYPE);
    let schema = builder.schema();
    let batch = builder.build().map_err(arrow_status)?;
    Ok(CatalogAnswer { schema, batch })
}

pub(super) fn sql_info(command: CommandGetSqlInfo) -> Result<CatalogAnswer, Status> {
    let builder = command.into_builder(&SQL_INFO);
    let schema = builder.schema();
    let batch = builder.build().map_err(arrow_status)?;
    Ok(CatalogAnswer { schema, batch })
}

/// The schema of a GetPrimaryKeys answer (Flight SQL's `FlightSql.proto`;
/// arrow-flight has no builder for it).
pub(super) fn primary_keys_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("catalog_name", DataType::Utf8, true),
        Field::new("db_schema_name", DataType::Utf8, true),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("column_name", DataType::Utf8, false),
        Field::new("key_name", DataType::Utf8, true),
        Field::new("key_sequence", DataType::Int32, false),
    ]))
}

/// The key columns (SPEC §3) of the table a GetPrimaryKeys names, if the
/// caller may read it and it is in our catalog and schema.
pub(super) fn primary_keys(
    command: CommandGetPrimaryKeys,
    principal: &Principal,
) -> Result<CatalogAnswer, Status> {
    let ours = command
        .catalog
        .as_deref()
        .is_none_or(|name| name == CATALOG)
        && command
            .db_schema
            .as_deref()
            .is_none_or(|name| name == SCHEMA);
    let columns: &[&str] = match OutputCollection::from_name(&command.table) {
        Some(collection) if ours && may_read(principal, collection) => collection.key_columns(),
        _ => &[],
    };
    let count = columns.len();
    let text = |value: &str| Arc::new(StringArray::from(vec![value; count])) as ArrayRef;
    let schema = primary_keys_schema();
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            text(CATALOG),
            text(SCHEMA),
            text(&command.table),
            Arc::new(StringArray::from(columns.to_vec())),
            text(&format!("{}_pkey", command.table)),
            Arc::new(Int32Array::from_iter_values(1..=count as i32)),
        ],
    )
    .map_err(arrow_status)?;
    Ok(CatalogAnswer { schema, batch })
}
