//! The public corpus (`tests/data/corpus/`, byte-identical copies of the shared corpus):
//! the zone with freshly generated keys, the cases, placeholders, and the message of a case
//! as it is on the wire after dot-unstuffing.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde::Deserialize;
use serde_json::Value;

use super::dkim::{SignSpec, sign};
use super::dns::Rec;
use super::keys::Key;

pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/corpus")
}

#[derive(Debug, Deserialize)]
pub struct Zone {
    pub records: Vec<(String, String, String)>,
    #[serde(default)]
    pub servfail: Vec<String>,
    #[serde(default)]
    pub drop: Vec<String>,
    pub keys: BTreeMap<String, KeyDef>,
    pub ips: BTreeMap<String, IpDef>,
}

#[derive(Debug, Deserialize)]
pub struct KeyDef {
    pub domain: String,
    pub selector: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub role: String,
}

#[derive(Debug, Deserialize)]
pub struct IpDef {
    pub ip: String,
    pub ptr: String,
    pub helo: String,
}

pub fn zone() -> &'static Zone {
    static ZONE: OnceLock<Zone> = OnceLock::new();
    ZONE.get_or_init(|| {
        let text = std::fs::read_to_string(data_dir().join("zone.json")).expect("zone.json");
        serde_json::from_str(&text).expect("zone.json parses")
    })
}

/// Every key of the zone, generated once per test binary.
pub fn keys() -> &'static BTreeMap<String, Key> {
    static KEYS: OnceLock<BTreeMap<String, Key>> = OnceLock::new();
    KEYS.get_or_init(|| {
        zone()
            .keys
            .iter()
            .map(|(id, def)| (id.clone(), Key::generate(&def.kind)))
            .collect()
    })
}

pub fn key(id: &str) -> &'static Key {
    keys().get(id).unwrap_or_else(|| panic!("no key {id}"))
}

/// The zone's records with `{PUBKEY:<id>}` filled.
pub fn zone_records() -> Vec<Rec> {
    zone()
        .records
        .iter()
        .map(|(name, rtype, value)| Rec::new(name, rtype, &fill_pubkeys(value)))
        .collect()
}

pub fn fill_pubkeys(value: &str) -> String {
    let mut out = value.to_string();
    while let Some(start) = out.find("{PUBKEY:") {
        let Some(end) = out[start..].find('}') else {
            break;
        };
        let id = out[start + 8..start + end].to_string();
        out.replace_range(start..start + end + 1, &key(&id).public_b64());
    }
    out
}

/// One case of `mails.json` (only the fields the tests use).
#[derive(Debug, Clone, Deserialize)]
pub struct Case {
    pub id: String,
    pub title: String,
    pub rule: String,
    pub expected: String,
    pub spec_reasons: Vec<String>,
    pub stage: String,
    pub claimed_address: String,
    #[serde(default)]
    pub client_ip: Option<String>,
    #[serde(default)]
    pub client_address: Option<String>,
    #[serde(default)]
    pub helo: Option<String>,
    #[serde(default)]
    pub mail_from: Option<String>,
    #[serde(default)]
    pub rcpt_to: Vec<String>,
    #[serde(default)]
    pub raw_data: bool,
    #[serde(default)]
    pub headers: Vec<String>,
    #[serde(default)]
    pub body: String,
    #[serde(default)]
    pub dkim: Option<Value>,
    #[serde(default)]
    pub dns_overrides: Option<Value>,
}

pub fn cases() -> Vec<Case> {
    let text = std::fs::read_to_string(data_dir().join("mails.json")).expect("mails.json");
    serde_json::from_str(&text).expect("mails.json parses")
}

/// Values of the placeholders for one case.
#[derive(Clone, Debug)]
pub struct Vars {
    pub token: String,
    pub token_b: String,
    pub session_code: String,
    /// Without angle brackets.
    pub challenge_msgid: String,
    pub msgid: String,
    pub now: DateTime<Utc>,
}

impl Vars {
    /// Formats as the product makes them: a lower-case base32-like token, a six-digit
    /// session code, a challenge Message-ID `<token>.<unique>@<confirm.domain>`.
    pub fn new(now: DateTime<Utc>, n: u32) -> Vars {
        let token = format!("tk{n:04}q7x2m9c4v8b1n6z3a5s0d");
        Vars {
            challenge_msgid: format!("{token}.u{n:04}k2@verify.example.gouv.fr"),
            token,
            token_b: format!("tb{n:04}w3e8r1t6y2u7i4o9p0"),
            session_code: format!("{:06}", (u64::from(n) * 7919 + 482_913) % 1_000_000),
            msgid: format!("m{n:04}.{}", now.timestamp()),
            now,
        }
    }

