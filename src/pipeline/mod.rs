//! The running job: timely workers, each with a Kafka source feeding its
//! matching engine, and a handle to read consistent snapshots from all of them.
//!
//! **Time.** Each worker seals what it has polled into a batch at the current
//! wall-clock millisecond `t` (at most one batch per millisecond, strictly
//! increasing), stamps every change, dead letter and progress row of the batch
//! with `t`, and moves its input to `t + 1`. While idle it moves its input with
//! the clock, so times complete even when nothing arrives. A time is complete
//! once every worker has moved past it; a snapshot at a complete time reflects
//! exactly the batches stamped at or before it, and its `source_progress`
//! rows say which offsets those are (SPEC §4).
//!
//! **Bounded runs** (`until_end`): a worker whose partitions have all reached
//! the high watermarks seen at start closes its input; once every worker has,
//! the final state is read at the newest batch time and returned.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use timely::communication::initialize::WorkerGuards;
use trimatch_connectors::{SourceConfig, SourceMetrics};
use trimatch_dataflows::{Change, MatchConfig, OutputCollection, ReadError, Row, Time};

use crate::metrics::Metrics;
use crate::query::RowFilter;
use crate::subscriptions::Hub;

mod worker;
use worker::run_worker;

/// Everything the job needs.
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    pub source: SourceConfig,
    pub matching: MatchConfig,
    /// Timely worker threads in this process.
    pub workers: usize,
    /// How much history reads may go back to (`as_of`).
    pub retention: Duration,
    /// The most changes a subscriber may have waiting before it is cut off.
    pub subscriber_backlog: usize,
    /// Several processes running one timely computation, if set.
    pub cluster: Option<ClusterConfig>,
}

/// Timely's cluster mode: `processes` processes of `workers` workers each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    /// This process's index, from 0.
    pub process: usize,
    /// `host:port` of every process's timely listener, in process order.
    pub addresses: Vec<String>,
}

impl ClusterConfig {
    /// Reads a hostfile: one `host:port` per line, in process order (blank
    /// lines and `#` comments ignored).
    pub fn from_hostfile(text: &str, processes: usize, process: usize) -> Result<ClusterConfig> {
        let addresses: Vec<String> = text
            .lines()
            .map(|line| line.split('#').next().unwrap_or("").trim())
            .filter(|line| !line.is_empty())
            .map(str::to_string)
            .collect();
        if addresses.len() < processes {
            anyhow::bail!(
                "the hostfile lists {} addresses but --processes is {processes}",
                addresses.len()
            );
        }
        if process >= processes {
            anyhow::bail!("--process-id {process} must be below --processes {processes}");
        }
        Ok(ClusterConfig {
            process,
            addresses: addresses.into_iter().take(processes).collect(),
        })
    }
}

impl PipelineConfig {
    pub fn new(source: SourceConfig) -> Self {
        PipelineConfig {
            source,
            matching: MatchConfig::default(),
            workers: 1,
            retention: Duration::from_secs(600),
            subscriber_backlog: 100_000,
            cluster: None,
        }
    }

    /// This process's index among the worker indices of the computation.
    fn local_index(&self, global: usize) -> usize {
        let process = self.cluster.as_ref().map_or(0, |cluster| cluster.process);
        global - process * self.workers.max(1)
    }

    fn timely_config(&self) -> timely::Config {
        let workers = self.workers.max(1);
        match &self.cluster {
            None => timely::Config::process(workers),
            Some(cluster) => timely::Config {
                communication: timely::CommunicationConfig::Cluster {
                    threads: workers,
                    process: cluster.process,
                    addresses: cluster.addresses.clone(),
                    report: false,
                    zerocopy: false,
                },
                worker: timely::WorkerConfig::default(),
            },
        }
    }
}

/// Rows of one collection at one time, over all workers.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub as_of: Time,
    pub rows: Vec<Row>,
}

