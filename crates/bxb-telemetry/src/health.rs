//! `/healthz` (the process is alive), `/readyz` (it can do its work) and `/metrics`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

/// One check of [`Readiness`]: its name and whether it passes.
type NamedCheck = (&'static str, Arc<AtomicBool>);

/// Readiness as a set of named checks, each flipped by the part of the program that owns it
/// (e.g. "kafka" by the producer's health poller, "schema" once the schema is registered).
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    checks: Arc<std::sync::Mutex<Vec<NamedCheck>>>,
}

impl Readiness {
    /// Registers a check, initially not ready, and returns its switch.
    pub fn check(&self, name: &'static str) -> Arc<AtomicBool> {
        let flag = Arc::new(AtomicBool::new(false));
        self.checks.lock().expect("readiness lock").push((name, flag.clone()));
        flag
    }

    /// The names of the checks that are not ready; empty when ready.
    pub fn failing(&self) -> Vec<&'static str> {
        self.checks
            .lock()
            .expect("readiness lock")
            .iter()
            .filter(|(_, flag)| !flag.load(Ordering::Relaxed))
            .map(|(name, _)| *name)
            .collect()
    }
}

/// The router of the three operational endpoints; merge it into a service's router.
pub fn router(readiness: Readiness) -> Router {
    let prometheus = crate::metrics::install();
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz).with_state(readiness))
        .route("/metrics", get(move || std::future::ready(prometheus.render())))
}

async fn readyz(State(readiness): State<Readiness>) -> (StatusCode, Json<serde_json::Value>) {
    let failing = readiness.failing();
    if failing.is_empty() {
        (StatusCode::OK, Json(json!({"status": "ready"})))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "not_ready", "failing": failing})))
    }
}
