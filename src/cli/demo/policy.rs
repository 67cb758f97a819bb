//! The demo's policy moment (SPEC §12.1, §12.4): twenty seconds in, an AP
//! lead agrees with vendor V-000 of tenant-000 that it may bill 10 % over
//! the PO price. The demo previews the policy (what it would release, before
//! anything is produced), then produces it to `match_policies`, and shows
//! both: the preview's summary and the variances the live state released.

use std::time::Duration;

use serde_json::json;
use trimatch_connectors::TopicConfig;
use trimatch_dataflows::model::{DocumentKind, MatchPolicy};
use trimatch_dataflows::preview::PolicyChanges;
use trimatch_workload::{GeneratedMessage, WorkloadProducer};

use crate::pipeline::PipelineHandle;

const TENANT: &str = "tenant-000";
const VENDOR: &str = "V-000";
const PERCENT: u32 = 10;
/// When the moment comes.
const AT: Duration = Duration::from_secs(20);

/// What the screen says of the moment, once it has come.
#[derive(Default)]
pub(super) struct PolicyMoment {
    said: Option<String>,
}

impl PolicyMoment {
    /// The moment's line for the screen; previews and produces the policy
    /// the first time `elapsed` passes [`AT`].
    pub(super) fn line(
        &mut self,
        elapsed: Duration,
        handle: &PipelineHandle,
        brokers: &str,
    ) -> Option<&str> {
        if self.said.is_none() && elapsed >= AT {
            self.said = Some(match preview_and_produce(handle, brokers) {
                Ok(said) => said,
                Err(error) => format!("the policy moment failed: {error:#}"),
            });
        }
        self.said.as_deref()
    }
}

fn preview_and_produce(handle: &PipelineHandle, brokers: &str) -> anyhow::Result<String> {
    let policy = MatchPolicy {
        tenant_id: TENANT.into(),
        vendor_id: Some(VENDOR.into()),
        price_tolerance_pct: Some(PERCENT.into()),
        ..MatchPolicy::default()
    };
    let changes = PolicyChanges {
        tenant: TENANT.into(),
        upsert: vec![policy.into()],
        delete: Vec::new(),
    };
    let (as_of, preview) = handle
        .preview_policies(&changes, 100_000)
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    let producer = WorkloadProducer::new(
        brokers,
        vec![TopicConfig::default_for(DocumentKind::MatchPolicy)],
        &[],
    )?;
    producer.send(&GeneratedMessage {
        kind: DocumentKind::MatchPolicy,
        key: Some(json!({"tenant_id": TENANT, "vendor_id": VENDOR}).to_string().into_bytes()),
        value: Some(
            json!({"tenant_id": TENANT, "vendor_id": VENDOR, "price_tolerance_pct": PERCENT.to_string()})
                .to_string()
                .into_bytes(),
        ),
        malformed: false,
    })?;
    producer.flush(Duration::from_secs(5))?;
    Ok(format!(
        "{VENDOR} of {TENANT} may bill {PERCENT} % over: previewed at {as_of}, then produced — {}\n\
         \x20 (try it yourself: trimatch policy preview FILE --tenant {TENANT}; see README \"AP policies\")",
        preview.summary()
    ))
}
