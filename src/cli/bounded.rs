//! `serve --until-end --output DIR`: the bounded backfill. It reads every
//! input partition to the high watermarks seen at start, in one pass or in
//! passes over the tenants (`--tenant-passes`, see
//! [`crate::pipeline::passes`]), shows its progress, and writes one Parquet
//! file per collection, appending each pass's rows as the pass ends.

use std::path::Path;

use anyhow::Result;

use super::progress::CatchUpProgress;
use crate::output::parquet::ParquetFiles;
use crate::pipeline::passes::run_in_tenant_passes;
use crate::pipeline::{Pipeline, PipelineConfig};

/// Runs the bounded job `config` in `passes` passes over the tenants (one:
/// all of them at once), writes the files into `output`, and prints their paths.
pub fn run_bounded(config: PipelineConfig, passes: usize, output: &Path) -> Result<()> {
    let mut files = ParquetFiles::create(output)?;
    if passes <= 1 {
        let pipeline = Pipeline::start(config)?;
        let progress = CatchUpProgress::start(pipeline.handle());
        let state = pipeline.join();
        progress.finish();
        files.append(&state?)?;
    } else {
        run_in_tenant_passes(
            config,
            passes,
            |pass, handle| CatchUpProgress::start_labelled(handle, pass.describe()),
            |pass, state| {
                let rows: usize = state.collections.values().map(Vec::len).sum();
                tracing::info!(rows, "bounded run: {} done", pass.describe());
                files.append(&state)
            },
        )?;
    }
    let as_of = files.as_of();
    for path in files.finish()? {
        println!("{}", path.display());
    }
    tracing::info!(as_of, "bounded run complete");
    Ok(())
}
