//! `gatekeeper domain-check DOMAIN [-c PATH] [--json]` (SPEC §10): what confirming an address
//! at DOMAIN needs, from live DNS, before an operator opens sign-up to a ministry.
//!
//! The lookups go through the daemon's own resolver ([`crate::dns::build`] from `[dns]`), and
//! the records are read by the parsers the verifier uses: mail-auth's SPF and DMARC parsers,
//! our [`KeyRecord`] for the key tags the rules judge (`t=y`, RSA size) and mail-auth's
//! `DomainKey` to know that the key loads at all. The verdict is [`verdict::judge`] on the
//! facts gathered here.
//!
//! - **SPF**: the one `v=spf1` record, parsed; DNS-lookup terms counted per RFC 7208 §4.6.4
//!   (`include`, `a`, `mx`, `ptr`, `exists`, `redirect`, through every `include` and
//!   `redirect` target, counted past [`SPF_LOOKUP_LIMIT`] up to [`SPF_COUNT_BOUND`]); the
//!   qualifier of `all` (of the
//!   `redirect` target when the record has none); void lookups (`a`, `mx`, `exists` names
//!   without records), a note past [`SPF_VOID_LIMIT`] since the verifier does not apply that
//!   limit. A term whose domain is a macro cannot be followed without a sender: it counts
//!   once and is noted.
//! - **DMARC**: `_dmarc.DOMAIN`, else `_dmarc` of the organisational domain (RFC 7489
//!   §6.6.3, Public Suffix List): `p=`, `sp=`, `adkim=`, `aspf=`.
//! - **DKIM**: the selectors of [`usual_selectors`] (a bounded list, documented there) and
//!   every `s=` of an earlier confirmation from DOMAIN still in the store (with its `d=`,
//!   which may be another domain). A CNAME (Microsoft 365 publishes `selector1` and
//!   `selector2` that way) is followed by the resolver and reported.
//! - **MX**: the records, a null MX, or the implicit MX (an address record).
//! - **DNSSEC**: with `dns.dnssec = true` each answer's validation state (`secure`,
//!   `insecure`, …) as the resolver proved it, in the JSON and on each block of the terminal
//!   form; a bogus answer fails the lookup (`temperror`, DNSSEC `bogus`) and makes the
//!   verdict `cannot confirm`, as does an insecure answer the verifier needs for a domain
//!   with `require_dnssec = true` (see `verdict`). With `dns.dnssec = false` every answer is
//!   `not validated`. DS trust anchors are matched to their zone's keys first, as at start.
//!
//! Exit status: 0 ready, 1 needs override, 2 cannot confirm or the command could not run
//! (unreadable configuration, invalid domain, resolver setup).

pub mod verdict;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use chrono::{Datelike, Months, Utc};
use mail_auth::common::parse::TxtRecordParser;
use mail_auth::common::verify::DomainKey;
use mail_auth::dmarc::{Alignment as DmarcAlignment, Dmarc, Policy};
use mail_auth::hickory_resolver::TokioResolver;
use mail_auth::hickory_resolver::proto::rr::{Name, RData, Record};
use mail_auth::spf::{Macro, Mechanism, Qualifier, Spf};
use serde::Serialize;

use self::verdict::{DkimState, Facts, MxState, SpfState, Verdict};
use crate::address::Domain;
use crate::config::Config;
use crate::daemon::assemble::open_store;
use crate::daemon::source::ConfigSource;
use crate::dns::{LookupError, classify};
use crate::domains::DomainPolicy;
use crate::store::{Access, Store};
use crate::verify::dkim::KeyRecord;

/// RFC 7208 §4.6.4: at most 10 terms that cause DNS lookups, else `permerror`.
pub const SPF_LOOKUP_LIMIT: u32 = 10;

/// RFC 7208 §4.6.4: receivers SHOULD stop at more than two void lookups. mail-auth, the
/// verifier's SPF, does not apply this limit, so it is a note, not a reason to fail.
pub const SPF_VOID_LIMIT: u32 = 2;

/// The walk goes on past the limit so the report says how far over a record is (12 tells
/// the ministry more than "11"), up to this bound, which keeps the queries of one run few.
pub const SPF_COUNT_BOUND: u32 = 40;

