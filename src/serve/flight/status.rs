//! The `status` action (admins): the newest complete time, readiness,
//! offsets and counters per topic-partition, row counts, subscribers, what
//! the broker said of the input topics' history, the checkpoints and the
//! restore, and uptime, as JSON.

use serde_json::json;
use tonic::Status;
use trimatch_dataflows::OutputCollection;

use crate::serve::metrics::Metrics;
use crate::serve::reader::ClusterReader;

/// The `status` action's JSON, of this process.
pub(super) async fn status_json(
    reader: &ClusterReader,
    metrics: &Metrics,
) -> Result<serde_json::Value, Status> {
    let pipeline = reader.pipeline().clone();
    let input_topics: serde_json::Map<String, serde_json::Value> = metrics
        .input_topics()
        .into_iter()
        .map(|topic| {
            let lows: serde_json::Map<String, serde_json::Value> = topic
                .low_watermarks
                .iter()
                .map(|(partition, low)| (partition.to_string(), json!(low)))
                .collect();
            (
                topic.topic.clone(),
                json!({
                    "cleanup_policy": topic.cleanup_policy,
                    "compacted": topic.is_compacted(),
                    "low_watermarks": lows,
                    "history_deleted": topic.history_deleted(),
                }),
            )
        })
        .collect();
    reader
        .blocking(move |_| {
            let newest = pipeline.newest_complete();
            let mut row_counts = serde_json::Map::new();
            if let Some(newest) = newest {
                for collection in OutputCollection::ALL {
                    row_counts.insert(
                        collection.name().to_string(),
                        json!(pipeline.count(collection, newest)?),
                    );
                }
            }
            let offsets: serde_json::Map<String, serde_json::Value> = pipeline
                .metrics()
                .snapshot()
                .into_iter()
                .map(|((topic, partition), counters)| {
                    (
                        format!("{topic}/{partition}"),
                        json!({
                            "next_offset": counters.next_offset,
                            "high_watermark": counters.high_watermark,
                            "lag": counters.lag(),
                            "consumed": counters.consumed,
                            "applied": counters.applied,
                            "dead_lettered": counters.dead_lettered,
                            "skipped": counters.skipped,
                        }),
                    )
                })
                .collect();
            let durability = pipeline.checkpoints().map(|checkpoints| {
                let load = |value: &std::sync::atomic::AtomicU64| {
                    value.load(std::sync::atomic::Ordering::Relaxed)
                };
                json!({
                    "restored_from": pipeline.restored().map(|r| json!({
                        "checkpoint": r.checkpoint,
                        "readable_from": r.readable_from,
                        "documents": load(&checkpoints.restored_documents),
                        "seconds": load(&checkpoints.restore_micros) as f64 / 1e6,
                    })),
                    "last_checkpoint": (load(&checkpoints.written) > 0).then(|| json!({
                        "as_of": load(&checkpoints.last_as_of),
                        "written_at_ms": load(&checkpoints.last_written_at_ms),
                        "seconds": load(&checkpoints.last_duration_micros) as f64 / 1e6,
                        "bytes": load(&checkpoints.last_bytes),
                        "documents": load(&checkpoints.last_documents),
                    })),
                    "checkpoints_written": load(&checkpoints.written),
                    "checkpoint_failures": load(&checkpoints.failures),
                })
            });
            Ok(json!({
                "time": newest,
                "durability": durability,
                "frontier": newest.map(|time| time + 1),
                "ready": pipeline.is_ready(),
                "uptime_seconds": pipeline.started().elapsed().as_secs_f64(),
                "offsets": offsets,
                "row_counts": row_counts,
                "subscribers": pipeline.hub().subscribers(),
                "input_topics": input_topics,
                "error": pipeline.error(),
            }))
        })
        .await
}