/// The final state of a bounded run: every collection at one time.
#[derive(Clone, Debug)]
pub struct FinalState {
    pub as_of: Time,
    pub collections: BTreeMap<OutputCollection, Vec<Row>>,
}

/// Why a read was not answered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("no time is complete yet: the pipeline is starting")]
    Starting,
    #[error("the pipeline has stopped: {0}")]
    Stopped(String),
}

/// What a worker is asked to read from its shard.
enum ReadKind {
    Rows {
        filter: Arc<RowFilter>,
        limit: usize,
    },
    Count {
        filter: Arc<RowFilter>,
    },
    /// Changes at times from `from` through the request's time.
    Changes {
        from: Time,
        filter: Arc<RowFilter>,
    },
}

enum ReadReply {
    Rows(Vec<Row>),
    Count(u64),
    Changes(Vec<Change>),
}

/// A read a worker answers with its shard.
struct ReadRequest {
    collection: OutputCollection,
    as_of: Time,
    key: Option<String>,
    kind: ReadKind,
    /// Gets the worker's index with its answer, so shards are put together in
    /// worker order and the same read gives the same rows in the same order.
    reply: Sender<(usize, Result<ReadReply, ReadError>)>,
}

/// What the workers and the handles share.
struct Shared {
    stop: AtomicBool,
    /// Per worker: the newest time it has seen complete (+1; 0 = none yet).
    complete: Vec<AtomicU64>,
    /// Per worker: whether its source is caught up.
    ready: Vec<AtomicBool>,
    /// Bounded runs: workers finished, and the newest batch time among them.
    finished: AtomicUsize,
    final_time: AtomicU64,
    final_state: Mutex<BTreeMap<OutputCollection, Vec<Row>>>,
    error: Mutex<Option<String>>,
    metrics: Arc<SourceMetrics>,
    hub: Arc<Hub>,
    started: Instant,
    job_metrics: Arc<Metrics>,
}

impl Shared {
    fn fail(&self, error: String) {
        tracing::error!("{error}");
        self.error.lock().expect("error lock").get_or_insert(error);
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// A running job.
pub struct Pipeline {
    handle: PipelineHandle,
    guards: Option<WorkerGuards<()>>,
    publisher: Option<std::thread::JoinHandle<()>>,
}

/// A cheap, clonable handle for reading from a running job (Flight, status).
#[derive(Clone)]
pub struct PipelineHandle {
    shared: Arc<Shared>,
    requests: Arc<Vec<Mutex<Sender<ReadRequest>>>>,
}

impl Pipeline {
    /// Starts the workers; they connect to Kafka in the background.
    pub fn start(config: PipelineConfig) -> Result<Pipeline> {
        let workers = config.workers.max(1);
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            complete: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            ready: (0..workers).map(|_| AtomicBool::new(false)).collect(),
            finished: AtomicUsize::new(0),
            final_time: AtomicU64::new(0),
            final_state: Mutex::new(BTreeMap::new()),
            error: Mutex::new(None),
            metrics: SourceMetrics::new(),
            hub: Hub::new(config.subscriber_backlog),
            started: Instant::now(),
            job_metrics: Metrics::new(),
        });
        let mut requests = Vec::new();
        let mut receivers = Vec::new();
        for _ in 0..workers {
            let (sender, receiver) = channel();
            requests.push(Mutex::new(sender));
            receivers.push(Some(receiver));
        }
        let receivers = Arc::new(Mutex::new(receivers));
        let worker_shared = shared.clone();
        if config.cluster.is_some() && config.source.until_end {
            anyhow::bail!(
                "--until-end runs in one process: a bounded run writes every collection from one place"
            );
        }
        let timely_config = config.timely_config();
        let guards = timely::execute(timely_config, move |worker| {
            let local = config.local_index(worker.index());
            let requests = receivers.lock().expect("receivers lock")[local]
                .take()
                .expect("each worker takes its own receiver");
            if let Err(error) = run_worker(worker, &config, &worker_shared, requests) {
                worker_shared.fail(format!("{error:#}"));
            }
        })
        .map_err(|error| anyhow!("cannot start timely workers: {error}"))?;
        let handle = PipelineHandle {
            shared,
            requests: Arc::new(requests),
        };
        let publisher = {
            let handle = handle.clone();
            std::thread::Builder::new()
                .name("trimatch-publisher".to_string())
                .spawn(move || handle.publish_until_stopped())?
        };
        Ok(Pipeline {
            handle,
            guards: Some(guards),
            publisher: Some(publisher),
        })
    }

