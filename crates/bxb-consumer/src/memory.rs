//! What keeps a consumer's memory bounded while it drains a backlog: librdkafka's prefetch, the
//! allocator's handling of large short-lived buffers, and the metrics samples waiting for a
//! scrape. Each was measured on a 1M-event drain (BENCHMARKS.md has the figures).

use std::time::Duration;

use rdkafka::ClientConfig;
use tokio_util::sync::CancellationToken;

/// librdkafka's prefetch, unless `BXB_KAFKA_OPTIONS` sets these keys. Its defaults (up to
/// 100 000 records or 64 MiB queued, fetches of 1 MiB per partition and 50 MiB per request)
/// are sized for consumers that keep up; behind a backlog the queue stays full, each queued
/// record costs its payload plus several hundred bytes of bookkeeping, and a compressed fetch
/// expands several times on decompression. A queue of 20 000 records is still far more than one
/// poll interval at the rates a consumer writes, and a short fetch backoff refills it before it
/// runs dry (the default waits a whole second once the queue is above its threshold).
const PREFETCH_DEFAULTS: &[(&str, &str)] = &[
    ("queued.min.messages", "20000"),
    ("queued.max.messages.kbytes", "8192"),
    ("max.partition.fetch.bytes", "262144"),
    ("fetch.max.bytes", "2097152"),
    ("fetch.queue.backoff.ms", "10"),
];

/// Adds [`PREFETCH_DEFAULTS`] to `config` where it has no value of its own.
pub(crate) fn bound_prefetch(config: &mut ClientConfig) {
    for (key, value) in PREFETCH_DEFAULTS {
        if config.get(key).is_none() {
            config.set(*key, *value);
        }
    }
}

/// Makes glibc serve allocations of 128 KiB and more with their own mappings, returned to the
/// system when freed. By default glibc raises that threshold to the largest block freed so far
/// (fetch and decompression buffers, batch vectors, COPY streams: megabytes), after which such
/// buffers come from the heap, where freed space between long-lived blocks is kept, not returned.
pub(crate) fn return_large_buffers_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        /// `M_MMAP_THRESHOLD` of glibc's `<malloc.h>`; setting it also turns the dynamic
        /// threshold off.
        const M_MMAP_THRESHOLD: std::ffi::c_int = -3;
        extern "C" {
            fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
        }
        // SAFETY: mallopt only adjusts allocator parameters; it is thread-safe and the value is
        // within glibc's accepted range (at most 32 MiB on 64-bit systems).
        #[allow(unsafe_code, reason = "the one FFI call of the workspace, argued above")]
        let set = unsafe { mallopt(M_MMAP_THRESHOLD, 128 * 1024) };
        if set != 1 {
            tracing::warn!("could not set the allocator's mmap threshold");
        }
    }
}

/// How often recorded metric samples are folded into their histograms.
const METRICS_UPKEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Folds histogram samples into their buckets every second until `stop`. The Prometheus recorder
/// keeps every sample (value and time, 24 bytes) until a scrape or an upkeep, and the runtime
/// records one end-to-end latency per event: without this, a 1M-event drain that nobody
/// scrapes holds about 24 MiB of samples.
pub(crate) async fn upkeep_metrics(stop: CancellationToken) {
    let handle = bxb_telemetry::metrics::install();
    let mut ticker = tokio::time::interval(METRICS_UPKEEP_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => handle.run_upkeep(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefetch_defaults_never_override_an_operators_setting() {
        let mut config = ClientConfig::new();
        config.set("queued.min.messages", "500");
        bound_prefetch(&mut config);
        assert_eq!(config.get("queued.min.messages"), Some("500"));
        assert_eq!(config.get("queued.max.messages.kbytes"), Some("8192"));
        assert_eq!(config.get("fetch.queue.backoff.ms"), Some("10"));
    }

    #[test]
    fn prefetch_defaults_are_accepted_by_librdkafka() {
        let mut config = ClientConfig::new();
        config.set("group.id", "g").set("bootstrap.servers", "127.0.0.1:1");
        bound_prefetch(&mut config);
        let consumer: Result<rdkafka::consumer::BaseConsumer, _> = config.create();
        assert!(consumer.is_ok(), "{:?}", consumer.err());
    }
}
