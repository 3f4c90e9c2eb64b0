//! The raw layer: exactly what the TOML file may say, nothing interpreted yet.
//!
//! Every struct refuses unknown keys (a typo in a security setting must not pass silently),
//! every field is documented, and every default comes from a named function so that
//! `conf/gatekeeper.toml` and this file can be checked against each other. Validation into
//! the typed [`crate::config::Config`] happens once, in `validate.rs`.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `[smtp]`: the receiving server.
    #[serde(default)]
    pub smtp: RawSmtp,
    /// `[confirm]`: the confirmation addresses and challenge limits.
    pub confirm: RawConfirm,
    /// `[policy]`: which senders may confirm and how strictly.
    pub policy: RawPolicy,
    /// `[dns]`: the resolver used for SPF, DKIM and reverse DNS.
    #[serde(default)]
    pub dns: RawDns,
    /// `[store]`: where challenges and confirmations live.
    #[serde(default)]
    pub store: RawStore,
    /// `[api]`: the HTTP API for the backend.
    #[serde(default)]
    pub api: RawApi,
    /// `[outbound]`: how challenge mails leave.
    pub outbound: RawOutbound,
    /// `[siem]`: where audit events go.
    #[serde(default)]
    pub siem: RawSiem,
    /// `[oidc]`: the OpenID Provider (SPEC §9); absent = not started.
    #[serde(default)]
    pub oidc: Option<super::oidc::RawOidc>,
    /// `[[webhook]]`: backends told about confirmations, refusals and expiries (SPEC §11).
    #[serde(default)]
    pub webhook: Vec<super::webhook::RawWebhook>,
}

/// `[smtp]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSmtp {
    /// Socket addresses to listen on, `"ip:port"`.
    #[serde(default = "default_smtp_listen")]
    pub listen: Vec<String>,
    /// Banner and EHLO name; defaults to `confirm.domain`.
    #[serde(default)]
    pub hostname: Option<String>,
    /// Largest message accepted in DATA, in bytes (advertised as SIZE).
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: u64,
    /// Bytes of DATA all sessions together may hold in memory.
    #[serde(default = "default_max_buffered_bytes")]
    pub max_buffered_bytes: u64,
    /// Concurrent connections, all clients together.
    #[serde(default = "default_max_connections")]
    pub max_connections: u64,
    /// Concurrent connections from one client IP.
    #[serde(default = "default_max_connections_per_ip")]
    pub max_connections_per_ip: u64,
    /// Wait for a command line (RFC 5321 §4.5.3.2: at least 5 minutes).
    #[serde(default = "default_command_timeout")]
    pub command_timeout: String,
    /// Wait for each chunk of DATA (RFC 5321 §4.5.3.2.6: 3 minutes per block; we allow more).
    #[serde(default = "default_data_timeout")]
    pub data_timeout: String,
    /// Total lifetime of one SMTP session (slow-loris bound).
    #[serde(default = "default_session_timeout")]
    pub session_timeout: String,
    /// Protocol errors tolerated before the session is closed with 421.
    #[serde(default = "default_max_errors")]
    pub max_errors: u64,
    /// Transactions (MAIL commands) per session.
    #[serde(default = "default_max_transactions")]
    pub max_transactions: u64,
    /// On shutdown, how long sessions may run before they get 421.
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace: String,
    /// `[smtp.tls]`: STARTTLS; absent = no STARTTLS offered.
    #[serde(default)]
    pub tls: Option<RawTls>,
}

impl Default for RawSmtp {
    fn default() -> Self {
        Self {
            listen: default_smtp_listen(),
            hostname: None,
            max_message_bytes: default_max_message_bytes(),
            max_buffered_bytes: default_max_buffered_bytes(),
            max_connections: default_max_connections(),
            max_connections_per_ip: default_max_connections_per_ip(),
            command_timeout: default_command_timeout(),
            data_timeout: default_data_timeout(),
            session_timeout: default_session_timeout(),
            max_errors: default_max_errors(),
            max_transactions: default_max_transactions(),
            shutdown_grace: default_shutdown_grace(),
            tls: None,
        }
    }
}

/// `[smtp.tls]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// PEM certificate chain, leaf first.
    pub certificate: String,
    /// PEM private key of the certificate.
    pub private_key: String,
    /// Refuse MAIL before STARTTLS (`tls.required`).
    #[serde(default)]
    pub required: bool,
}

