//! Creating topics where they are missing (for the generator, the demo and
//! tests; production topics are usually managed elsewhere). Input topics are
//! created compacted: trimatch's state is the latest version of every
//! document, and a compacted topic keeps exactly that however old it is
//! (see [`crate::retention`]).

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;

/// Creates each input topic that does not exist yet, compacted
/// (`cleanup.policy=compact`), with `partitions` partitions; returns the
/// names of those it created.
pub fn create_missing_input_topics(
    brokers: &str,
    topics: &[&str],
    partitions: i32,
    client_settings: &[(String, String)],
) -> Result<Vec<String>, KafkaError> {
    create(
        brokers,
        topics,
        partitions,
        client_settings,
        &[("cleanup.policy", "compact")],
    )
}

/// Creates each topic that does not exist yet with `partitions` partitions
/// and the broker's default settings; returns the names of those it created.
pub fn create_missing_topics(
    brokers: &str,
    topics: &[&str],
    partitions: i32,
    client_settings: &[(String, String)],
) -> Result<Vec<String>, KafkaError> {
    create(brokers, topics, partitions, client_settings, &[])
}

fn create(
    brokers: &str,
    topics: &[&str],
    partitions: i32,
    client_settings: &[(String, String)],
    topic_settings: &[(&str, &str)],
) -> Result<Vec<String>, KafkaError> {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    for (key, value) in client_settings {
        config.set(key, value);
    }
    let admin: AdminClient<DefaultClientContext> = config.create()?;
    let new_topics: Vec<NewTopic> = topics
        .iter()
        .map(|name| {
            topic_settings.iter().fold(
                NewTopic::new(name, partitions, TopicReplication::Fixed(1)),
                |topic, (key, value)| topic.set(key, value),
            )
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = futures_executor::block_on(admin.create_topics(&new_topics, &options))?;
    let mut created = Vec::new();
    for result in results {
        match result {
            Ok(topic) => created.push(topic),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                tracing::warn!(topic, error = %code, "could not create topic");
                return Err(KafkaError::AdminOp(code));
            }
        }
    }
    Ok(created)
}
