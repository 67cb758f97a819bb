//! End to end against a real broker process (tansu, over the Kafka protocol):
//! a generated history — bad messages, deletes, out-of-order documents — is
//! produced with a real client, consumed by the pipeline, and every output
//! collection is compared with a plain evaluation of the final documents.
//! Replays from explicit offsets and from a timestamp must give the state of
//! exactly the messages they consume, and a broker restart mid-stream must
//! lose and duplicate nothing.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use support::*;
use trimatch::output::filter::RowFilter;
use trimatch::output::parquet::{write_collections, ParquetFiles};
use trimatch::output::FinalState;
use trimatch::pipeline::passes::{run_in_tenant_passes, Pass};
use trimatch::pipeline::{run_until_end, Pipeline};
use trimatch_connectors::source::now_ms;
use trimatch_connectors::StartPosition;
use trimatch_dataflows::{OutputCollection, Row};
use trimatch_workload::{Workload, WorkloadConfig};

/// Why a message the broker served is refused for its size.
const SIZE_REFUSED: &str = "bytes, more than the 1048576 a message may have";

#[test]
fn an_oversized_message_is_dead_lettered_on_a_real_broker() {
    let broker = Tansu::start();
    create_input_topics(&broker.address, [1, 1, 1, 1, 1, 1]);
    an_oversized_message_is_dead_lettered_and_its_partition_goes_on(
        &broker.address,
        3 << 20,
        SIZE_REFUSED,
    );
}

/// The audit's case: a 5 MiB purchase order, which tansu accepts and then
/// never returns to a fetch. It is dead-lettered by its offset, and the ten
/// orders behind it are applied.
#[test]
fn a_message_the_broker_never_serves_is_dead_lettered_by_its_offset() {
    let broker = Tansu::start();
    create_input_topics(&broker.address, [1, 1, 1, 1, 1, 1]);
    an_oversized_message_is_dead_lettered_and_its_partition_goes_on(
        &broker.address,
        5 << 20,
        "the broker returned no record at offset 0",
    );
}

#[test]
fn generated_history_through_a_real_broker_equals_plain_evaluation() {
    let broker = Tansu::start();
    create_input_topics(&broker.address, [3, 2, 3, 1, 1, 1]);
    let messages = history(11, 3_000);
    produce(&broker.address, &messages);
    let malformed = messages.iter().filter(|message| message.malformed).count();
    assert!(malformed > 20, "the history must include bad messages");

    let pipeline = Pipeline::start(pipeline_config(
        {
            let mut source = source_config(&broker.address);
            source.until_end = true;
            source
        },
        2,
    ))
    .unwrap();
    let metrics = pipeline.metrics();
    let state = pipeline.join().unwrap();

    // Every output collection equals the plain evaluation of the final documents.
    let expected = expected_state(&final_documents(&messages));
    assert!(!expected.match_exceptions.is_empty() && !expected.invoice_matches.is_empty());
    assert_same_state(
        &matching_state(&state.collections),
        &expected,
        "bounded run",
    );

    // Every bad message is dead-lettered with its position and a reason.
    let dead_letters = &state.collections[&OutputCollection::DeadLetters];
    assert_eq!(dead_letters.len(), malformed);
    for row in dead_letters {
        let Row::DeadLetter(letter) = row else {
            panic!("{row:?}")
        };
        assert!(
            letter.offset >= 0 && !letter.reason.is_empty(),
            "{letter:?}"
        );
    }

    // The snapshot reflects exactly the consumed prefix: every partition up to
    // its high watermark, and every consumed message is accounted for.
    let watermarks = high_watermarks(&broker.address);
    let progress = progress(&state.collections);
    assert_eq!(progress.len(), 11);
    let counters = metrics.snapshot();
    let mut consumed = 0;
    for ((topic, partition), (next_offset, high_watermark, lag)) in &progress {
        let high = watermarks[&(topic.clone(), *partition)];
        assert_eq!(
            (*next_offset, *high_watermark, *lag),
            (high, high, 0),
            "{topic}/{partition}"
        );
        let partition_counters = &counters[&(topic.clone(), *partition)];
        assert_eq!(
            partition_counters.consumed, high as u64,
            "{topic}/{partition}"
        );
        assert_eq!(
            partition_counters.consumed,
            partition_counters.applied + partition_counters.dead_lettered,
            "{topic}/{partition}"
        );
        consumed += partition_counters.consumed;
    }
    assert_eq!(consumed as usize, messages.len());

    // The bounded run's Parquet files read back with the same rows.
    let output = tempfile::tempdir().unwrap();
    let written = write_collections(output.path(), &state).unwrap();
    assert_eq!(written.len(), OutputCollection::ALL.len());
    for (collection, path) in OutputCollection::ALL.into_iter().zip(&written) {
        let file = std::fs::File::open(path).unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
        let rows: usize = reader.map(|batch| batch.unwrap().num_rows()).sum();
        assert_eq!(
            rows,
            state.collections[&collection].len(),
            "{}",
            collection.name()
        );
    }
    read_back_with_python(output.path(), &expected);
}