/// Selectors tried on every domain, whatever the store knows. Bounded (about twenty lookups)
/// and chosen from what ministries' providers publish:
/// - `selector1`, `selector2`: Microsoft 365 (CNAMEs into `*.onmicrosoft.com`);
/// - `google`: Google Workspace;
/// - `default`, `dkim`, `mail`, `smtp`: the defaults of OpenDKIM, Postfix/rspamd and
///   appliance guides; `s1`, `s2`, `k1`, `key1`: SendGrid, Mailchimp and similar senders;
/// - date-shaped ones for the current and previous year (`s2026`, `2026`) and month
///   (`202612`, `202611`), as rspamd's and several hosters' rotation schemes name them.
pub fn usual_selectors(today: chrono::NaiveDate) -> Vec<String> {
    let mut out: Vec<String> = [
        "selector1",
        "selector2",
        "google",
        "default",
        "dkim",
        "mail",
        "smtp",
        "s1",
        "s2",
        "k1",
        "key1",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    for year in [today.year(), today.year() - 1] {
        out.push(format!("s{year}"));
        out.push(format!("{year}"));
    }
    for back in 0..2 {
        if let Some(d) = today.checked_sub_months(Months::new(back)) {
            out.push(format!("{:04}{:02}", d.year(), d.month()));
        }
    }
    out
}

/// Run the command; returns the exit status.
pub async fn run(config: Option<&Path>, domain: &str, json: bool) -> u8 {
    let config = match ConfigSource::choose(config.map(PathBuf::from)).load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    let domain = match Domain::parse(
        domain.trim_end_matches('.').as_bytes(),
        &config.parse_options(),
    ) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("{domain}: not a domain ({})", e.detail);
            return 2;
        }
    };
    let report = match check(&config, &domain).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print!("{}", report.text());
    }
    report.verdict.verdict.exit_code()
}

/// Everything `domain-check` found, and its verdict (the JSON output).
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub domain: String,
    /// `validated` (`dns.dnssec = true`) or `not validated`.
    pub dnssec: &'static str,
    pub spf: SpfReport,
    pub dmarc: DmarcReport,
    pub dkim: Vec<KeyReport>,
    pub mx: MxReport,
    /// Things worth knowing that do not change the verdict.
    pub notes: Vec<String>,
    #[serde(flatten)]
    pub verdict: Verdict,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct SpfReport {
    /// `found`, `none` or `temperror`.
    pub status: &'static str,
    pub record: Option<String>,
    pub valid: bool,
    pub error: Option<String>,
    /// DNS-lookup terms counted (RFC 7208 §4.6.4), through includes and redirects.
    pub lookups: u32,
    /// Of those, `a`/`mx`/`exists` terms whose name had no record (RFC 7208 §4.6.4 "void").
    pub void_lookups: u32,
    /// `-all`, `~all`, `?all`, `+all`, or `none` (no `all`: neutral).
    pub all: Option<String>,
    pub dnssec: Option<&'static str>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct DmarcReport {
    /// `found`, `none` or `temperror`.
    pub status: &'static str,
    /// The name the record was found at (the domain's, or its organisational domain's).
    pub name: Option<String>,
    pub record: Option<String>,
    pub error: Option<String>,
    pub p: Option<&'static str>,
    pub sp: Option<&'static str>,
    pub adkim: Option<&'static str>,
    pub aspf: Option<&'static str>,
    pub dnssec: Option<&'static str>,
}

#[derive(Clone, Debug, Serialize)]
pub struct KeyReport {
    pub selector: String,
    /// The signing domain (`d=`): the checked domain, or another one seen in the store.
    pub domain: String,
    /// `usual` (the built-in list) or `seen` (an earlier confirmation).
    pub source: &'static str,
    /// `found`, `none` or `temperror`.
    pub status: &'static str,
    /// The name the key was finally read at, when a CNAME led there.
    pub cname: Option<String>,
    pub key_type: Option<String>,
    pub bits: Option<usize>,
    pub testing: bool,
    pub revoked: bool,
    /// The verifier would accept a signature made with this key.
    pub usable: bool,
    pub problem: Option<String>,
    pub dnssec: Option<&'static str>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct MxReport {
    /// `found`, `null` (RFC 7505), `implicit` (an address record, no MX), `none`, `temperror`.
    pub status: &'static str,
    /// `preference host`, lowest preference first.
    pub hosts: Vec<String>,
    pub dnssec: Option<&'static str>,
}

