//! gatekeeper: an SMTP responder that confirms a person owns a mailbox at an allowed domain
//! by accepting their DKIM-signed, SPF-authorised reply to a one-time address.
//!
//! # Layout
//!
//! ```text
//!  backend ──HTTP──▶ api ──▶ challenge (token, code, mail) ──▶ store
//!                                     │
//!  MTA ──SMTP──▶ server (tokio driver) ──▶ smtp (pure engine) ──▶ backend seam
//!                                     └──▶ app: store lookup → verify (SPF, DKIM, binding)
//!                                                 → policy::decide → commit → 250 / 4xx / 5xx
//!  every refusal ──▶ audit (typed events) ──▶ siem (ECS/CEF; stdout, file, syslog)
//! ```
//!
//! - [`address`]: the one strict address parser (SPEC §3, invariant I2). Pure.
//! - [`reason`]: reason codes and the one reason → SMTP reply table. Pure.
//! - [`config`]: TOML configuration, validated once.
//! - [`smtp`]: the sans-IO SMTP engine. Pure, no tokio.
//! - [`server`]: listeners, limits, timeouts, STARTTLS, drain: drives `smtp` over sockets.
//! - [`verify`]: header checks, SPF, DKIM, alignment, binding; [`policy`] picks the verdict.
//! - [`store`]: the [`store::Store`] trait; [`store::open`] picks the backend from `[store]`
//!   and is the only place that names one (`store/sqlite/`: writer, SQL, schema, rows).
//! - [`challenge`], [`api`]: issuing challenges and the HTTP API.
//! - [`app`]: the production SMTP [`backend::Backend`] (store lookup, verify, commit), only.
//! - [`daemon`]: the one assembly (`daemon/assemble.rs` builds and starts every part), the
//!   decorators, background jobs, control loop, signals, the one `ConfigSource` and the CLI
//!   command bodies, `domain-check` and `probe` among them (`main.rs` is clap and dispatch).
//! - [`oidc`]: the OpenID Provider (SPEC §9): sign-in for relying parties through the reply flow.
//! - [`webhook`]: the Standard Webhooks sender of the store's outbox (SPEC §11);
//!   [`assertion`]: the signed confirmation (JWS with the OpenID Provider's key).
//! - [`audit`], [`siem`]: the audit trail.
//! - [`backend`]: the seam types between the SMTP engine and what answers it.
//!
//! # Data-flow order
//!
//! Modules in layers, top first. A module uses modules of its own layer or of the layers
//! below it, never one above, and no two modules import each other (directly or around a
//! loop); `tests/architecture.rs` checks both on the source.
//!
//! ```text
//!  main                                        clap and dispatch (the binary)
//!  daemon                                      assembly, start-up, signals, CLI bodies
//!  app   api   oidc   server   webhook         backend, HTTP front doors, SMTP listener, webhooks
//!  smtp   verify   challenge   assertion       engines: SMTP session, mail checks, tokens, proofs
//!  policy  store  siem  dns  domains  backend  decisions, storage, sinks, resolver, seams
//!  config                                      the validated configuration
//!  address   audit                             the address grammar, audit events
//!  reason                                      reason codes and their replies
//! ```
#![forbid(unsafe_code)]
// Peer bytes must never panic the daemon: no indexing or slicing outside tests (`.get`, split
// helpers and iterators instead).
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

pub mod address;
#[cfg(feature = "daemon")]
pub mod api;
#[cfg(feature = "daemon")]
pub mod app;
#[cfg(feature = "daemon")]
pub mod assertion;
pub mod audit;
pub mod backend;
#[cfg(feature = "daemon")]
pub mod challenge;
pub mod config;
#[cfg(feature = "daemon")]
pub mod daemon;
#[cfg(feature = "daemon")]
pub mod dns;
pub mod domains;
#[cfg(feature = "daemon")]
pub mod oidc;
pub mod policy;
pub mod reason;
#[cfg(feature = "daemon")]
pub mod server;
#[cfg(feature = "daemon")]
pub mod siem;
pub mod smtp;
#[cfg(feature = "daemon")]
pub mod store;
#[cfg(feature = "daemon")]
pub mod verify;
#[cfg(feature = "daemon")]
pub mod webhook;

/// A mutex's guard whether or not a thread panicked while holding it: what the daemon keeps
/// behind its mutexes (maps, counters, connection pools, deadlines) holds no invariant a
/// panic half-way could break, and one panicked session must not stop the others.
#[cfg(feature = "daemon")]
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
