//! Reading one worker's shard of the outputs: snapshots as of a time (with a
//! filter, a limit, or just a count) and the changes over a range of times,
//! straight from the output arrangements (for `invoice_matches`, `po_lines`
//! and `payment_matches`, the per-document arrangements their rows live in).

use std::sync::Arc;

use differential_dataflow::operators::arrange::TraceAgent;
use differential_dataflow::trace::cursor::{cursor_list, Cursor};
use differential_dataflow::trace::implementations::ValSpine;
use differential_dataflow::trace::TraceReader;
use timely::progress::frontier::AntichainRef;

use rust_decimal::Decimal;

use super::{Matcher, OutputCollection, ReadError, Row};
use crate::graph::lines::PoLineFacts;
use crate::model::{keys_of_tenant, Fingerprint, Payment, Text, Time};
use crate::rows::*;
use crate::Change;

impl Matcher {
    /// This worker's shard of `collection` as of `as_of`: every row with its
    /// multiplicity (always 1 for a correct graph), in key order. With `key`,
    /// only the rows of that key (a seek, not a scan): the tenant for the
    /// matching collections, the topic for `dead_letters` and `source_progress`.
    pub fn read(
        &mut self,
        collection: OutputCollection,
        as_of: Time,
        key: Option<&str>,
    ) -> Result<Vec<(Row, isize)>, ReadError> {
        self.read_filtered(collection, as_of, key, &|_| true, usize::MAX)
    }

    /// Like [`read`](Self::read), keeping only rows that pass `filter`, and at
    /// most `limit` of them.
    pub fn read_filtered(
        &mut self,
        collection: OutputCollection,
        as_of: Time,
        key: Option<&str>,
        filter: &dyn Fn(&Row) -> bool,
        limit: usize,
    ) -> Result<Vec<(Row, isize)>, ReadError> {
        self.check_complete(as_of)?;
        let mut rows = Vec::new();
        if limit == 0 {
            return Ok(rows);
        }
        self.visit(collection, as_of, key, &mut |row, updates| {
            let count: isize = updates
                .iter()
                .filter(|(time, _)| *time <= as_of)
                .map(|(_, diff)| diff)
                .sum();
            if count != 0 && filter(&row) {
                rows.push((row, count));
                if rows.len() >= limit {
                    return Visit::Stop;
                }
            }
            Visit::Continue
        })?;
        Ok(rows)
    }

    /// How many rows this worker's shard of `collection` has as of `as_of`.
    pub fn count(&mut self, collection: OutputCollection, as_of: Time) -> Result<u64, ReadError> {
        self.check_complete(as_of)?;
        let mut count = 0u64;
        self.visit_updates(collection, as_of, None, &mut |updates| {
            let multiplicity: isize = updates
                .iter()
                .filter(|(time, _)| *time <= as_of)
                .map(|(_, diff)| diff)
                .sum();
            count += multiplicity.max(0) as u64;
        })?;
        Ok(count)
    }

    /// The changes this worker's shard of `collection` went through at times
    /// `from ..= through`, consolidated, in row order (not time order).
    /// Refused if history before `from` has been compacted or `through` is not
    /// complete.
    pub fn read_changes(
        &mut self,
        collection: OutputCollection,
        from: Time,
        through: Time,
        key: Option<&str>,
        filter: &dyn Fn(&Row) -> bool,
    ) -> Result<Vec<Change>, ReadError> {
        self.check_complete(through)?;
        let mut changes = Vec::new();
        let mut in_range: Vec<(Time, isize)> = Vec::new();
        self.visit(collection, from, key, &mut |row, updates| {
            in_range.clear();
            in_range.extend(
                updates
                    .iter()
                    .filter(|(time, _)| (from..=through).contains(time)),
            );
            if in_range.is_empty() || !filter(&row) {
                return Visit::Continue;
            }
            differential_dataflow::consolidation::consolidate(&mut in_range);
            for (time, diff) in in_range.iter() {
                changes.push((row.clone(), *time, *diff));
            }
            Visit::Continue
        })?;
        // Values of an output keyed by document carry more than the row (the
        // PO behind a PO line, an invoice's tolerance), so two values may
        // make one row: a change of what the row does not show retracts and
        // re-adds the same row, which nets to nothing.
        differential_dataflow::consolidation::consolidate_updates(&mut changes);
        Ok(changes)
    }

    pub(super) fn check_complete(&self, as_of: Time) -> Result<(), ReadError> {
        let newest = self.newest_complete();
        if newest.is_none_or(|newest| as_of > newest) {
            return Err(ReadError::NotComplete {
                as_of,
                newest: newest.unwrap_or(0),
            });
        }
        Ok(())
    }

