//! Any bytes through every document decoder (SPEC §1.2, §1.3) and the policy
//! preview's body decoder (SPEC §12.4): a document or a rejection, never a
//! panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trimatch_dataflows::decode::decode_document;
use trimatch_dataflows::decode::policy_changes::policy_changes;
use trimatch_dataflows::model::DocumentKind;

fuzz_target!(|data: &[u8]| {
    for kind in DocumentKind::ALL {
        let _ = decode_document(kind, data);
    }
    let _ = policy_changes(data);
});
