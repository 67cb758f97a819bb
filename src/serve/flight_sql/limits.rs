//! What one reader's SQL may cost the service: statements run on their own
//! bounded thread pool, one at a time per slot, within a deadline, so that
//! no statement can starve ingestion, Flight reads or the health endpoints.
//!
//! * [`SqlPool`]: a Tokio runtime of its own (`--sql-threads` threads).
//!   DataFusion spawns its operators' tasks on the runtime it is called on,
//!   so a statement that keeps its threads busy never holds a thread of the
//!   Flight runtime.
//! * admission ([`crate::serve::gate::Slots`]): at most `max_running`
//!   statements at once, and at most `max_running_per_caller` for one
//!   caller; a statement past either is refused at once with
//!   RESOURCE_EXHAUSTED (queuing would only hide an overload behind client
//!   timeouts).
//! * [`deadline_exceeded`]: what a statement past its deadline is told.
//!
//! Memory is bounded elsewhere (the statement's DataFusion pool and the
//! scans' copy limit, `statement` and `tables`), and so are the functions a
//! reader may call (`functions`).

use std::future::Future;
use std::time::Duration;

use tonic::Status;

/// How Flight SQL statements run.
#[derive(Clone, Debug)]
pub struct SqlSettings {
    /// Bytes one statement may hold: the rows its scans copy plus what its
    /// operators (joins, aggregates, sorts) reserve.
    pub memory_limit: usize,
    /// How long a statement may plan and run, from its call to its last batch.
    pub deadline: Duration,
    /// Statements that may plan or run at once, in all.
    pub max_running: usize,
    /// Statements that may plan or run at once for one principal.
    pub max_running_per_caller: usize,
    /// Threads of the SQL pool.
    pub threads: usize,
    /// The longest statement text accepted, in bytes.
    pub max_statement_bytes: usize,
}

impl Default for SqlSettings {
    fn default() -> Self {
        SqlSettings {
            memory_limit: 1 << 30,
            deadline: Duration::from_secs(60),
            max_running: 16,
            max_running_per_caller: 4,
            threads: 2,
            max_statement_bytes: 64 * 1024,
        }
    }
}

/// The thread pool statements plan and run on.
pub struct SqlPool {
    /// Always `Some` until drop, which shuts it down without blocking (a
    /// runtime dropped inside another runtime's task would panic).
    runtime: Option<tokio::runtime::Runtime>,
}

impl SqlPool {
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("trimatch-sql")
            .enable_all()
            .build()?;
        Ok(SqlPool {
            runtime: Some(runtime),
        })
    }

    /// Runs `work` on the pool; its result comes back to the caller's runtime.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, Status>> + Send + 'static,
    ) -> Result<T, Status> {
        let runtime = self
            .runtime
            .as_ref()
            .expect("the SQL pool runs until dropped");
        runtime.spawn(work).await.map_err(|error| {
            Status::internal(format!("the statement's task ended abnormally: {error}"))
        })?
    }

    /// Starts `work` on the pool and leaves it running.
    pub fn spawn(&self, work: impl Future<Output = ()> + Send + 'static) {
        let runtime = self
            .runtime
            .as_ref()
            .expect("the SQL pool runs until dropped");
        runtime.spawn(work);
    }
}

impl Drop for SqlPool {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// What a statement past its deadline is told.
pub fn deadline_exceeded(deadline: Duration) -> Status {
    Status::deadline_exceeded(format!(
        "the statement ran past the SQL deadline of {} s (--sql-deadline-seconds) and was \
         stopped; narrow it (WHERE tenant_id = '…', LIMIT) or ask an operator for a longer deadline",
        deadline.as_secs_f64()
    ))
}
