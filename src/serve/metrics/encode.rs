//! Small helpers the metrics' collectors write their samples with.

use std::fmt;

use prometheus_client::encoding::{
    DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, EncodeMetric,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

/// A counter's name as the encoder takes it: without the `_total` it appends.
pub(super) fn counter(name: &'static str) -> &'static str {
    name.strip_suffix("_total")
        .expect("a counter's name ends in _total")
}

/// A family with one unlabelled gauge.
pub(super) fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: impl EncodeGaugeValue,
) -> fmt::Result {
    ConstGauge::new(value).encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

/// A family with one unlabelled counter (`name` with its `_total`).
pub(super) fn unlabelled_counter(
    encoder: &mut DescriptorEncoder,
    name: &'static str,
    help: &str,
    value: impl EncodeCounterValue,
) -> fmt::Result {
    ConstCounter::new(value).encode(encoder.encode_descriptor(
        counter(name),
        help,
        None,
        MetricType::Counter,
    )?)
}

/// 1 or 0.
pub(super) fn flag(value: bool) -> i64 {
    i64::from(value)
}