/// Gather the facts and judge them.
pub async fn check(config: &Config, domain: &Domain) -> Result<Report, String> {
    let mut dns = config.dns.clone();
    crate::dns::resolve_ds_anchors(&mut dns)
        .await
        .map_err(|e| e.to_string())?;
    let auth = crate::dns::build(&dns).map_err(|e| e.to_string())?;
    let lookup = Lookup {
        resolver: auth.resolver().clone(),
        validate: config.dns.dnssec,
        bogus: std::sync::Arc::default(),
    };
    let name = domain.as_str();
    let mut notes = Vec::new();
    let mut spf = spf(&lookup, name, &mut notes).await;
    let mut dmarc = dmarc(&lookup, name, &mut notes).await;
    let seen = seen_signers(config, domain, &mut notes).await;
    let mut dkim = dkim(&lookup, config, name, &seen).await;
    let mut mx = mx(&lookup, name).await;
    let policy = DomainPolicy::new(&config.policy);
    let (bogus, insecure_refused) = dnssec_findings(
        &lookup,
        name,
        policy.requires_dnssec(domain),
        (&mut spf, &mut dmarc, &mut dkim, &mut mx),
    );

    for k in dkim.iter().filter(|k| k.usable && k.bits == Some(1024)) {
        notes.push(format!(
            "the key at {}._domainkey.{} is 1024 bits: accepted, but RFC 8301 asks for 2048",
            k.selector, k.domain
        ));
    }
    match spf.all.as_deref() {
        Some("~all") => notes.push(
            "SPF ends in ~all: hosts outside the record soft-fail; gatekeeper needs SPF pass \
             either way, so only the listed hosts can confirm"
                .into(),
        ),
        Some("+all") => notes.push(
            "SPF ends in +all: any host passes SPF, so SPF proves nothing for this domain \
             (DKIM still decides)"
                .into(),
        ),
        _ => {}
    }
    if config.policy.alignment == crate::config::Alignment::Relaxed {
        notes.push(
            "policy.alignment is relaxed: keys of the organisational domain would align too; \
             only the domain's own were tried"
                .into(),
        );
    }

    let req = policy.requirements(domain);
    let own: Vec<&KeyReport> = dkim.iter().filter(|k| k.domain == name).collect();
    // A selector whose lookup failed for now may hold the usable key: unless one is already
    // found, the DKIM state is unknown rather than "none" or "unusable".
    let dkim_state = if own.iter().any(|k| k.usable) {
        DkimState::Usable
    } else if own.iter().any(|k| k.status == "temperror") {
        DkimState::Temporary
    } else if own.iter().any(|k| k.status == "found") {
        DkimState::Unusable
    } else {
        DkimState::NotFound
    };
    let foreign_signers: Vec<String> = dkim
        .iter()
        .filter(|k| k.usable && k.domain != name)
        .map(|k| k.domain.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let facts = Facts {
        domain: name.to_owned(),
        allowed: policy.check_claim(domain, &config.confirm.domain).is_ok(),
        spf: match (spf.status, spf.valid) {
            ("temperror", _) => SpfState::Temporary,
            ("none", _) => SpfState::Missing,
            (_, true) => SpfState::CanPass,
            (_, false) => SpfState::Broken,
        },
        dkim: dkim_state,
        foreign_signers,
        mx: match mx.status {
            "found" | "implicit" => MxState::Deliverable,
            "temperror" => MxState::Temporary,
            _ => MxState::Undeliverable,
        },
        require_dkim: req.dkim,
        require_spf: req.spf,
        require_iprev: req.iprev,
        bogus,
        insecure_refused,
    };
    if dmarc.status == "none" {
        notes.push(
            "no DMARC record: other receivers cannot refuse forgeries of this domain; \
             gatekeeper applies its own alignment and does not need one"
                .into(),
        );
    }
    Ok(Report {
        domain: name.to_owned(),
        dnssec: if config.dns.dnssec {
            "validated"
        } else {
            "not validated"
        },
        spf,
        dmarc,
        dkim,
        mx,
        notes,
        verdict: verdict::judge(&facts),
    })
}

/// The resolver and whether it validates DNSSEC.
struct Lookup {
    resolver: TokioResolver,
    validate: bool,
    /// The names whose answer DNSSEC found bogus (the lookup then failed as temporary).
    /// Shared with the DKIM lookups' tasks.
    bogus: std::sync::Arc<std::sync::Mutex<BTreeSet<String>>>,
}

/// Mark the failed answers that were bogus as such, and list, for the verdict, the bogus
/// answers and (with `require_dnssec`) the insecure answers the verifier needs: the SPF
/// record, and the domain's usable keys when none of them is secure.
fn dnssec_findings(
    lookup: &Lookup,
    domain: &str,
    require_dnssec: bool,
    (spf, dmarc, dkim, mx): (
        &mut SpfReport,
        &mut DmarcReport,
        &mut [KeyReport],
        &mut MxReport,
    ),
) -> (Vec<String>, Vec<String>) {
    let names = lookup
        .bogus
        .lock()
        .map(|set| set.clone())
        .unwrap_or_default();
    let mut covered = BTreeSet::new();
    let mut mark = |name: &str, status: &str, dnssec: &mut Option<&'static str>| {
        let hit = status == "temperror" && names.contains(name);
        if hit {
            *dnssec = Some("bogus");
            covered.insert(name.to_owned());
        }
        hit
    };
    let mut bogus = Vec::new();
    if mark(domain, spf.status, &mut spf.dnssec) {
        bogus.push("the SPF record".to_owned());
    }
    let dmarc_name = format!("_dmarc.{domain}");
    if mark(&dmarc_name, dmarc.status, &mut dmarc.dnssec) {
        bogus.push(format!("the DMARC record at {dmarc_name}"));
    }
    // The DKIM keys by signing domain, one entry each (17 usual selectors would drown the
    // rest).
    let mut keys: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for k in dkim.iter_mut() {
        let at = format!("{}._domainkey.{}", k.selector, k.domain);
        if mark(&at, k.status, &mut k.dnssec) {
            keys.entry(k.domain.clone())
                .or_default()
                .push(k.selector.clone());
        }
    }
    for (d, selectors) in keys {
        bogus.push(match selectors.as_slice() {
            [one] => format!("the DKIM key at {one}._domainkey.{d}"),
            many => format!("the DKIM keys of {d} at selectors {}", many.join(", ")),
        });
    }
    if mark(domain, mx.status, &mut mx.dnssec) {
        bogus.push("the MX records".to_owned());
    }
    // Bogus answers elsewhere (an SPF include target, the organisational DMARC record).
    bogus.extend(
        names
            .difference(&covered)
            .map(|n| format!("the answer at {n}")),
    );

    let mut insecure = Vec::new();
    if require_dnssec {
        if spf.dnssec == Some("insecure") {
            insecure.push("the SPF record is".to_owned());
        }
        let usable: Vec<&KeyReport> = dkim
            .iter()
            .filter(|k| k.usable && k.domain == domain)
            .collect();
        if !usable.is_empty()
            && usable.iter().all(|k| k.dnssec != Some("secure"))
            && usable.iter().any(|k| k.dnssec == Some("insecure"))
        {
            insecure.push("the usable DKIM keys are".to_owned());
        }
    }
    (bogus, insecure)
}

