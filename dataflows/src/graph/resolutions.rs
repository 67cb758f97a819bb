//! SPEC §6: every raised exception meets the analyst's decision on it, if
//! there is one.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::model::*;
use crate::operators::{left_join, Collection, KeyedArrangement};
use crate::rows::ResolutionRecord;
use crate::rules::{self, Raised};

/// A raised exception, with what the decision on it makes of it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ResolvedException {
    pub invoice: Arc<Invoice>,
    pub raised: Raised,
    /// `None` when no decision has been made (or it was withdrawn).
    pub resolution: Option<ResolutionRecord>,
}

impl ResolvedException {
    /// Not accepted: it still counts against the invoice.
    pub fn is_open(&self) -> bool {
        ResolutionRecord::leaves_open(self.resolution.as_ref())
    }
}

/// Each raised exception (keyed by invoice) with its resolution (the
/// resolutions arranged by their key): the resolution document with the
/// exception's key (tenant, invoice, type,
/// line), if one is present. A resolution whose exception is not raised
/// meets nothing and waits; when the exception appears (or its `actual`
/// changes) the join re-derives what the decision makes of it.
///
/// Per change: O(1) — an exception has at most one resolution and a
/// resolution at most one exception.
pub(super) fn resolve<'s>(
    exceptions: Collection<'s, (Fingerprint, (Arc<Invoice>, Raised))>,
    resolutions: &KeyedArrangement<'s, Fingerprint, Arc<ExceptionResolution>>,
) -> Collection<'s, (Fingerprint, ResolvedException)> {
    let by_key = exceptions
        .map(|(id, (invoice, raised))| {
            let key = resolution_key(
                &invoice.tenant_id,
                &invoice.invoice_id,
                raised.exception_type,
                raised.po_line_no,
            );
            (key, (id, invoice, raised))
        })
        .arrange_by_key_named("exceptions by resolution key");
    left_join(&by_key, resolutions).map(|(_, (id, invoice, raised), decision)| {
        let resolution =
            decision.map(|decision| rules::resolution_record(raised.actual, &decision));
        let resolved = ResolvedException {
            invoice,
            raised,
            resolution,
        };
        (id, resolved)
    })
}
