//! Rows of the output collections of SPEC §3, as the graph maintains them.
//!
//! Fields are in the SPEC's column order. Decimal columns are exact
//! [`Decimal`]s (the serving layer widens them to `Decimal128(38, 10)`), dates
//! are days since the epoch (`Date32`), counts are unsigned.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::model::{Currency, ExceptionType, InvoiceKind, MatchLevel, PoStatus, Severity, Text};

mod fraction;
mod payments;
pub use fraction::nearest_f64;
pub use payments::*;

/// `status` of an invoice in `invoice_matches`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum MatchStatus {
    Matched,
    /// Every blocking exception is accepted (SPEC §6), and there is one.
    Approved,
    Exception,
    Cancelled,
}

impl MatchStatus {
    /// SPEC §2 Status: of a cancelled invoice, or of an active one with
    /// `open_blocking` open and `accepted_blocking` accepted blocking exceptions.
    pub fn of(active: bool, open_blocking: u32, accepted_blocking: u32) -> MatchStatus {
        if !active {
            MatchStatus::Cancelled
        } else if open_blocking > 0 {
            MatchStatus::Exception
        } else if accepted_blocking > 0 {
            MatchStatus::Approved
        } else {
            MatchStatus::Matched
        }
    }

    /// The wire spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            MatchStatus::Matched => "matched",
            MatchStatus::Approved => "approved",
            MatchStatus::Exception => "exception",
            MatchStatus::Cancelled => "cancelled",
        }
    }
}

/// A row of `invoice_matches`: one per present invoice.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct InvoiceMatchRow {
    pub tenant_id: Text,
    pub invoice_id: Text,
    pub invoice_number: Text,
    pub kind: InvoiceKind,
    pub vendor_id: Text,
    pub po_number: Text,
    pub currency: Currency,
    pub invoice_date: i32,
    pub status: MatchStatus,
    pub line_count: u32,
    pub invoice_amount: Decimal,
    pub exception_count: u32,
    /// Open blocking exceptions: not accepted.
    pub blocking_count: u32,
    /// Accepted blocking exceptions.
    pub accepted_count: u32,
    /// `invoice_amount` + tax + freight.
    pub gross_amount: Decimal,
    /// Σ of the payment amounts applied to it (SPEC §8).
    pub paid_amount: Decimal,
    pub payment_status: InvoicePaymentStatus,
}

/// A row of `match_exceptions`: one per raised exception.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ExceptionRow {
    pub tenant_id: Text,
    pub invoice_id: Text,
    pub po_number: Text,
    pub vendor_id: Text,
    pub po_line_no: Option<u32>,
    pub exception_type: ExceptionType,
    pub expected: Option<Decimal>,
    pub actual: Option<Decimal>,
    /// A sentence for the AP analyst.
    pub detail: Text,
    /// The analyst's decision on it, if any (SPEC §6).
    pub resolution: Option<ResolutionRecord>,
}

impl ExceptionRow {
    /// `blocking` or `warning`, from the type.
    pub fn severity(&self) -> Severity {
        self.exception_type.severity()
    }
    /// Whether the exception still needs a decision: it is not accepted.
    pub fn is_open(&self) -> bool {
        ResolutionRecord::leaves_open(self.resolution.as_ref())
    }
}

/// `resolution` of a `match_exceptions` row (SPEC §6).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Resolution {
    /// Accepted as it stands: no longer open.
    Accepted,
    /// Confirmed or disputed: still open.
    Rejected,
    /// Accepted for an `actual` that is no longer the exception's: open again.
    Lapsed,
}

impl Resolution {
    /// The wire spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            Resolution::Accepted => "accepted",
            Resolution::Rejected => "rejected",
            Resolution::Lapsed => "lapsed",
        }
    }
}

/// A decision as a `match_exceptions` row records it: the `resolution`
/// columns, filled together.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ResolutionRecord {
    pub resolution: Resolution,
    pub resolved_by: Text,
    /// Milliseconds since the Unix epoch, UTC.
    pub resolved_at: i64,
    pub reason: Option<Text>,
}

impl ResolutionRecord {
    /// Whether an exception with this resolution (or none) is still open:
    /// only an acceptance closes it.
    pub fn leaves_open(record: Option<&ResolutionRecord>) -> bool {
        record.is_none_or(|record| record.resolution != Resolution::Accepted)
    }
}

/// A row of `po_lines`: one per line of a present PO.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PoLineRow {
    pub tenant_id: Text,
    pub po_number: Text,
    pub line_no: u32,
    pub vendor_id: Text,
    pub currency: Currency,
    pub po_status: PoStatus,
    pub sku: Option<Text>,
    pub ordered_qty: Decimal,
    pub unit_price: Decimal,
    pub received_qty: Decimal,
    pub billed_qty: Decimal,
    pub invoice_count: u32,
    /// §12.2's effective level and §12.1's category of the line.
    pub match_level: MatchLevel,
    pub category: Option<Text>,
    pub accepted_qty: Decimal,
}

/// A row of `exception_summary`: one per (tenant, exception type) with exceptions.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ExceptionSummaryRow {
    pub tenant_id: Text,
    pub exception_type: ExceptionType,
    pub exception_count: u64,
    /// Distinct invoices with at least one exception of this type.
    pub invoice_count: u64,
    /// Exceptions of this type not accepted (SPEC §6).
    pub open_count: u64,
}

