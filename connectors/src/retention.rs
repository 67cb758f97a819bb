//! Whether the input topics still hold every document's latest version.
//!
//! trimatch's state is the latest version of every document identity, so a
//! replay from `earliest` is complete only if each input topic still has it:
//! a compacted topic (`cleanup.policy=compact`) keeps the latest record per
//! key forever; a topic under time or size retention deletes old records, and
//! once its low watermark is above 0 a PO last changed before the deleted
//! range is gone, and every invoice on it becomes `PO_NOT_FOUND`. This module
//! asks the broker (DescribeConfigs and the watermarks) so that `serve` can
//! say so loudly at start.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::ClientConfig;

/// What the broker says about one input topic's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicRetention {
    pub topic: String,
    /// `cleanup.policy`, if the broker reports it (`delete` when it reports
    /// the topic without it, as brokers do for the default; `None` when the
    /// broker does not answer DescribeConfigs).
    pub cleanup_policy: Option<String>,
    /// The first offset still held, per partition.
    pub low_watermarks: BTreeMap<i32, i64>,
}

impl TopicRetention {
    /// Whether the topic keeps the latest record of every key.
    pub fn is_compacted(&self) -> bool {
        self.cleanup_policy
            .as_deref()
            .is_some_and(|policy| policy.split(',').any(|part| part.trim() == "compact"))
    }

    /// Whether records were deleted from a topic that is not known to be
    /// compacted: a replay may then miss documents.
    pub fn history_deleted(&self) -> bool {
        !self.is_compacted() && self.low_watermarks.values().any(|low| *low > 0)
    }
}

/// Asks the broker about each of `topics` that exists (missing ones are
/// left out: `serve` may be waiting for them).
pub fn inspect_topics(
    brokers: &str,
    topics: &[String],
    client_settings: &[(String, String)],
    timeout: Duration,
) -> Result<Vec<TopicRetention>, KafkaError> {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    for (key, value) in client_settings {
        config.set(key, value);
    }
    let consumer: BaseConsumer = config.create()?;
    let admin: AdminClient<DefaultClientContext> = config.create()?;
    let specifiers: Vec<ResourceSpecifier> = topics
        .iter()
        .map(|topic| ResourceSpecifier::Topic(topic))
        .collect();
    let options = AdminOptions::new().request_timeout(Some(timeout));
    // A broker without DescribeConfigs (librdkafka's mock cluster) leaves the
    // policy unknown; the watermarks still tell whether history is gone.
    let policies: Vec<Option<String>> =
        match futures_executor::block_on(admin.describe_configs(&specifiers, &options)) {
            Ok(results) => results
                .into_iter()
                .map(|result| {
                    result.ok().map(|resource| {
                        resource
                            .get("cleanup.policy")
                            .and_then(|entry| entry.value.clone())
                            .unwrap_or_else(|| "delete".to_string())
                    })
                })
                .collect(),
            Err(error) => {
                tracing::debug!(%error, "the broker did not describe the input topics' configs");
                vec![None; topics.len()]
            }
        };
    let mut inspected = Vec::new();
    for (topic, cleanup_policy) in topics.iter().zip(policies) {
        let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
        let Some(partitions) = metadata
            .topics()
            .first()
            .filter(|found| found.error().is_none() && !found.partitions().is_empty())
            .map(|found| {
                found
                    .partitions()
                    .iter()
                    .map(|partition| partition.id())
                    .collect::<Vec<_>>()
            })
        else {
            continue;
        };
        let mut low_watermarks = BTreeMap::new();
        for partition in partitions {
            let (low, _) = consumer.fetch_watermarks(topic, partition, timeout)?;
            low_watermarks.insert(partition, low);
        }
        inspected.push(TopicRetention {
            topic: topic.clone(),
            cleanup_policy,
            low_watermarks,
        });
    }
    Ok(inspected)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(policy: Option<&str>, lows: &[i64]) -> TopicRetention {
        TopicRetention {
            topic: "purchase_orders".to_string(),
            cleanup_policy: policy.map(str::to_string),
            low_watermarks: lows
                .iter()
                .enumerate()
                .map(|(partition, low)| (partition as i32, *low))
                .collect(),
        }
    }

    #[test]
    fn deleted_history_matters_only_without_compaction() {
        assert!(!topic(Some("delete"), &[0, 0]).history_deleted());
        assert!(topic(Some("delete"), &[0, 7]).history_deleted());
        assert!(
            topic(None, &[3]).history_deleted(),
            "an unknown policy is not trusted"
        );
        assert!(!topic(Some("compact"), &[9]).history_deleted());
        assert!(!topic(Some("compact,delete"), &[9]).history_deleted());
        assert!(topic(Some("compact,delete"), &[9]).is_compacted());
    }
}
