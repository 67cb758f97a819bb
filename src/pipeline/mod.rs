//! The running job: timely workers, each with a Kafka source feeding its
//! matching engine, and a handle to read consistent snapshots from all of
//! them. This layer may use the engine, the sources and `output` (filters);
//! it knows nothing of Flight or the command line.
//!
//! Each worker runs a loop of named steps (`worker::PipelineWorker::run`);
//! the rules below say which step keeps each.
//!
//! **Time** (`poll_and_seal`). Each worker seals what it has polled into a
//! batch at the current wall-clock millisecond `t` (at most one batch per
//! millisecond, strictly increasing), stamps every change, dead letter and
//! progress row of the batch with `t`, and moves its input to `t + 1`. While
//! idle it moves its input with the clock, so times complete even when
//! nothing arrives. A time is complete once every worker has moved past it
//! (`step_or_park` runs the dataflow that finds out); a snapshot at a complete
//! time reflects exactly the batches stamped at or before it, and its
//! `source_progress` rows say which offsets those are (SPEC §4).
//!
//! **Reads** (`answer_reads`). A read waits at each worker until its `as_of`
//! is complete there, then gets that worker's shard; the handle puts the
//! shards together.
//!
//! **Readiness** (`poll_and_seal`, `publish_progress`). Each worker announces
//! to all workers, of every process, the time by which its source had caught
//! up with the high watermarks seen at start (`catch_up`); the job is ready
//! once every worker has, and the newest time complete on every local worker
//! is at or past the latest of those times (`progress`). A read at the
//! default `as_of` then reflects every source up to those watermarks, in
//! cluster mode too.
//!
//! **History** (`compact`). Outputs keep the changes of the last `retention`;
//! an older `as_of` is refused. A bounded run keeps none.
//!
//! **Bounded runs** (`until_end`; `close_input`, `finish_bounded_run`): a
//! worker whose partitions have all reached the high watermarks seen at
//! start closes its input; once every worker has, the final state is read at
//! the newest batch time and returned. A bounded run may go in passes over
//! the tenants, holding one share of the state at a time ([`passes`]).

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use timely::communication::allocator::AllocatorBuilder;
use timely::communication::initialize::WorkerGuards;
use trimatch_connectors::{SourceConfig, SourceMetrics};
use trimatch_dataflows::model::Tolerances;
use trimatch_dataflows::{MatchConfig, OutputCollection, ReadError, Row, Time};

mod catch_up;
mod clock;
pub mod cluster;
pub mod counters;
pub mod durability;
mod handle;
pub mod passes;
mod preview;
mod progress;
mod reads;
pub mod subscriptions;
mod worker;
pub use crate::output::FinalState;
use counters::PipelineCounters;
use durability::schedule::ShardMessage;
use durability::writer::Writer;
use durability::Durability;
pub use durability::{CheckpointMetrics, DurabilityConfig, Restored};
pub use preview::LocalShards;
use progress::{LagHysteresis, WorkerProgress};
use reads::{ReadKind, ReadReply, ReadRequest};
use subscriptions::Hub;
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
    /// `/healthz` fails once no logical time has completed for this long
    /// (the workers are stuck): see [`PipelineHandle::unhealthy`].
    pub stall_timeout: Duration,
    /// Readiness is lost while the input lag passes this many messages, and
    /// regained below half of it: see [`PipelineHandle::not_ready`].
    pub ready_max_lag: u64,
    /// Fault injection for tests: the worker with this (global) index panics
    /// once it has sealed its first batch.
    pub panic_worker: Option<usize>,
    /// Checkpoints in a state directory, and a restore from them at start.
    pub durability: Option<DurabilityConfig>,
}

/// Timely's cluster mode: `processes` processes of `workers` workers each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    /// This process's index, from 0.
    pub process: usize,
    /// `host:port` of every process's cluster listener, in process order.
    pub addresses: Vec<String>,
    /// The secret the processes prove to each other (see [`cluster`]).
    pub token: Option<cluster::ClusterToken>,
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
            token: None,
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
            stall_timeout: Duration::from_secs(30),
            ready_max_lag: 100_000,
            panic_worker: None,
            durability: None,
        }
    }

    /// What a checkpoint must have been written for to be restored here.
    fn expected_checkpoint(&self) -> trimatch_state::Expected {
        let mut topics: Vec<String> = self
            .source
            .topics
            .iter()
            .map(|topic| format!("{:?}={}", topic.kind, topic.name))
            .collect();
        topics.sort();
        trimatch_state::Expected {
            shape: trimatch_state::ClusterShape {
                processes: self.cluster.as_ref().map_or(1, |c| c.addresses.len()),
                workers_per_process: self.workers.max(1),
                process: self.cluster.as_ref().map_or(0, |c| c.process),
            },
            topics,
        }
    }

    /// This process's index among the worker indices of the computation.
    fn local_index(&self, global: usize) -> usize {
        let process = self.cluster.as_ref().map_or(0, |cluster| cluster.process);
        global - process * self.workers.max(1)
    }

    /// Timely's channels between the workers: in this process, or (cluster
    /// mode) also to the other processes over [`cluster`]'s connections.
    /// In a cluster, a lost peer fails the job through `shared`.
    fn communication(
        &self,
        shared: &Arc<Shared>,
    ) -> Result<(Vec<AllocatorBuilder>, Box<dyn Any + Send>)> {
        let workers = self.workers.max(1);
        let Some(cluster) = &self.cluster else {
            return timely::CommunicationConfig::Process(workers)
                .try_build()
                .map_err(|error| anyhow!("cannot start timely's channels: {error}"));
        };
        let link = cluster::ClusterLink {
            process: cluster.process,
            addresses: cluster.addresses.clone(),
            shape: cluster::Shape {
                processes: cluster.addresses.len(),
                workers,
                topics: self.expected_checkpoint().topics,
            },
            token: cluster.token.clone(),
        };
        let shared = shared.clone();
        let on_lost: cluster::LostPeer = Arc::new(move |why: String| {
            if shared.stop.load(Ordering::SeqCst) {
                tracing::info!("{why}");
                true
            } else {
                shared.fail(why);
                false
            }
        });
        cluster::build(&link, workers, on_lost)
    }
}

