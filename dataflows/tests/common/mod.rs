//! Test support: a matching engine on N timely workers driven step by step
//! from the test thread, and builders for documents.
#![allow(dead_code)]

pub mod fixtures;
pub mod history;
pub mod oracle;

use std::collections::BTreeMap;
use std::sync::mpsc::{channel, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use trimatch_dataflows::decode::json::JsonObject;
use trimatch_dataflows::decode::{decode_document, identity_fields};
use trimatch_dataflows::engine::{
    Change, MatchConfig, Matcher, OutputCollection, ReadError, Row, ShardCheckpoint,
};
use trimatch_dataflows::model::*;
use trimatch_dataflows::preview;
use trimatch_dataflows::rows::*;

/// One upsert as a source would feed it.
#[derive(Clone, Debug)]
pub struct Feed {
    pub key: Fingerprint,
    pub document: Option<Document>,
    pub offset: i64,
}

impl Feed {
    pub fn put(document: Document) -> Feed {
        Feed {
            key: document.key(),
            document: Some(document),
            offset: 0,
        }
    }
    pub fn delete(key: Fingerprint) -> Feed {
        Feed {
            key,
            document: None,
            offset: 0,
        }
    }
    pub fn at_offset(mut self, offset: i64) -> Feed {
        self.offset = offset;
        self
    }
}

/// Every output collection, merged over all workers, sorted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub invoice_matches: Vec<InvoiceMatchRow>,
    pub match_exceptions: Vec<ExceptionRow>,
    pub po_lines: Vec<PoLineRow>,
    pub exception_summary: Vec<ExceptionSummaryRow>,
    /// With each score in lowest terms as `numerator / 1` (see
    /// [`canonical_score`]), so that equal fractions compare equal.
    pub po_suggestions: Vec<PoSuggestionRow>,
    pub payment_matches: Vec<PaymentMatchRow>,
    pub payment_exceptions: Vec<PaymentExceptionRow>,
    pub payment_suggestions: Vec<PaymentSuggestionRow>,
}

/// The suggestion with its score as one decimal over 1: the engine keeps
/// score fractions over the invoice's amount, the oracle in whatever terms
/// it computes them; equal fractions divide to the same decimal.
pub fn canonical_score(mut row: PoSuggestionRow) -> PoSuggestionRow {
    row.score_numerator = (row.score_numerator / row.score_denominator).normalize();
    row.score_denominator = rust_decimal::Decimal::ONE;
    row
}

impl Snapshot {
    pub fn from_rows(rows: Vec<(Row, isize)>) -> Snapshot {
        let mut snapshot = Snapshot::default();
        for (row, count) in rows {
            assert_eq!(count, 1, "a row with multiplicity {count}: {row:?}");
            match row {
                Row::InvoiceMatch(row) => snapshot.invoice_matches.push(row),
                Row::Exception(row) => snapshot.match_exceptions.push(row),
                Row::PoLine(row) => snapshot.po_lines.push(row),
                Row::ExceptionSummary(row) => snapshot.exception_summary.push(row),
                Row::PoSuggestion(row) => snapshot.po_suggestions.push(canonical_score(row)),
                Row::PaymentMatch(row) => snapshot.payment_matches.push(row),
                Row::PaymentException(row) => snapshot.payment_exceptions.push(row),
                Row::PaymentSuggestion(row) => snapshot.payment_suggestions.push(row),
                other => panic!("not a row of a matching collection: {other:?}"),
            }
        }
        snapshot.invoice_matches.sort();
        snapshot.match_exceptions.sort();
        snapshot.po_lines.sort();
        snapshot.exception_summary.sort();
        snapshot.po_suggestions.sort();
        snapshot.payment_matches.sort();
        snapshot.payment_exceptions.sort();
        snapshot.payment_suggestions.sort();
        snapshot
    }

    /// The exceptions of one invoice as (type, po_line_no) pairs.
    pub fn exceptions_of(&self, invoice_id: &str) -> Vec<(ExceptionType, Option<u32>)> {
        self.match_exceptions
            .iter()
            .filter(|row| &*row.invoice_id == invoice_id)
            .map(|row| (row.exception_type, row.po_line_no))
            .collect()
    }