/// One TXT answer: each record's strings concatenated; the owner of the records (differs from
/// the query name after a CNAME); the DNSSEC state of the answer.
struct TxtAnswer {
    records: Vec<Vec<u8>>,
    owner: Option<String>,
    dnssec: Option<&'static str>,
}

impl Lookup {
    async fn txt(&self, name: &str) -> Result<TxtAnswer, LookupError> {
        let name = fqdn(name)?;
        let lookup = match self.resolver.txt_lookup(name.clone()).await {
            Ok(l) => l,
            Err(e) => {
                self.note_bogus(&name, &e);
                return Err(classify(&e));
            }
        };
        let txt: Vec<&Record> = lookup
            .answers()
            .iter()
            .filter(|r| matches!(r.data, RData::TXT(_)))
            .collect();
        let owner = txt
            .first()
            .map(|r| r.name.clone())
            .filter(|o| o != &name)
            .map(|o| o.to_string().trim_end_matches('.').to_owned());
        Ok(TxtAnswer {
            records: txt
                .iter()
                .filter_map(|r| match &r.data {
                    RData::TXT(t) => {
                        Some(t.txt_data.iter().flat_map(|s| s.iter().copied()).collect())
                    }
                    _ => None,
                })
                .collect(),
            owner,
            dnssec: self.proof(lookup.answers()),
        })
    }

    /// Remember `name` when its lookup failed DNSSEC validation.
    fn note_bogus(&self, name: &Name, err: &mail_auth::hickory_resolver::net::NetError) {
        if self.validate
            && crate::dns::is_bogus(err)
            && let Ok(mut set) = self.bogus.lock()
        {
            set.insert(name.to_string().trim_end_matches('.').to_ascii_lowercase());
        }
    }

    /// The weakest validation state of the answer's records, or `not validated`.
    fn proof(&self, records: &[Record]) -> Option<&'static str> {
        if !self.validate {
            return Some("not validated");
        }
        records
            .iter()
            .map(|r| r.proof)
            .min_by_key(|p| *p as u8)
            .map(|p| match p {
                mail_auth::hickory_resolver::proto::dnssec::Proof::Secure => "secure",
                mail_auth::hickory_resolver::proto::dnssec::Proof::Insecure => "insecure",
                mail_auth::hickory_resolver::proto::dnssec::Proof::Bogus => "bogus",
                _ => "indeterminate",
            })
    }
}

fn fqdn(name: &str) -> Result<Name, LookupError> {
    let text = format!("{}.", name.trim_end_matches('.'));
    Name::from_str_relaxed(text.as_str()).map_err(|_| LookupError::NotFound)
}

fn status_of(e: &LookupError) -> &'static str {
    match e {
        LookupError::NotFound => "none",
        LookupError::Temporary => "temperror",
    }
}

/// Records that start with `v=spf1` followed by a space or nothing (RFC 7208 §4.5).
fn spf_records(records: &[Vec<u8>]) -> Vec<&Vec<u8>> {
    records
        .iter()
        .filter(|r| {
            r.len() >= 6
                && r.get(..6)
                    .is_some_and(|v| v.eq_ignore_ascii_case(b"v=spf1"))
                && r.get(6).is_none_or(|b| *b == b' ')
        })
        .collect()
}

