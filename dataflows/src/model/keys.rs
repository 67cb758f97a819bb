//! The identities the matching graph keys documents and groups by:
//! [`Fingerprint`]s of the identity strings, and the normalizations that
//! decide which documents share a group.

use serde::{Deserialize, Serialize};

use super::codes::{Currency, ExceptionType};

/// A 128-bit fingerprint of an identity (e.g. `tenant_id` + `po_number`).
///
/// Fingerprints are stable across processes and builds (xxh3-128 of the
/// length-prefixed parts), so timely workers in different processes agree on them.
/// With 128 bits the chance that two of a billion identities collide is about
/// 10^-21; the graph relies on fingerprints being unique.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Fingerprint(pub u128);

impl Fingerprint {
    /// Fingerprint of a sequence of parts. Parts are length-prefixed, so
    /// `("ab", "c")` and `("a", "bc")` differ. `domain` separates the kinds of
    /// identity (a PO and an invoice with the same number never share a key).
    pub fn of(domain: u8, parts: &[&str]) -> Self {
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        hasher.update(&[domain]);
        for part in parts {
            hasher.update(&(part.len() as u64).to_le_bytes());
            hasher.update(part.as_bytes());
        }
        Fingerprint(hasher.digest128())
    }
}

/// Identity of a tenant (the key of `match_policies`).
pub fn tenant_key(tenant_id: &str) -> Fingerprint {
    Fingerprint::of(1, &[tenant_id])
}
/// Identity of a match policy: (`tenant_id`, `vendor_id`, `category`),
/// either optional. A tenant policy's is its tenant's key, as before scopes
/// existed.
pub fn policy_key(tenant_id: &str, vendor_id: Option<&str>, category: Option<&str>) -> Fingerprint {
    match (vendor_id, category) {
        (None, None) => tenant_key(tenant_id),
        (vendor, category) => Fingerprint::of(
            10,
            &[tenant_id, vendor.unwrap_or(""), category.unwrap_or("")],
        ),
    }
}

/// Identity of a purchase order: (`tenant_id`, `po_number`). Its top bits
/// are its tenant's ([`keys_of_tenant`]): `po_lines` is served from the
/// per-PO arrangement.
pub fn po_key(tenant_id: &str, po_number: &str) -> Fingerprint {
    tenant_scoped(2, tenant_id, po_number)
}

/// The identity of a document that an output served by document key is
/// read by: its top [`TENANT_PREFIX_BITS`] bits are a hash of the tenant
/// alone, so that the documents of one tenant sort together, and a
/// one-tenant read of such an output is a seek to [`keys_of_tenant`] rather
/// than a scan. The other 96 bits still make a collision between two
/// documents unlikely beyond concern (about 10^-11 for a billion in one
/// tenant).
fn tenant_scoped(domain: u8, tenant_id: &str, id: &str) -> Fingerprint {
    let identity = Fingerprint::of(domain, &[tenant_id, id]).0;
    Fingerprint(tenant_prefix(tenant_id) | (identity & !TENANT_PREFIX_MASK))
}

/// How many of a tenant-scoped key's top bits name its tenant.
pub const TENANT_PREFIX_BITS: u32 = 32;
const TENANT_PREFIX_MASK: u128 = !(u128::MAX >> TENANT_PREFIX_BITS);

/// The tenant's hash in the top bits, the rest zero.
fn tenant_prefix(tenant_id: &str) -> u128 {
    tenant_key(tenant_id).0 & TENANT_PREFIX_MASK
}

/// The range of keys (inclusive) that the POs, invoices and payments of
/// `tenant_id` have: the top [`TENANT_PREFIX_BITS`] bits of their keys are a
/// hash of the tenant alone, so that the documents of one tenant sort
/// together, and a one-tenant read of an output served by document key is a
/// seek here rather than a scan. Another tenant's documents fall in it only
/// if the two tenants' prefixes collide, so readers still check each row's
/// `tenant_id`.
pub fn keys_of_tenant(tenant_id: &str) -> (Fingerprint, Fingerprint) {
    let prefix = tenant_prefix(tenant_id);
    (
        Fingerprint(prefix),
        Fingerprint(prefix | !TENANT_PREFIX_MASK),
    )
}
/// Identity of a goods receipt: (`tenant_id`, `receipt_id`).
pub fn receipt_key(tenant_id: &str, receipt_id: &str) -> Fingerprint {
    Fingerprint::of(3, &[tenant_id, receipt_id])
}
/// Identity of an invoice or credit memo: (`tenant_id`, `invoice_id`). Its
/// top bits are its tenant's ([`keys_of_tenant`]): `invoice_matches` is
/// served from the per-invoice rows.
pub fn invoice_key(tenant_id: &str, invoice_id: &str) -> Fingerprint {
    tenant_scoped(4, tenant_id, invoice_id)
}
/// Group of possible duplicates: (`tenant_id`, `vendor_id`, normalized `invoice_number`).
pub fn duplicate_group_key(tenant_id: &str, vendor_id: &str, invoice_number: &str) -> Fingerprint {
    Fingerprint::of(
        5,
        &[
            tenant_id,
            vendor_id,
            &normalize_invoice_number(invoice_number),
        ],
    )
}