    /// The exception of one type (and line) of one invoice.
    pub fn exception(
        &self,
        invoice_id: &str,
        kind: ExceptionType,
        line: Option<u32>,
    ) -> Option<&ExceptionRow> {
        self.match_exceptions.iter().find(|row| {
            &*row.invoice_id == invoice_id && row.exception_type == kind && row.po_line_no == line
        })
    }

    /// The `invoice_matches` row of one invoice.
    pub fn invoice(&self, invoice_id: &str) -> &InvoiceMatchRow {
        self.invoice_matches
            .iter()
            .find(|row| &*row.invoice_id == invoice_id)
            .unwrap_or_else(|| {
                panic!(
                    "no invoice_matches row for {invoice_id}: {:#?}",
                    self.invoice_matches
                )
            })
    }

    /// The `po_lines` row of one PO line.
    pub fn po_line(&self, po_number: &str, line_no: u32) -> &PoLineRow {
        self.po_lines
            .iter()
            .find(|row| &*row.po_number == po_number && row.line_no == line_no)
            .unwrap_or_else(|| panic!("no po_lines row for {po_number}/{line_no}"))
    }
}

enum Command {
    Apply {
        feeds: Vec<Feed>,
        time: Time,
    },
    ReadAt {
        as_of: Time,
        tenant: Option<String>,
    },
    ReadChanges {
        from: Time,
        through: Time,
    },
    Count {
        as_of: Time,
    },
    Compact(Time),
    Checkpoint {
        as_of: Time,
    },
    /// Runs on the worker's matcher between steps (it replies on its own channel).
    Run(Box<dyn FnOnce(&mut Matcher) + Send>),
}

type Reply = Result<(Vec<(Row, isize)>, Vec<Change>), ReadError>;

/// A matching engine on `workers` timely workers in this process.
pub struct TestEngine {
    commands: Vec<Sender<Option<Command>>>,
    replies: Receiver<Reply>,
    checkpoints: Receiver<Result<ShardCheckpoint, ReadError>>,
    guards: Option<timely::communication::initialize::WorkerGuards<()>>,
    time: Time,
    /// Every change the outputs went through, over all workers.
    pub changes: Vec<Change>,
}

impl TestEngine {
    pub fn start(workers: usize) -> TestEngine {
        Self::with_config(workers, MatchConfig::default())
    }

    pub fn with_config(workers: usize, config: MatchConfig) -> TestEngine {
        Self::build(workers, config, Vec::new())
    }

    /// An engine restored from a checkpoint (every worker's shard), as of its time.
    pub fn restored(
        workers: usize,
        config: MatchConfig,
        shards: Vec<ShardCheckpoint>,
    ) -> TestEngine {
        let as_of = shards.first().map_or(0, |shard| shard.as_of);
        let mut engine = Self::build(workers, config, shards);
        engine.time = as_of;
        engine
    }

