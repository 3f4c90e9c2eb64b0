//! The DNS resolver every verification uses: mail-auth's `MessageAuthenticator` over hickory,
//! built from `[dns]`.
//!
//! Decisions:
//! - **Cache.** hickory's own response cache is the one cache: bounded by `dns.cache_size`
//!   responses, each kept for its TTL (negative answers for the SOA minimum). mail-auth's
//!   optional `ResolverCache` layer is not used, so SPF, DKIM, iprev and the key-size lookup
//!   ([`txt_lookup`]) all read the same cache and never keep a record past its TTL.
//! - **No hosts file.** `/etc/hosts` must never answer for a sender domain.
//! - **Timeout.** Each query waits half of `dns.timeout` (at least [`MIN_QUERY_TIMEOUT`]) and
//!   is tried twice, so one lost UDP datagram does not fail a check; the verifier bounds each
//!   whole check (SPF, DKIM, iprev) by `dns.timeout`, so a server that never answers costs at
//!   most about `dns.timeout` per message.
//! - **Errors.** A timeout, SERVFAIL, REFUSED or a DNSSEC-bogus answer is temporary
//!   ([`LookupError::Temporary`]; mail-auth reports it as TempError); only NXDOMAIN / NODATA
//!   mean "no record". A temporary fault must end in a 4xx, never in "none"/"fail" (SPEC I5).
//! - **DNSSEC.** `dns.dnssec = true` turns on hickory's validation (`ResolverOpts::validate`)
//!   with its built-in root trust anchor. A zone the chain from the root proves unsigned
//!   still resolves (insecure); a bogus answer, or one that cannot be proven either way (no
//!   chain of trust: `tests/verify_dns.rs` against the loopback test server), is an error
//!   and therefore temporary. Validating against a signed zone is not tested: the test DNS
//!   server does not sign.
//! - hickory answers `localhost.` and `*.127.in-addr.arpa` itself without asking the server;
//!   this matters only for tests on loopback (the reverse of 127.0.0.x is always `localhost.`).

use std::net::SocketAddr;
use std::time::Duration;

use mail_auth::MessageAuthenticator;
use mail_auth::hickory_resolver::config::{
    NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use mail_auth::hickory_resolver::net::{DnsError, NetError};
use mail_auth::hickory_resolver::proto::rr::{Name, RData};

use crate::config::DnsConfig;

/// The resolver could not be built (system configuration unreadable, bad options).
#[derive(Debug, thiserror::Error)]
#[error("DNS resolver setup failed: {0}")]
pub struct DnsSetupError(String);

/// Build the authenticator from `[dns]`. Empty `nameservers` = the system resolver
/// (`/etc/resolv.conf`), with our options on top of it.
pub fn build(cfg: &DnsConfig) -> Result<MessageAuthenticator, DnsSetupError> {
    let config = if cfg.nameservers.is_empty() {
        let (config, _opts) = mail_auth::hickory_resolver::system_conf::read_system_conf()
            .map_err(|e| DnsSetupError(e.to_string()))?;
        config
    } else {
        ResolverConfig::from_name_servers(cfg.nameservers.iter().map(name_server).collect())
    };
    MessageAuthenticator::new(config, options(cfg)).map_err(|e| DnsSetupError(e.to_string()))
}

/// The shortest per-query timeout, whatever `dns.timeout` says.
pub const MIN_QUERY_TIMEOUT: Duration = Duration::from_millis(200);

/// The resolver options derived from `[dns]` (see the module documentation).
pub fn options(cfg: &DnsConfig) -> ResolverOpts {
    let mut opts = ResolverOpts::default();
    opts.timeout = (cfg.timeout / 2).max(MIN_QUERY_TIMEOUT);
    opts.attempts = 2;
    opts.cache_size = u64::try_from(cfg.cache_size).unwrap_or(u64::MAX);
    opts.use_hosts_file = ResolveHosts::Never;
    opts.validate = cfg.dnssec;
    // Search domains must never turn `example` into `example.<local domain>`.
    opts.ndots = 0;
    opts
}

/// One configured server, UDP and TCP on the configured port.
fn name_server(addr: &SocketAddr) -> NameServerConfig {
    let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
    for conn in &mut ns.connections {
        conn.port = addr.port();
    }
    ns
}

/// Why a lookup gave no records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LookupError {
    /// NXDOMAIN or no record of the type: a definite answer.
    NotFound,
    /// Timeout, SERVFAIL, refused, bogus, malformed name: ask again later.
    Temporary,
}

/// TXT lookup through the shared cache; each record's strings concatenated (RFC 7208 §3.3,
/// RFC 6376 §3.6.2.2).
pub async fn txt_lookup(
    auth: &MessageAuthenticator,
    name: &str,
) -> Result<Vec<Vec<u8>>, LookupError> {
    let fqdn = if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    };
    let name = Name::from_str_relaxed(fqdn.as_str()).map_err(|_| LookupError::NotFound)?;
    match auth.resolver().txt_lookup(name).await {
        Ok(lookup) => Ok(lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::TXT(txt) => Some(
                    txt.txt_data
                        .iter()
                        .flat_map(|s| s.iter().copied())
                        .collect(),
                ),
                _ => None,
            })
            .collect()),
        Err(err) => Err(classify(&err)),
    }
}

/// NXDOMAIN/NODATA (except a SERVFAIL carried as "no records") is definite; all else temporary.
pub fn classify(err: &NetError) -> LookupError {
    match err {
        NetError::Dns(DnsError::NoRecordsFound(no)) => {
            if no.response_code == mail_auth::hickory_resolver::proto::op::ResponseCode::ServFail {
                LookupError::Temporary
            } else {
                LookupError::NotFound
            }
        }
        _ => LookupError::Temporary,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(nameservers: Vec<SocketAddr>) -> DnsConfig {
        DnsConfig {
            nameservers,
            timeout: Duration::from_millis(700),
            dnssec: false,
            cache_size: 123,
        }
    }

    #[test]
    fn options_follow_config() {
        let opts = options(&cfg(vec![]));
        assert_eq!(opts.timeout, Duration::from_millis(350));
        assert_eq!(opts.attempts, 2);
        assert_eq!(opts.cache_size, 123);
        assert_eq!(opts.use_hosts_file, ResolveHosts::Never);
        assert!(!opts.validate);
        let mut c = cfg(vec![]);
        c.dnssec = true;
        assert!(options(&c).validate);
        c.timeout = Duration::from_millis(100);
        assert_eq!(options(&c).timeout, MIN_QUERY_TIMEOUT);
    }

    #[test]
    fn name_server_keeps_its_port() {
        let addr: SocketAddr = "127.0.0.1:5300".parse().unwrap_or_else(|_| unreachable!());
        let ns = name_server(&addr);
        assert_eq!(ns.ip, addr.ip());
        assert_eq!(ns.connections.len(), 2);
        assert!(ns.connections.iter().all(|c| c.port == 5300));
    }

    #[tokio::test]
    async fn builds_with_explicit_servers() {
        let addr: SocketAddr = "127.0.0.1:5300".parse().unwrap_or_else(|_| unreachable!());
        let auth = build(&cfg(vec![addr]));
        assert!(auth.is_ok());
    }
}
