//! Bounded runs in passes over the tenants (`serve --until-end
//! --tenant-passes N`): which tenants' documents a source hands to the
//! engine, the census that weighs each tenant first, and the split of the
//! tenants into passes of about equal weight.
//!
//! A run in passes is exact because no matching rule relates two tenants:
//! every identity, policy, group and candidate set of SPEC §2 and §6–§8 lies
//! within one tenant. The outputs of disjoint sets of tenants are disjoint,
//! and their union is what one pass over all of them gives; a pass holds
//! only its tenants' state.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

/// Which tenants' documents a source hands to the engine.
#[derive(Clone, Debug, Default)]
pub enum TenantFilter {
    /// Every tenant's (the default).
    #[default]
    All,
    /// None: the source weighs every tenant's messages into the census, and
    /// hands the engine only its bookkeeping (dead letters and progress).
    Census(Arc<TenantCensus>),
    /// Only these tenants'. Rejected messages are counted but not
    /// dead-lettered again: the census pass did that, once.
    Only(Arc<BTreeSet<String>>),
}

impl TenantFilter {
    /// Whether a change of `tenant`'s document goes to the engine.
    pub fn hands_over(&self, tenant: &str) -> bool {
        match self {
            TenantFilter::All => true,
            TenantFilter::Census(_) => false,
            TenantFilter::Only(tenants) => tenants.contains(tenant),
        }
    }

    /// Whether rejected messages are dead-lettered (to `dead_letters` and the
    /// dead-letter topic) by this source.
    pub fn dead_letters(&self) -> bool {
        !matches!(self, TenantFilter::Only(_))
    }
}

/// The bytes (key and value) of every tenant's messages, summed over the
/// sources of a census pass: what a tenant's share of the state grows with.
#[derive(Debug, Default)]
pub struct TenantCensus {
    weights: Mutex<BTreeMap<String, u64>>,
}

/// One source's census counts since it last added them to the census:
/// sources count locally and add once per poll, not once per message.
#[derive(Debug, Default)]
pub struct CensusTally(HashMap<String, u64>);

impl CensusTally {
    /// Counts `bytes` of a message of `tenant`'s.
    pub fn count(&mut self, tenant: &str, bytes: usize) {
        match self.0.get_mut(tenant) {
            Some(counted) => *counted += bytes as u64,
            None => {
                self.0.insert(tenant.to_string(), bytes as u64);
            }
        }
    }
}

impl TenantCensus {
    /// Adds a source's tally (and empties it).
    pub fn add(&self, tally: &mut CensusTally) {
        let mut weights = self.weights.lock().expect("census lock");
        for (tenant, bytes) in tally.0.drain() {
            *weights.entry(tenant).or_default() += bytes;
        }
    }

    /// Every tenant seen, with its weight.
    pub fn weights(&self) -> BTreeMap<String, u64> {
        self.weights.lock().expect("census lock").clone()
    }
}

/// The tenants split into at most `passes` non-empty sets of about equal
/// weight: the heaviest tenant first, each to the lightest set so far
/// (longest-processing-time first, whose heaviest set is within 4/3 of the
/// best split's). A tenant is never split: one heavier than the rest
/// together makes a pass of its own.
pub fn balance(weights: &BTreeMap<String, u64>, passes: usize) -> Vec<BTreeSet<String>> {
    let mut tenants: Vec<(&String, u64)> = weights.iter().map(|(t, w)| (t, *w)).collect();
    // Heaviest first; ties by name, so the split is the same on every run.
    tenants.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let mut sets: Vec<(u64, BTreeSet<String>)> = vec![(0, BTreeSet::new()); passes.max(1)];
    for (tenant, weight) in tenants {
        let lightest = sets
            .iter_mut()
            .min_by_key(|(total, set)| (*total, set.len()))
            .expect("at least one set");
        lightest.0 += weight;
        lightest.1.insert(tenant.clone());
    }
    sets.into_iter()
        .map(|(_, set)| set)
        .filter(|set| !set.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weights(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
        pairs.iter().map(|(t, w)| (t.to_string(), *w)).collect()
    }

    #[test]
    fn every_tenant_is_in_exactly_one_pass_and_the_passes_weigh_about_the_same() {
        let tenants: BTreeMap<String, u64> = (0..20)
            .map(|i| (format!("tenant-{i:03}"), 1_000 + 37 * i))
            .collect();
        let passes = balance(&tenants, 4);
        assert_eq!(passes.len(), 4);
        let mut seen = BTreeSet::new();
        for pass in &passes {
            for tenant in pass {
                assert!(seen.insert(tenant.clone()), "{tenant} is in two passes");
            }
        }
        assert_eq!(seen.len(), tenants.len());
        let totals: Vec<u64> = passes
            .iter()
            .map(|pass| pass.iter().map(|t| tenants[t]).sum())
            .collect();
        let (min, max) = (totals.iter().min().unwrap(), totals.iter().max().unwrap());
        assert!(max - min <= 1_000 + 37 * 19, "{totals:?}");
    }

    #[test]
    fn a_heavy_tenant_has_a_pass_of_its_own_and_no_pass_is_empty() {
        let passes = balance(&weights(&[("big", 100), ("a", 10), ("b", 10), ("c", 5)]), 2);
        assert_eq!(
            passes,
            vec![
                BTreeSet::from(["big".to_string()]),
                BTreeSet::from(["a".to_string(), "b".to_string(), "c".to_string()]),
            ]
        );
        // More passes than tenants: one tenant each.
        assert_eq!(balance(&weights(&[("a", 1), ("b", 2)]), 5).len(), 2);
        assert!(balance(&BTreeMap::new(), 3).is_empty());
    }

    #[test]
    fn only_the_census_and_the_default_dead_letter() {
        let only = TenantFilter::Only(Arc::new(BTreeSet::from(["a".to_string()])));
        assert!(only.hands_over("a") && !only.hands_over("b") && !only.dead_letters());
        let census = TenantFilter::Census(Arc::default());
        assert!(!census.hands_over("a") && census.dead_letters());
        assert!(TenantFilter::All.hands_over("b") && TenantFilter::All.dead_letters());
    }
}
