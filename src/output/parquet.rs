//! The bounded run's output: one Parquet file per collection, readable by
//! pandas, DuckDB, Spark… with the same schema as served over Flight, and the
//! snapshot's time and offsets in the file's key-value metadata. The files
//! stay open while a run in passes appends each pass's rows.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use arrow::datatypes::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use trimatch_dataflows::{OutputCollection, Row, Time};

use super::columns::{record_batch, schema};
use super::{FinalState, AS_OF_KEY, OFFSETS_KEY};

/// Rows per record batch written, and per row group: the writer holds a row
/// group's columns until it is flushed, and its default (1M rows) is most of
/// a large backfill's collection at once.
const BATCH_ROWS: usize = 64 * 1024;

/// The snapshot's offsets as `{"topic/partition": next_offset}` (SPEC §5).
pub fn offsets_json(state: &FinalState) -> String {
    let offsets: BTreeMap<String, i64> = state
        .offsets()
        .into_iter()
        .map(|((topic, partition), next_offset)| (format!("{topic}/{partition}"), next_offset))
        .collect();
    serde_json::to_string(&offsets).expect("a map of numbers serializes")
}

/// Writes `<dir>/<collection>.parquet` for every collection; returns the paths.
pub fn write_collections(dir: &Path, state: &FinalState) -> Result<Vec<PathBuf>> {
    let mut files = ParquetFiles::create(dir)?;
    files.append(state)?;
    files.finish()
}

/// The Parquet files of a bounded run, open while it runs, so that a run in
/// passes appends each pass's rows as the pass ends and holds no more than
/// one pass's. Rows are sorted within each append. Every file's metadata
/// gets the latest time appended and the offsets of the state that had the
/// `source_progress` rows (a run in passes reads the same offsets each pass).
/// Until [`finish`](Self::finish) the files are `<collection>.parquet.partial`,
/// so a run that fails leaves no file that looks complete.
pub struct ParquetFiles {
    /// Each collection's partial file, its schema and its writer.
    files: Vec<(PathBuf, SchemaRef, ArrowWriter<File>)>,
    as_of: Time,
    offsets: Option<String>,
}

impl ParquetFiles {
    /// Creates `<dir>/<collection>.parquet` for every collection.
    pub fn create(dir: &Path) -> Result<ParquetFiles> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut files = Vec::new();
        for collection in OutputCollection::ALL {
            let path = dir.join(format!("{}.parquet.partial", collection.name()));
            let schema = schema(collection);
            let file =
                File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
            let properties = WriterProperties::builder()
                .set_max_row_group_row_count(Some(BATCH_ROWS))
                .build();
            let writer = ArrowWriter::try_new(file, schema.clone(), Some(properties))?;
            files.push((path, schema, writer));
        }
        Ok(ParquetFiles {
            files,
            as_of: 0,
            offsets: None,
        })
    }

    /// Appends every collection's rows of `state`, each collection sorted.
    pub fn append(&mut self, state: &FinalState) -> Result<()> {
        for (collection, (path, schema, writer)) in
            OutputCollection::ALL.into_iter().zip(&mut self.files)
        {
            let mut rows: Vec<&Row> = state
                .collections
                .get(&collection)
                .into_iter()
                .flatten()
                .collect();
            rows.sort();
            for chunk in rows.chunks(BATCH_ROWS) {
                writer
                    .write(&record_batch(schema, chunk.iter().copied())?)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
        }
        self.as_of = self.as_of.max(state.as_of);
        if state
            .collections
            .contains_key(&OutputCollection::SourceProgress)
        {
            self.offsets.get_or_insert_with(|| offsets_json(state));
        }
        Ok(())
    }

    /// The latest time appended.
    pub fn as_of(&self) -> Time {
        self.as_of
    }

    /// Writes the metadata, closes the files and gives them their final
    /// names (`<collection>.parquet`); returns those.
    pub fn finish(self) -> Result<Vec<PathBuf>> {
        let offsets = self.offsets.unwrap_or_else(|| "{}".to_string());
        let mut written = Vec::new();
        for (path, _, mut writer) in self.files {
            writer.append_key_value_metadata(KeyValue::new(
                AS_OF_KEY.to_string(),
                self.as_of.to_string(),
            ));
            writer
                .append_key_value_metadata(KeyValue::new(OFFSETS_KEY.to_string(), offsets.clone()));
            writer
                .close()
                .with_context(|| format!("cannot write {}", path.display()))?;
            let complete = path.with_extension("");
            std::fs::rename(&path, &complete)
                .with_context(|| format!("cannot rename {}", path.display()))?;
            written.push(complete);
        }
        Ok(written)
    }
}
