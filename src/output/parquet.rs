//! The bounded run's output: one Parquet file per collection, readable by
//! pandas, DuckDB, Spark… with the same schema as served over Flight, and the
//! snapshot's time and offsets in the file's key-value metadata.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use parquet::arrow::ArrowWriter;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use trimatch_dataflows::{OutputCollection, Row};

use super::columns::{record_batch, schema};
use super::{FinalState, AS_OF_KEY, OFFSETS_KEY};

/// Rows per record batch written, and per row group: the writer holds a row
/// group's columns until it is flushed, and its default (1M rows) is most of
/// a large backfill's collection at once.
const BATCH_ROWS: usize = 64 * 1024;

/// The snapshot's offsets as `{"topic/partition": next_offset}` (SPEC §5).
pub fn offsets_json(state: &FinalState) -> String {
    let offsets: BTreeMap<String, i64> = state
        .collections
        .get(&OutputCollection::SourceProgress)
        .into_iter()
        .flatten()
        .filter_map(|row| match row {
            Row::SourceProgress(progress) => Some((
                format!("{}/{}", progress.topic, progress.partition),
                progress.next_offset,
            )),
            _ => None,
        })
        .collect();
    serde_json::to_string(&offsets).expect("a map of numbers serializes")
}

/// Writes `<dir>/<collection>.parquet` for every collection; returns the paths.
pub fn write_collections(dir: &Path, state: &FinalState) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let metadata = vec![
        KeyValue::new(AS_OF_KEY.to_string(), state.as_of.to_string()),
        KeyValue::new(OFFSETS_KEY.to_string(), offsets_json(state)),
    ];
    let mut written = Vec::new();
    for collection in OutputCollection::ALL {
        let path = dir.join(format!("{}.parquet", collection.name()));
        let mut rows: Vec<&Row> = state
            .collections
            .get(&collection)
            .into_iter()
            .flatten()
            .collect();
        rows.sort();
        let schema = schema(collection);
        let file =
            File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
        let properties = WriterProperties::builder()
            .set_key_value_metadata(Some(metadata.clone()))
            .set_max_row_group_row_count(Some(BATCH_ROWS))
            .build();
        let mut writer = ArrowWriter::try_new(file, schema.clone(), Some(properties))?;
        for chunk in rows.chunks(BATCH_ROWS) {
            writer.write(&record_batch(&schema, chunk.iter().copied())?)?;
        }
        writer.close()?;
        written.push(path);
    }
    Ok(written)
}