    /// Visits every row of `collection` (of `key`) with its updates.
    fn visit(
        &mut self,
        collection: OutputCollection,
        from: Time,
        key: Option<&str>,
        visit: &mut dyn FnMut(Row, &[Update]) -> Visit,
    ) -> Result<(), ReadError> {
        self.traces.get(collection).visit_rows(from, key, visit)
    }

    /// Visits the updates of every row of `collection`, without building rows.
    fn visit_updates(
        &mut self,
        collection: OutputCollection,
        from: Time,
        key: Option<&str>,
        visit: &mut dyn FnMut(&[Update]),
    ) -> Result<(), ReadError> {
        self.traces.get(collection).visit_updates(from, key, visit)
    }
}

/// One output's trace, as reads and compaction see it, whatever its key and
/// value types: the engine keeps a table of these by collection.
pub(super) trait OutputTrace {
    /// Lets the trace forget history before `frontier` (logical compaction).
    fn set_logical_compaction(&mut self, frontier: AntichainRef<Time>);
    /// Visits every row (of `key`, if given) with its updates.
    fn visit_rows(
        &mut self,
        from: Time,
        key: Option<&str>,
        visit: &mut dyn FnMut(Row, &[Update]) -> Visit,
    ) -> Result<(), ReadError>;
    /// Visits the updates of every row, without building rows.
    fn visit_updates(
        &mut self,
        from: Time,
        key: Option<&str>,
        visit: &mut dyn FnMut(&[Update]),
    ) -> Result<(), ReadError>;
}

impl<K, V> OutputTrace for TraceAgent<ValSpine<K, V, Time, isize>>
where
    K: OutputKey + Clone + 'static,
    V: OutputValue + Clone + Ord + 'static,
{
    fn set_logical_compaction(&mut self, frontier: AntichainRef<Time>) {
        TraceReader::set_logical_compaction(self, frontier);
    }

    fn visit_rows(
        &mut self,
        from: Time,
        key: Option<&str>,
        visit: &mut dyn FnMut(Row, &[Update]) -> Visit,
    ) -> Result<(), ReadError> {
        visit_trace(self, from, key, |value, updates| match value.row(key) {
            Some(row) => visit(row, updates),
            None => Visit::Continue,
        })
    }

    fn visit_updates(
        &mut self,
        from: Time,
        key: Option<&str>,
        visit: &mut dyn FnMut(&[Update]),
    ) -> Result<(), ReadError> {
        visit_trace(self, from, key, |value, updates| {
            if value.belongs_to(key) {
                visit(updates);
            }
            Visit::Continue
        })
    }
}

/// The key of an output trace: which keys hold the rows of one tenant (or topic).
pub(super) trait OutputKey: Ord + Sized {
    /// The first and last keys (inclusive) that may hold the rows of `key`.
    fn range_of(key: &str) -> (Self, Self);
}

/// The outputs keyed by tenant (or topic) hold exactly its rows under its key.
impl OutputKey for Text {
    fn range_of(key: &str) -> (Self, Self) {
        (Text::from(key), Text::from(key))
    }
}

/// `invoice_matches`, `po_lines` and `payment_matches` are keyed by the
/// document a row is about, and the keys of one tenant's documents sort
/// together.
impl OutputKey for Fingerprint {
    fn range_of(key: &str) -> (Self, Self) {
        keys_of_tenant(key)
    }
}

/// A value of an output trace: a row of the collection.
pub(super) trait OutputValue {
    /// The row, if it belongs to `key` (the tenant or topic asked for, if any).
    fn row(&self, key: Option<&str>) -> Option<Row>;
    /// Whether the row belongs to `key`.
    fn belongs_to(&self, _key: Option<&str>) -> bool {
        true
    }
}

macro_rules! output_rows {
    ($($row:ty => $variant:ident),* $(,)?) => {$(
        impl OutputValue for $row {
            fn row(&self, _key: Option<&str>) -> Option<Row> {
                Some(Row::$variant(self.clone()))
            }
        }
    )*};
}
output_rows! {
    ExceptionRow => Exception,
    ExceptionSummaryRow => ExceptionSummary,
    PoSuggestionRow => PoSuggestion,
    PaymentExceptionRow => PaymentException,
    PaymentSuggestionRow => PaymentSuggestion,
    DeadLetterRow => DeadLetter,
    SourceProgressRow => SourceProgress,
}

