//! Engine benchmarks: decoding realistic documents (the decode-only
//! reference rate), and the matching graph alone over a large live state on 1
//! and 2 workers. The workload and the driver are `trimatch_bench::graph`'s,
//! which `trimatch-bench graph` also runs.
//!
//! `cargo bench --bench engine`. Figures and the machine they came from go in
//! docs/performance.md; tests never time anything.

use std::sync::Arc;
use std::time::Duration;

/// The allocator the `trimatch` binary uses, so the figures match it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use trimatch_bench::graph::{decode_all, time_graph, workload};

fn decoding(c: &mut Criterion) {
    let messages = workload(1, 20_000);
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

/// Preloads 100,000 changes, then times batches of 10,000 steady-state
/// changes (creates, updates, deletes) on 1 and 2 workers.
fn graph(c: &mut Criterion) {
    let messages = workload(2, 300_000);
    let upserts = decode_all(&messages);
    let preload = Arc::new(upserts[..100_000].to_vec());
    let steady = upserts[100_000..].to_vec();
    let batch = 10_000;
    let mut group = c.benchmark_group("graph");
    group.throughput(Throughput::Elements(batch as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(30));
    for workers in [1, 2] {
        group.bench_function(
            BenchmarkId::new(
                "changes over 100k preloaded",
                format!("{workers} worker(s)"),
            ),
            |b| {
                b.iter_custom(|iterations| {
                    // One dataflow per sample: preload untimed, then `iterations` batches.
                    let batches = (iterations as usize).min(steady.len() / batch);
                    let timed = Arc::new(steady[..batches * batch].to_vec());
                    let timing = time_graph(workers, batch, preload.clone(), timed, false);
                    timing.elapsed.mul_f64(iterations as f64 / batches as f64)
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, decoding, graph);
criterion_main!(benches);