impl ExceptionSummaryRow {
    /// `blocking` or `warning`, from the type.
    pub fn severity(&self) -> Severity {
        self.exception_type.severity()
    }
}

/// `matched_by` of a `po_suggestions` row: how the PO was found (SPEC §7).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum MatchedBy {
    /// Its normalized number equals the invoice's.
    Number,
    /// Its open amount is close to the invoice's amount.
    Amount,
}

impl MatchedBy {
    /// The wire spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            MatchedBy::Number => "number",
            MatchedBy::Amount => "amount",
        }
    }
}

/// A row of `po_suggestions`: one of the (at most three) POs a
/// `PO_NOT_FOUND` invoice most likely belongs to (SPEC §7).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PoSuggestionRow {
    pub tenant_id: Text,
    pub invoice_id: Text,
    /// 1 to 3, best first.
    pub rank: u32,
    pub po_number: Text,
    pub matched_by: MatchedBy,
    /// The PO's open amount − the invoice's amount; `None` for `number`.
    pub amount_difference: Option<Decimal>,
    /// The score as the exact fraction `score_numerator / score_denominator`
    /// (kept exact so that rows compare exactly; served as a Float64).
    pub score_numerator: Decimal,
    pub score_denominator: Decimal,
}

impl PoSuggestionRow {
    /// The score: the exact fraction rounded once to a float (SPEC §7).
    pub fn score(&self) -> f64 {
        nearest_f64(self.score_numerator, self.score_denominator)
    }
}

/// A row of `dead_letters`: one rejected message (SPEC §1.3). The engine keeps
/// only the most recent ones (see [`crate::MatchConfig::dead_letter_capacity`]).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DeadLetterRow {
    pub topic: Text,
    pub partition: i32,
    pub offset: i64,
    /// The message key as text (lossily decoded if it was not UTF-8).
    pub key: Option<Text>,
    pub reason: Text,
    /// When it was rejected, in milliseconds since the Unix epoch.
    pub rejected_at: i64,
}

impl DeadLetterRow {
    /// The most bytes of a key, and of a reason, a row keeps: `dead_letters`
    /// is held in memory, and a hostile producer could send megabyte keys.
    /// The dead-letter topic keeps the original in full.
    pub const MAX_TEXT_BYTES: usize = 1024;

    /// A row with the key (decoded as UTF-8, lossily) and the reason cut to
    /// [`MAX_TEXT_BYTES`](Self::MAX_TEXT_BYTES), marked where cut.
    pub fn bounded(
        topic: Text,
        partition: i32,
        offset: i64,
        key: Option<&[u8]>,
        reason: &str,
        rejected_at: i64,
    ) -> Self {
        DeadLetterRow {
            topic,
            partition,
            offset,
            key: key.map(|key| truncated(&String::from_utf8_lossy(key), Self::MAX_TEXT_BYTES)),
            reason: truncated(reason, Self::MAX_TEXT_BYTES),
            rejected_at,
        }
    }
}

/// `text`, or its first bytes (on a character boundary) and a marker saying
/// how long it was, in at most `max` bytes.
fn truncated(text: &str, max: usize) -> Text {
    if text.len() <= max {
        return Text::from(text);
    }
    let marker = format!("… (truncated; {} bytes)", text.len());
    let mut cut = max.saturating_sub(marker.len());
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    Text::from(format!("{}{marker}", &text[..cut]))
}

/// A row of `source_progress`: how far one input partition is reflected.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SourceProgressRow {
    pub topic: Text,
    pub partition: i32,
    /// The first offset not yet reflected.
    pub next_offset: i64,
    /// The partition's high watermark as last seen by the consumer.
    pub high_watermark: i64,
    /// `high_watermark - next_offset`, at least 0.
    pub lag: u64,
    /// Whether the partition makes progress (SPEC §3).
    pub state: PartitionHealth,
    /// Why it is stalled or skipped: a sentence for a person.
    pub state_reason: Option<Text>,
}

/// The `state` of a `source_progress` row.
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub enum PartitionHealth {
    /// Reading as it should.
    #[default]
    Ok,
    /// It cannot make progress: an unreadable batch, authorization denied, a
    /// topic re-created below `next_offset`.
    Stalled,
    /// The broker's offset reset skipped offsets it no longer holds (the
    /// range is a `dead_letters` row).
    Skipped,
}

impl PartitionHealth {
    /// The wire spelling: `ok`, `stalled`, `skipped`.
    pub fn as_str(&self) -> &'static str {
        match self {
            PartitionHealth::Ok => "ok",
            PartitionHealth::Stalled => "stalled",
            PartitionHealth::Skipped => "skipped",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letter_keys_and_reasons_are_cut_with_a_marker() {
        let long = "é".repeat(2_000);
        let row = DeadLetterRow::bounded(Text::from("t"), 0, 7, Some(long.as_bytes()), &long, 0);
        for text in [row.key.as_deref().unwrap(), row.reason.as_str()] {
            assert!(
                text.len() <= DeadLetterRow::MAX_TEXT_BYTES,
                "{}",
                text.len()
            );
            assert!(text.ends_with("… (truncated; 4000 bytes)"), "{text}");
            assert!(text.starts_with("éé"));
        }
        let short = DeadLetterRow::bounded(Text::from("t"), 0, 7, Some(b"k"), "why", 0);
        assert_eq!(
            (short.key.as_deref(), short.reason.as_str()),
            (Some("k"), "why")
        );
    }
}