/// The invoice number as duplicate detection compares it: trimmed, ASCII upper-cased.
pub fn normalize_invoice_number(invoice_number: &str) -> String {
    invoice_number.trim().to_ascii_uppercase()
}

/// Identity of an exception resolution, and of the raised exception it
/// applies to (SPEC §6): (`tenant_id`, `invoice_id`, `exception_type`,
/// `po_line_no`), a header exception's line number being null.
pub fn resolution_key(
    tenant_id: &str,
    invoice_id: &str,
    exception_type: ExceptionType,
    po_line_no: Option<u32>,
) -> Fingerprint {
    let line = po_line_no.map(|n| n.to_string()).unwrap_or_default();
    Fingerprint::of(6, &[tenant_id, invoice_id, exception_type.as_str(), &line])
}

/// Identity of a payment: (`tenant_id`, `payment_id`). Its top bits are its
/// tenant's ([`keys_of_tenant`]): `payment_matches` is served from the
/// per-payment rows.
pub fn payment_key(tenant_id: &str, payment_id: &str) -> Fingerprint {
    tenant_scoped(8, tenant_id, payment_id)
}

/// The invoices a payment without allocations may be applied to share its
/// (`tenant_id`, `vendor_id`) and normalized reference (SPEC §8).
pub fn reference_key(tenant_id: &str, vendor_id: &str, normalized: &str) -> Fingerprint {
    Fingerprint::of(9, &[tenant_id, vendor_id, normalized])
}

/// The POs a `PO_NOT_FOUND` invoice may belong to share its (`tenant_id`,
/// `vendor_id`, `currency`) (SPEC §7).
pub fn vendor_currency_key(tenant_id: &str, vendor_id: &str, currency: Currency) -> Fingerprint {
    Fingerprint::of(7, &[tenant_id, vendor_id, currency.as_str()])
}

/// A document number as PO suggestions (and payment references) compare it
/// (SPEC §7): ASCII upper-cased, only `A–Z` and `0–9` kept, and the leading
/// zeros of every run of digits dropped (a run of zeros becomes `0`):
/// `po-01001` → `PO1001`, `2026-0042` → `20260042`.
pub fn normalize_document_number(number: &str) -> String {
    let kept: Vec<u8> = number
        .bytes()
        .map(|byte| byte.to_ascii_uppercase())
        .filter(|byte| byte.is_ascii_uppercase() || byte.is_ascii_digit())
        .collect();
    let mut normalized = String::with_capacity(kept.len());
    for run in kept.chunk_by(|a, b| a.is_ascii_digit() == b.is_ascii_digit()) {
        let start = if run[0].is_ascii_digit() {
            // The first significant digit, or the last zero of a run of zeros.
            run.iter()
                .position(|&digit| digit != b'0')
                .unwrap_or(run.len() - 1)
        } else {
            0
        };
        normalized.extend(run[start..].iter().map(|&byte| byte as char));
    }
    normalized
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_numbers_normalize_as_spec_7_says() {
        for (number, normalized) in [
            ("po-01001", "PO1001"),
            ("PO1001", "PO1001"),
            ("2026-0042", "20260042"),
            ("PO-000", "PO0"),
            ("0", "0"),
            ("A00B007", "A0B7"),
            (" inv 0012 / 03 ", "INV1203"),
            ("é-ß", ""),
            ("", ""),
        ] {
            assert_eq!(normalize_document_number(number), normalized, "{number:?}");
        }
    }

    #[test]
    fn served_document_keys_sort_by_tenant() {
        type Key = fn(&str, &str) -> Fingerprint;
        let kinds: [(&str, Key); 3] = [
            ("po", po_key),
            ("invoice", invoice_key),
            ("payment", payment_key),
        ];
        for (kind, key) in kinds {
            for tenant in ["t-001", "t-002", "acme"] {
                let (first, last) = keys_of_tenant(tenant);
                for id in ["D-1", "D-2", "D-100000"] {
                    let key = key(tenant, id);
                    assert!(first <= key && key <= last, "{kind} {tenant}/{id}");
                }
                assert_ne!(key(tenant, "D-1"), key(tenant, "D-2"), "{kind}");
            }
            // Another tenant's document falls outside the range (these two
            // do not collide).
            let (first, last) = keys_of_tenant("t-001");
            assert!(!(first..=last).contains(&key("t-002", "D-1")), "{kind}");
        }
        // The kinds stay apart within a tenant.
        assert_ne!(po_key("t-001", "X"), invoice_key("t-001", "X"));
        assert_ne!(invoice_key("t-001", "X"), payment_key("t-001", "X"));
    }
}
