//! Broker faults and bad input, on librdkafka's in-process mock cluster
//! (which can take brokers down and bring them back): an unreachable broker
//! at start, a missing topic (an error naming it, or waited for), partitions
//! that appear while running, the dead-letter topic with its headers, and the
//! Debezium envelope end to end.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use serde_json::json;
use support::*;
use trimatch::pipeline::{run_until_end, Pipeline};
use trimatch_connectors::dead_letter::{
    HEADER_OFFSET, HEADER_PARTITION, HEADER_REASON, HEADER_TOPIC,
};
use trimatch_connectors::{Envelope, TopicConfig};
use trimatch_dataflows::model::DocumentKind;
use trimatch_dataflows::{OutputCollection, Row};
use trimatch_workload::{GeneratedMessage, Workload, WorkloadConfig};

fn mock_with_input_topics(
    partitions: i32,
) -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let mock = MockCluster::new(1).expect("mock cluster");
    for kind in DocumentKind::ALL {
        mock.create_topic(kind.default_topic(), partitions, 1)
            .unwrap();
    }
    mock
}

fn small_history(seed: u64, count: usize) -> Vec<GeneratedMessage> {
    Workload::new(WorkloadConfig {
        seed,
        tenants: 2,
        bad_share: 0.05,
        ..WorkloadConfig::default()
    })
    .take(count)
    .collect()
}

/// Waits until the pipeline reflects `count` messages and reads the whole state.
fn state_after(pipeline: &Pipeline, count: u64) -> BTreeMap<OutputCollection, Vec<Row>> {
    let as_of = wait_until_reflected(pipeline, count);
    read_all(pipeline, as_of)
}

#[test]
fn an_unreachable_broker_is_retried_and_the_pipeline_is_not_ready_meanwhile() {
    let mock = mock_with_input_topics(2);
    mock.broker_down(1).unwrap();
    let pipeline =
        Pipeline::start(pipeline_config(source_config(&mock.bootstrap_servers()), 2)).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !pipeline.is_ready(),
        "not ready while the broker is unreachable"
    );
    assert_eq!(pipeline.error(), None, "an unreachable broker is not fatal");
    // Waiting for the broker does not block the workers: time moves on and
    // snapshots are answered (empty) meanwhile.
    let before = pipeline
        .newest_complete()
        .expect("times complete while connecting");
    wait_for("time to move on", Duration::from_secs(5), || {
        pipeline
            .newest_complete()
            .is_some_and(|newest| newest > before + 500)
    });
    let snapshot = pipeline
        .handle()
        .read(
            OutputCollection::InvoiceMatches,
            None,
            &Default::default(),
            None,
        )
        .unwrap();
    assert!(snapshot.rows.is_empty());

    mock.broker_up(1).unwrap();
    let messages = small_history(41, 500);
    produce(&mock.bootstrap_servers(), &messages);
    let state = state_after(&pipeline, messages.len() as u64);
    assert!(pipeline.is_ready());
    assert_same_state(
        &matching_state(&state),
        &expected_state(&final_documents(&messages)),
        "after reconnecting",
    );
    pipeline.shutdown().unwrap();
}

#[test]
fn a_broker_outage_mid_stream_loses_and_duplicates_nothing() {
    let mock = mock_with_input_topics(3);
    let pipeline =
        Pipeline::start(pipeline_config(source_config(&mock.bootstrap_servers()), 2)).unwrap();
    let first = small_history(51, 600);
    produce(&mock.bootstrap_servers(), &first);
    state_after(&pipeline, first.len() as u64);
    mock.broker_down(1).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    mock.broker_up(1).unwrap();
    let second = small_history(52, 600);
    produce(&mock.bootstrap_servers(), &second);
    let state = state_after(&pipeline, (first.len() + second.len()) as u64);
    let expected = expected_state(&final_documents(first.iter().chain(&second)));
    assert_same_state(&matching_state(&state), &expected, "after the outage");
    for counters in pipeline.metrics().snapshot().values() {
        assert_eq!(
            counters.consumed, counters.next_offset as u64,
            "each offset consumed once"
        );
    }
    pipeline.shutdown().unwrap();
}

