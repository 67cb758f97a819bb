//! What the running job exposes at scrape time: collectors that read the
//! source's counters, the input topics' history, readiness and time, the
//! checkpoints, rows per collection and freshness where they live.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use trimatch_connectors::metrics::{PartitionSnapshot, SourceMetrics};
use trimatch_connectors::retention::TopicRetention;
use trimatch_dataflows::model::{Time, WallClock};
use trimatch_dataflows::rows::PartitionHealth;

use crate::pipeline::counters::PipelineCounters;
use crate::pipeline::{CheckpointMetrics, PipelineHandle};

use super::encode::*;

/// What the broker said of the input topics' history (nothing until asked).
#[derive(Debug)]
pub(super) struct InputTopics(pub(super) Arc<Mutex<Vec<TopicRetention>>>);

impl Collector for InputTopics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let topics = self.0.lock().expect("metrics lock").clone();
        let mut family = encoder.encode_descriptor(
            "trimatch_input_topic_compacted",
            "1 if an input topic is compacted (cleanup.policy has compact); absent while unknown.",
            None,
            MetricType::Gauge,
        )?;
        for topic in topics.iter().filter(|topic| topic.cleanup_policy.is_some()) {
            ConstGauge::new(flag(topic.is_compacted()))
                .encode(family.encode_family(&[("topic", topic.topic.as_str())])?)?;
        }
        let mut family = encoder.encode_descriptor(
            "trimatch_input_history_deleted",
            "1 if an input topic is not compacted and has deleted records (low watermark above 0): a replay may miss documents.",
            None,
            MetricType::Gauge,
        )?;
        for topic in &topics {
            ConstGauge::new(flag(topic.history_deleted()))
                .encode(family.encode_family(&[("topic", topic.topic.as_str())])?)?;
        }
        Ok(())
    }
}

/// The source's counters, per input partition and for the dead-letter topic
/// (the connectors' [`SourceMetrics`]).
#[derive(Debug)]
pub(super) struct Source(pub(super) Arc<SourceMetrics>);

/// Per-partition counters: name (with `_total`), help, value.
type PartitionCounter = (&'static str, &'static str, fn(&PartitionSnapshot) -> u64);

/// Per-partition gauges: name, help, value.
type PartitionGauge = (&'static str, &'static str, fn(&PartitionSnapshot) -> i64);

const PARTITION_COUNTERS: [PartitionCounter; 4] = [
    (
        "trimatch_messages_consumed_total",
        "Messages consumed from an input partition.",
        |p| p.consumed,
    ),
    (
        "trimatch_messages_applied_total",
        "Messages applied to the documents (valid changes, and Debezium tombstones, which change nothing).",
        |p| p.applied,
    ),
    (
        "trimatch_messages_dead_lettered_total",
        "Messages rejected under SPEC 1.3 and dead-lettered.",
        |p| p.dead_lettered,
    ),
    (
        "trimatch_messages_skipped_total",
        "Offsets the broker's offset reset skipped (the range is a dead_letters row).",
        |p| p.skipped,
    ),
];

const PARTITION_GAUGES: [PartitionGauge; 3] = [
    (
        "trimatch_partition_lag",
        "High watermark minus the next offset to reflect.",
        |p| i64::try_from(p.lag()).unwrap_or(i64::MAX),
    ),
    (
        "trimatch_partition_next_offset",
        "The first offset of the partition not yet reflected.",
        |p| p.next_offset,
    ),
    (
        "trimatch_partition_high_watermark",
        "The partition's high watermark as last seen.",
        |p| p.high_watermark,
    ),
];

impl Collector for Source {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let source = &self.0;
        let partitions: Vec<(String, String, PartitionSnapshot)> = source
            .snapshot()
            .into_iter()
            .map(|((topic, partition), counters)| (topic, partition.to_string(), counters))
            .collect();
        for (name, help, value) in PARTITION_COUNTERS {
            let mut family =
                encoder.encode_descriptor(counter(name), help, None, MetricType::Counter)?;
            for (topic, partition, counters) in &partitions {
                ConstCounter::new(value(counters)).encode(family.encode_family(&[
                    ("topic", topic.as_str()),
                    ("partition", partition.as_str()),
                ])?)?;
            }
        }
        for (name, help, value) in PARTITION_GAUGES {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (topic, partition, counters) in &partitions {
                ConstGauge::new(value(counters)).encode(family.encode_family(&[
                    ("topic", topic.as_str()),
                    ("partition", partition.as_str()),
                ])?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "trimatch_partition_state",
            "1 for the state an input partition is in (ok, stalled, skipped).",
            None,
            MetricType::Gauge,
        )?;
        for (topic, partition, counters) in &partitions {
            for state in [
                PartitionHealth::Ok,
                PartitionHealth::Stalled,
                PartitionHealth::Skipped,
            ] {
                let labels = [
                    ("topic", topic.as_str()),
                    ("partition", partition.as_str()),
                    ("state", state.as_str()),
                ];
                ConstGauge::new(flag(counters.health == state))
                    .encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            counter("trimatch_consumer_errors_total"),
            "Errors the Kafka consumer reported, by partition (empty for the client's own) and librdkafka error name.",
            None,
            MetricType::Counter,
        )?;
        let client_errors = source.client_errors();
        let errors = partitions
            .iter()
            .flat_map(|(topic, partition, counters)| {
                counters
                    .errors
                    .iter()
                    .map(move |(code, count)| (topic.as_str(), partition.as_str(), code, *count))
            })
            .chain(
                client_errors
                    .iter()
                    .map(|(code, count)| ("", "", code, *count)),
            );
        for (topic, partition, code, count) in errors {
            let labels = [
                ("topic", topic),
                ("partition", partition),
                ("code", code.as_str()),
            ];
            ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
        }
        let load = |value: &AtomicU64| value.load(Ordering::Relaxed);
        unlabelled_counter(
            &mut encoder,
            "trimatch_dead_letters_produced_total",
            "Rejected messages produced to the dead-letter topic.",
            load(&source.dead_letters_produced),
        )?;
        unlabelled_counter(
            &mut encoder,
            "trimatch_dead_letter_produce_failures_total",
            "Rejected messages that could not be produced to the dead-letter topic.",
            load(&source.dead_letter_produce_failures),
        )
    }
}

/// Where the job is: ready, its newest complete time, subscribers, uptime.
pub(super) struct Job(pub(super) PipelineHandle);

impl fmt::Debug for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Job")
    }
}

