//! What the OpenID Provider keeps in the store (SPEC §9): sign-in flows and authorization
//! codes. Kept in the store, not in memory, so a sign-in page survives a reload, a daemon
//! restart and a second instance behind the same load balancer.
//!
//! Plain rows with plain columns, and four operations a network store implements in a
//! few statements each (see [`crate::store::Store`]):
//!
//! - a flow is saved with a version: version 1 inserts, version n + 1 replaces version n
//!   only (compare-and-swap), so two tabs or two instances cannot both move one flow on;
//! - a code is inserted once and taken once: [`CodeTake`] says whether this call used it up
//!   (single use, RFC 6749 §4.1.2), or someone did before.
//!
//! Neither row holds a secret a copy of the database could replay: the browser cookie and
//! the code are kept as SHA-256 only. The challenge itself (address, session code,
//! confirmation and evidence) stays in the challenge row the flow names.

use chrono::{DateTime, Utc};

/// One sign-in flow: an `/authorize` request accepted, bound to one browser.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowRecord {
    /// Random, unguessable (it travels in the page URL).
    pub id: String,
    /// 1 when created; each save adds one.
    pub version: u32,
    /// SHA-256 of the browser cookie the flow is bound to.
    pub browser_hash: [u8; 32],
    /// The CSRF token of the page's form.
    pub csrf: String,
    pub client_id: String,
    pub redirect_uri: String,
    pub scope: String,
    pub state: Option<String>,
    pub nonce: Option<String>,
    /// PKCE S256 challenge (RFC 7636), when the client sent one.
    pub code_challenge: Option<String>,
    /// The challenge issued for the address the person typed.
    pub challenge_id: Option<String>,
    /// A code was issued: the flow is over.
    pub finished: bool,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// One authorization code, bound to the client, the redirect URI and the PKCE challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodeRecord {
    /// SHA-256 of the code.
    pub code_hash: [u8; 32],
    pub client_id: String,
    pub redirect_uri: String,
    pub code_challenge: Option<String>,
    pub nonce: Option<String>,
    pub scope: String,
    /// The confirmed challenge behind the sign-in (address, evidence, confirmation time).
    pub challenge_id: String,
    pub expires_at: DateTime<Utc>,
}

/// The result of taking a code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CodeTake {
    /// This call used the code up. Expiry is the caller's to judge (`expires_at`).
    Taken(CodeRecord),
    /// Taken before (a replay, RFC 6749 §4.1.2).
    AlreadyUsed,
    /// Never issued, or purged.
    NotFound,
}