/// `[confirm]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfirm {
    /// The confirmation domain: replies go to `<local_prefix>+<token>@<domain>`.
    pub domain: String,
    /// Local part before the `+<token>`.
    #[serde(default = "default_local_prefix")]
    pub local_prefix: String,
    /// How long a challenge can be answered.
    #[serde(default = "default_challenge_ttl")]
    pub challenge_ttl: String,
    /// Oldest signed Date (or DKIM `t=`) accepted: bounds the replay of an old genuine mail.
    #[serde(default = "default_max_message_age")]
    pub max_message_age: String,
    /// The reply must reference the challenge mail (In-Reply-To / References).
    #[serde(default = "default_true")]
    pub require_reply: bool,
    /// The session code shown to the requester must be in the signed Subject or the body.
    #[serde(default = "default_true")]
    pub require_session_code: bool,
    /// Pending challenges per address (mailbox-flooding bound).
    #[serde(default = "default_max_pending_per_address")]
    pub max_pending_per_address: u64,
    /// Challenges created per address in any hour (mailbox-flooding bound).
    #[serde(default = "default_max_challenges_per_address_per_hour")]
    pub max_challenges_per_address_per_hour: u64,
    /// Name of the service written in the challenge mail.
    #[serde(default = "default_service_name")]
    pub service_name: String,
}

/// `[policy]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    /// Domains (and their subdomains, on a label boundary) whose users may confirm.
    pub allowed_domains: Vec<String>,
    /// Domains (and subdomains) refused even when allowed above.
    #[serde(default)]
    pub denied_domains: Vec<String>,
    /// DKIM `d=` alignment with the From domain: `strict` or `relaxed`.
    #[serde(default)]
    pub alignment: RawAlignment,
    /// Require forward-confirmed reverse DNS of the client for every domain.
    #[serde(default)]
    pub require_iprev: bool,
    /// Smallest RSA DKIM key accepted, in bits.
    #[serde(default = "default_dkim_min_rsa_bits")]
    pub dkim_min_rsa_bits: u64,
    /// Client networks (CIDR) allowed to connect; empty = any.
    #[serde(default)]
    pub allowed_networks: Vec<String>,
    /// Extra characters allowed in local parts (RFC 5322 atext only, never `%` `!`).
    #[serde(default)]
    pub local_part_extra_chars: String,
    /// Accept internationalised (`xn--`) labels in domains.
    #[serde(default)]
    pub allow_idna: bool,
    /// `[policy.domains."<domain>"]`: per-domain relaxations.
    #[serde(default)]
    pub domains: BTreeMap<String, RawDomainOverride>,
}

/// `strict` or `relaxed` alignment.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RawAlignment {
    /// `d=` equals the From domain.
    #[default]
    Strict,
    /// Same organisational domain (Public Suffix List).
    Relaxed,
}

/// `[policy.domains."<domain>"]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDomainOverride {
    /// Require an aligned, valid DKIM signature.
    #[serde(default = "default_true")]
    pub require_dkim: bool,
    /// Require SPF `pass`.
    #[serde(default = "default_true")]
    pub require_spf: bool,
    /// Require forward-confirmed reverse DNS; absent = `policy.require_iprev`.
    #[serde(default)]
    pub require_iprev: Option<bool>,
    /// Refuse (temporarily) answers DNSSEC proves unsigned for this domain; needs
    /// `dns.dnssec = true`.
    #[serde(default)]
    pub require_dnssec: bool,
    /// The bounce-address tag this domain's outbound gateway puts in MAIL FROM.
    #[serde(default)]
    pub envelope_tag: Option<RawEnvelopeTag>,
    /// DKIM `d=` that count as aligned for this domain (a Microsoft 365 tenant).
    #[serde(default)]
    pub dkim_domains: Vec<String>,
    /// Entries of `dkim_domains` stated a second time because they are under another allowed
    /// domain (or listed by another override): trusting them is deliberate.
    #[serde(default)]
    pub dkim_domains_cross_allowed: Vec<String>,
}

/// `envelope_tag`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RawEnvelopeTag {
    /// `prvs=KDDDSSSSSS=local@domain` (draft-levine-smtp-batv), or `prvs=DDDSSSSSS=`.
    Batv,
    /// Barracuda's `btv1==HHHHHHHHHHH==local@domain`.
    Btv1,
}

