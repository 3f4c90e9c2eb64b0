//! `[[webhook]]` (SPEC §11): where the backend is told about confirmations, refusals and
//! expiries, through the same two stages as every other table (raw serde structs that refuse
//! unknown keys, then one validation that collects every problem under its key).
//!
//! # Decisions where SPEC §11 is silent
//!
//! - The secret is read here, in the Standard Webhooks format `whsec_<base64>` (what its
//!   reference libraries take), so a missing or malformed `secret_file` is a `file:line`
//!   error at start rather than a failed delivery later. [`WebhookSecret`]'s `Debug` is
//!   redacted.
//! - `url` is any absolute `http` or `https` URL without user info or fragment: operators post
//!   to real backends, so loopback is not required (tests only use loopback).
//! - `events` defaults to all three; an unknown or repeated name is an error.
//! - `timeout` (`"10s"`): one attempt's bound, connect to last byte of the answer.
//! - `retry_max` (`"10m"`): the cap of the exponential backoff (1 s, 2 s, 4 s, … with up to
//!   +25 % jitter).
//! - `max_age` (`"72h"`): a delivery not acknowledged by a 2xx this long after the event is
//!   given up, with a SIEM event and a metric. The default covers a receiver down over a long
//!   weekend; SPEC §11 asks for at least an hour.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::check::Check;
use super::error::KeyPath;

/// The event names a `[[webhook]]` may subscribe to (SPEC §11).
pub const WEBHOOK_EVENTS: &[&str] = &[
    "challenge.confirmed",
    "challenge.rejected",
    "challenge.expired",
];

/// `[[webhook]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    /// Where deliveries are POSTed (`http` or `https`).
    pub url: String,
    /// File holding the Standard Webhooks secret, `whsec_<base64>`.
    pub secret_file: String,
    /// Event names to deliver.
    #[serde(default = "default_events")]
    pub events: Vec<String>,
    /// One attempt's time limit.
    #[serde(default = "default_timeout")]
    pub timeout: String,
    /// Longest wait between two attempts (the backoff's cap).
    #[serde(default = "default_retry_max")]
    pub retry_max: String,
    /// Age after which an undelivered event is given up (and reported).
    #[serde(default = "default_max_age")]
    pub max_age: String,
}

pub fn default_events() -> Vec<String> {
    WEBHOOK_EVENTS.iter().map(|e| (*e).to_owned()).collect()
}

pub fn default_timeout() -> String {
    "10s".to_owned()
}

pub fn default_retry_max() -> String {
    "10m".to_owned()
}

pub fn default_max_age() -> String {
    "72h".to_owned()
}

/// The HMAC key of a webhook (the bytes after `whsec_`, base64-decoded). `Debug` is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(Vec<u8>);

impl WebhookSecret {
    /// Parse `whsec_<base64>` (surrounding whitespace ignored); `None` when malformed or
    /// shorter than 16 bytes (a guessable key would make the signature worthless).
    pub fn parse(text: &str) -> Option<Self> {
        let b64 = text.trim().strip_prefix("whsec_")?;
        let bytes = data_encoding::BASE64.decode(b64.as_bytes()).ok()?;
        (bytes.len() >= 16).then_some(Self(bytes))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret([redacted])")
    }
}

/// One validated `[[webhook]]`.
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    pub url: url::Url,
    pub secret_file: PathBuf,
    pub secret: WebhookSecret,
    /// Subscribed event names, each one of [`WEBHOOK_EVENTS`].
    pub events: Vec<&'static str>,
    pub timeout: Duration,
    pub retry_max: Duration,
    pub max_age: Duration,
}

impl WebhookConfig {
    pub fn wants(&self, event: &str) -> bool {
        self.events.contains(&event)
    }
}