async fn spf(lookup: &Lookup, domain: &str, notes: &mut Vec<String>) -> SpfReport {
    let answer = match lookup.txt(domain).await {
        Ok(a) => a,
        Err(e) => {
            return SpfReport {
                status: status_of(&e),
                ..SpfReport::default()
            };
        }
    };
    let found = spf_records(&answer.records);
    let mut report = SpfReport {
        status: "found",
        dnssec: answer.dnssec,
        ..SpfReport::default()
    };
    let record = match found.as_slice() {
        [] => {
            report.status = "none";
            return report;
        }
        [one] => *one,
        _ => {
            report.error = Some(format!(
                "{} SPF records: RFC 7208 §4.5 makes that a permerror",
                found.len()
            ));
            report.record = found
                .first()
                .map(|r| String::from_utf8_lossy(r).into_owned());
            return report;
        }
    };
    report.record = Some(String::from_utf8_lossy(record).into_owned());
    let parsed = match Spf::parse(record) {
        Ok(p) => p,
        Err(e) => {
            report.error = Some(format!("the record does not parse: {e}"));
            return report;
        }
    };
    report.all = all_of(&parsed).map(str::to_owned);
    let mut walk = SpfWalk {
        lookups: 0,
        voids: 0,
        error: None,
        macros: false,
        redirect_all: None,
    };
    walk.count(lookup, domain, &parsed, 0).await;
    report.lookups = walk.lookups;
    report.void_lookups = walk.voids;
    if walk.voids > SPF_VOID_LIMIT {
        notes.push(format!(
            "the SPF record makes {} void lookups (names without records): RFC 7208 §4.6.4 \
             lets receivers stop at {SPF_VOID_LIMIT} with a permerror; gatekeeper's SPF \
             evaluation does not, but other receivers may refuse this domain's mail",
            walk.voids
        ));
    }
    if report.all.is_none() {
        report.all = Some(walk.redirect_all.unwrap_or_else(|| "none".into()));
    }
    if walk.macros {
        notes.push(
            "the SPF record uses macros: each such term counts as one lookup here, its targets \
             depend on the sender and are not followed"
                .into(),
        );
    }
    if walk.lookups > SPF_LOOKUP_LIMIT {
        report.error = Some(format!(
            "more than {SPF_LOOKUP_LIMIT} DNS lookups (RFC 7208 §4.6.4): a permerror for every mail"
        ));
    } else if let Some(e) = walk.error {
        report.error = Some(e);
    }
    report.valid = report.error.is_none();
    report
}

fn all_of(spf: &Spf) -> Option<&'static str> {
    spf.directives
        .iter()
        .find(|d| d.mechanism == Mechanism::All)
        .map(|d| match d.qualifier {
            Qualifier::Pass => "+all",
            Qualifier::Fail => "-all",
            Qualifier::SoftFail => "~all",
            Qualifier::Neutral => "?all",
        })
}

/// The recursive count of lookup terms (RFC 7208 §4.6.4).
struct SpfWalk {
    lookups: u32,
    /// `a`, `mx` and `exists` terms whose name has no address (or MX) record.
    voids: u32,
    /// The first definite error met below the top record (an include without a record…).
    error: Option<String>,
    macros: bool,
    /// The `all` of the first redirect target, for a record that has none of its own.
    redirect_all: Option<String>,
}

/// Deeper than this, the 10-lookup limit is exceeded anyway (each level costs one); the
/// bound keeps a loop of includes finite even before the count stops it.
const MAX_SPF_DEPTH: u32 = 12;

