//! The session's settings: plain data built once from the validated configuration, so the
//! engine never reads `crate::config` while it runs (and tests can build variants).

use crate::address::ParseOptions;
use crate::domains::DomainPolicy;
use crate::smtp::budget::MemoryBudget;
use crate::smtp::command::ConfirmAddress;

/// Everything the session needs from the configuration, as plain data.
#[derive(Clone, Debug)]
pub struct SessionSettings {
    /// Banner and EHLO name (`smtp.hostname`).
    pub hostname: String,
    pub max_message_bytes: usize,
    pub max_errors: u32,
    pub max_transactions: u32,
    /// A certificate is configured: STARTTLS is advertised while not in TLS.
    pub tls_offered: bool,
    /// `smtp.tls.required`: MAIL before STARTTLS is refused.
    pub tls_required: bool,
    pub parse: ParseOptions,
    pub confirm: ConfirmAddress,
    /// `policy.allowed_domains` / `policy.denied_domains`, checked at MAIL.
    pub domains: DomainPolicy,
    /// `smtp.max_buffered_bytes`: shared by every session built from these settings (and
    /// carried over a reload, see `ServerSettings::keep_budget`).
    pub budget: MemoryBudget,
}

impl SessionSettings {
    /// Build the session's settings from the validated configuration. `tls_offered` says
    /// whether the driver could load a certificate.
    pub fn from_config(config: &crate::config::Config, tls_offered: bool) -> Self {
        let smtp = &config.smtp;
        Self {
            hostname: smtp.hostname.clone(),
            max_message_bytes: smtp.max_message_bytes,
            max_errors: smtp.max_errors,
            max_transactions: smtp.max_transactions,
            tls_offered,
            tls_required: smtp.tls.as_ref().is_some_and(|t| t.required),
            parse: config.parse_options(),
            confirm: ConfirmAddress {
                domain: config.confirm.domain.clone(),
                local_prefix: config.confirm.local_prefix.clone(),
            },
            domains: DomainPolicy::new(&config.policy),
            budget: MemoryBudget::new(smtp.max_buffered_bytes),
        }
    }
}
