//! What a Kafka source reads and how: brokers, topics with their document kind
//! and envelope, where to start, and whether to stop at the end.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use trimatch_dataflows::model::DocumentKind;

use crate::tenants::TenantFilter;

/// How a topic's messages carry documents (SPEC §1.1).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub enum Envelope {
    /// The value is the whole document; a null value deletes it.
    #[default]
    Upsert,
    /// The value is a Debezium change event, bare or schema-wrapped.
    Debezium,
}

impl FromStr for Envelope {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "upsert" => Ok(Envelope::Upsert),
            "debezium" => Ok(Envelope::Debezium),
            other => Err(format!(
                "unknown envelope {other:?}: expected upsert or debezium"
            )),
        }
    }
}

impl fmt::Display for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Envelope::Upsert => "upsert",
            Envelope::Debezium => "debezium",
        })
    }
}

/// One input topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicConfig {
    pub name: String,
    pub kind: DocumentKind,
    pub envelope: Envelope,
}

impl TopicConfig {
    /// The topic of `kind` under its default name (SPEC §1), upsert envelope.
    pub fn default_for(kind: DocumentKind) -> Self {
        TopicConfig {
            name: kind.default_topic().to_string(),
            kind,
            envelope: Envelope::Upsert,
        }
    }
}

/// Where a run starts reading each partition.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum StartPosition {
    /// The oldest retained offset.
    #[default]
    Earliest,
    /// The high watermark at start: only messages produced after it.
    Latest,
    /// The first offset whose message timestamp is at or after this many
    /// milliseconds since the epoch, resolved once at start through the
    /// broker's offsets-for-times (the high watermark where there is none).
    Timestamp(i64),
    /// Explicit offsets; partitions not listed start at the earliest offset.
    Offsets(BTreeMap<(String, i32), i64>),
    /// Where a checkpoint left each partition, with its counters: reading goes
    /// on at exactly that offset (records deleted below it are not needed; if
    /// the broker no longer holds the offset itself, the skipped range is
    /// reported as for any offset reset). Partitions not listed are new since
    /// the checkpoint and start at the earliest offset.
    Resume(BTreeMap<(String, i32), ResumePoint>),
}

/// Where a partition goes on after a restore, and its counters so far (they
/// continue, so that consumed = applied + dead-lettered + skipped holds across
/// restarts).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ResumePoint {
    pub next_offset: i64,
    pub consumed: u64,
    pub applied: u64,
    pub dead_lettered: u64,
    pub skipped: u64,
}

impl FromStr for StartPosition {
    type Err = String;
    /// `earliest`, `latest`, `timestamp:<ms>` or `topic:partition:offset,...`.
    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        match text {
            "earliest" => return Ok(StartPosition::Earliest),
            "latest" => return Ok(StartPosition::Latest),
            _ => {}
        }
        if let Some(ms) = text.strip_prefix("timestamp:") {
            return ms.parse().map(StartPosition::Timestamp).map_err(|_| {
                format!("bad start position {text:?}: timestamp:<milliseconds since the epoch> expected")
            });
        }
        let mut offsets = BTreeMap::new();
        for item in text
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
        {
            let parsed = item.rsplitn(3, ':').collect::<Vec<_>>();
            let [offset, partition, topic] = parsed[..] else {
                return Err(format!(
                    "bad start position {item:?}: expected earliest, latest, timestamp:<ms> \
                     or a list of topic:partition:offset"
                ));
            };
            let partition: i32 = partition
                .parse()
                .map_err(|_| format!("bad partition in start position {item:?}"))?;
            let offset: i64 = offset
                .parse()
                .ok()
                .filter(|offset| *offset >= 0)
                .ok_or_else(|| format!("bad offset in start position {item:?}"))?;
            if topic.is_empty() || partition < 0 {
                return Err(format!("bad topic or partition in start position {item:?}"));
            }
            if offsets
                .insert((topic.to_string(), partition), offset)
                .is_some()
            {
                return Err(format!(
                    "{topic}:{partition} is given twice in the start position"
                ));
            }
        }
        if offsets.is_empty() {
            return Err("empty start position".to_string());
        }
        Ok(StartPosition::Offsets(offsets))
    }
}