impl SpfWalk {
    fn count<'a>(
        &'a mut self,
        lookup: &'a Lookup,
        domain: &'a str,
        spf: &'a Spf,
        depth: u32,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            for d in spf.directives.iter() {
                if self.lookups > SPF_COUNT_BOUND {
                    return;
                }
                match &d.mechanism {
                    Mechanism::Include { macro_string } => {
                        self.lookups += 1;
                        self.follow(lookup, domain, macro_string, depth, "include")
                            .await;
                    }
                    Mechanism::A { macro_string, .. } | Mechanism::Exists { macro_string } => {
                        self.lookups += 1;
                        self.void_check(lookup, domain, macro_string, false).await;
                    }
                    Mechanism::Mx { macro_string, .. } => {
                        self.lookups += 1;
                        self.void_check(lookup, domain, macro_string, true).await;
                    }
                    // Its answer depends on the client's address: nothing to follow here.
                    Mechanism::Ptr { .. } => self.lookups += 1,
                    Mechanism::All | Mechanism::Ip4 { .. } | Mechanism::Ip6 { .. } => {}
                }
            }
            if let Some(redirect) = &spf.redirect {
                // RFC 7208 §6.1: redirect is ignored when the record has an `all`.
                if all_of(spf).is_none() && self.lookups <= SPF_COUNT_BOUND {
                    self.lookups += 1;
                    self.follow(lookup, domain, redirect, depth, "redirect")
                        .await;
                }
            }
        })
    }

    /// Count a void lookup: the term's name (the current domain when it names none) has no
    /// address record (or, for `mx`, no MX). A macro name is not expanded.
    async fn void_check(&mut self, lookup: &Lookup, domain: &str, target: &Macro, mx: bool) {
        let name = match target {
            Macro::Literal(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            Macro::None => domain.to_owned(),
            _ => {
                self.macros = true;
                return;
            }
        };
        let Ok(name) = fqdn(&name) else {
            self.voids += 1;
            return;
        };
        let result = if mx {
            lookup.resolver.mx_lookup(name).await.map(drop)
        } else {
            lookup.resolver.lookup_ip(name).await.map(drop)
        };
        if let Err(e) = result
            && classify(&e) == LookupError::NotFound
        {
            self.voids += 1;
        }
    }

    /// Fetch and count the record an include or redirect names.
    async fn follow(
        &mut self,
        lookup: &Lookup,
        domain: &str,
        target: &Macro,
        depth: u32,
        term: &str,
    ) {
        let target = match target {
            Macro::Literal(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            Macro::None => domain.to_owned(),
            _ => {
                self.macros = true;
                return;
            }
        };
        if depth >= MAX_SPF_DEPTH {
            self.lookups = self.lookups.max(SPF_LOOKUP_LIMIT + 1);
            return;
        }
        let records = match lookup.txt(&target).await {
            Ok(a) => a.records,
            Err(LookupError::NotFound) => Vec::new(),
            Err(LookupError::Temporary) => {
                self.error
                    .get_or_insert(format!("{term}:{target}: the lookup failed for now"));
                return;
            }
        };
        let found = spf_records(&records);
        let [one] = found.as_slice() else {
            // RFC 7208 §5.2 (include) and §6.1 (redirect): none or several is a permerror.
            self.error.get_or_insert(format!(
                "{term}:{target} has {} SPF records (a permerror)",
                found.len()
            ));
            return;
        };
        match Spf::parse(one) {
            Ok(inner) => {
                if term == "redirect" && self.redirect_all.is_none() {
                    self.redirect_all = all_of(&inner).map(str::to_owned);
                }
                self.count(lookup, &target, &inner, depth + 1).await;
            }
            Err(e) => {
                self.error
                    .get_or_insert(format!("{term}:{target}: the record does not parse: {e}"));
            }
        }
    }
}

async fn dmarc(lookup: &Lookup, domain: &str, notes: &mut Vec<String>) -> DmarcReport {
    let mut names = vec![format!("_dmarc.{domain}")];
    if let Some(org) = psl::domain_str(domain).filter(|o| *o != domain) {
        names.push(format!("_dmarc.{org}"));
    }
    let mut last = DmarcReport {
        status: "none",
        ..DmarcReport::default()
    };
    for name in names {
        let answer = match lookup.txt(&name).await {
            Ok(a) => a,
            Err(LookupError::NotFound) => continue,
            Err(LookupError::Temporary) => {
                last.status = "temperror";
                return last;
            }
        };
        let Some(record) = answer.records.iter().find(|r| {
            r.get(..8)
                .is_some_and(|v| v.eq_ignore_ascii_case(b"v=DMARC1"))
        }) else {
            continue;
        };
        let mut report = DmarcReport {
            status: "found",
            name: Some(name.clone()),
            record: Some(String::from_utf8_lossy(record).into_owned()),
            dnssec: answer.dnssec,
            ..DmarcReport::default()
        };
        match Dmarc::parse(record) {
            Ok(d) => {
                report.p = Some(policy_str(&d.p));
                report.sp = Some(policy_str(&d.sp));
                report.adkim = Some(alignment_str(d.adkim));
                report.aspf = Some(alignment_str(d.aspf));
                if d.p == Policy::None {
                    notes.push(
                        "DMARC p=none: other receivers accept forgeries of this domain; \
                         gatekeeper does not rely on DMARC"
                            .into(),
                    );
                }
            }
            Err(e) => report.error = Some(format!("the record does not parse: {e}")),
        }
        return report;
    }
    last
}

fn policy_str(p: &Policy) -> &'static str {
    match p {
        Policy::None => "none",
        Policy::Quarantine => "quarantine",
        Policy::Reject => "reject",
        Policy::Unspecified => "unspecified",
    }
}

fn alignment_str(a: DmarcAlignment) -> &'static str {
    match a {
        DmarcAlignment::Relaxed => "relaxed",
        DmarcAlignment::Strict => "strict",
    }
}

/// The `(d=, s=)` pairs of earlier confirmations from `domain` still in the store; none when
/// the store cannot be opened (noted: the usual selectors are still tried).
async fn seen_signers(
    config: &Config,
    domain: &Domain,
    notes: &mut Vec<String>,
) -> Vec<(String, String)> {
    let store = match open_store(config, Access::ReadOnly) {
        Ok(s) => s,
        Err(e) => {
            notes.push(format!(
                "the store could not be read ({e}): only the usual selectors were tried"
            ));
            return Vec::new();
        }
    };
    match store.confirmed_signers(domain.as_str()).await {
        Ok(signers) => signers
            .into_iter()
            .map(|s| (s.domain, s.selector))
            .collect(),
        Err(e) => {
            notes.push(format!(
                "the store could not be read ({e}): only the usual selectors were tried"
            ));
            Vec::new()
        }
    }
}

/// Look up every selector (the usual ones at `domain`, the seen ones at their `d=`) at once.
async fn dkim(
    lookup: &Lookup,
    config: &Config,
    domain: &str,
    seen: &[(String, String)],
) -> Vec<KeyReport> {
    let mut wanted: Vec<(String, String, &'static str)> = Vec::new();
    for (d, s) in seen {
        wanted.push((d.clone(), s.clone(), "seen"));
    }
    for s in usual_selectors(Utc::now().date_naive()) {
        if !wanted.iter().any(|(d, ws, _)| d == domain && *ws == s) {
            wanted.push((domain.to_owned(), s, "usual"));
        }
    }
    let min_bits = usize::try_from(config.policy.dkim_min_rsa_bits).unwrap_or(usize::MAX);
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (d, s, source)) in wanted.into_iter().enumerate() {
        let lookup = Lookup {
            resolver: lookup.resolver.clone(),
            validate: lookup.validate,
            bogus: std::sync::Arc::clone(&lookup.bogus),
        };
        tasks.spawn(async move {
            let answer = lookup.txt(&format!("{s}._domainkey.{d}")).await;
            (i, key_report(d, s, source, answer, min_bits))
        });
    }
    let mut out = Vec::new();
    while let Some(done) = tasks.join_next().await {
        if let Ok(pair) = done {
            out.push(pair);
        }
    }
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, k)| k).collect()
}

