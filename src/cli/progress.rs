//! What `serve` shows while it works through a backlog: a progress bar on a
//! terminal (a checkpoint loading; the topics being caught up to their high
//! watermarks), and on anything else — a log file, an orchestrator — a log
//! line every [`LOG_INTERVAL`] with the same figures, so a long backfill is
//! never silent.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::pipeline::{Pipeline, PipelineConfig, PipelineHandle};

/// How often the catch-up is logged when stderr is not a terminal.
const LOG_INTERVAL: Duration = Duration::from_secs(10);
/// How often the bar is redrawn.
const REDRAW_INTERVAL: Duration = Duration::from_millis(200);

/// Starts the pipeline; on a terminal, a progress bar while a checkpoint loads.
pub fn start_with_restore_progress(config: PipelineConfig) -> Result<Pipeline> {
    if !std::io::stderr().is_terminal() {
        return Pipeline::start(config);
    }
    let bar = bar("restoring {bar:40} {pos}/{len} rows  {per_sec}  ETA {eta}");
    let pipeline = Pipeline::start_with(config, &|done, total| {
        bar.set_length(total);
        bar.set_position(done);
    });
    bar.finish_and_clear();
    pipeline
}

/// The catch-up to the high watermarks the sources saw at start: messages
/// consumed of the total, with rate and ETA. Runs on a thread of its own
/// until the job is ready (caught up) or [`finish`](Self::finish) is called
/// (a bounded run, whose end is the pipeline's).
pub struct CatchUpProgress {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl CatchUpProgress {
    pub fn start(handle: PipelineHandle) -> CatchUpProgress {
        CatchUpProgress::start_as(handle, None)
    }

    /// [`start`](Self::start), naming the pass of a run in passes ("pass 2
    /// of 4 (…)") on the bar and in every log line.
    pub fn start_labelled(handle: PipelineHandle, pass: String) -> CatchUpProgress {
        CatchUpProgress::start_as(handle, Some(pass))
    }

    fn start_as(handle: PipelineHandle, pass: Option<String>) -> CatchUpProgress {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("trimatch-progress".to_string())
            .spawn(move || report(&handle, pass.as_deref(), &stopped))
            .ok();
        CatchUpProgress { stop, thread }
    }

    /// Stops reporting (logging the totals) and waits for the thread.
    pub fn finish(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for CatchUpProgress {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// (messages consumed, messages below the high watermarks), over every partition.
fn consumed(handle: &PipelineHandle) -> (u64, u64) {
    let partitions = handle.metrics().snapshot();
    let total = partitions
        .values()
        .map(|p| p.high_watermark.max(0) as u64)
        .sum();
    let done = partitions
        .values()
        .map(|p| p.next_offset.max(0) as u64)
        .sum();
    (done, total)
}

fn report(handle: &PipelineHandle, pass: Option<&str>, stop: &AtomicBool) {
    let started = Instant::now();
    let label = match pass {
        Some(pass) => format!("{pass}: catching up"),
        None => "catching up".to_string(),
    };
    let bar = std::io::stderr().is_terminal().then(|| {
        bar(&format!(
            "{label} {{bar:40}} {{pos}}/{{len}} messages  {{per_sec}}  ETA {{eta}}"
        ))
    });
    let mut logged = Instant::now();
    while !stop.load(Ordering::SeqCst) && !handle.is_ready() {
        let (done, total) = consumed(handle);
        if let Some(bar) = &bar {
            bar.set_length(total);
            bar.set_position(done);
        } else if logged.elapsed() >= LOG_INTERVAL {
            logged = Instant::now();
            let seconds = started.elapsed().as_secs_f64();
            tracing::info!(
                consumed = done,
                of = total,
                percent = format!("{:.1}", 100.0 * done as f64 / total.max(1) as f64),
                per_second = (done as f64 / seconds.max(1e-9)) as u64,
                "{label}"
            );
        }
        std::thread::sleep(REDRAW_INTERVAL);
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let (done, _) = consumed(handle);
    let seconds = started.elapsed().as_secs_f64();
    let message = match (pass, handle.is_ready()) {
        (None, true) => "caught up: ready".to_string(),
        (None, false) => "consumed".to_string(),
        (Some(pass), _) => format!("{pass}: consumed"),
    };
    tracing::info!(
        consumed = done,
        seconds = format!("{seconds:.1}"),
        per_second = (done as f64 / seconds.max(1e-9)) as u64,
        "{message}"
    );
}

fn bar(template: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(indicatif::ProgressStyle::with_template(template).expect("a valid template"));
    bar
}