/// `[dns]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDns {
    /// Nameservers as `"ip:port"`, `"[ipv6]:port"` or an IPv4 `"ip"` (port 53); empty = the
    /// system resolver.
    #[serde(default)]
    pub nameservers: Vec<String>,
    /// Timeout of one DNS query (each try of it).
    #[serde(default = "default_dns_timeout")]
    pub timeout: String,
    /// Bound on one whole DNS-bound check (SPF with its includes, the DKIM key lookups,
    /// iprev), however many queries it takes.
    #[serde(default = "default_dns_check_timeout")]
    pub check_timeout: String,
    /// Validate DNSSEC.
    #[serde(default)]
    pub dnssec: bool,
    /// File of DNSKEY records to anchor validation on; absent = the root's keys built into
    /// the resolver.
    #[serde(default)]
    pub trust_anchor: Option<String>,
    /// Upper bound on cached entries.
    #[serde(default = "default_dns_cache_size")]
    pub cache_size: u64,
}

impl Default for RawDns {
    fn default() -> Self {
        Self {
            nameservers: Vec::new(),
            timeout: default_dns_timeout(),
            check_timeout: default_dns_check_timeout(),
            dnssec: false,
            trust_anchor: None,
            cache_size: default_dns_cache_size(),
        }
    }
}

/// `[store]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    /// SQLite database file (default `var/gatekeeper.db` unless `url` is set).
    #[serde(default)]
    pub path: Option<String>,
    /// How often expired challenges are purged.
    #[serde(default = "default_purge_interval")]
    pub purge_interval: String,
    /// PostgreSQL connection URL (SPEC §7); exclusive with `path`.
    #[serde(default)]
    pub url: Option<String>,
    /// File holding the PostgreSQL password (first line).
    #[serde(default)]
    pub password_file: Option<String>,
    /// `"require"` or `"disable"`.
    #[serde(default = "default_store_tls")]
    pub tls: String,
    /// PEM CA bundle the server's certificate must chain to (default: system roots).
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Connections to PostgreSQL kept by one instance.
    #[serde(default = "default_pool_size")]
    pub pool_size: u64,
}

impl Default for RawStore {
    fn default() -> Self {
        Self {
            path: None,
            purge_interval: default_purge_interval(),
            url: None,
            password_file: None,
            tls: default_store_tls(),
            ca_file: None,
            pool_size: default_pool_size(),
        }
    }
}

/// `[api]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApi {
    /// Socket address of the HTTP API, `"ip:port"`.
    #[serde(default = "default_api_listen")]
    pub listen: String,
    /// File holding the bearer token (created if absent).
    #[serde(default = "default_api_token_file")]
    pub token_file: String,
}

impl Default for RawApi {
    fn default() -> Self {
        Self {
            listen: default_api_listen(),
            token_file: default_api_token_file(),
        }
    }
}

/// `[outbound]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutbound {
    /// From header of challenge mails, `Name <local@domain>` or `local@domain`.
    pub from: String,
    /// Write challenge mails as `.eml` files into this directory.
    #[serde(default)]
    pub directory: Option<String>,
    /// Or send them to this SMTP smarthost, `smtp://host:port` or `smtps://host:port`.
    #[serde(default)]
    pub relay: Option<String>,
    /// `[outbound.dkim]`: sign challenge mails.
    #[serde(default)]
    pub dkim: Option<RawOutboundDkim>,
}

/// `[outbound.dkim]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutboundDkim {
    /// Signing domain `d=`.
    pub domain: String,
    /// Selector `s=`.
    pub selector: String,
    /// PEM (PKCS#8) private key file.
    pub private_key: String,
}

/// `[siem]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSiem {
    /// Event encoding: `ecs` (JSON) or `cef`.
    #[serde(default)]
    pub format: RawSiemFormat,
    /// `[[siem.sink]]`: where events go; absent = stdout only.
    #[serde(default = "default_siem_sinks")]
    pub sink: Vec<RawSink>,
    /// Events kept for network sinks while the collector is unreachable.
    #[serde(default = "default_spool_max_events")]
    pub spool_max_events: u64,
    /// The durable spool of network sinks.
    #[serde(default = "default_spool_path")]
    pub spool_path: String,
}

impl Default for RawSiem {
    fn default() -> Self {
        Self {
            format: RawSiemFormat::default(),
            sink: default_siem_sinks(),
            spool_max_events: default_spool_max_events(),
            spool_path: default_spool_path(),
        }
    }
}

/// `ecs` or `cef`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RawSiemFormat {
    /// Elastic Common Schema JSON, one object per line.
    #[default]
    Ecs,
    /// ArcSight Common Event Format.
    Cef,
}