/// Judge one key record as the verifier would (`crate::verify::dkim`).
fn key_report(
    domain: String,
    selector: String,
    source: &'static str,
    answer: Result<TxtAnswer, LookupError>,
    min_bits: usize,
) -> KeyReport {
    let mut k = KeyReport {
        selector,
        domain,
        source,
        status: "none",
        cname: None,
        key_type: None,
        bits: None,
        testing: false,
        revoked: false,
        usable: false,
        problem: None,
        dnssec: None,
    };
    let answer = match answer {
        Ok(a) => a,
        Err(e) => {
            k.status = status_of(&e);
            return k;
        }
    };
    k.cname = answer.owner;
    k.dnssec = answer.dnssec;
    let Some((txt, record)) = answer
        .records
        .iter()
        .find_map(|t| KeyRecord::parse(t).map(|r| (t, r)))
    else {
        if !answer.records.is_empty() {
            k.status = "found";
            k.problem = Some("the TXT record is not a DKIM key record".into());
        }
        return k;
    };
    k.status = "found";
    k.key_type = Some(record.key_type.clone());
    k.bits = record.rsa_bits;
    k.testing = record.testing;
    k.revoked = record.revoked;
    k.problem = if record.revoked {
        Some("revoked (empty p=)".into())
    } else if let Err(e) = DomainKey::parse(txt) {
        Some(format!("the key does not load: {e}"))
    } else if record.testing {
        Some("t=y: signatures with this key are refused as dkim.testing".into())
    } else if record.key_type == "rsa" && record.rsa_bits.unwrap_or(0) < min_bits {
        Some(format!(
            "RSA key under policy.dkim_min_rsa_bits ({min_bits}): dkim.weak"
        ))
    } else if record.key_type != "rsa" && record.key_type != "ed25519" {
        Some(format!("key type {} is not supported", record.key_type))
    } else {
        None
    };
    k.usable = k.problem.is_none();
    k
}

async fn mx(lookup: &Lookup, domain: &str) -> MxReport {
    let Ok(name) = fqdn(domain) else {
        return MxReport {
            status: "none",
            ..MxReport::default()
        };
    };
    match lookup.resolver.mx_lookup(name.clone()).await {
        Ok(l) => {
            let mut hosts: Vec<(u16, String)> = l
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::MX(mx) => Some((
                        mx.preference,
                        mx.exchange.to_string().trim_end_matches('.').to_owned(),
                    )),
                    _ => None,
                })
                .collect();
            hosts.sort();
            // RFC 7505: a single MX of preference 0 to the root is "no mail here".
            let null = matches!(hosts.as_slice(), [(_, h)] if h.is_empty());
            MxReport {
                status: if null { "null" } else { "found" },
                hosts: hosts.iter().map(|(p, h)| format!("{p} {h}")).collect(),
                dnssec: lookup.proof(l.answers()),
            }
        }
        Err(e) => match classify(&e) {
            LookupError::Temporary => {
                lookup.note_bogus(&name, &e);
                MxReport {
                    status: "temperror",
                    ..MxReport::default()
                }
            }
            LookupError::NotFound => {
                // RFC 5321 §5.1: without MX, the address record is the implicit MX.
                let implicit = lookup.resolver.lookup_ip(name).await;
                MxReport {
                    status: match &implicit {
                        Ok(_) => "implicit",
                        Err(e) if classify(e) == LookupError::Temporary => "temperror",
                        Err(_) => "none",
                    },
                    hosts: Vec::new(),
                    dnssec: None,
                }
            }
        },
    }
}

impl Report {
    /// `  dnssec: STATE` under a block, when answers are validated and this one has a state.
    fn dnssec_line(&self, o: &mut String, dnssec: Option<&'static str>) {
        if let Some(d) = dnssec.filter(|_| self.dnssec == "validated") {
            o.push_str(&format!("  dnssec: {d}\n"));
        }
    }