    fn build(workers: usize, config: MatchConfig, shards: Vec<ShardCheckpoint>) -> TestEngine {
        let (reply_tx, replies) = channel::<Reply>();
        let (checkpoint_tx, checkpoints) = channel();
        let checkpoint_tx = Arc::new(Mutex::new(checkpoint_tx));
        let shards = Arc::new(shards);
        let mut commands = Vec::new();
        let mut receivers = Vec::new();
        for _ in 0..workers {
            let (tx, rx) = channel();
            commands.push(tx);
            receivers.push(Some(rx));
        }
        let receivers = Arc::new(Mutex::new(receivers));
        let reply_tx = Arc::new(Mutex::new(reply_tx));
        let guards = timely::execute(timely::Config::process(workers), move |worker| {
            let commands: Receiver<Option<Command>> =
                receivers.lock().unwrap()[worker.index()].take().unwrap();
            let replies = reply_tx.lock().unwrap().clone();
            let checkpoint_replies = checkpoint_tx.lock().unwrap().clone();
            let observed = std::rc::Rc::new(std::cell::RefCell::new(Vec::<Change>::new()));
            let sink = observed.clone();
            let mut matcher = Matcher::build(
                worker,
                &config,
                Some(Box::new(move |changes: &mut Vec<Change>| {
                    sink.borrow_mut().append(changes)
                })),
            );
            if let Some(as_of) = shards.first().map(|shard| shard.as_of) {
                matcher.advance_to(as_of);
                for shard in shards.iter().filter(|shard| shard.worker == worker.index()) {
                    matcher.restore(shard.clone());
                }
                matcher.advance_to(as_of + 1);
                while !matcher.is_complete(as_of) {
                    worker.step();
                }
                // The restore is the starting state, not a change to observe.
                observed.borrow_mut().clear();
            }
            loop {
                let command = match commands.try_recv() {
                    Ok(Some(command)) => command,
                    Ok(None) | Err(TryRecvError::Disconnected) => break,
                    Err(TryRecvError::Empty) => {
                        worker.step_or_park(Some(Duration::from_millis(1)));
                        continue;
                    }
                };
                let reply = match command {
                    Command::Apply { feeds, time } => {
                        for feed in feeds {
                            matcher.upsert(feed.key, feed.document, feed.offset);
                        }
                        matcher.advance_to(time + 1);
                        while !matcher.is_complete(time) {
                            worker.step();
                        }
                        read_all(&mut matcher, time, None)
                            .map(|rows| (rows, std::mem::take(&mut *observed.borrow_mut())))
                    }
                    Command::ReadAt { as_of, tenant } => {
                        read_all(&mut matcher, as_of, tenant.as_deref())
                            .map(|rows| (rows, Vec::new()))
                    }
                    Command::ReadChanges { from, through } => OutputCollection::MATCHING
                        .into_iter()
                        .map(|collection| {
                            matcher.read_changes(collection, from, through, None, &|_| true)
                        })
                        .collect::<Result<Vec<_>, _>>()
                        .map(|changes| (Vec::new(), changes.concat())),
                    Command::Count { as_of } => OutputCollection::MATCHING
                        .into_iter()
                        .map(|collection| matcher.count(collection, as_of))
                        .collect::<Result<Vec<u64>, _>>()
                        .map(|counts| {
                            // Reported as one (row, count) per collection, for the test to sum.
                            let rows = counts
                                .into_iter()
                                .map(|count| (placeholder_row(), count as isize))
                                .collect();
                            (rows, Vec::new())
                        }),
                    Command::Compact(since) => {
                        matcher.allow_compaction(since);
                        Ok((Vec::new(), Vec::new()))
                    }
                    Command::Checkpoint { as_of } => {
                        checkpoint_replies.send(matcher.checkpoint(as_of)).unwrap();
                        continue;
                    }
                    Command::Run(run) => {
                        run(&mut matcher);
                        continue;
                    }
                };
                replies.send(reply).unwrap();
            }
        })
        .expect("timely starts");
        TestEngine {
            commands,
            replies,
            checkpoints,
            guards: Some(guards),
            time: 0,
            changes: Vec::new(),
        }
    }

    /// The time of the most recent [`apply`](Self::apply).
    pub fn time(&self) -> Time {
        self.time
    }

    fn broadcast(
        &mut self,
        mut make: impl FnMut(usize) -> Command,
    ) -> Result<Vec<(Row, isize)>, ReadError> {
        for (index, commands) in self.commands.iter().enumerate() {
            commands.send(Some(make(index))).unwrap();
        }
        let mut rows = Vec::new();
        let mut error = None;
        for _ in 0..self.commands.len() {
            match self.replies.recv().expect("worker replies") {
                Ok((shard, changes)) => {
                    rows.extend(shard);
                    self.changes.extend(changes);
                }
                Err(e) => error = Some(e),
            }
        }
        match error {
            Some(error) => Err(error),
            None => Ok(rows),
        }
    }