/// Rows of one collection at one time, over all workers.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub as_of: Time,
    pub rows: Vec<Row>,
}

/// Why a read of the running job was not answered: the time asked for is
/// not readable (compacted, not complete, from before a restore), or the
/// job is starting or has stopped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReadFailure {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("no time is complete yet: the pipeline is starting")]
    Starting,
    #[error("the pipeline has stopped: {0}")]
    Stopped(String),
    #[error(
        "time {time} is from before the restart: this run was restored from the checkpoint at \
         {checkpoint} and knows the state at that time and from {readable_from} on (the previous \
         run may have seen changes between them that this one reads again); resume from \
         {checkpoint} or take a new snapshot"
    )]
    AcrossRestart {
        time: Time,
        checkpoint: Time,
        readable_from: Time,
    },
}

/// What the workers and the handles share.
struct Shared {
    stop: AtomicBool,
    /// The newest time each worker sees complete, and when every worker's
    /// source had caught up (readiness).
    progress: WorkerProgress,
    /// Bounded runs: workers finished, and the newest batch time among them.
    finished: AtomicUsize,
    final_time: AtomicU64,
    final_state: Mutex<BTreeMap<OutputCollection, Vec<Row>>>,
    error: Mutex<Option<String>>,
    metrics: Arc<SourceMetrics>,
    hub: Arc<Hub>,
    started: Instant,
    counters: Arc<PipelineCounters>,
    stall_timeout: Duration,
    ready_max_lag: u64,
    /// Readiness's lag rule (`ready_max_lag`, with hysteresis).
    lagging: LagHysteresis,
    /// The latest time any local worker's input has reached (shared with the
    /// hub, which reads it when a collection's changes are turned on).
    input_time: Arc<AtomicU64>,
    /// Checkpoints and the restore, with a state directory.
    durability: Option<Durability>,
    /// The checkpoint writer's channel; workers clone it, and it is dropped
    /// at stop so the writer ends once the workers have.
    checkpoint_writer: Mutex<Option<Sender<ShardMessage>>>,
    /// The global default policy (what a policy preview falls back to).
    default_tolerances: Tolerances,
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
    writer: Option<std::thread::JoinHandle<()>>,
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
        Pipeline::start_with(config, &|_, _| {})
    }

    /// [`start`](Self::start), telling `restore_progress` (rows loaded, rows
    /// in all) how loading a checkpoint goes.
    pub fn start_with(
        mut config: PipelineConfig,
        restore_progress: &dyn Fn(u64, u64),
    ) -> Result<Pipeline> {
        let workers = config.workers.max(1);
        if config.source.until_end {
            if config.durability.is_some() {
                anyhow::bail!(
                    "--until-end writes the final state to files and exits; it does not keep a \
                     --state-dir (run without one)"
                );
            }
            if config.cluster.is_some() {
                anyhow::bail!(
                    "--until-end runs in one process: a bounded run writes every collection from one place"
                );
            }
            // A bounded run is read once, at its final time, so its outputs
            // keep no history: every logical time compacts into the state.
            // Keeping `retention` of it would hold every change of a
            // catch-up shorter than the retention (all of a backfill).
            config.retention = Duration::ZERO;
        }
        let durability = match &config.durability {
            Some(durability) => Some(Durability::open(
                durability,
                config.expected_checkpoint(),
                restore_progress,
            )?),
            None => None,
        };
        let (writer_sender, writer) = match &durability {
            Some(durability) => {
                let (sender, receiver) = channel();
                let writer = Writer {
                    dir: durability.dir.clone(),
                    shape: durability.shape.clone(),
                    topics: config.expected_checkpoint().topics,
                    local_workers: workers,
                    metrics: durability.metrics.clone(),
                };
                let thread = std::thread::Builder::new()
                    .name("trimatch-checkpoints".to_string())
                    .spawn(move || writer.run(receiver))?;
                (Some(sender), Some(thread))
            }
            None => (None, None),
        };
        let input_time = Arc::new(AtomicU64::new(0));
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            progress: WorkerProgress::new(workers),
            finished: AtomicUsize::new(0),
            final_time: AtomicU64::new(0),
            final_state: Mutex::new(BTreeMap::new()),
            error: Mutex::new(None),
            metrics: SourceMetrics::new(),
            hub: Hub::new(config.subscriber_backlog, input_time.clone()),
            started: Instant::now(),
            counters: PipelineCounters::new(),
            stall_timeout: config.stall_timeout,
            ready_max_lag: config.ready_max_lag,
            lagging: LagHysteresis::default(),
            input_time,
            durability,
            checkpoint_writer: Mutex::new(writer_sender),
            default_tolerances: config.matching.default_tolerances,
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
        let (allocators, transport) = config.communication(&shared)?;
        let guards = timely::execute::execute_from(
            allocators,
            transport,
            timely::WorkerConfig::default(),
            move |worker| {
                let local = config.local_index(worker.index());
                let requests = receivers.lock().expect("receivers lock")[local]
                    .take()
                    .expect("each worker takes its own receiver");
                let index = worker.index();
                // A panicking worker fails the job like an erroring one: the
                // cause is recorded, `/healthz` fails, and `serve` exits, so an
                // orchestrator restarts the process. (In a cluster, a lost peer
                // is reported by `cluster`'s pumps instead.)
                let run = std::panic::AssertUnwindSafe(|| {
                    run_worker(worker, &config, &worker_shared, requests)
                });
                match std::panic::catch_unwind(run) {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => {
                        worker_shared.fail(format!("worker {index} failed: {error:#}"))
                    }
                    Err(panic) => worker_shared.fail(format!(
                        "worker {index} panicked: {}",
                        panic_message(panic.as_ref())
                    )),
                }
            },
        )
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
            writer,
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
    pub fn shutdown(self) -> Result<()> {
        self.shutdown_within(Duration::MAX)
    }

    /// Asks the workers to stop and waits for them, at most `timeout`: a
    /// worker stuck in a step (e.g. on a dead cluster peer) must not keep the
    /// process from exiting, so that an orchestrator can restart it.
    pub fn shutdown_within(mut self, timeout: Duration) -> Result<()> {
        let stopped = self.stop_workers(timeout);
        if let Some(error) = self.error() {
            return Err(anyhow!(error));
        }
        if !stopped {
            anyhow::bail!("the workers did not stop within {} s", timeout.as_secs());
        }
        Ok(())
    }

    /// Stops the workers and the publisher; whether the workers ended within
    /// `timeout` (those that did not are left to end with the process).
    fn stop_workers(&mut self, timeout: Duration) -> bool {
        let shared = &self.handle.shared;
        if let (Some(durability), None) = (&shared.durability, self.handle.error()) {
            if self.guards.is_some() {
                let at = durability.request_final_checkpoint(self.handle.latest_input_time());
                tracing::info!(as_of = at, "stopping: taking a last checkpoint");
            }
        }
        shared.stop.store(true, Ordering::SeqCst);
        let mut stopped = true;
        if let Some(guards) = self.guards.take() {
            let (done, joined) = channel();
            let joiner = std::thread::Builder::new()
                .name("trimatch-join-workers".to_string())
                .spawn(move || {
                    drop(guards);
                    let _ = done.send(());
                });
            stopped = joiner.is_ok()
                && match Instant::now().checked_add(timeout) {
                    Some(_) => joined.recv_timeout(timeout).is_ok(),
                    None => joined.recv().is_ok(),
                };
            if !stopped {
                tracing::error!(
                    "the workers did not stop within {} s; leaving them",
                    timeout.as_secs()
                );
            }
        }
        self.stop_publisher();
        if stopped {
            self.stop_writer();
        }
        stopped
    }

    /// Lets the checkpoint writer finish what the workers sent and waits for it.
    fn stop_writer(&mut self) {
        self.handle
            .shared
            .checkpoint_writer
            .lock()
            .expect("writer lock")
            .take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }

    fn stop_publisher(&mut self) {
        self.handle.shared.stop.store(true, Ordering::SeqCst);
        if let Some(publisher) = self.publisher.take() {
            let _ = publisher.join();
        }
    }
}

/// How long dropping a running [`Pipeline`] waits for its workers.
const DROP_GRACE: Duration = Duration::from_secs(5);

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.stop_workers(DROP_GRACE);
    }
}

/// The message a panic was raised with.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|text| text.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(a panic without a message)".to_string())
}

/// Runs a bounded job to its end and returns the final state.
pub fn run_until_end(mut config: PipelineConfig) -> Result<FinalState> {
    config.source.until_end = true;
    Pipeline::start(config)?.join()
}
