//! Configuration: TOML with every key documented, unknown keys refused (a typo in a security
//! setting must not pass silently), validated once at start-up into the types below.
//!
//! The field names and types below are the contract the other modules code against. Loading
//! happens in two stages (style guide §11): `raw` holds serde structs that refuse unknown keys
//! and carry the defaults, `validate` (with the value checkers of `check`) turns them into
//! these types, collecting every problem with its key; `error` locates each problem at
//! `file:line`.
//!
//! Relative paths stay relative to the working directory (SPEC §6): nothing here resolves
//! them against the configuration file's directory.

mod anchor;
mod check;
mod duration;
mod error;
mod oidc;
mod raw;
mod validate;
mod webhook;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

use crate::address::{Domain, EnvelopeTag, ParseOptions};

/// The local-part prefix of a probe address, `probe+<token>@<confirm.domain>` (SPEC §10).
/// Fixed by the SPEC; `confirm.local_prefix` may not take it.
pub const PROBE_PREFIX: &str = "probe";

pub use anchor::{AnchorDs, AnchorKey, TrustAnchor};
pub use duration::{format_duration, parse_duration};
pub use error::{ConfigError, KeyPath, Problem, Segment};
pub use oidc::{ClientSecret, OidcClient, OidcConfig, SigningAlg, is_loopback_host};
pub use validate::ALLOWED_EXTRA_CHARS;
pub use webhook::{WEBHOOK_EVENTS, WebhookConfig, WebhookSecret};

impl Config {
    /// Read and validate a configuration file. Errors name the file and line.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::io(&origin, &e))?;
        Self::from_toml_str(&text, &origin)
    }

    /// Validate configuration text; `origin` names it in errors (a file name, or a label
    /// such as `<embedded conf/gatekeeper.toml>`).
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let raw: raw::RawConfig =
            toml::from_str(text).map_err(|e| ConfigError::toml(origin, text, &e))?;
        validate::validate(raw).map_err(|found| ConfigError::semantic(origin, text, found))
    }

    /// The address parser options `[policy]` sets.
    pub fn parse_options(&self) -> ParseOptions {
        self.policy.parse_options()
    }
}

impl PolicyConfig {
    /// The address parser options this policy sets.
    pub fn parse_options(&self) -> ParseOptions {
        parse_options(&self.local_part_extra_chars, self.allow_idna)
    }
}

/// The one constructor of the parser options from configuration values: validation needs
/// them (to parse the domain lists) before a [`PolicyConfig`] exists, everything else asks
/// [`PolicyConfig::parse_options`].
fn parse_options(local_part_extra_chars: &str, allow_idna: bool) -> ParseOptions {
    ParseOptions {
        local_part_extra_chars: local_part_extra_chars.to_owned(),
        allow_idna,
    }
}

/// The whole validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub smtp: SmtpConfig,
    pub confirm: ConfirmConfig,
    pub policy: PolicyConfig,
    pub dns: DnsConfig,
    pub store: StoreConfig,
    pub api: ApiConfig,
    pub outbound: OutboundConfig,
    pub siem: SiemConfig,
    /// `[oidc]`: the OpenID Provider, when configured.
    pub oidc: Option<OidcConfig>,
    /// `[[webhook]]`: the backends told about state changes (SPEC §11), in file order.
    pub webhooks: Vec<WebhookConfig>,
}

#[derive(Clone, Debug)]
pub struct SmtpConfig {
    pub listen: Vec<SocketAddr>,
    /// Banner and EHLO name.
    pub hostname: String,
    pub max_message_bytes: usize,
    /// Bytes of DATA all sessions together may hold (`crate::smtp::budget`).
    pub max_buffered_bytes: usize,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub command_timeout: Duration,
    pub data_timeout: Duration,
    pub session_timeout: Duration,
    pub max_errors: u32,
    /// Transactions (MAIL commands) per session.
    pub max_transactions: u32,
    pub shutdown_grace: Duration,
    pub tls: Option<TlsConfig>,
}

#[derive(Clone, Debug)]
pub struct TlsConfig {
    pub certificate: PathBuf,
    pub private_key: PathBuf,
    pub required: bool,
}