/// A bounded run in passes over the tenants (`serve --until-end
/// --tenant-passes`): a census, then each balanced set of tenants in a pass
/// of its own, holding only those tenants' state. Together the passes equal
/// the plain evaluation of the final documents, each pass's rows are its
/// tenants', rejected messages are dead-lettered once, and messages produced
/// after the census are read by no pass (every pass ends where it did).
#[test]
fn a_bounded_run_in_tenant_passes_equals_plain_evaluation() {
    let broker = Tansu::start();
    create_input_topics(&broker.address, [3, 2, 3, 1, 1, 1]);
    let messages: Vec<_> = Workload::new(WorkloadConfig {
        seed: 41,
        tenants: 7,
        vendors_per_tenant: 3,
        bad_share: 0.03,
        payment_share: 0.1,
        ..WorkloadConfig::default()
    })
    .take(3_000)
    .collect();
    produce(&broker.address, &messages);
    let malformed = messages.iter().filter(|message| message.malformed).count();
    let later = history(42, 300);

    let output = tempfile::tempdir().unwrap();
    let mut files = ParquetFiles::create(output.path()).unwrap();
    let mut passes: Vec<(Pass, FinalState)> = Vec::new();
    run_in_tenant_passes(
        pipeline_config(source_config(&broker.address), 2),
        3,
        |pass, _| {
            if pass.number == 1 {
                produce(&broker.address, &later);
            }
        },
        |pass, state| {
            files.append(&state)?;
            passes.push((pass.clone(), state));
            Ok(())
        },
    )
    .unwrap();
    let written = files.finish().unwrap();

    let numbers: Vec<usize> = passes.iter().map(|(pass, _)| pass.number).collect();
    assert_eq!(numbers, [0, 1, 2, 3]);
    // The census matches nothing and keeps the books: every bad message is
    // dead-lettered, once.
    let (census, census_state) = &passes[0];
    assert!(census.tenants.is_none());
    for collection in OutputCollection::MATCHING {
        assert!(
            census_state.collections[&collection].is_empty(),
            "{collection:?}"
        );
    }
    assert_eq!(
        census_state.collections[&OutputCollection::DeadLetters].len(),
        malformed
    );
    // Every tenant is in one pass; each pass's rows are its tenants'.
    let mut tenants = std::collections::BTreeSet::new();
    let mut rows: BTreeMap<OutputCollection, Vec<Row>> = BTreeMap::new();
    for (pass, state) in &passes[1..] {
        let (pass_tenants, share) = pass.tenants.clone().unwrap();
        assert!(share > 0.1 && share < 0.6, "{}", pass.describe());
        for tenant in &pass_tenants {
            assert!(tenants.insert(tenant.clone()), "{tenant} in two passes");
        }
        assert!(!state
            .collections
            .contains_key(&OutputCollection::DeadLetters));
        assert!(!state
            .collections
            .contains_key(&OutputCollection::SourceProgress));
        for (collection, collection_rows) in &state.collections {
            let theirs = RowFilter::default()
                .within_tenants(*collection, pass_tenants.clone())
                .unwrap();
            for row in collection_rows {
                assert!(theirs.matches(row), "{}: {row:?}", pass.describe());
            }
            rows.entry(*collection)
                .or_default()
                .extend(collection_rows.iter().cloned());
        }
    }
    assert_eq!(tenants.len(), 7);
    let expected = expected_state(&final_documents(&messages));
    assert!(!expected.payment_matches.is_empty() && !expected.po_suggestions.is_empty());
    assert_same_state(&matching_state(&rows), &expected, "in tenant passes");

    // The files hold every pass's rows, under their final names.
    for (collection, path) in OutputCollection::ALL.into_iter().zip(&written) {
        assert!(path.ends_with(format!("{}.parquet", collection.name())));
        let file = std::fs::File::open(path).unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
        let read: usize = reader.map(|batch| batch.unwrap().num_rows()).sum();
        let held: usize = passes
            .iter()
            .filter_map(|(_, state)| state.collections.get(&collection))
            .map(Vec::len)
            .sum();
        assert_eq!(read, held, "{}", collection.name());
    }
    let partial = std::fs::read_dir(output.path())
        .unwrap()
        .filter(|entry| entry.as_ref().unwrap().path().extension() == Some("partial".as_ref()))
        .count();
    assert_eq!(partial, 0);
}

