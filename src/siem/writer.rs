//! The writer thread: takes batches off the queue, renders each event once, writes every
//! local sink ([`LocalSink`]) and appends the batch to the spool for the network sinks. It
//! reports the trail's own losses (queue or spool full) with an overflow event.
//!
//! A spool that cannot be written (its filesystem full, an I/O error) loses each batch to the
//! network sinks; the local sinks still get it. Such failures come in bursts (a full disk
//! fails every batch until space is freed), so they are logged once per burst, not per
//! batch: the first failure logs, later ones only count (with a reminder every
//! [`REMIND_EVERY`] while it lasts), and the first append that succeeds again logs how many
//! events the burst lost and spools a `siem-overflow` event carrying that count, so the
//! collector learns of the gap too.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

use chrono::Utc;

use super::format::{FormatOptions, LINE_MAX_OCTETS, syslog_severity};
use super::sink_local::{Batch, ErrorCounter, LocalSink};
use super::spool::{Record, Spool};
use super::{BATCH, LINGER, Shared, WRITER_TICK};
use crate::audit::{Action, AuditEvent, Loss, LossStage};

/// The writer thread: renders each event once, writes the local sinks, spools for the
/// network sinks.
pub(super) struct Writer {
    pub(super) rx: Receiver<AuditEvent>,
    pub(super) shared: Arc<Shared>,
    pub(super) opts: FormatOptions,
    pub(super) locals: Vec<Box<dyn LocalSink>>,
    pub(super) spool: Option<Spool>,
    /// Queue losses already reported by an overflow event.
    pub(super) queue_reported: u64,
    /// The spool write failures of the current burst.
    pub(super) spool_burst: Burst,
}

/// How often a burst of spool failures that goes on is logged again (with the count so far).
pub(super) const REMIND_EVERY: Duration = Duration::from_secs(60);

/// A burst of failures, logged once: [`Burst::fail`] says when to log, [`Burst::recovered`]
/// ends the burst and gives what it lost. Also used by the network sinks for their cursor
/// commits.
#[derive(Debug, Default)]
pub(super) struct Burst {
    /// Events (or failures) lost since the burst began; 0 when there is no burst.
    lost: u64,
    /// When the burst was last logged.
    logged: Option<Instant>,
}

impl Burst {
    /// Counts `events` lost at `now`; true when this failure should be logged (the first of
    /// a burst, or the first after [`REMIND_EVERY`] of silence).
    pub(super) fn fail(&mut self, events: u64, now: Instant) -> bool {
        self.lost = self.lost.saturating_add(events);
        let log = self
            .logged
            .is_none_or(|at| now.saturating_duration_since(at) >= REMIND_EVERY);
        if log {
            self.logged = Some(now);
        }
        log
    }

    /// A write succeeded: ends the burst; `Some(lost)` when one was going on.
    pub(super) fn recovered(&mut self) -> Option<u64> {
        self.logged = None;
        match std::mem::take(&mut self.lost) {
            0 => None,
            lost => Some(lost),
        }
    }
}

