//! `[siem]` and its `[[siem.sink]]` tables, from raw to validated: each sink's keys are
//! checked against its kind (a key of another kind is refused, not ignored).

use super::super::check::{Check, to_usize};
use super::super::error::KeyPath;
use super::super::raw::{RawSiem, RawSiemFormat, RawSink, RawSinkKind, RawTransport};
use super::super::{SiemConfig, SiemFormat, SiemSink, SyslogTransport};
use crate::address::ParseOptions;

impl Check {
    pub(super) fn siem(&mut self, raw: &RawSiem) -> Option<SiemConfig> {
        let at = KeyPath::of(&["siem"]);
        if raw.sink.is_empty() {
            self.fail(
                &at.key("sink"),
                "at least one sink is needed: every refusal is an audit event",
            );
        }
        let sinks = raw
            .sink
            .iter()
            .enumerate()
            .filter_map(|(i, sink)| self.sink(&at.key("sink").index(i), sink))
            .collect();
        Some(SiemConfig {
            format: match raw.format {
                RawSiemFormat::Ecs => SiemFormat::Ecs,
                RawSiemFormat::Cef => SiemFormat::Cef,
            },
            sinks,
            spool_max_events: to_usize(self.range(
                &at.key("spool_max_events"),
                raw.spool_max_events,
                1,
                10_000_000,
            )),
            spool_path: self.path(&at.key("spool_path"), &raw.spool_path),
        })
    }

    fn sink(&mut self, at: &KeyPath, raw: &RawSink) -> Option<SiemSink> {
        // Keys that belong to another kind of sink are refused rather than ignored.
        let used: [(&str, bool, bool); 5] = [
            ("path", raw.path.is_some(), raw.kind == RawSinkKind::File),
            (
                "address",
                raw.address.is_some(),
                raw.kind == RawSinkKind::Syslog,
            ),
            (
                "transport",
                raw.transport.is_some(),
                raw.kind == RawSinkKind::Syslog,
            ),
            (
                "ca_file",
                raw.ca_file.is_some(),
                raw.transport == Some(RawTransport::Tls),
            ),
            (
                "server_name",
                raw.server_name.is_some(),
                raw.transport == Some(RawTransport::Tls),
            ),
        ];
        for (key, present, fits) in used {
            if present && !fits {
                self.fail(
                    &at.key(key),
                    "does not apply to this sink type or transport",
                );
            }
        }
        match raw.kind {
            RawSinkKind::Stdout => Some(SiemSink::Stdout),
            RawSinkKind::File => {
                let Some(path) = &raw.path else {
                    self.fail(&at.key("path"), "a file sink needs a path");
                    return None;
                };
                Some(SiemSink::File {
                    path: self.path(&at.key("path"), path),
                })
            }
            RawSinkKind::Syslog => {
                let Some(address) = &raw.address else {
                    self.fail(
                        &at.key("address"),
                        "a syslog sink needs an address \"ip:port\"",
                    );
                    return None;
                };
                let address = self.socket(&at.key("address"), address)?;
                let server_name = raw.server_name.as_ref().and_then(|name| {
                    let domain =
                        self.domain(&at.key("server_name"), name, &ParseOptions::default());
                    domain.map(|d| d.as_str().to_owned())
                });
                Some(SiemSink::Syslog {
                    address,
                    transport: match raw.transport.unwrap_or(RawTransport::Udp) {
                        RawTransport::Udp => SyslogTransport::Udp,
                        RawTransport::Tcp => SyslogTransport::Tcp,
                        RawTransport::Tls => SyslogTransport::Tls,
                    },
                    ca_file: raw
                        .ca_file
                        .as_ref()
                        .map(|p| self.path(&at.key("ca_file"), p)),
                    server_name,
                })
            }
        }
    }
}
