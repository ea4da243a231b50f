//! `POST /v1/events/batch`: any body, parsed and validated as the handler does (at most 10
//! events per batch, so the limit is within reach of small inputs).
#![no_main]

use bxb_event::ingest::invariants::{check_body, context, Endpoint};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let _ = check_body(Endpoint::Batch, body, &context(10));
});
