//! Any key and value bytes through both envelopes (SPEC §1.1) for every
//! document kind: a change, a skip or a rejection, never a panic. The first
//! byte splits the input into key and value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trimatch_connectors::envelope::decode_message;
use trimatch_connectors::Envelope;
use trimatch_dataflows::model::DocumentKind;

fuzz_target!(|data: &[u8]| {
    let Some((split, rest)) = data.split_first() else {
        return;
    };
    let (key, value) = rest.split_at(usize::from(*split).min(rest.len()));
    for kind in DocumentKind::ALL {
        for envelope in [Envelope::Upsert, Envelope::Debezium] {
            let _ = decode_message(kind, envelope, Some(key), Some(value));
            let _ = decode_message(kind, envelope, Some(value), None);
        }
    }
});