/// Everything a Kafka source needs.
#[derive(Clone, Debug)]
pub struct SourceConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    pub topics: Vec<TopicConfig>,
    pub start: StartPosition,
    /// Stop each partition at the high watermark seen at start.
    pub until_end: bool,
    /// A bounded run's end for each partition, instead of the high watermark
    /// seen at start: the later passes of a run in passes read exactly what
    /// its first pass read. A partition not listed ends where it starts.
    pub end_offsets: Option<Arc<BTreeMap<(String, i32), i64>>>,
    /// Which tenants' documents are handed to the engine (a run in passes).
    pub tenants: TenantFilter,
    /// Where rejected messages are also produced, if anywhere.
    pub dead_letter_topic: Option<String>,
    /// After a restore from a checkpoint of this time (ms): dead letters for
    /// offsets past the checkpoint may already be on the dead-letter topic
    /// (the previous run produced them before it stopped), so the topic's
    /// records since then are read first and those are not produced again.
    pub dead_letters_produced_since: Option<i64>,
    /// After a restore: the Kafka cluster the checkpoint's offsets belong to.
    /// A source connected to another cluster refuses to go on (the offsets
    /// would mean nothing there).
    pub expected_cluster_id: Option<String>,
    /// Wait for missing topics instead of failing.
    pub wait_for_topics: bool,
    /// Extra librdkafka settings (`-X key=value`), e.g. for SASL/SSL.
    pub client_settings: Vec<(String, String)>,
    /// The most messages one poll hands to the engine.
    pub max_batch: usize,
    /// How often topic metadata is re-read to pick up new partitions.
    pub metadata_refresh: Duration,
    /// A partition with messages waiting that delivers none for this long
    /// (while not paused) is reported as stalled: the broker is failing to
    /// serve it, whatever the cause.
    pub stall_after: Duration,
    /// The largest message (key and value) applied; a larger one is
    /// dead-lettered with its size (SPEC §1.3: every consumed message is
    /// applied or dead-lettered). The consumer fetches up to
    /// [`FETCH_MAX_BYTES`] per partition, so that a message over this bound
    /// still arrives to be dead-lettered instead of blocking its partition.
    pub max_message_bytes: usize,
    /// A partition whose next record the broker keeps not returning, while
    /// it answers and holds later records, for this long (with no consumer
    /// error meanwhile) has that record dead-lettered by its offset, and
    /// reading goes on after it; `None` waits for good. A broker that
    /// cannot serve a record (tansu never returns one of 5 MiB or more)
    /// would otherwise stop its partition for ever (SPEC §1.3).
    pub skip_unfetchable_after: Option<Duration>,
}

/// What the consumer fetches at most per partition and per request, and so
/// the largest message it can take off a partition at all: far above any
/// broker's default message size (1 MiB on Kafka), so a message a broker
/// accepted arrives, and is applied or dead-lettered.
pub const FETCH_MAX_BYTES: usize = 64 << 20;

/// The default of [`SourceConfig::max_message_bytes`].
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 << 20;

impl SourceConfig {
    /// The four input topics under their default names, upsert envelope,
    /// from the earliest offsets.
    pub fn new(brokers: impl Into<String>) -> Self {
        SourceConfig {
            brokers: brokers.into(),
            topics: DocumentKind::ALL
                .into_iter()
                .map(TopicConfig::default_for)
                .collect(),
            start: StartPosition::Earliest,
            until_end: false,
            end_offsets: None,
            tenants: TenantFilter::All,
            dead_letter_topic: None,
            dead_letters_produced_since: None,
            expected_cluster_id: None,
            wait_for_topics: false,
            client_settings: Vec::new(),
            max_batch: 10_000,
            metadata_refresh: Duration::from_secs(10),
            stall_after: Duration::from_secs(20),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            skip_unfetchable_after: Some(Duration::from_secs(60)),
        }
    }

    /// The configuration of `topic`, if it is an input topic.
    pub fn topic(&self, topic: &str) -> Option<&TopicConfig> {
        self.topics.iter().find(|config| config.name == topic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_positions_parse() {
        assert_eq!("earliest".parse(), Ok(StartPosition::Earliest));
        assert_eq!("latest".parse(), Ok(StartPosition::Latest));
        assert_eq!(
            "timestamp:1763900000123".parse(),
            Ok(StartPosition::Timestamp(1763900000123))
        );
        let explicit: StartPosition = "invoices:0:17, purchase_orders:2:0".parse().unwrap();
        let mut expected = BTreeMap::new();
        expected.insert(("invoices".to_string(), 0), 17);
        expected.insert(("purchase_orders".to_string(), 2), 0);
        assert_eq!(explicit, StartPosition::Offsets(expected));
        // Topic names may contain colons; the last two fields are partition and offset.
        let colon: StartPosition = "a:b:1:5".parse().unwrap();
        assert!(
            matches!(colon, StartPosition::Offsets(map) if map.contains_key(&("a:b".to_string(), 1)))
        );
        for bad in [
            "",
            "timestamp:soon",
            "invoices:0",
            "invoices:x:1",
            "invoices:0:-1",
            "t:0:1,t:0:2",
        ] {
            assert!(
                bad.parse::<StartPosition>().is_err(),
                "{bad:?} should be refused"
            );
        }
    }
}
