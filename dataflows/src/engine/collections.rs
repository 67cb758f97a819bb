//! The catalogue of output collections: each collection of SPEC §3, §7 and
//! §8 with its name and key columns, and [`Row`], a row of any of them.

use crate::rows::*;

/// The output collections of SPEC §3 that the graph maintains.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OutputCollection {
    InvoiceMatches,
    MatchExceptions,
    PoLines,
    ExceptionSummary,
    PoSuggestions,
    PaymentMatches,
    PaymentExceptions,
    PaymentSuggestions,
    DeadLetters,
    SourceProgress,
}

impl OutputCollection {
    /// Every collection of SPEC §3, in SPEC order.
    pub const ALL: [OutputCollection; 10] = [
        OutputCollection::InvoiceMatches,
        OutputCollection::MatchExceptions,
        OutputCollection::PoLines,
        OutputCollection::ExceptionSummary,
        OutputCollection::PoSuggestions,
        OutputCollection::PaymentMatches,
        OutputCollection::PaymentExceptions,
        OutputCollection::PaymentSuggestions,
        OutputCollection::DeadLetters,
        OutputCollection::SourceProgress,
    ];
    /// The collections the matching rules derive (keyed by tenant); the others
    /// are the sources' bookkeeping (keyed by topic).
    pub const MATCHING: [OutputCollection; 8] = [
        OutputCollection::InvoiceMatches,
        OutputCollection::MatchExceptions,
        OutputCollection::PoLines,
        OutputCollection::ExceptionSummary,
        OutputCollection::PoSuggestions,
        OutputCollection::PaymentMatches,
        OutputCollection::PaymentExceptions,
        OutputCollection::PaymentSuggestions,
    ];
    /// The collection's name in SPEC §3.
    pub fn name(&self) -> &'static str {
        match self {
            OutputCollection::InvoiceMatches => "invoice_matches",
            OutputCollection::MatchExceptions => "match_exceptions",
            OutputCollection::PoLines => "po_lines",
            OutputCollection::ExceptionSummary => "exception_summary",
            OutputCollection::PoSuggestions => "po_suggestions",
            OutputCollection::PaymentMatches => "payment_matches",
            OutputCollection::PaymentExceptions => "payment_exceptions",
            OutputCollection::PaymentSuggestions => "payment_suggestions",
            OutputCollection::DeadLetters => "dead_letters",
            OutputCollection::SourceProgress => "source_progress",
        }
    }
    /// The columns of the collection's key (SPEC §3), in order: no two rows
    /// of one time have the same values in them.
    pub fn key_columns(&self) -> &'static [&'static str] {
        match self {
            OutputCollection::InvoiceMatches => &["tenant_id", "invoice_id"],
            OutputCollection::MatchExceptions => {
                &["tenant_id", "invoice_id", "exception_type", "po_line_no"]
            }
            OutputCollection::PoLines => &["tenant_id", "po_number", "line_no"],
            OutputCollection::ExceptionSummary => &["tenant_id", "exception_type"],
            OutputCollection::PoSuggestions => &["tenant_id", "invoice_id", "rank"],
            OutputCollection::PaymentMatches => &["tenant_id", "payment_id"],
            OutputCollection::PaymentExceptions => {
                &["tenant_id", "payment_id", "exception_type", "invoice_id"]
            }
            OutputCollection::PaymentSuggestions => &["tenant_id", "payment_id", "rank"],
            OutputCollection::DeadLetters => &["topic", "partition", "offset"],
            OutputCollection::SourceProgress => &["topic", "partition"],
        }
    }
    /// The collection with this name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|collection| collection.name() == name)
    }
}

/// A row of any output collection.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Row {
    InvoiceMatch(InvoiceMatchRow),
    Exception(ExceptionRow),
    PoLine(PoLineRow),
    ExceptionSummary(ExceptionSummaryRow),
    PoSuggestion(PoSuggestionRow),
    PaymentMatch(PaymentMatchRow),
    PaymentException(PaymentExceptionRow),
    PaymentSuggestion(PaymentSuggestionRow),
    DeadLetter(DeadLetterRow),
    SourceProgress(SourceProgressRow),
}

impl Row {
    /// The collection the row belongs to.
    pub fn collection(&self) -> OutputCollection {
        match self {
            Row::InvoiceMatch(_) => OutputCollection::InvoiceMatches,
            Row::Exception(_) => OutputCollection::MatchExceptions,
            Row::PoLine(_) => OutputCollection::PoLines,
            Row::ExceptionSummary(_) => OutputCollection::ExceptionSummary,
            Row::PoSuggestion(_) => OutputCollection::PoSuggestions,
            Row::PaymentMatch(_) => OutputCollection::PaymentMatches,
            Row::PaymentException(_) => OutputCollection::PaymentExceptions,
            Row::PaymentSuggestion(_) => OutputCollection::PaymentSuggestions,
            Row::DeadLetter(_) => OutputCollection::DeadLetters,
            Row::SourceProgress(_) => OutputCollection::SourceProgress,
        }
    }
}