    pub fn fill(&self, s: &str) -> String {
        s.replace("{TOKEN}", &self.token)
            .replace("{TOKEN_B}", &self.token_b)
            .replace("{SESSION_CODE}", &self.session_code)
            .replace(
                "{SESSION_CODE_HEAD}",
                self.session_code.get(..2).unwrap_or_default(),
            )
            .replace(
                "{SESSION_CODE_REST}",
                self.session_code.get(2..).unwrap_or_default(),
            )
            .replace("{CHALLENGE_MSGID}", &self.challenge_msgid)
            .replace(
                "{DATE_MINUS_10M}",
                &(self.now - ChronoDuration::minutes(10)).to_rfc2822(),
            )
            .replace("{DATE}", &self.now.to_rfc2822())
            .replace("{MSGID}", &self.msgid)
            .replace(
                "{UNIX_PLUS_1D}",
                &(self.now.timestamp() + 86400).to_string(),
            )
    }
}

fn str_of(v: &Value, k: &str) -> String {
    v.get(k)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// A signing object of the corpus (`dkim` or one of `additional_signatures`).
fn spec_of(v: &Value, vars: &Vars) -> SignSpec {
    let mut spec = SignSpec {
        domain: str_of(v, "signer_domain"),
        selector: str_of(v, "selector"),
        algorithm: str_of(v, "algorithm"),
        canonicalization: str_of(v, "canonicalization"),
        signed_headers: v
            .get("signed_headers")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default(),
        tags: Vec::new(),
        raw_tags: v
            .get("raw_tags")
            .and_then(Value::as_str)
            .map(|s| vars.fill(s)),
    };
    if spec.canonicalization.is_empty() {
        spec.canonicalization = "relaxed/relaxed".into();
    }
    if let Some(tags) = v.get("tags").and_then(Value::as_object) {
        for (k, val) in tags {
            let text = val
                .as_str()
                .map(String::from)
                .unwrap_or_else(|| val.to_string());
            spec.tags.push((k.clone(), vars.fill(&text)));
        }
    }
    spec
}

/// Build the signature field for one signing object over the case's (filled) message.
fn signature_for(v: &Value, vars: &Vars, headers: &[String], body: &str) -> String {
    let spec = spec_of(v, vars);
    let key = key(v.get("key").and_then(Value::as_str).expect("dkim.key"));
    match v.get("sign_over") {
        Some(over) if !over.is_null() => {
            let oh: Vec<String> = over
                .get("headers")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(|s| vars.fill(s))
                        .collect()
                })
                .unwrap_or_default();
            let ob = vars.fill(over.get("body").and_then(Value::as_str).unwrap_or_default());
            sign(key, &spec, &oh, ob.as_bytes())
        }
        _ => sign(key, &spec, headers, body.as_bytes()),
    }
}

/// The case's message (headers joined with CRLF, CRLF CRLF, body), with every placeholder and
/// signature filled.
pub fn message(case: &Case, vars: &Vars) -> Vec<u8> {
    let headers: Vec<String> = case.headers.iter().map(|h| vars.fill(h)).collect();
    let body = vars.fill(&case.body);
    let plain: Vec<String> = headers
        .iter()
        .filter(|h| !h.starts_with("{DKIM_SIGNATURE"))
        .cloned()
        .collect();
    let mut sigs: BTreeMap<String, String> = BTreeMap::new();
    if let Some(d) = case.dkim.as_ref().filter(|d| !d.is_null()) {
        sigs.insert(
            "{DKIM_SIGNATURE}".into(),
            signature_for(d, vars, &plain, &body),
        );
        if let Some(extra) = d.get("additional_signatures").and_then(Value::as_array) {
            for (i, a) in extra.iter().enumerate() {
                let ph = a
                    .get("placeholder")
                    .and_then(Value::as_str)
                    .map(String::from)
                    .unwrap_or_else(|| format!("{{DKIM_SIGNATURE_{}}}", i + 2));
                sigs.insert(ph, signature_for(a, vars, &plain, &body));
            }
        }
    }
    let lines: Vec<String> = headers
        .iter()
        .filter_map(|h| match sigs.get(h.as_str()) {
            Some(sig) => Some(sig.clone()),
            None if h.starts_with("{DKIM_SIGNATURE") => None,
            None => Some(h.clone()),
        })
        .collect();
    assemble(&lines, &body)
}

pub fn assemble(headers: &[String], body: &str) -> Vec<u8> {
    let mut out = headers.join("\r\n").into_bytes();
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body.as_bytes());
    out
}

/// The address inside `MAIL FROM:` text (`<a@b> SIZE=1`): the bytes between the first `<`
/// and the next `>`.
pub fn reverse_path(mail_from: &str) -> Option<&str> {
    let start = mail_from.find('<')?;
    let end = mail_from[start..].find('>')? + start;
    Some(&mail_from[start + 1..end])
}
