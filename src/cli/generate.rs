//! `trimatch generate`: a synthetic accounts-payable workload produced to Kafka.

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use trimatch_connectors::admin::create_missing_input_topics;
use trimatch_workload::{
    ProduceLimits, Workload, WorkloadConfig, WorkloadProducer, DEFAULT_PAYMENT_SHARE,
};

use super::serve::TopicArgs;

#[derive(Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    topics: TopicArgs,
    /// Messages per second (default: flat out).
    #[arg(long)]
    rate: Option<f64>,
    /// Stop after this many messages.
    #[arg(long)]
    count: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    duration: Option<f64>,
    /// Seed of the workload (the same seed gives the same messages).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Number of tenants.
    #[arg(long, default_value_t = 5)]
    tenants: usize,
    /// Share of malformed messages, 0 to 1.
    #[arg(long, default_value_t = 0.01)]
    bad_share: f64,
    /// Share of payments among the messages, 0 to 1 (0.18 gives about as
    /// many payments as invoices).
    #[arg(long, default_value_t = DEFAULT_PAYMENT_SHARE)]
    payment_share: f64,
    /// Create missing input topics with this many partitions first (compacted:
    /// they keep every document's latest version however old).
    #[arg(long, value_name = "N")]
    create_topics: Option<i32>,
}

pub fn run(args: GenerateArgs) -> Result<()> {
    if let Some(partitions) = args.create_topics {
        let topics = args.topics.topics(&[]);
        let names: Vec<&str> = topics.iter().map(|topic| topic.name.as_str()).collect();
        let created = create_missing_input_topics(
            &args.topics.brokers,
            &names,
            partitions,
            &args.topics.client_settings,
        )?;
        for topic in created {
            tracing::info!(topic, partitions, "created compacted topic");
        }
    }
    let producer = WorkloadProducer::new(
        &args.topics.brokers,
        args.topics.topics(&[]),
        &args.topics.client_settings,
    )?;
    let workload = Workload::new(WorkloadConfig {
        seed: args.seed,
        tenants: args.tenants,
        bad_share: args.bad_share,
        payment_share: args.payment_share,
        ..WorkloadConfig::default()
    });
    let limits = ProduceLimits {
        rate: args.rate,
        count: args.count,
        duration: args.duration.map(Duration::from_secs_f64),
    };
    if limits.count.is_none() && limits.duration.is_none() {
        tracing::info!("producing until interrupted (give --count or --duration to stop)");
    }
    let stop = AtomicBool::new(false);
    let mut per_topic = std::collections::BTreeMap::<&str, u64>::new();
    let report = producer.run_observed(workload, &limits, &stop, |message, _| {
        *per_topic.entry(message.kind.default_topic()).or_default() += 1;
    })?;
    println!(
        "produced {} messages ({} malformed) in {:.1}s ({:.0}/s)",
        report.sent,
        report.malformed,
        report.elapsed.as_secs_f64(),
        report.sent as f64 / report.elapsed.as_secs_f64().max(1e-9)
    );
    for (topic, count) in per_topic {
        println!("  {topic}: {count}");
    }
    Ok(())
}
