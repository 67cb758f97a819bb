//! Any bytes as the Arrow IPC messages of a DoPut that binds a prepared
//! statement's parameters (SPEC §10): a bound statement or INVALID_ARGUMENT,
//! never a panic or an abort (an allocation sized from a length in the
//! input is one: libFuzzer's -malloc_limit_mb reports it).
//!
//! The first byte picks what the rest is:
//! * even: framed messages, as `parameters::frame` writes them;
//! * odd: byte edits (position, value pairs) to a real binding, so that
//!   most inputs get past the framing into Arrow's decoder.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use trimatch::serve::flight_sql::fuzzing;

static EXAMPLE: OnceLock<Vec<u8>> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        let _ = fuzzing::bind_parameters(rest);
        return;
    }
    let mut framed = EXAMPLE.get_or_init(fuzzing::framed_example).clone();
    for edit in rest.chunks_exact(3) {
        let at = u16::from_le_bytes([edit[0], edit[1]]) as usize % framed.len();
        framed[at] = edit[2];
    }
    let _ = fuzzing::bind_parameters(&framed);
});