#[test]
fn a_missing_topic_is_an_error_naming_it() {
    let mock = MockCluster::new(1).unwrap();
    for kind in [
        DocumentKind::PurchaseOrder,
        DocumentKind::GoodsReceipt,
        DocumentKind::MatchPolicy,
    ] {
        mock.create_topic(kind.default_topic(), 1, 1).unwrap();
    }
    let error =
        run_until_end(pipeline_config(source_config(&mock.bootstrap_servers()), 1)).unwrap_err();
    let message = format!("{error:#}");
    assert!(
        message.contains("\"invoices\"") && message.contains("does not exist"),
        "{message}"
    );
}

#[test]
fn waiting_for_a_missing_topic_picks_it_up_with_its_partitions() {
    let mock = MockCluster::new(1).unwrap();
    for kind in [
        DocumentKind::PurchaseOrder,
        DocumentKind::GoodsReceipt,
        DocumentKind::MatchPolicy,
    ] {
        mock.create_topic(kind.default_topic(), 2, 1).unwrap();
    }
    let mut source = source_config(&mock.bootstrap_servers());
    source.wait_for_topics = true;
    let pipeline = Pipeline::start(pipeline_config(source, 2)).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(pipeline.error(), None);
    // The topic appears while the job runs: its partitions are new partitions to
    // the running sources, found by the metadata refresh.
    mock.create_topic("invoices", 3, 1).unwrap();
    let messages = small_history(61, 600);
    produce(&mock.bootstrap_servers(), &messages);
    let state = state_after(&pipeline, messages.len() as u64);
    assert_same_state(
        &matching_state(&state),
        &expected_state(&final_documents(&messages)),
        "after the topic appeared",
    );
    let invoice_partitions = progress(&state)
        .keys()
        .filter(|(topic, _)| topic == "invoices")
        .count();
    assert_eq!(invoice_partitions, 3);
    pipeline.shutdown().unwrap();
}

#[test]
fn an_oversized_message_is_dead_lettered_on_the_mock_cluster() {
    let mock = mock_with_input_topics(1);
    an_oversized_message_is_dead_lettered_and_its_partition_goes_on(
        &mock.bootstrap_servers(),
        3 << 20,
        "bytes, more than the 1048576 a message may have",
    );
}