#[derive(Clone, Debug)]
pub struct ConfirmConfig {
    /// The confirmation domain: `<local_prefix>+<token>@<domain>`.
    pub domain: Domain,
    pub local_prefix: String,
    pub challenge_ttl: Duration,
    pub max_message_age: Duration,
    pub require_reply: bool,
    pub require_session_code: bool,
    pub max_pending_per_address: u32,
    pub max_challenges_per_address_per_hour: u32,
    /// Name of the service in the challenge mail text.
    pub service_name: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Alignment {
    Strict,
    Relaxed,
}

#[derive(Clone, Debug)]
pub struct PolicyConfig {
    pub allowed_domains: Vec<Domain>,
    pub denied_domains: Vec<Domain>,
    pub alignment: Alignment,
    pub require_iprev: bool,
    pub dkim_min_rsa_bits: u32,
    /// Client networks allowed to connect; empty = any.
    pub allowed_networks: Vec<IpNet>,
    /// Extra characters allowed in a local part (RFC 5322 atext only).
    pub local_part_extra_chars: String,
    pub allow_idna: bool,
    /// `[policy.domains."<domain>"]` overrides, most specific match wins.
    pub domains: Vec<DomainOverride>,
}

/// A per-domain relaxation (SPEC §4). Validation guarantees that `require_dkim` and
/// `require_spf` are never both false.
#[derive(Clone, Debug)]
pub struct DomainOverride {
    pub domain: Domain,
    pub require_dkim: bool,
    pub require_spf: bool,
    pub require_iprev: bool,
    /// Answers DNSSEC proves unsigned (insecure) are refused, temporarily, for this domain.
    pub require_dnssec: bool,
    /// `envelope_tag`: the tag the strict parser removes from this domain's MAIL FROM.
    pub envelope_tag: Option<EnvelopeTag>,
    /// `dkim_domains`: `d=` that count as aligned for this domain (`aligned_by_override`).
    pub dkim_domains: Vec<Domain>,
}

#[derive(Clone, Debug)]
pub struct DnsConfig {
    /// Empty = the system resolver (`/etc/resolv.conf`).
    pub nameservers: Vec<SocketAddr>,
    /// `dns.timeout`: how long each try of one query waits for its answer.
    pub timeout: Duration,
    /// `dns.check_timeout`: the bound on one whole check (SPF, DKIM keys, iprev); at least
    /// `timeout`.
    pub check_timeout: Duration,
    pub dnssec: bool,
    /// `dns.trust_anchor`, read and checked at load; `None` = the root's keys built into
    /// hickory.
    pub trust_anchor: Option<TrustAnchor>,
    /// Upper bound on cached entries.
    pub cache_size: usize,
}

#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// The SQLite file; meaningless when [`StoreConfig::postgres`] is set.
    pub path: PathBuf,
    /// How often expired challenges are purged.
    pub purge_interval: Duration,
    /// `store.url` given: the PostgreSQL store instead of SQLite (SPEC §7).
    pub postgres: Option<PostgresConfig>,
}

/// `[store]` with `url`: where the shared PostgreSQL database is and how to reach it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostgresConfig {
    /// `postgres://user@host[:port]/database[?options]`, without a password.
    pub url: String,
    /// The password, read at open (so a rotated file is read again at the next start).
    pub password_file: Option<PathBuf>,
    pub tls: PgTls,
    /// CA bundle (PEM) for `tls = "require"`; `None` = the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Connections one instance keeps at most.
    pub pool_size: usize,
}

/// `store.tls`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PgTls {
    /// TLS with certificate and host name verification; plaintext refused.
    Require,
    /// Plaintext: only for a database on loopback or a Unix socket.
    Disable,
}

#[derive(Clone, Debug)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    pub token_file: PathBuf,
}

#[derive(Clone, Debug)]
pub struct OutboundConfig {
    /// The From header of challenge mails, e.g. `Inscription <noreply@verify.example.gouv.fr>`.
    pub from: String,
    pub target: OutboundTarget,
    pub dkim: Option<OutboundDkim>,
}

#[derive(Clone, Debug)]
pub enum OutboundTarget {
    /// Write `.eml` files into this directory.
    Directory(PathBuf),
    /// SMTP smarthost URL, e.g. `smtp://relay.example.gouv.fr:25` (STARTTLS when offered).
    Relay(String),
}

#[derive(Clone, Debug)]
pub struct OutboundDkim {
    pub domain: Domain,
    pub selector: String,
    /// PEM (PKCS#8) RSA or Ed25519 private key.
    pub private_key: PathBuf,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SiemFormat {
    Ecs,
    Cef,
}

#[derive(Clone, Debug)]
pub struct SiemConfig {
    pub format: SiemFormat,
    pub sinks: Vec<SiemSink>,
    pub spool_max_events: usize,
    /// Where the durable spool for network sinks lives.
    pub spool_path: PathBuf,
}

#[derive(Clone, Debug)]
pub enum SiemSink {
    Stdout,
    File {
        path: PathBuf,
    },
    Syslog {
        address: SocketAddr,
        transport: SyslogTransport,
        ca_file: Option<PathBuf>,
        server_name: Option<String>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyslogTransport {
    Udp,
    Tcp,
    Tls,
}