impl Writer {
    pub(super) fn run(mut self) {
        loop {
            let mut batch = Vec::new();
            let mut disconnected = false;
            match self.rx.recv_timeout(WRITER_TICK) {
                Ok(ev) => {
                    batch.push(ev);
                    std::thread::sleep(LINGER);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => disconnected = true,
            }
            while !disconnected && batch.len() < BATCH {
                match self.rx.try_recv() {
                    Ok(ev) => batch.push(ev),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => disconnected = true,
                }
            }
            let lost = self.shared.queue_dropped.load(Ordering::Relaxed);
            if lost > self.queue_reported {
                batch.push(overflow_event(lost - self.queue_reported, LossStage::Queue));
                self.queue_reported = lost;
            }
            if self.shared.reopen.swap(false, Ordering::SeqCst) {
                self.reopen_sinks();
            }
            let idle = batch.is_empty();
            if !idle {
                self.write(&batch);
            }
            if idle && (disconnected || self.shared.closing.load(Ordering::SeqCst)) {
                break;
            }
        }
    }

    fn write(&mut self, batch: &[AuditEvent]) {
        let lines: Vec<String> = batch
            .iter()
            .map(|ev| self.opts.render_within(ev, LINE_MAX_OCTETS))
            .collect();
        self.write_local(batch, &lines);
        let Some(spool) = self.spool.as_mut() else {
            return;
        };
        let records: Vec<Record> = batch
            .iter()
            .zip(&lines)
            .map(|(ev, line)| record(ev, line))
            .collect();
        match spool.append(&records) {
            Ok(dropped) => {
                if let Some(lost) = self.spool_burst.recovered() {
                    tracing::warn!(
                        lost,
                        "siem spool writable again; events lost to network sinks meanwhile"
                    );
                    self.report(
                        lost,
                        LossStage::Spool,
                        Some(format!(
                            "{lost} audit events not spooled: spool write failed"
                        )),
                    );
                }
                if dropped > 0 {
                    self.shared
                        .spool_dropped
                        .fetch_add(dropped, Ordering::Relaxed);
                    tracing::error!(
                        dropped,
                        "siem spool full: oldest undelivered events dropped"
                    );
                    self.report(dropped, LossStage::Spool, None);
                }
            }
            Err(e) => {
                let events = records.len() as u64;
                self.shared
                    .spool_failed
                    .fetch_add(events, Ordering::Relaxed);
                if self.spool_burst.fail(events, Instant::now()) {
                    tracing::error!(
                        error = %e,
                        lost_so_far = self.spool_burst.lost,
                        "siem spool write failed: events lost to network sinks until it can be written again (logged once per burst)"
                    );
                }
            }
        }
        if let Some(spool) = self.spool.as_mut()
            && let Err(e) = spool.gc()
        {
            tracing::warn!(error = %e, "siem spool cleanup failed");
        }
        self.shared.spooled.notify();
    }

    /// Writes an overflow event about `count` lost events (its message `message`, else the
    /// stage's) to every sink. After a drop its spool slot is free (kept so by
    /// [`Spool::append`]); otherwise appending it may drop the oldest row once more, which is
    /// counted but not reported again (a report must not cause another).
    fn report(&mut self, count: u64, stage: LossStage, message: Option<String>) {
        let mut ev = overflow_event(count, stage);
        if message.is_some() {
            ev.message = message;
        }
        let line = self.opts.render_within(&ev, LINE_MAX_OCTETS);
        self.write_local(std::slice::from_ref(&ev), std::slice::from_ref(&line));
        let Some(spool) = self.spool.as_mut() else {
            return;
        };
        match spool.append(&[record(&ev, &line)]) {
            Ok(dropped) => {
                self.shared
                    .spool_dropped
                    .fetch_add(dropped, Ordering::Relaxed);
            }
            Err(e) => {
                self.shared.spool_failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "siem spool write failed");
            }
        }
    }

    fn write_local(&mut self, batch: &[AuditEvent], lines: &[String]) {
        let batch = Batch {
            events: batch,
            lines,
        };
        for sink in &mut self.locals {
            if let Err(failure) = sink.write_batch(batch) {
                let counter = match sink.counter() {
                    ErrorCounter::Local => &self.shared.local_errors,
                    ErrorCounter::Udp => &self.shared.udp_errors,
                };
                counter.fetch_add(failure.count, Ordering::Relaxed);
                if sink.logs_failures() {
                    tracing::error!(sink = %sink.name(), error = %failure.error, "siem sink write failed");
                }
            }
        }
    }

    fn reopen_sinks(&mut self) {
        for sink in &mut self.locals {
            if let Err(e) = sink.reopen() {
                self.shared.local_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(sink = %sink.name(), error = %e, "siem sink reopen failed");
            }
        }
    }
}

fn record(event: &AuditEvent, line: &str) -> Record {
    Record {
        timestamp: event.timestamp,
        severity: syslog_severity(event),
        msgid: event.action.as_str().to_owned(),
        body: line.to_owned(),
    }
}

