//! Any bytes as a Flight ticket (SPEC §5): a query or an error a person can
//! act on, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trimatch::serve::tickets::parse_ticket;

fuzz_target!(|data: &[u8]| {
    let _ = parse_ticket(data);
});
