//! One Prometheus recorder per process behind the `metrics` facade, installed by
//! [`crate::init`]. Libraries call [`install`] too before they measure (the consumer runtime,
//! the `/metrics` route), so a `run` that tests start without `init` still records: whoever
//! comes first installs it, everyone gets the same handle.
//!
//! Names follow `bxb_<component>_<noun>_<unit>[_total]`; labels stay low-cardinality (route,
//! status, reason, partition — never an organization or a key).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets in seconds, from 1 ms to 30 s.
const LATENCY_BUCKETS_SECONDS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
/// Batch-size buckets, from 1 to 100 000 events.
const BATCH_SIZE_BUCKETS: &[f64] = &[1.0, 10.0, 100.0, 500.0, 1_000.0, 5_000.0, 10_000.0, 50_000.0, 100_000.0];

/// Installs the recorder on the first call and returns the handle that renders `/metrics`;
/// later calls return the same handle.
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS_SECONDS)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_events".into()), BATCH_SIZE_BUCKETS))
                .expect("bucket lists are not empty")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (a test harness); rendering still works.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}
