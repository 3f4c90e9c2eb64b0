//! The one strict address parser (SPEC §3, invariant I2).
//!
//! INTERFACE NOTE (for implementers): the public items below are the contract; bodies are to
//! be written by the owner of this module. Nothing outside this module splits on `@` or
//! lowercases an address.

use std::fmt;

use crate::reason::Reason;

/// Options the parser takes from `[policy]`.
#[derive(Clone, Debug, Default)]
pub struct ParseOptions {
    /// `policy.local_part_extra_chars`: RFC 5322 atext characters added to the local-part set.
    pub local_part_extra_chars: String,
    /// `policy.allow_idna`: accept `xn--` labels.
    pub allow_idna: bool,
}

/// A domain in canonical (ASCII lower-case) form. Only the parser builds one.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Domain(String);

/// `local@domain` in canonical form. Only the parser builds one.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mailbox {
    local: String,
    domain: Domain,
}

/// Why an address was refused: always the reason `envelope.syntax` (or `header.from_syntax`
/// when it came from a From header) plus a stable detail such as `two_at`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct AddressError {
    pub detail: &'static str,
}

impl AddressError {
    /// The reason code for a refused address in an envelope or a claim.
    pub fn reason(&self) -> Reason {
        Reason::EnvelopeSyntax
    }
}

impl Domain {
    /// Parse a bare domain (config values, DKIM `d=`), strict as in SPEC §3.
    pub fn parse(_input: &[u8], _opts: &ParseOptions) -> Result<Self, AddressError> {
        todo!("address module owner")
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// True when `self` is `parent` or a subdomain of it on a label boundary.
    pub fn is_within(&self, _parent: &Domain) -> bool {
        todo!("address module owner")
    }
}

impl Mailbox {
    /// Parse `local@domain` exactly (SPEC §3). Also used for the API claim and for the
    /// inside of `MAIL FROM:<...>` / `RCPT TO:<...>`.
    pub fn parse(_input: &[u8], _opts: &ParseOptions) -> Result<Self, AddressError> {
        todo!("address module owner")
    }
    /// Parse the value of a From header (after the colon, possibly folded): one mailbox,
    /// optional display name, nothing else (SPEC §3).
    pub fn parse_header(_value: &[u8], _opts: &ParseOptions) -> Result<Self, AddressError> {
        todo!("address module owner")
    }
    pub fn local(&self) -> &str {
        &self.local
    }
    pub fn domain(&self) -> &Domain {
        &self.domain
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}