    /// A handle for reading from the job from other threads.
    pub fn handle(&self) -> PipelineHandle {
        self.handle.clone()
    }

    /// The per-partition counters of every source.
    pub fn metrics(&self) -> Arc<SourceMetrics> {
        self.handle.metrics()
    }

    /// See [`PipelineHandle::is_ready`].
    pub fn is_ready(&self) -> bool {
        self.handle.is_ready()
    }

    /// See [`PipelineHandle::newest_complete`].
    pub fn newest_complete(&self) -> Option<Time> {
        self.handle.newest_complete()
    }

    /// The failure that stopped the job, if one did.
    pub fn error(&self) -> Option<String> {
        self.handle.error()
    }

    /// Waits until the job ends (bounded runs) or fails, and returns the final
    /// state of a bounded run.
    pub fn join(mut self) -> Result<FinalState> {
        if let Some(guards) = self.guards.take() {
            for result in guards.join() {
                result.map_err(|error| anyhow!("a worker failed: {error}"))?;
            }
        }
        self.stop_publisher();
        if let Some(error) = self.error() {
            return Err(anyhow!(error));
        }
        let shared = &self.handle.shared;
        Ok(FinalState {
            as_of: shared.final_time.load(Ordering::SeqCst),
            collections: std::mem::take(&mut *shared.final_state.lock().expect("state lock")),
        })
    }

    /// Asks the workers to stop and waits for them.
    pub fn shutdown(mut self) -> Result<()> {
        self.handle.shared.stop.store(true, Ordering::SeqCst);
        if let Some(guards) = self.guards.take() {
            drop(guards);
        }
        self.stop_publisher();
        match self.error() {
            Some(error) => Err(anyhow!(error)),
            None => Ok(()),
        }
    }

    fn stop_publisher(&mut self) {
        self.handle.shared.stop.store(true, Ordering::SeqCst);
        if let Some(publisher) = self.publisher.take() {
            let _ = publisher.join();
        }
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.handle.shared.stop.store(true, Ordering::SeqCst);
    }
}

impl PipelineHandle {
    /// The per-partition counters of every source.
    pub fn metrics(&self) -> Arc<SourceMetrics> {
        self.shared.metrics.clone()
    }

    /// The job's own metrics (freshness, Flight requests).
    pub fn job_metrics(&self) -> &Arc<Metrics> {
        &self.shared.job_metrics
    }

