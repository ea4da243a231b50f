//! W3C trace context (`traceparent`, `tracestate`) carried as Kafka record headers, so a trace
//! started by an HTTP request continues in the consumer that writes the event.

use std::collections::HashMap;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub(crate) fn install_propagator() {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
}

/// The trace context of `span` as header name/value pairs (empty when the span is not sampled
/// or telemetry is not initialised).
pub fn headers_of(span: &tracing::Span) -> Vec<(String, String)> {
    struct Pairs(Vec<(String, String)>);
    impl Injector for Pairs {
        fn set(&mut self, key: &str, value: String) {
            self.0.push((key.to_owned(), value));
        }
    }
    let mut pairs = Pairs(Vec::with_capacity(2));
    let context = span.context();
    TraceContextPropagator::new().inject_context(&context, &mut pairs);
    pairs.0
}

/// Makes the trace context found in `headers` (name, value) the parent of `span`.
pub fn set_parent_from<'a>(span: &tracing::Span, headers: impl IntoIterator<Item = (&'a str, &'a [u8])>) {
    let map: HashMap<String, String> = headers
        .into_iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("traceparent") || k.eq_ignore_ascii_case("tracestate"))
        .filter_map(|(k, v)| Some((k.to_ascii_lowercase(), std::str::from_utf8(v).ok()?.to_owned())))
        .collect();
    if map.is_empty() {
        return;
    }
    struct Map(HashMap<String, String>);
    impl Extractor for Map {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).map(String::as_str)
        }
        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(String::as_str).collect()
        }
    }
    let parent = TraceContextPropagator::new().extract(&Map(map));
    let _ = span.set_parent(parent);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_span_continues_the_trace_of_its_headers() {
        crate::init_for_tests();
        let incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let span = tracing::info_span!("write");
        set_parent_from(&span, [("traceparent", incoming.as_bytes())]);
        let outgoing = headers_of(&span);
        let traceparent = &outgoing.iter().find(|(k, _)| k == "traceparent").expect("traceparent").1;
        assert!(traceparent.starts_with("00-0af7651916cd43dd8448eb211c80319c-"), "{traceparent}");
        assert!(!traceparent.contains("b7ad6b7169203331"), "the span has its own id: {traceparent}");
    }
}