impl Check {
    pub(super) fn webhooks(&mut self, raw: &[RawWebhook]) -> Vec<WebhookConfig> {
        let at = KeyPath::of(&["webhook"]);
        let mut seen_urls = Vec::new();
        raw.iter()
            .enumerate()
            .filter_map(|(i, w)| {
                let here = at.index(i);
                let hook = self.webhook(&here, w);
                if let Some(h) = &hook {
                    // The URL is the delivery's key in the outbox: two tables with one URL
                    // would share (and race on) their deliveries.
                    if seen_urls.contains(&h.url) {
                        self.fail(&here.key("url"), "another [[webhook]] has this url");
                        return None;
                    }
                    seen_urls.push(h.url.clone());
                }
                hook
            })
            .collect()
    }

    fn webhook(&mut self, at: &KeyPath, raw: &RawWebhook) -> Option<WebhookConfig> {
        let url = self.webhook_url(&at.key("url"), &raw.url);
        let secret_file = self.path(&at.key("secret_file"), &raw.secret_file);
        let secret = match std::fs::read_to_string(&secret_file) {
            Ok(text) => {
                let secret = WebhookSecret::parse(&text);
                if secret.is_none() {
                    self.fail(
                        &at.key("secret_file"),
                        "must hold whsec_<base64> of at least 16 bytes",
                    );
                }
                secret
            }
            Err(e) => {
                self.fail(
                    &at.key("secret_file"),
                    format!("cannot read {}: {e}", secret_file.display()),
                );
                None
            }
        };
        let mut events: Vec<&'static str> = Vec::new();
        for (i, name) in raw.events.iter().enumerate() {
            match WEBHOOK_EVENTS.iter().find(|e| **e == name.as_str()) {
                Some(e) if events.contains(e) => {
                    self.fail(&at.key("events").index(i), format!("{name:?} is repeated"));
                }
                Some(e) => events.push(e),
                None => self.fail(
                    &at.key("events").index(i),
                    format!("{name:?} is not one of {}", WEBHOOK_EVENTS.join(", ")),
                ),
            }
        }
        if raw.events.is_empty() {
            self.fail(&at.key("events"), "must name at least one event");
        }
        let timeout = self.duration(
            &at.key("timeout"),
            &raw.timeout,
            Duration::from_secs(1),
            Duration::from_secs(120),
        );
        let retry_max = self.duration(
            &at.key("retry_max"),
            &raw.retry_max,
            Duration::from_secs(1),
            Duration::from_secs(86_400),
        );
        let max_age = self.duration(
            &at.key("max_age"),
            &raw.max_age,
            Duration::from_secs(10),
            Duration::from_secs(30 * 86_400),
        );
        Some(WebhookConfig {
            url: url?,
            secret_file,
            secret: secret?,
            events,
            timeout,
            retry_max,
            max_age,
        })
    }

    fn webhook_url(&mut self, at: &KeyPath, text: &str) -> Option<url::Url> {
        let problem = match url::Url::parse(text) {
            Err(e) => Some(format!("not an absolute URL: {e}")),
            Ok(u) if !matches!(u.scheme(), "http" | "https") => {
                Some("must be an http or https URL".to_owned())
            }
            Ok(u) if u.host().is_none() => Some("has no host".to_owned()),
            Ok(u) if !u.username().is_empty() || u.password().is_some() => {
                Some("must not carry user info (put credentials in the secret)".to_owned())
            }
            Ok(u) if u.fragment().is_some() => Some("must not have a fragment".to_owned()),
            Ok(u) => return Some(u),
        };
        if let Some(p) = problem {
            self.fail(at, p);
        }
        None
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn secrets_parse_only_in_the_standard_format() {
        let table: &[(&str, Option<usize>)] = &[
            ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", Some(24)),
            ("  whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n", Some(24)),
            ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", None),
            ("whsec_not base64!", None),
            ("whsec_c2hvcnQ=", None),
            ("", None),
        ];
        for (text, len) in table {
            assert_eq!(
                WebhookSecret::parse(text).map(|s| s.as_bytes().len()),
                *len,
                "{text:?}"
            );
        }
    }

    #[test]
    fn secret_debug_is_redacted() {
        let s = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        assert_eq!(format!("{s:?}"), "Some(WebhookSecret([redacted]))");
    }
}
