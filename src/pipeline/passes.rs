//! A bounded run in passes over the tenants: the state one pass holds is
//! that of its tenants only, so a backfill larger than memory runs in a
//! fixed share of it.
//!
//! First a *census* reads every input partition to the high watermarks seen
//! at start and hands the engine no documents: it dead-letters the rejected
//! messages (once, for the whole run), records how far each partition was
//! read, and weighs each tenant by the bytes of its messages. The tenants
//! are then split into sets of about equal weight
//! ([`trimatch_connectors::tenants::balance`]), and each set is one pass: a
//! bounded run that reads the same offsets again and hands the engine only
//! its tenants' documents. It is exact because no matching rule relates two
//! tenants (see [`trimatch_connectors::tenants`]); every pass checks that it
//! read exactly what the census read, or the run fails.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use anyhow::{bail, Result};
use trimatch_connectors::tenants::balance;
use trimatch_connectors::{TenantCensus, TenantFilter};
use trimatch_dataflows::OutputCollection;

use super::{FinalState, Pipeline, PipelineConfig, PipelineHandle};

/// One pass of a run in passes.
#[derive(Clone, Debug)]
pub struct Pass {
    /// 0 for the census, then 1..=`passes`.
    pub number: usize,
    /// How many passes over tenants follow the census (the split may make
    /// fewer than asked for, when there are fewer tenants).
    pub passes: usize,
    /// The pass's tenants and their share of the census's bytes; `None` for
    /// the census.
    pub tenants: Option<(BTreeSet<String>, f64)>,
}

impl Pass {
    /// "census" or "pass 2 of 4 (5 tenants, 26 % of the bytes)", for logs.
    pub fn describe(&self) -> String {
        match &self.tenants {
            None => "census".to_string(),
            Some((tenants, share)) => format!(
                "pass {} of {} ({} tenants, {:.0} % of the bytes)",
                self.number,
                self.passes,
                tenants.len(),
                100.0 * share
            ),
        }
    }
}

/// The bookkeeping collections, which the census writes for the whole run.
const BOOKKEEPING: [OutputCollection; 2] = [
    OutputCollection::DeadLetters,
    OutputCollection::SourceProgress,
];

/// Runs the bounded job `config` as a census and then up to `passes` passes
/// over balanced sets of tenants. `watch` is called as each pass starts
/// (with the pass, and a handle to show its progress); what it returns is
/// dropped when the pass ends. `write` gets each pass's final state as soon
/// as the pass ends, so only one pass's rows are held at a time: the
/// census's has the bookkeeping collections (`dead_letters`,
/// `source_progress`) and empty matching ones, and each later pass's has
/// its tenants' rows of the matching collections and no bookkeeping.
pub fn run_in_tenant_passes<G>(
    mut config: PipelineConfig,
    passes: usize,
    mut watch: impl FnMut(&Pass, PipelineHandle) -> G,
    mut write: impl FnMut(&Pass, FinalState) -> Result<()>,
) -> Result<()> {
    config.source.until_end = true;
    let census = Arc::new(TenantCensus::default());
    config.source.tenants = TenantFilter::Census(census.clone());
    let pass = Pass {
        number: 0,
        passes,
        tenants: None,
    };
    let state = run_pass(&config, &pass, &mut watch)?;
    let ends = state.offsets();
    write(&pass, state)?;

    let weights = census.weights();
    let total = weights.values().sum::<u64>().max(1) as f64;
    let sets = balance(&weights, passes);
    config.source.end_offsets = Some(Arc::new(ends.clone()));
    let planned = sets.len();
    for (index, tenants) in sets.into_iter().enumerate() {
        let share = tenants.iter().map(|tenant| weights[tenant]).sum::<u64>() as f64 / total;
        config.source.tenants = TenantFilter::Only(Arc::new(tenants.clone()));
        let pass = Pass {
            number: index + 1,
            passes: planned,
            tenants: Some((tenants, share)),
        };
        let mut state = run_pass(&config, &pass, &mut watch)?;
        let read = state.offsets();
        if read != ends {
            bail!(
                "{} read other offsets than the census (the input topics changed during the run): \
                 {}",
                pass.describe(),
                differences(&ends, &read)
            );
        }
        for collection in BOOKKEEPING {
            state.collections.remove(&collection);
        }
        write(&pass, state)?;
    }
    Ok(())
}

fn run_pass<G>(
    config: &PipelineConfig,
    pass: &Pass,
    watch: &mut impl FnMut(&Pass, PipelineHandle) -> G,
) -> Result<FinalState> {
    tracing::info!("bounded run: starting the {}", pass.describe());
    let pipeline = Pipeline::start(config.clone())?;
    let watching = watch(pass, pipeline.handle());
    let state = pipeline.join();
    drop(watching);
    state
}

/// The partitions where two reads differ, as `topic/partition: a ≠ b`.
fn differences(
    census: &BTreeMap<(String, i32), i64>,
    pass: &BTreeMap<(String, i32), i64>,
) -> String {
    let partitions: BTreeSet<_> = census.keys().chain(pass.keys()).collect();
    partitions
        .into_iter()
        .filter(|partition| census.get(*partition) != pass.get(*partition))
        .map(|(topic, partition)| {
            let show = |offset: Option<&i64>| offset.map_or("-".to_string(), i64::to_string);
            format!(
                "{topic}/{partition}: census {} ≠ {}",
                show(census.get(&(topic.clone(), *partition))),
                show(pass.get(&(topic.clone(), *partition)))
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}