    /// The terminal form: one block per record kind, then the verdict and the snippet.
    pub fn text(&self) -> String {
        let mut o = String::new();
        let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        o.push_str(&format!(
            "domain: {}\ndnssec: {}\n",
            self.domain, self.dnssec
        ));
        o.push_str(&format!("spf: {}\n", self.spf.status));
        if let Some(r) = &self.spf.record {
            o.push_str(&format!("  record: {r}\n"));
            o.push_str(&format!(
                "  valid: {}\n  lookups: {} ({} void)\n  all: {}\n",
                if self.spf.valid { "yes" } else { "no" },
                self.spf.lookups,
                self.spf.void_lookups,
                opt(&self.spf.all)
            ));
        }
        if let Some(e) = &self.spf.error {
            o.push_str(&format!("  error: {e}\n"));
        }
        self.dnssec_line(&mut o, self.spf.dnssec);
        o.push_str(&format!("dmarc: {}\n", self.dmarc.status));
        if let (Some(n), Some(r)) = (&self.dmarc.name, &self.dmarc.record) {
            o.push_str(&format!("  at: {n}\n  record: {r}\n"));
            o.push_str(&format!(
                "  p: {}  sp: {}  adkim: {}  aspf: {}\n",
                self.dmarc.p.unwrap_or("-"),
                self.dmarc.sp.unwrap_or("-"),
                self.dmarc.adkim.unwrap_or("-"),
                self.dmarc.aspf.unwrap_or("-")
            ));
        }
        if let Some(e) = &self.dmarc.error {
            o.push_str(&format!("  error: {e}\n"));
        }
        self.dnssec_line(&mut o, self.dmarc.dnssec);
        let found: Vec<&KeyReport> = self.dkim.iter().filter(|k| k.status != "none").collect();
        o.push_str(&format!(
            "dkim: {} selector(s) tried, {} found\n",
            self.dkim.len(),
            found.len()
        ));
        for k in found {
            o.push_str(&format!(
                "  {}._domainkey.{} ({})",
                k.selector, k.domain, k.source
            ));
            if k.status == "temperror" {
                if k.dnssec == Some("bogus") {
                    o.push_str(": DNSSEC bogus, not used\n");
                } else {
                    o.push_str(": lookup failed for now\n");
                }
                continue;
            }
            if let Some(c) = &k.cname {
                o.push_str(&format!(" -> {c}"));
            }
            o.push_str(&format!(
                ": {} {}{}",
                k.key_type.as_deref().unwrap_or("?"),
                k.bits.map(|b| format!("{b} bits")).unwrap_or_default(),
                if k.testing { " t=y" } else { "" }
            ));
            match &k.problem {
                None => o.push_str(" usable"),
                Some(p) => o.push_str(&format!(" NOT usable: {p}")),
            }
            match k.dnssec {
                Some(d) if self.dnssec == "validated" => o.push_str(&format!(" (dnssec: {d})\n")),
                _ => o.push('\n'),
            }
        }
        o.push_str(&format!("mx: {}\n", self.mx.status));
        for h in &self.mx.hosts {
            o.push_str(&format!("  {h}\n"));
        }
        self.dnssec_line(&mut o, self.mx.dnssec);
        for n in &self.notes {
            o.push_str(&format!("note: {n}\n"));
        }
        o.push_str(&format!("verdict: {}\n", self.verdict.verdict.as_str()));
        for w in &self.verdict.why {
            o.push_str(&format!("  why: {w}\n"));
        }
        if let Some(s) = &self.verdict.snippet {
            o.push_str("add to the configuration:\n");
            o.push_str(s);
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usual_selectors_are_bounded_and_dated() {
        let today = chrono::NaiveDate::from_ymd_opt(2026, 1, 15).unwrap_or_default();
        let list = usual_selectors(today);
        assert!(list.len() <= 20, "{list:?}");
        for want in [
            "selector1",
            "selector2",
            "google",
            "s2026",
            "2025",
            "202601",
            "202512",
        ] {
            assert!(list.iter().any(|s| s == want), "{want} in {list:?}");
        }
    }

    #[test]
    fn spf_record_selection() {
        let cases: &[(&[&[u8]], usize)] = &[
            (&[b"v=spf1 -all"], 1),
            (&[b"V=SPF1 -all", b"other"], 1),
            (&[b"v=spf1"], 1),
            (&[b"v=spf10 -all"], 0),
            (&[b"v=spf1 -all", b"v=spf1 ~all"], 2),
            (&[b"spf"], 0),
        ];
        for (records, n) in cases {
            let records: Vec<Vec<u8>> = records.iter().map(|r| r.to_vec()).collect();
            assert_eq!(spf_records(&records).len(), *n, "{records:?}");
        }
    }

    #[test]
    fn key_report_table() {
        let ok = |txt: &str| {
            Ok(TxtAnswer {
                records: vec![txt.as_bytes().to_vec()],
                owner: None,
                dnssec: Some("not validated"),
            })
        };
        let ed = "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";
        let cases: Vec<(Result<TxtAnswer, LookupError>, &str, bool)> = vec![
            (ok(ed), "found", true),
            (ok(&format!("{ed}; t=y")), "found", false),
            (ok("v=DKIM1; p="), "found", false),
            (ok("hello"), "found", false),
            (Err(LookupError::NotFound), "none", false),
            (Err(LookupError::Temporary), "temperror", false),
        ];
        for (answer, status, usable) in cases {
            let k = key_report("a.gouv.fr".into(), "s".into(), "usual", answer, 1024);
            assert_eq!((k.status, k.usable), (status, usable), "{k:?}");
        }
    }
}
