//! The writer thread: takes batches off the queue, renders each event once, writes every
//! local sink ([`LocalSink`]) and appends the batch to the spool for the network sinks. It
//! reports the trail's own losses (queue or spool full) with an overflow event.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};

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
            Ok(0) => {}
            Ok(dropped) => {
                self.shared
                    .spool_dropped
                    .fetch_add(dropped, Ordering::Relaxed);
                tracing::error!(
                    dropped,
                    "siem spool full: oldest undelivered events dropped"
                );
                let ev = overflow_event(dropped, LossStage::Spool);
                let line = self.opts.render_within(&ev, LINE_MAX_OCTETS);
                self.write_local(std::slice::from_ref(&ev), std::slice::from_ref(&line));
                if let Some(spool) = self.spool.as_mut()
                    && let Err(e) = spool.append(&[record(&ev, &line)])
                {
                    self.shared.spool_failed.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(error = %e, "siem spool write failed");
                }
            }
            Err(e) => {
                self.shared
                    .spool_failed
                    .fetch_add(records.len() as u64, Ordering::Relaxed);
                tracing::error!(error = %e, events = records.len(), "siem spool write failed: events lost to network sinks");
            }
        }
        if let Some(spool) = self.spool.as_mut()
            && let Err(e) = spool.gc()
        {
            tracing::warn!(error = %e, "siem spool cleanup failed");
        }
        self.shared.spooled.notify();
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
}
