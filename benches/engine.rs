//! Engine benchmarks (issue 6, first step): decoding realistic documents, and
//! the matching graph alone on one worker over a large live state.
//!
//! `cargo bench --bench engine`. Figures and the machine they came from go in
//! the README; tests never time anything.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use trimatch_connectors::generate::{GeneratedMessage, Workload, WorkloadConfig};
use trimatch_dataflows::decode::{decode_upsert, Upsert};
use trimatch_dataflows::{MatchConfig, Matcher};

/// Valid generated messages: a realistic mix of POs, receipts, invoices and
/// policies, with updates and deletes.
fn messages(seed: u64, count: usize) -> Vec<GeneratedMessage> {
    Workload::new(WorkloadConfig {
        seed,
        tenants: 20,
        bad_share: 0.0,
        live_pos_per_tenant: 5_000,
        ..WorkloadConfig::default()
    })
    .take(count)
    .collect()
}

fn decode_all(messages: &[GeneratedMessage]) -> Vec<Upsert> {
    messages
        .iter()
        .map(|message| {
            decode_upsert(
                message.kind,
                message.key.as_deref(),
                message.value.as_deref(),
            )
            .expect("generated valid")
        })
        .collect()
}

fn decoding(c: &mut Criterion) {
    let messages = messages(1, 20_000);
    let bytes: usize = messages
        .iter()
        .map(|m| m.value.as_ref().map_or(0, Vec::len))
        .sum();
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(messages.len() as u64));
    group.bench_function(
        BenchmarkId::new(
            "mixed documents",
            format!("{} B avg", bytes / messages.len()),
        ),
        |b| b.iter(|| decode_all(&messages)),
    );
    group.finish();
}

/// Applies one batch at `time` and steps until it is complete.
fn apply(
    matcher: &mut Matcher,
    worker: &mut timely::worker::Worker,
    upserts: &[Upsert],
    time: &mut u64,
) {
    for (offset, upsert) in upserts.iter().enumerate() {
        matcher.upsert(upsert.key, upsert.document.clone(), offset as i64);
    }
    matcher.advance_to(*time + 1);
    while !matcher.is_complete(*time) {
        worker.step();
    }
    *time += 1;
}

/// Feeds `preload` changes, then measures batches of `batch` changes (a
/// steady-state mix of creates, updates and deletes) through one worker.
fn graph_one_worker(c: &mut Criterion) {
    let preload = decode_all(&messages(2, 100_000));
    let steady = decode_all(&messages(3, 200_000));
    let batch = 10_000;
    let mut group = c.benchmark_group("graph");
    group.throughput(Throughput::Elements(batch as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.bench_function(
        BenchmarkId::new("changes, 1 worker, 100k live", batch),
        |b| {
            b.iter_custom(|iterations| {
                timely::execute_directly({
                    let (preload, steady) = (preload.clone(), steady.clone());
                    move |worker| {
                        let mut matcher = Matcher::build(worker, &MatchConfig::default(), None);
                        let mut time = 1;
                        for chunk in preload.chunks(batch) {
                            apply(&mut matcher, worker, chunk, &mut time);
                        }
                        let started = Instant::now();
                        for iteration in 0..iterations as usize {
                            let start = (iteration * batch) % (steady.len() - batch);
                            apply(
                                &mut matcher,
                                worker,
                                &steady[start..start + batch],
                                &mut time,
                            );
                        }
                        started.elapsed()
                    }
                })
            })
        },
    );
    group.finish();
}

criterion_group!(benches, decoding, graph_one_worker);
criterion_main!(benches);