/// The key range of a tenant in an output keyed by document may hold another
/// tenant's documents (if their prefixes collide); the row's own tenant decides.
impl OutputValue for PoLineFacts {
    fn row(&self, key: Option<&str>) -> Option<Row> {
        self.belongs_to(key).then(|| Row::PoLine(self.to_row()))
    }
    fn belongs_to(&self, key: Option<&str>) -> bool {
        key.is_none_or(|key| self.po().tenant_id == key)
    }
}

/// An `invoice_matches` row, with the `total_tolerance_abs` the graph keeps
/// beside it.
impl OutputValue for (InvoiceMatchRow, Decimal) {
    fn row(&self, key: Option<&str>) -> Option<Row> {
        self.belongs_to(key)
            .then(|| Row::InvoiceMatch(self.0.clone()))
    }
    fn belongs_to(&self, key: Option<&str>) -> bool {
        key.is_none_or(|key| self.0.tenant_id == key)
    }
}

/// A `payment_matches` row, with the payment the graph keeps beside it.
impl OutputValue for (PaymentMatchRow, Arc<Payment>) {
    fn row(&self, key: Option<&str>) -> Option<Row> {
        self.belongs_to(key)
            .then(|| Row::PaymentMatch(self.0.clone()))
    }
    fn belongs_to(&self, key: Option<&str>) -> bool {
        key.is_none_or(|key| self.0.tenant_id == key)
    }
}

/// Calls `visit` with every value of `trace` (only those under the keys of
/// `key`, if given, found by a seek) and its updates as `(time, diff)` pairs,
/// in key and value order. Refuses if history before `from` has been
/// compacted away.
fn visit_trace<K: OutputKey + Clone + 'static, V: Clone + Ord + 'static>(
    trace: &mut TraceAgent<ValSpine<K, V, Time, isize>>,
    from: Time,
    key: Option<&str>,
    mut visit: impl FnMut(&V, &[Update]) -> Visit,
) -> Result<(), ReadError> {
    let since = trace
        .get_logical_compaction()
        .first()
        .copied()
        .unwrap_or(Time::MAX);
    if from < since {
        return Err(ReadError::Compacted { as_of: from, since });
    }
    let Some(batches) = trace.batches_through(AntichainRef::new(&[])) else {
        return Ok(());
    };
    let (mut cursor, storage) = cursor_list(batches);
    let range = key.map(K::range_of);
    if let Some((first, _)) = &range {
        cursor.seek_key(&storage, first);
    }
    let mut updates = Vec::new();
    while let Some(current) = cursor.get_key(&storage) {
        if range.as_ref().is_some_and(|(_, last)| current > last) {
            break;
        }
        while let Some(value) = cursor.get_val(&storage) {
            updates.clear();
            cursor.map_times(&storage, |time, diff| updates.push((*time, *diff)));
            if visit(value, &updates) == Visit::Stop {
                return Ok(());
            }
            cursor.step_val(&storage);
        }
        cursor.step_key(&storage);
    }
    Ok(())
}

/// One update of a row in an output's history: when, and by how much.
pub(super) type Update = (Time, isize);

/// Whether a trace visit goes on.
#[derive(PartialEq, Eq)]
pub(super) enum Visit {
    Continue,
    Stop,
}

/// Visits every value of a trace keyed by fingerprint that is present as of
/// `as_of` (its updates at times up to it sum above zero), under the keys in
/// `range` (all keys: `None`), in key order. Refused if history before
/// `as_of` has been compacted. Checkpoints and policy previews read with it.
pub(super) fn visit_present<V: Clone + Ord + 'static>(
    trace: &mut TraceAgent<ValSpine<Fingerprint, V, Time, isize>>,
    as_of: Time,
    range: Option<(Fingerprint, Fingerprint)>,
    mut visit: impl FnMut(&Fingerprint, &V),
) -> Result<(), ReadError> {
    let since = trace
        .get_logical_compaction()
        .first()
        .copied()
        .unwrap_or(Time::MAX);
    if as_of < since {
        return Err(ReadError::Compacted { as_of, since });
    }
    let Some(batches) = trace.batches_through(AntichainRef::new(&[])) else {
        return Ok(());
    };
    let (mut cursor, storage) = cursor_list(batches);
    if let Some((first, _)) = &range {
        cursor.seek_key(&storage, first);
    }
    while let Some(key) = cursor.get_key(&storage) {
        if range.as_ref().is_some_and(|(_, last)| key > last) {
            break;
        }
        while let Some(value) = cursor.get_val(&storage) {
            let mut count = 0isize;
            cursor.map_times(&storage, |time, diff| {
                if *time <= as_of {
                    count += *diff;
                }
            });
            if count > 0 {
                visit(key, value);
            }
            cursor.step_val(&storage);
        }
        cursor.step_key(&storage);
    }
    Ok(())
}