#[test]
fn rejected_messages_go_to_the_dead_letter_topic_with_their_origin() {
    let mock = mock_with_input_topics(2);
    mock.create_topic("trimatch_dead_letters", 1, 1).unwrap();
    let messages = small_history(71, 1_000);
    produce(&mock.bootstrap_servers(), &messages);
    let mut source = source_config(&mock.bootstrap_servers());
    source.dead_letter_topic = Some("trimatch_dead_letters".to_string());
    let pipeline = Pipeline::start(pipeline_config(
        {
            source.until_end = true;
            source
        },
        2,
    ))
    .unwrap();
    let metrics = pipeline.metrics();
    let state = pipeline.join().unwrap();
    let malformed: Vec<&GeneratedMessage> = messages
        .iter()
        .filter(|message| message.malformed)
        .collect();
    assert!(malformed.len() > 20);

    // Per partition, consumed = applied + dead-lettered.
    let counters = metrics.snapshot();
    for ((topic, partition), counter) in &counters {
        assert_eq!(
            counter.consumed,
            counter.applied + counter.dead_lettered,
            "{topic}/{partition}"
        );
    }
    let dead_lettered: u64 = counters.values().map(|counter| counter.dead_lettered).sum();
    assert_eq!(dead_lettered as usize, malformed.len());
    assert_eq!(
        metrics
            .dead_letters_produced
            .load(std::sync::atomic::Ordering::Relaxed),
        dead_lettered
    );

    // The dead-letter topic holds each rejected message's key and value, and
    // headers naming its origin and the reason; they agree with `dead_letters`.
    let letters: BTreeMap<(String, i32, i64), String> = state.collections
        [&OutputCollection::DeadLetters]
        .iter()
        .map(|row| match row {
            Row::DeadLetter(letter) => (
                (letter.topic.to_string(), letter.partition, letter.offset),
                letter.reason.to_string(),
            ),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(letters.len(), malformed.len());
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", mock.bootstrap_servers())
        .set("group.id", "dead-letter-reader")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    let mut assignment = rdkafka::TopicPartitionList::new();
    assignment
        .add_partition_offset("trimatch_dead_letters", 0, rdkafka::Offset::Beginning)
        .unwrap();
    consumer.assign(&assignment).unwrap();
    let mut seen = 0;
    let malformed_values: Vec<Option<&[u8]>> = malformed
        .iter()
        .map(|message| message.value.as_deref())
        .collect();
    while seen < malformed.len() {
        let message = consumer
            .poll(Duration::from_secs(10))
            .expect("a dead letter within 10 s")
            .unwrap();
        let headers = message.headers().expect("headers");
        let header = |name: &str| -> String {
            headers
                .iter()
                .find(|header| header.key == name)
                .and_then(|header| header.value)
                .map(|value| String::from_utf8_lossy(value).to_string())
                .unwrap_or_else(|| panic!("no {name} header"))
        };
        let origin = (
            header(HEADER_TOPIC),
            header(HEADER_PARTITION).parse().unwrap(),
            header(HEADER_OFFSET).parse().unwrap(),
        );
        assert_eq!(
            letters.get(&origin),
            Some(&header(HEADER_REASON)),
            "{origin:?}"
        );
        assert!(
            malformed_values.contains(&message.payload()),
            "the original value is kept"
        );
        seen += 1;
    }
}

#[test]
fn debezium_topics_apply_creates_updates_and_deletes() {
    let mock = mock_with_input_topics(1);
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", mock.bootstrap_servers())
        .create()
        .unwrap();
    let po = |price: &str| {
        json!({"tenant_id": "acme", "po_number": "PO-1", "vendor_id": "V", "currency": "USD",
               "lines": [{"line_no": 1, "quantity": "10", "unit_price": price}]})
    };
    let invoice = json!({"tenant_id": "acme", "invoice_id": "INV-1", "vendor_id": "V", "invoice_number": "A1",
        "po_number": "PO-1", "currency": "USD", "invoice_date": "2026-11-03",
        "lines": [{"po_line_no": 1, "quantity": "10", "unit_price": "2.50"}]});
    let receipt = json!({"tenant_id": "acme", "receipt_id": "GR-1", "po_number": "PO-1",
        "lines": [{"po_line_no": 1, "quantity": "10"}]});
    let events: Vec<(&str, Option<serde_json::Value>)> = vec![
        (
            "purchase_orders",
            Some(
                json!({"schema": {}, "payload": {"before": null, "after": po("2.00"), "op": "c"}}),
            ),
        ),
        (
            "purchase_orders",
            Some(json!({"before": po("2.00"), "after": po("2.50"), "op": "u"})),
        ),
        (
            "invoices",
            Some(json!({"before": null, "after": invoice, "op": "c"})),
        ),
        (
            "goods_receipts",
            Some(json!({"before": null, "after": receipt, "op": "r"})),
        ),
        (
            "goods_receipts",
            Some(json!({"before": receipt, "after": null, "op": "d"})),
        ),
        ("goods_receipts", None),
        (
            "invoices",
            Some(json!({"before": null, "after": {"tenant_id": "acme"}, "op": "c"})),
        ),
    ];
    for (topic, value) in &events {
        let payload = value.as_ref().map(|value| value.to_string());
        let mut record = BaseRecord::<str, str>::to(topic).key("k");
        if let Some(payload) = &payload {
            record = record.payload(payload);
        }
        producer.send(record).unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();

    let mut source = source_config(&mock.bootstrap_servers());
    source.topics = DocumentKind::ALL
        .into_iter()
        .map(|kind| TopicConfig {
            envelope: Envelope::Debezium,
            ..TopicConfig::default_for(kind)
        })
        .collect();
    let state = run_until_end(pipeline_config(source, 1)).unwrap();
    let exceptions: Vec<String> = state.collections[&OutputCollection::MatchExceptions]
        .iter()
        .map(|row| match row {
            Row::Exception(exception) => exception.exception_type.as_str().to_string(),
            other => panic!("{other:?}"),
        })
        .collect();
    // The price update cleared PRICE_VARIANCE; the receipt's deletion left RECEIPT_MISSING.
    assert_eq!(exceptions, vec!["RECEIPT_MISSING"]);
    let dead_letters = &state.collections[&OutputCollection::DeadLetters];
    assert_eq!(dead_letters.len(), 1, "{dead_letters:?}");
    let Row::DeadLetter(letter) = &dead_letters[0] else {
        unreachable!()
    };
    assert!(
        letter.reason.starts_with("after.invoice_id: missing"),
        "{letter:?}"
    );
}
