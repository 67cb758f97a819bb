//! Any bytes as the Arrow IPC messages of a DoPut that binds a prepared
//! statement's parameters (SPEC §10): a bound statement or INVALID_ARGUMENT,
//! never a panic or an abort. What the bytes are:
//! `trimatch::serve::flight_sql::fuzzing::parameters_input`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trimatch::serve::flight_sql::fuzzing;

fuzz_target!(|data: &[u8]| {
    let _ = fuzzing::parameters_input(data);
});
