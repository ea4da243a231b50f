//! `POST /v1/events`: any body, parsed and validated as the handler does.
#![no_main]

use bxb_event::ingest::invariants::{check_body, context, Endpoint};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let _ = check_body(Endpoint::Single, body, &context(10));
});