/// One `[[siem.sink]]`. A flat struct rather than a tagged enum: serde buffers tagged enums,
/// which loses toml's spans, and an unknown key must still be reported at its line.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSink {
    /// `stdout`, `file` or `syslog`.
    #[serde(rename = "type")]
    pub kind: RawSinkKind,
    /// `file`: the JSON-lines file.
    #[serde(default)]
    pub path: Option<String>,
    /// `syslog`: the collector, `"ip:port"`.
    #[serde(default)]
    pub address: Option<String>,
    /// `syslog`: `udp`, `tcp` or `tls` (default `udp`).
    #[serde(default)]
    pub transport: Option<RawTransport>,
    /// `syslog` over `tls`: CA bundle to trust instead of the system roots.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// `syslog` over `tls`: name expected in the collector's certificate.
    #[serde(default)]
    pub server_name: Option<String>,
}

/// Sink kinds.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RawSinkKind {
    /// Standard output (journald under systemd).
    Stdout,
    /// A JSON-lines file.
    File,
    /// RFC 5424 syslog.
    Syslog,
}

/// Syslog transports.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RawTransport {
    /// RFC 5426.
    Udp,
    /// RFC 6587 octet counting.
    Tcp,
    /// RFC 5425.
    Tls,
}

// Defaults, one named function each (serde needs functions; tests compare them with the
// shipped file).

pub fn default_true() -> bool {
    true
}
pub fn default_smtp_listen() -> Vec<String> {
    vec!["127.0.0.1:2525".to_owned()]
}
pub fn default_max_message_bytes() -> u64 {
    2 * 1024 * 1024
}
/// 256 MiB: with the default 2 MiB messages and 1,000 connections the worst case stays under
/// 512 MiB of RSS (README, "Performance": idle daemon about 21 MiB, this budget, at most
/// 80 KiB of fixed buffers per connection (80 MiB), and the rest for verification's working
/// memory and the allocator).
pub fn default_max_buffered_bytes() -> u64 {
    256 * 1024 * 1024
}
pub fn default_max_connections() -> u64 {
    1000
}
pub fn default_max_connections_per_ip() -> u64 {
    20
}
pub fn default_command_timeout() -> String {
    "5m".to_owned()
}
pub fn default_data_timeout() -> String {
    "10m".to_owned()
}
pub fn default_session_timeout() -> String {
    "30m".to_owned()
}
pub fn default_max_errors() -> u64 {
    10
}
pub fn default_max_transactions() -> u64 {
    10
}
pub fn default_shutdown_grace() -> String {
    "30s".to_owned()
}
pub fn default_local_prefix() -> String {
    "confirm".to_owned()
}
pub fn default_challenge_ttl() -> String {
    "24h".to_owned()
}
pub fn default_max_message_age() -> String {
    "48h".to_owned()
}
pub fn default_max_pending_per_address() -> u64 {
    5
}
pub fn default_max_challenges_per_address_per_hour() -> u64 {
    10
}
pub fn default_service_name() -> String {
    "gatekeeper".to_owned()
}
pub fn default_dkim_min_rsa_bits() -> u64 {
    1024
}
pub fn default_dns_timeout() -> String {
    "5s".to_owned()
}
/// Sized for SPF, the longest chain of queries made in a row: the record itself and RFC 7208
/// §4.6.4's 10 DNS-querying terms, about 2.7 s each, well inside the 10 minutes an SMTP
/// client waits for the reply to DATA (RFC 5321 §4.5.3.2.6).
pub fn default_dns_check_timeout() -> String {
    "30s".to_owned()
}
pub fn default_dns_cache_size() -> u64 {
    10_000
}
/// `store.path` when neither `path` nor `url` is given.
pub const DEFAULT_STORE_PATH: &str = "var/gatekeeper.db";
pub fn default_store_tls() -> String {
    "require".to_owned()
}
pub fn default_pool_size() -> u64 {
    16
}
pub fn default_purge_interval() -> String {
    "1h".to_owned()
}
pub fn default_api_listen() -> String {
    "127.0.0.1:8025".to_owned()
}
pub fn default_api_token_file() -> String {
    "var/api-token".to_owned()
}
pub fn default_siem_sinks() -> Vec<RawSink> {
    vec![RawSink {
        kind: RawSinkKind::Stdout,
        path: None,
        address: None,
        transport: None,
        ca_file: None,
        server_name: None,
    }]
}
pub fn default_spool_max_events() -> u64 {
    100_000
}
pub fn default_spool_path() -> String {
    "var/siem-spool.db".to_owned()
}
