//! The documents present after a stream of messages (SPEC §1): per identity,
//! the last valid version, gone once deleted; a rejected message has no
//! effect. What the pipeline must reflect, kept by plain means for tests and
//! benchmarks to compare with.

use std::collections::BTreeMap;

use trimatch_connectors::envelope::{decode_upsert, Upsert};
use trimatch_dataflows::model::{Document, Fingerprint};

use crate::generate::GeneratedMessage;

/// What is present per document identity, as `T`: the whole document
/// ([`Present::documents`]) or only what a caller needs of it, such as its
/// line count ([`Present::line_counts`]), so that a benchmark's own memory
/// does not grow with the documents it measures.
pub struct Present<T> {
    by_identity: BTreeMap<Fingerprint, T>,
    keep: fn(&Document) -> T,
}

impl Present<Document> {
    /// Keeps every present document.
    pub fn documents() -> Self {
        Present::keeping(Document::clone)
    }
}

impl Present<usize> {
    /// Keeps only how many lines each present document has.
    pub fn line_counts() -> Self {
        Present::keeping(document_lines)
    }

    /// Lines of every present document.
    pub fn total_lines(&self) -> usize {
        self.by_identity.values().sum()
    }
}

impl<T> Present<T> {
    /// Keeps `keep(document)` of each present document.
    pub fn keeping(keep: fn(&Document) -> T) -> Self {
        Present {
            by_identity: BTreeMap::new(),
            keep,
        }
    }

    /// Applies one message of the upsert envelope; whether it was valid (an
    /// invalid one changes nothing).
    pub fn apply(&mut self, message: &GeneratedMessage) -> bool {
        match decode_upsert(
            message.kind,
            message.key.as_deref(),
            message.value.as_deref(),
        ) {
            Ok(upsert) => {
                self.apply_upsert(&upsert);
                true
            }
            Err(_) => false,
        }
    }

    /// Applies every message in order.
    pub fn apply_all<'m>(
        mut self,
        messages: impl IntoIterator<Item = &'m GeneratedMessage>,
    ) -> Self {
        for message in messages {
            self.apply(message);
        }
        self
    }

    /// Applies one decoded change.
    pub fn apply_upsert(&mut self, upsert: &Upsert) {
        match &upsert.document {
            Some(document) => {
                self.by_identity.insert(upsert.key, (self.keep)(document));
            }
            None => {
                self.by_identity.remove(&upsert.key);
            }
        }
    }

    /// How many documents are present.
    pub fn len(&self) -> usize {
        self.by_identity.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_identity.is_empty()
    }

    /// What is kept of each present document.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.by_identity.values()
    }

    /// What is kept of each present document, by identity.
    pub fn into_map(self) -> BTreeMap<Fingerprint, T> {
        self.by_identity
    }
}

/// How many lines a document has (a policy and a resolution have none).
pub fn document_lines(document: &Document) -> usize {
    match document {
        Document::PurchaseOrder(po) => po.lines.len(),
        Document::GoodsReceipt(receipt) => receipt.lines.len(),
        Document::Invoice(invoice) => invoice.lines.len(),
        Document::MatchPolicy(_) | Document::ExceptionResolution(_) | Document::Payment(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::{Workload, WorkloadConfig};

    /// The last valid version of each identity stays; deletes and rejected
    /// messages are applied as the envelope says.
    #[test]
    fn present_documents_follow_the_last_valid_version() {
        let messages: Vec<GeneratedMessage> = Workload::new(WorkloadConfig {
            seed: 11,
            bad_share: 0.05,
            ..WorkloadConfig::default()
        })
        .take(5_000)
        .collect();
        let documents = Present::documents().apply_all(&messages).into_map();
        let lines = Present::line_counts().apply_all(&messages);
        assert_eq!(documents.len(), lines.len());
        assert_eq!(
            documents.values().map(document_lines).sum::<usize>(),
            lines.total_lines()
        );
        // Replaying by hand: for each identity, the last message that decodes.
        let mut last = BTreeMap::new();
        for message in &messages {
            if let Ok(upsert) = decode_upsert(
                message.kind,
                message.key.as_deref(),
                message.value.as_deref(),
            ) {
                last.insert(upsert.key, upsert.document);
            }
        }
        let expected: BTreeMap<_, _> = last
            .into_iter()
            .filter_map(|(key, document)| document.map(|document| (key, document)))
            .collect();
        assert_eq!(documents, expected);
        assert!(documents.len() > 100, "{} documents", documents.len());
    }
}