    /// The subscription hub.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.shared.hub
    }

    /// When the job started.
    pub fn started(&self) -> Instant {
        self.shared.started
    }

    /// Whether every worker's source has caught up to the high watermarks it
    /// saw when it was assigned its partitions, and every output reflects that
    /// (readiness never goes back to false).
    pub fn is_ready(&self) -> bool {
        self.shared
            .ready
            .iter()
            .all(|ready| ready.load(Ordering::SeqCst))
    }

    /// The newest time complete on every worker.
    pub fn newest_complete(&self) -> Option<Time> {
        self.shared
            .complete
            .iter()
            .map(|complete| complete.load(Ordering::SeqCst))
            .min()
            .filter(|complete| *complete > 0)
            .map(|complete| complete - 1)
    }

    /// The failure that stopped the job, if one did.
    pub fn error(&self) -> Option<String> {
        self.shared.error.lock().expect("error lock").clone()
    }

    /// Waits up to `timeout` for `as_of` to be complete in this process; whether
    /// it is. In a cluster, processes learn that a time is complete at slightly
    /// different moments: a peer asked for a shard at a time its requester
    /// already knows complete waits for it here rather than refusing.
    pub fn wait_until_complete(&self, as_of: Time, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.newest_complete().is_some_and(|newest| newest >= as_of) {
                return true;
            }
            if Instant::now() >= deadline || self.error().is_some() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Resolves a requested `as_of` (default: the newest complete time).
    pub fn resolve_as_of(&self, as_of: Option<Time>) -> Result<Time, ServeError> {
        if let Some(error) = self.error() {
            return Err(ServeError::Stopped(error));
        }
        let newest = self.newest_complete().ok_or(ServeError::Starting)?;
        let as_of = as_of.unwrap_or(newest);
        if as_of > newest {
            return Err(ReadError::NotComplete { as_of, newest }.into());
        }
        Ok(as_of)
    }

    /// The rows of `collection` that pass `filter` as of `as_of` (default: the
    /// newest complete time), over all workers; at most `limit` of them.
    pub fn read(
        &self,
        collection: OutputCollection,
        as_of: Option<Time>,
        filter: &Arc<RowFilter>,
        limit: Option<usize>,
    ) -> Result<Snapshot, ServeError> {
        let as_of = self.resolve_as_of(as_of)?;
        let rows = self.send_rows(collection, as_of, filter, limit)?;
        Ok(Snapshot {
            as_of,
            rows: self.collect_rows(rows, limit)?,
        })
    }

    /// [`read`](Self::read) with the offsets the snapshot reflects
    /// (`"topic/partition"` → the first offset not included), asked of the
    /// workers in one round: a worker answers both between the same two
    /// dataflow steps, where asking one after the other made a snapshot wait
    /// for a second step.
    pub fn read_with_offsets(
        &self,
        collection: OutputCollection,
        as_of: Option<Time>,
        filter: &Arc<RowFilter>,
        limit: Option<usize>,
    ) -> Result<(Snapshot, BTreeMap<String, i64>), ServeError> {
        let as_of = self.resolve_as_of(as_of)?;
        let rows = self.send_rows(collection, as_of, filter, limit)?;
        let progress = self.send_rows(
            OutputCollection::SourceProgress,
            as_of,
            &Arc::default(),
            None,
        )?;
        let snapshot = Snapshot {
            as_of,
            rows: self.collect_rows(rows, limit)?,
        };
        let offsets = offsets_of(self.collect_rows(progress, None)?);
        Ok((snapshot, offsets))
    }

    /// Sends a rows read to every worker; [`collect_rows`](Self::collect_rows)
    /// gathers the answer.
    fn send_rows(
        &self,
        collection: OutputCollection,
        as_of: Time,
        filter: &Arc<RowFilter>,
        limit: Option<usize>,
    ) -> Result<PendingReplies, ServeError> {
        let limit = limit.unwrap_or(usize::MAX);
        self.send(collection, as_of, filter.key(), || ReadKind::Rows {
            filter: filter.clone(),
            limit,
        })
    }

    /// The rows of every worker's answer, in worker order, at most `limit`.
    fn collect_rows(
        &self,
        replies: PendingReplies,
        limit: Option<usize>,
    ) -> Result<Vec<Row>, ServeError> {
        let mut rows = Vec::new();
        for reply in self.collect(replies)? {
            if let ReadReply::Rows(shard) = reply {
                rows.extend(shard);
            }
        }
        rows.truncate(limit.unwrap_or(usize::MAX));
        Ok(rows)
    }

    /// How many rows `collection` has as of `as_of`.
    pub fn count(&self, collection: OutputCollection, as_of: Time) -> Result<u64, ServeError> {
        self.count_where(collection, as_of, &Arc::default())
    }

    /// How many rows of `collection` pass `filter` as of `as_of`.
    pub fn count_where(
        &self,
        collection: OutputCollection,
        as_of: Time,
        filter: &Arc<RowFilter>,
    ) -> Result<u64, ServeError> {
        let kind = || ReadKind::Count {
            filter: filter.clone(),
        };
        let replies = self.ask(collection, as_of, filter.key(), kind)?;
        Ok(replies
            .into_iter()
            .map(|reply| match reply {
                ReadReply::Count(count) => count,
                _ => 0,
            })
            .sum())
    }

    /// The changes of `collection` that pass `filter` at times `from ..= through`,
    /// sorted by time, retractions before insertions within a time.
    pub fn changes(
        &self,
        collection: OutputCollection,
        from: Time,
        through: Time,
        filter: &Arc<RowFilter>,
    ) -> Result<Vec<Change>, ServeError> {
        let kind = || ReadKind::Changes {
            from,
            filter: filter.clone(),
        };
        let mut changes = Vec::new();
        for reply in self.ask(collection, through, filter.key(), kind)? {
            if let ReadReply::Changes(shard) = reply {
                changes.extend(shard);
            }
        }
        changes.sort_by_key(|(_, time, diff)| (*time, *diff));
        Ok(changes)
    }

    /// Sends a read to every worker and collects their replies.
    fn ask(
        &self,
        collection: OutputCollection,
        as_of: Time,
        key: Option<&str>,
        kind: impl Fn() -> ReadKind,
    ) -> Result<Vec<ReadReply>, ServeError> {
        let replies = self.send(collection, as_of, key, kind)?;
        self.collect(replies)
    }

    /// Sends a read to every worker, without waiting for the answers.
    fn send(
        &self,
        collection: OutputCollection,
        as_of: Time,
        key: Option<&str>,
        kind: impl Fn() -> ReadKind,
    ) -> Result<PendingReplies, ServeError> {
        if let Some(error) = self.error() {
            return Err(ServeError::Stopped(error));
        }
        let (reply, replies) = channel();
        for sender in self.requests.iter() {
            sender
                .lock()
                .expect("request lock")
                .send(ReadRequest {
                    collection,
                    as_of,
                    key: key.map(str::to_string),
                    kind: kind(),
                    reply: reply.clone(),
                })
                .map_err(|_| ServeError::Stopped("the workers have exited".to_string()))?;
        }
        Ok(replies)
    }

    /// Waits for every worker's answer to a sent read; in worker order.
    fn collect(&self, replies: PendingReplies) -> Result<Vec<ReadReply>, ServeError> {
        let mut collected = Vec::with_capacity(self.requests.len());
        for _ in 0..self.requests.len() {
            let (worker, shard) = replies.recv().map_err(|_| {
                ServeError::Stopped(
                    self.error()
                        .unwrap_or_else(|| "a worker exited during a read".to_string()),
                )
            })?;
            collected.push((worker, shard?));
        }
        collected.sort_by_key(|(worker, _)| *worker);
        Ok(collected.into_iter().map(|(_, shard)| shard).collect())
    }

    /// Publishes complete times to the subscription hub until the job stops.
    fn publish_until_stopped(&self) {
        while !self.shared.stop.load(Ordering::SeqCst) {
            if let Some(complete) = self.newest_complete() {
                self.shared.hub.publish(complete);
            }
            std::thread::sleep(PUBLISH_INTERVAL);
        }
    }
}

/// The answers to a read sent to every worker, each with the worker's index.
type PendingReplies = Receiver<(usize, Result<ReadReply, ReadError>)>;

/// `"topic/partition"` → next offset, from `source_progress` rows.
fn offsets_of(progress: Vec<Row>) -> BTreeMap<String, i64> {
    progress
        .into_iter()
        .filter_map(|row| match row {
            Row::SourceProgress(row) => {
                Some((format!("{}/{}", row.topic, row.partition), row.next_offset))
            }
            _ => None,
        })
        .collect()
}

/// How often complete times are published to subscribers.
const PUBLISH_INTERVAL: Duration = Duration::from_millis(2);

/// Runs a bounded job to its end and returns the final state.
pub fn run_until_end(mut config: PipelineConfig) -> Result<FinalState> {
    config.source.until_end = true;
    Pipeline::start(config)?.join()
}
