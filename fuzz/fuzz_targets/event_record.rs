//! A Kafka record value as the consumers decode it: Confluent framing, then the Avro datum read
//! by the direct reader and by the generic reader (which must agree), and by schema resolution
//! from a newer writer version.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let _ = bxb_event::invariants::check_record(bytes);
});