/// The event the trail emits about its own losses.
fn overflow_event(count: u64, stage: LossStage) -> AuditEvent {
    let mut ev = AuditEvent::new(Utc::now(), Action::SiemOverflow, None, "siem");
    ev.lost = Some(Loss { count, stage });
    ev.message = Some(match stage {
        LossStage::Queue => format!("{count} audit events dropped: in-memory queue full"),
        LossStage::Spool => format!("{count} undelivered audit events dropped: spool full"),
    });
    ev
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::Mutex;
    use std::sync::mpsc::sync_channel;

    use super::*;
    use crate::config::SiemFormat;
    use crate::siem::sink_local::SinkFailure;

    /// A local sink the writer knows only through the trait: records what it was given and
    /// fails as told.
    struct Fake {
        seen: Arc<Mutex<Vec<String>>>,
        counter: ErrorCounter,
        fails: u64,
    }

    impl LocalSink for Fake {
        fn name(&self) -> String {
            "fake".to_owned()
        }

        fn counter(&self) -> ErrorCounter {
            self.counter
        }

        fn write_batch(&mut self, batch: Batch<'_>) -> Result<(), SinkFailure> {
            assert_eq!(batch.events.len(), batch.lines.len());
            crate::lock(&self.seen).extend(batch.lines.iter().cloned());
            match self.fails {
                0 => Ok(()),
                count => Err(SinkFailure {
                    count,
                    error: io::Error::other("fake failure"),
                }),
            }
        }
    }

    /// Every local sink gets every rendered line; a failure goes to the sink's own counter,
    /// by the count the sink reports, and does not keep the next sink from its batch.
    #[test]
    fn every_local_sink_gets_the_batch_and_failures_are_counted_per_counter() {
        let rows: &[(ErrorCounter, u64, u64, u64)] = &[
            // (counter, failures reported, local_errors, udp_errors)
            (ErrorCounter::Local, 0, 0, 0),
            (ErrorCounter::Local, 1, 1, 0),
            (ErrorCounter::Udp, 3, 0, 3),
        ];
        for &(counter, fails, want_local, want_udp) in rows {
            let (_tx, rx) = sync_channel(1);
            let first = Arc::new(Mutex::new(Vec::new()));
            let second = Arc::new(Mutex::new(Vec::new()));
            let mut writer = Writer {
                rx,
                shared: Arc::new(Shared::default()),
                opts: FormatOptions::new(SiemFormat::Ecs, "gk.test"),
                locals: vec![
                    Box::new(Fake {
                        seen: Arc::clone(&first),
                        counter,
                        fails,
                    }),
                    Box::new(Fake {
                        seen: Arc::clone(&second),
                        counter: ErrorCounter::Local,
                        fails: 0,
                    }),
                ],
                spool: None,
                queue_reported: 0,
                spool_burst: Burst::default(),
            };
            let batch: Vec<AuditEvent> = (0..3)
                .map(|i| overflow_event(i + 1, LossStage::Queue))
                .collect();
            writer.write(&batch);
            let want: Vec<String> = batch
                .iter()
                .map(|ev| writer.opts.render_within(ev, LINE_MAX_OCTETS))
                .collect();
            assert_eq!(*crate::lock(&first), want, "{counter:?} {fails}");
            assert_eq!(*crate::lock(&second), want, "{counter:?} {fails}");
            let stats = writer.shared.stats();
            assert_eq!(
                (stats.local_errors, stats.udp_errors),
                (want_local, want_udp),
                "{counter:?} {fails}"
            );
        }
    }

    /// One log line per burst: a table of (milliseconds since the first failure, events)
    /// failures, `None` for a success, and whether each step logs / what `recovered` returns.
    #[test]
    fn a_burst_of_failures_logs_once_and_reports_its_total_on_recovery() {
        let remind = u64::try_from(REMIND_EVERY.as_millis()).unwrap_or(u64::MAX);
        // (at ms, Some(events) failed / None succeeded) and (logs?, recovered count).
        type Steps<'a> = &'a [(u64, Option<u64>)];
        type Wants = &'static [(bool, Option<u64>)];
        let rows: &[(&str, Steps<'_>, Wants)] = &[
            ("one success", &[(0, None)], &[(false, None)]),
            (
                "three failures then a success",
                &[(0, Some(1)), (5, Some(2)), (9, Some(4)), (10, None)],
                &[(true, None), (false, None), (false, None), (false, Some(7))],
            ),
            (
                "a long burst is reminded once per REMIND_EVERY",
                &[
                    (0, Some(1)),
                    (remind - 1, Some(1)),
                    (remind, Some(1)),
                    (remind + 1, Some(1)),
                ],
                &[(true, None), (false, None), (true, None), (false, None)],
            ),
            (
                "a new burst after a recovery logs again",
                &[(0, Some(3)), (1, None), (2, Some(1)), (3, None), (4, None)],
                &[
                    (true, None),
                    (false, Some(3)),
                    (true, None),
                    (false, Some(1)),
                    (false, None),
                ],
            ),
        ];
        for (name, steps, want) in rows {
            let start = Instant::now();
            let mut burst = Burst::default();
            let got: Vec<(bool, Option<u64>)> = steps
                .iter()
                .map(|&(at, events)| match events {
                    Some(n) => (burst.fail(n, start + Duration::from_millis(at)), None),
                    None => (false, burst.recovered()),
                })
                .collect();
            assert_eq!(got, *want, "{name}");
        }
    }
}
