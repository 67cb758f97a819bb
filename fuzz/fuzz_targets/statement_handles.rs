//! Any bytes as a Flight SQL statement handle a client sends back (SPEC
//! §10): refused with INVALID_ARGUMENT unless the server sealed it, never a
//! panic or an abort. The first byte picks what the rest is:
//! * even: the handle itself, as a client could forge it;
//! * odd: the bound parameters inside a handle the server did seal (what a
//!   client could send only with the key): read through the same checks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trimatch::serve::flight_sql::fuzzing;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let _ = if mode % 2 == 0 {
        fuzzing::open_handle(rest)
    } else {
        fuzzing::open_sealed_parameters(rest)
    };
});
