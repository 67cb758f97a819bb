//! The broker a benchmark runs against: a running one given by `--brokers`
//! (a real Kafka or tansu), or librdkafka's in-process mock cluster, with
//! fresh input topics so that reruns against one broker never mix.

use anyhow::{Context, Result};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use trimatch_connectors::admin::create_missing_topics;
use trimatch_connectors::source::now_ms;
use trimatch_connectors::TopicConfig;
use trimatch_dataflows::model::DocumentKind;

/// A broker for one benchmark run.
pub(crate) struct BenchBroker {
    /// Kept alive for the run when no broker was given.
    mock: Option<MockCluster<'static, DefaultProducerContext>>,
    /// Bootstrap servers.
    pub brokers: String,
    /// What it is, for the report.
    pub description: String,
}

impl BenchBroker {
    /// The broker at `brokers` (named `name` in reports), or a mock cluster.
    pub(crate) fn new(brokers: Option<&str>, name: &str) -> Result<BenchBroker> {
        Ok(match brokers {
            Some(brokers) => BenchBroker {
                mock: None,
                brokers: brokers.to_string(),
                description: format!("{name} at {brokers}"),
            },
            None => {
                let mock = MockCluster::new(1).context("cannot start the embedded Kafka broker")?;
                BenchBroker {
                    brokers: mock.bootstrap_servers(),
                    description: "librdkafka's in-process mock cluster".to_string(),
                    mock: Some(mock),
                }
            }
        })
    }

    /// Creates the four input topics under a fresh `prefix-…` name, with
    /// `partitions` partitions each.
    pub(crate) fn fresh_topics(&self, prefix: &str, partitions: i32) -> Result<Vec<TopicConfig>> {
        let prefix = format!("{prefix}-{}-", now_ms());
        let topics: Vec<TopicConfig> = DocumentKind::ALL
            .into_iter()
            .map(|kind| TopicConfig {
                name: format!("{prefix}{}", kind.default_topic()),
                ..TopicConfig::default_for(kind)
            })
            .collect();
        let names: Vec<&str> = topics.iter().map(|topic| topic.name.as_str()).collect();
        match &self.mock {
            Some(mock) => {
                for name in &names {
                    mock.create_topic(name, partitions, 1)
                        .with_context(|| format!("cannot create topic {name}"))?;
                }
            }
            None => {
                create_missing_topics(&self.brokers, &names, partitions, &[]).with_context(
                    || format!("cannot create the bench topics on {}", self.brokers),
                )?;
            }
        }
        Ok(topics)
    }
}