/// Reads the Parquet files with readers nobody here wrote — pandas (through
/// pyarrow) and DuckDB — and checks row counts and the exact decimal sum.
fn read_back_with_python(dir: &std::path::Path, expected: &Snapshot) {
    let Ok(python) = std::env::var("TRIMATCH_PYTHON") else {
        eprintln!("TRIMATCH_PYTHON is not set: skipping the pandas/DuckDB read-back (scripts/test sets it)");
        return;
    };
    let script = "import pandas, duckdb, json, sys\n\
         d = pandas.read_parquet(sys.argv[1] + '/match_exceptions.parquet')\n\
         m = pandas.read_parquet(sys.argv[1] + '/invoice_matches.parquet')\n\
         lines = duckdb.sql(f\"select count(*) from '{sys.argv[1]}/po_lines.parquet'\").fetchall()[0][0]\n\
         print(json.dumps({'exceptions': len(d), 'invoices': len(m), 'po_lines': lines, \
         'amount': str(m.invoice_amount.sum())}))";
    let result = std::process::Command::new(python)
        .args(["-c", script, dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let read: serde_json::Value = serde_json::from_slice(&result.stdout).unwrap();
    assert_eq!(read["exceptions"], expected.match_exceptions.len());
    assert_eq!(read["invoices"], expected.invoice_matches.len());
    assert_eq!(read["po_lines"], expected.po_lines.len());
    let total: rust_decimal::Decimal = expected
        .invoice_matches
        .iter()
        .map(|row| row.invoice_amount)
        .sum();
    let read_total: rust_decimal::Decimal = read["amount"].as_str().unwrap().parse().unwrap();
    assert_eq!(read_total, total, "pandas sums the exact decimals");
}

#[test]
fn replays_from_offsets_and_from_a_timestamp_give_exactly_that_suffix() {
    let broker = Tansu::start();
    create_input_topics(&broker.address, [2, 2, 2, 1, 1, 1]);
    let first = history(21, 800);
    produce(&broker.address, &first);
    std::thread::sleep(Duration::from_millis(100));
    let cut_time = now_ms();
    std::thread::sleep(Duration::from_millis(100));
    let cut_offsets = high_watermarks(&broker.address);
    // Later versions of the same documents, deletes among them, and new ones.
    let second = history(22, 800);
    produce(&broker.address, &second);
    let expected = expected_state(&final_documents(&second));
    let ends = high_watermarks(&broker.address);

    let offsets: StartPosition = StartPosition::Offsets(cut_offsets.clone());
    for start in [offsets, StartPosition::Timestamp(cut_time)] {
        let mut source = source_config(&broker.address);
        source.start = start.clone();
        let state = run_until_end(pipeline_config(source, 2)).unwrap();
        assert_same_state(
            &matching_state(&state.collections),
            &expected,
            &format!("replay from {start:?}"),
        );
        for (partition, (next_offset, _, lag)) in progress(&state.collections) {
            assert_eq!(
                (next_offset, lag),
                (ends[&partition], 0),
                "{partition:?} from {start:?}"
            );
        }
    }
    // And from the earliest offsets, the whole history.
    let state = run_until_end(pipeline_config(source_config(&broker.address), 1)).unwrap();
    let everything = expected_state(&final_documents(first.iter().chain(&second)));
    assert_same_state(
        &matching_state(&state.collections),
        &everything,
        "replay from earliest",
    );
}

#[test]
fn a_broker_restart_mid_stream_loses_and_duplicates_nothing() {
    let mut broker = Tansu::start();
    create_input_topics(&broker.address, [2, 2, 2, 1, 1, 1]);
    let before = history(31, 1_000);
    produce(&broker.address, &before);
    let pipeline = Pipeline::start(pipeline_config(source_config(&broker.address), 2)).unwrap();
    wait_for("the pipeline to catch up", Duration::from_secs(60), || {
        pipeline.is_ready()
    });

    broker.kill();
    std::thread::sleep(Duration::from_secs(2));
    assert!(pipeline.error().is_none(), "{:?}", pipeline.error());
    broker.restart();
    let after = history(32, 1_000);
    produce(&broker.address, &after);
    let ends = high_watermarks(&broker.address);
    let total: i64 = ends.values().sum();
    let metrics = pipeline.metrics();
    wait_for(
        "every message after the restart",
        Duration::from_secs(90),
        || {
            let counters = metrics.snapshot();
            counters
                .values()
                .map(|counter| counter.next_offset)
                .sum::<i64>()
                == total
        },
    );
    let as_of = wait_until_complete_now(&pipeline);
    let state = read_all(&pipeline, as_of);
    let expected = expected_state(&final_documents(before.iter().chain(&after)));
    assert_same_state(&matching_state(&state), &expected, "after the restart");
    for ((topic, partition), counters) in metrics.snapshot() {
        let high = ends[&(topic.clone(), partition)];
        assert_eq!(
            counters.consumed, high as u64,
            "{topic}/{partition}: consumed once each"
        );
        assert_eq!(counters.consumed, counters.applied + counters.dead_lettered);
    }
    for (partition, (next_offset, _, _)) in progress(&state) {
        assert_eq!(next_offset, ends[&partition], "{partition:?}");
    }
    pipeline.shutdown().unwrap();
}