impl Collector for Job {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let pipeline = &self.0;
        gauge(
            &mut encoder,
            "trimatch_ready",
            "1 once every source has caught up to the high watermarks seen at start.",
            flag(pipeline.is_ready()),
        )?;
        gauge(
            &mut encoder,
            "trimatch_newest_complete_time_ms",
            "The newest logical time complete on every worker (ms since the epoch).",
            pipeline.newest_complete().unwrap_or(0),
        )?;
        gauge(
            &mut encoder,
            "trimatch_subscribers",
            "Connected Flight subscribers.",
            pipeline.hub().subscribers(),
        )?;
        gauge(
            &mut encoder,
            "trimatch_uptime_seconds",
            "Seconds since the job started.",
            pipeline.started().elapsed().as_secs_f64(),
        )
    }
}

/// The checkpoint and restore metrics (with `--state-dir`).
#[derive(Debug)]
pub(super) struct Checkpoints(pub(super) Arc<CheckpointMetrics>);

impl Collector for Checkpoints {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let checkpoints = &self.0;
        let load = |value: &AtomicU64| value.load(Ordering::Relaxed);
        let micros = |value: &AtomicU64| load(value) as f64 / 1e6;
        let written_at = load(&checkpoints.last_written_at_ms);
        let age = if written_at == 0 {
            f64::NAN
        } else {
            Time::now().saturating_sub(written_at) as f64 / 1e3
        };
        gauge(
            &mut encoder,
            "trimatch_checkpoint_last_time_seconds",
            "When the last checkpoint was written (seconds since the epoch; 0: none yet).",
            written_at as f64 / 1e3,
        )?;
        gauge(
            &mut encoder,
            "trimatch_checkpoint_last_as_of",
            "The logical time (ms) the last checkpoint reflects.",
            load(&checkpoints.last_as_of),
        )?;
        gauge(
            &mut encoder,
            "trimatch_checkpoint_age_seconds",
            "Seconds since the last checkpoint was written (NaN: none yet).",
            age,
        )?;
        gauge(
            &mut encoder,
            "trimatch_checkpoint_duration_seconds",
            "How long writing the last checkpoint took.",
            micros(&checkpoints.last_duration_micros),
        )?;
        gauge(
            &mut encoder,
            "trimatch_checkpoint_size_bytes",
            "The size of the last checkpoint file.",
            load(&checkpoints.last_bytes),
        )?;
        gauge(
            &mut encoder,
            "trimatch_checkpoint_documents",
            "Documents in the last checkpoint.",
            load(&checkpoints.last_documents),
        )?;
        unlabelled_counter(
            &mut encoder,
            "trimatch_checkpoints_written_total",
            "Checkpoints written.",
            load(&checkpoints.written),
        )?;
        unlabelled_counter(
            &mut encoder,
            "trimatch_checkpoint_failures_total",
            "Checkpoints that could not be written.",
            load(&checkpoints.failures),
        )?;
        gauge(
            &mut encoder,
            "trimatch_restore_documents",
            "Documents restored from a checkpoint at start.",
            load(&checkpoints.restored_documents),
        )?;
        gauge(
            &mut encoder,
            "trimatch_restore_seconds",
            "How long loading the checkpoint took at start.",
            micros(&checkpoints.restore_micros),
        )?;
        gauge(
            &mut encoder,
            "trimatch_restore_as_of",
            "The logical time (ms) of the checkpoint restored at start (0: none).",
            load(&checkpoints.restored_as_of),
        )
    }
}

/// Rows per output collection, as the workers keep them (see
/// [`PipelineCounters::rows`]): a scrape reads counters, never the workers.
#[derive(Debug)]
pub(super) struct Rows(pub(super) Arc<PipelineCounters>);

impl Collector for Rows {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let mut family = encoder.encode_descriptor(
            "trimatch_rows",
            "Rows per output collection on this process's workers, as of the newest time each has processed.",
            None,
            MetricType::Gauge,
        )?;
        for (collection, rows) in self.0.rows() {
            ConstGauge::new(rows)
                .encode(family.encode_family(&[("collection", collection.name())])?)?;
        }
        Ok(())
    }
}

/// Freshness, as the workers observe it (`pipeline::counters`).
#[derive(Debug)]
pub(super) struct Freshness(pub(super) Arc<PipelineCounters>);

impl Collector for Freshness {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let freshness = &self.0.freshness;
        encoder
            .encode_descriptor(
                "trimatch_freshness_seconds",
                "Kafka message timestamp to the change being visible to readers.",
                None,
                MetricType::Histogram,
            )?
            .encode_histogram::<NoLabelSet>(
                freshness.sum(),
                freshness.count(),
                &freshness.buckets(),
                None,
            )
    }
}
