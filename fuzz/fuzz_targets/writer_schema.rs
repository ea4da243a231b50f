//! A writer schema as a consumer gets it from the registry, with a datum: the first two bytes
//! (little-endian) are the length of the schema text, the rest of the input is the datum. The
//! verdict on the schema and the budgeted reader must never crash, recurse without bound or
//! allocate more than the datum pays for.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((length, rest)) = input.split_first_chunk::<2>() else { return };
    let length = usize::from(u16::from_le_bytes(*length)).min(rest.len());
    let (schema, datum) = rest.split_at(length);
    if let Ok(schema) = std::str::from_utf8(schema) {
        let _ = bxb_event::invariants::check_writer_schema(schema, datum);
    }
});
