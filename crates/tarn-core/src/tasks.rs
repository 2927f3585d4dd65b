//! The server's background loops (the scheduler, the endpoint and instance controllers) as
//! named, registered tasks: each runs one pass, then waits for a wake-up or its interval, and
//! records how its passes go — when the last one ended, how long it took, how many failed and
//! why — for `tarn server status` and `/metrics`. A task whose last pass is long past its
//! interval is lagging (stuck, or starved).

use crate::Core;
use crate::error::Result;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// What one task has done so far.
#[derive(Clone, Debug, Default)]
pub struct TaskReport {
    pub name: &'static str,
    /// How often it runs when nothing wakes it.
    pub interval: Duration,
    pub passes: u64,
    pub errors: u64,
    /// When the last pass ended (ms since the epoch).
    pub last_pass_at: Option<i64>,
    pub last_pass_duration: Duration,
    pub last_error: Option<String>,
    /// When the last error happened (ms since the epoch).
    pub last_error_at: Option<i64>,
}

impl TaskReport {
    /// How far behind its schedule the task is now: the time since its last pass ended (or
    /// since the server started) beyond its interval.
    pub fn lag(&self, now_ms: i64, started_ms: i64) -> Duration {
        let since = now_ms - self.last_pass_at.unwrap_or(started_ms);
        Duration::from_millis(since.max(0) as u64).saturating_sub(self.interval)
    }
}

/// The registered tasks.
#[derive(Default)]
pub(crate) struct Tasks {
    reports: Mutex<Vec<TaskReport>>,
    started_ms: std::sync::OnceLock<i64>,
}

impl Tasks {
    fn record(&self, name: &str, took: Duration, outcome: &Result<()>) {
        let now = crate::now_ms();
        let mut reports = self.reports.lock().expect("tasks lock");
        if let Some(r) = reports.iter_mut().find(|r| r.name == name) {
            r.passes += 1;
            r.last_pass_at = Some(now);
            r.last_pass_duration = took;
            if let Err(e) = outcome {
                r.errors += 1;
                r.last_error = Some(e.to_string());
                r.last_error_at = Some(now);
            }
        }
    }
}

impl Core {
    /// Runs `pass` as the background task `name` on the server that leads (see `leader`):
    /// once now, then whenever `wake` is notified or `every` has passed. On the others it
    /// waits, and starts when its server comes to lead.
    pub(crate) fn spawn_task<S, F, Fut>(
        &self,
        name: &'static str,
        every: Duration,
        wake: Arc<Notify>,
        service: &Arc<S>,
        pass: F,
    ) -> tokio::task::JoinHandle<()>
    where
        S: AsRef<Core> + Send + Sync + 'static,
        F: Fn(Arc<S>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<()>> + Send,
    {
        spawn_task_on(name, every, wake, true, service.clone(), pass)
    }

    /// As [`Core::spawn_task`], on every server (the core's own task: leadership).
    pub(crate) fn spawn_task_always<F, Fut>(
        self: &Arc<Core>,
        name: &'static str,
        every: Duration,
        wake: Arc<Notify>,
        pass: F,
    ) -> tokio::task::JoinHandle<()>
    where
        F: Fn(Arc<Core>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<()>> + Send,
    {
        spawn_task_on(name, every, wake, false, self.clone(), pass)
    }

    /// Every registered task's report, and when the server started (ms since the epoch).
    pub fn task_reports(&self) -> (Vec<TaskReport>, i64) {
        let reports = self.tasks.reports.lock().expect("tasks lock").clone();
        (reports, *self.tasks.started_ms.get().unwrap_or(&0))
    }
}

/// Registers the task and runs its loop, handing each pass the service it belongs to.
fn spawn_task_on<S, F, Fut>(
    name: &'static str,
    every: Duration,
    wake: Arc<Notify>,
    leader_only: bool,
    service: Arc<S>,
    pass: F,
) -> tokio::task::JoinHandle<()>
where
    S: AsRef<Core> + Send + Sync + 'static,
    F: Fn(Arc<S>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<()>> + Send,
{
    let core = AsRef::<Core>::as_ref(&*service);
    core.tasks.started_ms.get_or_init(crate::now_ms);
    core.tasks
        .reports
        .lock()
        .expect("tasks lock")
        .push(TaskReport {
            name,
            interval: every,
            ..Default::default()
        });
    tokio::spawn(async move {
        let span = tracing::info_span!("task", name);
        let _enter = span.enter();
        loop {
            let core = AsRef::<Core>::as_ref(&*service);
            if leader_only && !core.leads() {
                let changed = core.leadership.changed.clone();
                let _ = tokio::time::timeout(every, changed.notified()).await;
                continue;
            }
            let started = Instant::now();
            let outcome = pass(service.clone()).await;
            if let Err(e) = &outcome {
                tracing::warn!("{name} pass failed: {e}");
            }
            let core: &Core = AsRef::<Core>::as_ref(&*service);
            core.tasks.record(name, started.elapsed(), &outcome);
            let _ = tokio::time::timeout(every, wake.notified()).await;
        }
    })
}

/// A metric: name, kind, help, and its value for a task (given now and the start, in ms).
type Series = (
    &'static str,
    &'static str,
    &'static str,
    fn(&TaskReport, i64, i64) -> f64,
);

/// The tasks in Prometheus's text format.
pub fn render_metrics(reports: &[TaskReport], now_ms: i64, started_ms: i64) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let series: [Series; 5] = [
        (
            "tarn_task_passes_total",
            "counter",
            "Passes a background task has run.",
            |r, _, _| r.passes as f64,
        ),
        (
            "tarn_task_errors_total",
            "counter",
            "Passes that failed.",
            |r, _, _| r.errors as f64,
        ),
        (
            "tarn_task_last_pass_timestamp_seconds",
            "gauge",
            "When the last pass ended (0: none yet).",
            |r, _, _| r.last_pass_at.unwrap_or(0) as f64 / 1000.0,
        ),
        (
            "tarn_task_last_pass_duration_seconds",
            "gauge",
            "How long the last pass took.",
            |r, _, _| r.last_pass_duration.as_secs_f64(),
        ),
        (
            "tarn_task_lag_seconds",
            "gauge",
            "How far past its interval the task's next pass is.",
            |r, now, started| r.lag(now, started).as_secs_f64(),
        ),
    ];
    for (name, kind, help, value) in series {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for r in reports {
            let _ = writeln!(
                out,
                "{name}{{task=\"{}\"}} {}",
                r.name,
                value(r, now_ms, started_ms)
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_counts_past_the_interval() {
        let r = TaskReport {
            name: "scheduler",
            interval: Duration::from_secs(1),
            last_pass_at: Some(10_000),
            ..Default::default()
        };
        assert_eq!(r.lag(10_500, 0), Duration::ZERO);
        assert_eq!(r.lag(13_000, 0), Duration::from_secs(2));
        let never = TaskReport {
            interval: Duration::from_secs(1),
            ..Default::default()
        };
        assert_eq!(never.lag(5_000, 1_000), Duration::from_secs(3));
        let text = render_metrics(&[r], 13_000, 0);
        assert!(
            text.contains("tarn_task_lag_seconds{task=\"scheduler\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("tarn_task_passes_total{task=\"scheduler\"} 0"),
            "{text}"
        );
    }
}