    /// Applies one batch at the next time and returns the outputs at that time.
    /// Each upsert goes to the worker its key hashes to, as a Kafka partition
    /// would send all versions of a document to one worker.
    pub fn apply(&mut self, feeds: Vec<Feed>) -> Snapshot {
        self.time += 1;
        let time = self.time;
        let workers = self.commands.len();
        let mut routed: Vec<Vec<Feed>> = vec![Vec::new(); workers];
        for feed in feeds {
            routed[(feed.key.0 % workers as u128) as usize].push(feed);
        }
        let rows = self
            .broadcast(|index| Command::Apply {
                feeds: std::mem::take(&mut routed[index]),
                time,
            })
            .expect("the newest time is readable");
        Snapshot::from_rows(rows)
    }

    /// Applies documents (all upserts) in one batch.
    pub fn put(&mut self, documents: Vec<Document>) -> Snapshot {
        self.apply(documents.into_iter().map(Feed::put).collect())
    }

    /// Reads every collection as of `as_of`.
    pub fn read_at(&mut self, as_of: Time) -> Result<Snapshot, ReadError> {
        self.broadcast(|_| Command::ReadAt {
            as_of,
            tenant: None,
        })
        .map(Snapshot::from_rows)
    }

    /// Reads one tenant's rows of every collection as of `as_of`.
    pub fn read_tenant(&mut self, as_of: Time, tenant: &str) -> Result<Snapshot, ReadError> {
        self.broadcast(|_| Command::ReadAt {
            as_of,
            tenant: Some(tenant.to_string()),
        })
        .map(Snapshot::from_rows)
    }

    /// The changes at times `from ..= through`, read back from the outputs'
    /// history (not the change stream), consolidated and sorted.
    pub fn read_changes(&mut self, from: Time, through: Time) -> Result<Vec<Change>, ReadError> {
        let observed = self.changes.len();
        self.broadcast(|_| Command::ReadChanges { from, through })?;
        let mut changes = self.changes.split_off(observed);
        changes.sort();
        Ok(changes)
    }

    /// How many rows the matching collections hold as of `as_of`, counted
    /// without reading them.
    pub fn count(&mut self, as_of: Time) -> Result<u64, ReadError> {
        let counts = self.broadcast(|_| Command::Count { as_of })?;
        Ok(counts.into_iter().map(|(_, count)| count as u64).sum())
    }

    /// Every worker's checkpoint shard as of `as_of`, in worker order.
    pub fn checkpoint(&mut self, as_of: Time) -> Result<Vec<ShardCheckpoint>, ReadError> {
        for commands in &self.commands {
            commands.send(Some(Command::Checkpoint { as_of })).unwrap();
        }
        // Every worker's reply is taken before any error is returned.
        let replies: Vec<_> = (0..self.commands.len())
            .map(|_| self.checkpoints.recv().expect("worker replies"))
            .collect();
        let mut shards = replies.into_iter().collect::<Result<Vec<_>, _>>()?;
        shards.sort_by_key(|shard| shard.worker);
        Ok(shards)
    }

    /// Runs `read` on every worker's matcher; the answers in no particular order.
    pub fn on_every_worker<T: Send + 'static>(
        &mut self,
        read: impl Fn(&mut Matcher) -> T + Send + Sync + 'static,
    ) -> Vec<T> {
        let read = Arc::new(read);
        let (tx, rx) = channel();
        for commands in &self.commands {
            let (read, tx) = (read.clone(), tx.clone());
            let run = move |matcher: &mut Matcher| tx.send(read(matcher)).unwrap();
            commands.send(Some(Command::Run(Box::new(run)))).unwrap();
        }
        (0..self.commands.len())
            .map(|_| rx.recv().expect("worker replies"))
            .collect()
    }

    /// Lets the outputs forget history before `since`.
    pub fn compact(&mut self, since: Time) {
        self.broadcast(|_| Command::Compact(since)).unwrap();
    }

    /// The state at `as_of` rebuilt from the change stream alone.
    pub fn state_from_changes(&self, as_of: Time) -> Snapshot {
        let mut counts: BTreeMap<Row, isize> = BTreeMap::new();
        for (row, time, diff) in &self.changes {
            if *time <= as_of {
                *counts.entry(row.clone()).or_default() += diff;
            }
        }
        Snapshot::from_rows(
            counts
                .into_iter()
                .filter(|(_, count)| *count != 0)
                .collect(),
        )
    }
}

