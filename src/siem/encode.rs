//! The one place that knows both serialisers: picks [`ecs`] or [`cef`] by the configured
//! [`SiemFormat`]. `format` holds what both share (bounds, severities, truncation) and
//! imports neither, so the serialisers depend on `format` and only this file depends on
//! them. A new format is one new module and one arm here.

use super::format::{FIELD_BOUNDS, FormatOptions};
use super::{cef, ecs};
use crate::audit::AuditEvent;
use crate::config::SiemFormat;

impl FormatOptions {
    /// The event as one line (no line terminator) in the configured format, each field cut
    /// to `field_max_chars`.
    pub fn render(&self, event: &AuditEvent) -> String {
        match self.format {
            SiemFormat::Ecs => ecs::to_line(event, self),
            SiemFormat::Cef => cef::to_line(event, self),
        }
    }

    /// [`render`](Self::render), then again with the tighter [`FIELD_BOUNDS`] while the line
    /// is longer than `max_octets`. The result stays one parseable event; only if even the
    /// tightest bound does not fit (not reachable with the product's events: the fixed part is
    /// well under 2 KiB) is it longer than `max_octets`.
    pub fn render_within(&self, event: &AuditEvent, max_octets: usize) -> String {
        let mut line = self.render(event);
        for bound in FIELD_BOUNDS
            .into_iter()
            .filter(|b| *b < self.field_max_chars)
        {
            if line.len() <= max_octets {
                break;
            }
            let tighter = FormatOptions {
                field_max_chars: bound,
                ..self.clone()
            };
            line = tighter.render(event);
        }
        line
    }
}