impl Drop for TestEngine {
    fn drop(&mut self) {
        for commands in &self.commands {
            let _ = commands.send(None);
        }
        if let Some(guards) = self.guards.take() {
            if !std::thread::panicking() {
                for result in guards.join() {
                    result.expect("worker exits cleanly");
                }
            }
        }
    }
}

/// A stand-in row for replies that carry only counts.
fn placeholder_row() -> Row {
    Row::SourceProgress(trimatch_dataflows::rows::SourceProgressRow {
        topic: "".into(),
        partition: 0,
        next_offset: 0,
        high_watermark: 0,
        lag: 0,
        state: Default::default(),
        state_reason: None,
    })
}

fn read_all(
    matcher: &mut Matcher,
    as_of: Time,
    tenant: Option<&str>,
) -> Result<Vec<(Row, isize)>, ReadError> {
    let mut rows = Vec::new();
    for collection in OutputCollection::MATCHING {
        rows.extend(matcher.read(collection, as_of, tenant)?);
    }
    Ok(rows)
}

// ---------------------------------------------------------------------------
// Document builders, through the real decoder.

pub fn decode(kind: DocumentKind, json: serde_json::Value) -> Document {
    decode_document(kind, json.to_string().as_bytes()).unwrap_or_else(|e| panic!("{json}: {e}"))
}

pub fn po(json: serde_json::Value) -> Document {
    decode(DocumentKind::PurchaseOrder, json)
}
pub fn receipt(json: serde_json::Value) -> Document {
    decode(DocumentKind::GoodsReceipt, json)
}
pub fn invoice(json: serde_json::Value) -> Document {
    decode(DocumentKind::Invoice, json)
}
pub fn policy(json: serde_json::Value) -> Document {
    decode(DocumentKind::MatchPolicy, json)
}
pub fn resolution(json: serde_json::Value) -> Document {
    decode(DocumentKind::ExceptionResolution, json)
}
pub fn payment(json: serde_json::Value) -> Document {
    decode(DocumentKind::Payment, json)
}

/// The key of the document of `kind` whose identity fields `key` holds (as a
/// tombstone's key would).
pub fn tombstone_key(kind: DocumentKind, key: serde_json::Value) -> Fingerprint {
    let text = key.to_string();
    let object = JsonObject::parse(text.as_bytes()).expect("a JSON-object key");
    let identity = identity_fields(kind, &object, "key").expect("valid identity fields");
    let parts: Vec<&str> = identity.iter().map(String::as_str).collect();
    kind.key_of(&parts)
}

pub fn dec(text: &str) -> rust_decimal::Decimal {
    text.parse().unwrap()
}

/// The engine's state at its current time, as a policy preview reads it.
impl preview::PreviewShards for TestEngine {
    type Error = ReadError;

    fn tenant_policies(&mut self, tenant: &str) -> Result<Vec<Arc<MatchPolicy>>, ReadError> {
        let (as_of, tenant) = (self.time, tenant.to_string());
        let shards = self.on_every_worker(move |matcher| matcher.tenant_policies(as_of, &tenant));
        Ok(shards.into_iter().collect::<Result<Vec<_>, _>>()?.concat())
    }

    fn invoices(
        &mut self,
        plan: Arc<preview::PreviewPlan>,
    ) -> Result<Vec<preview::InvoicePreview>, ReadError> {
        let as_of = self.time;
        let shards = self.on_every_worker(move |matcher| matcher.preview_invoices(as_of, &plan));
        Ok(shards.into_iter().collect::<Result<Vec<_>, _>>()?.concat())
    }

    fn decisions(
        &mut self,
        keys: Arc<Vec<Fingerprint>>,
    ) -> Result<Vec<(Fingerprint, Arc<ExceptionResolution>)>, ReadError> {
        let as_of = self.time;
        let shards = self.on_every_worker(move |matcher| matcher.decisions(as_of, &keys));
        Ok(shards.into_iter().collect::<Result<Vec<_>, _>>()?.concat())
    }
}
