//! A builder for confirmation mails beyond the corpus: start from Alice's genuine reply and
//! change one thing.

#![allow(dead_code)]

use chrono::{DateTime, Utc};
use gatekeeper::backend::{ChallengeBinding, Transaction};

use super::dkim::{SignSpec, sign};
use super::{Vars, challenge, corpus, transaction};

/// The `h=` a ministry MTA uses.
pub const STD_H: &[&str] = &[
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "content-type",
    "in-reply-to",
    "references",
];

/// One signature to add.
#[derive(Clone, Debug)]
pub struct Sig {
    pub key: String,
    pub spec: SignSpec,
    /// Sign these headers/body instead of the mail's own (a replay).
    pub over: Option<(Vec<String>, String)>,
}

impl Sig {
    /// The ministry's normal signature.
    pub fn gov() -> Sig {
        Sig {
            key: "gov-rsa2048".into(),
            spec: SignSpec::new("interieur.gouv.fr", "s2024", "rsa-sha256", STD_H),
            over: None,
        }
    }

    pub fn with(key: &str, domain: &str, selector: &str, algorithm: &str) -> Sig {
        Sig {
            key: key.into(),
            spec: SignSpec::new(domain, selector, algorithm, STD_H),
            over: None,
        }
    }

    pub fn h(mut self, names: &[&str]) -> Sig {
        self.spec.signed_headers = names.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn tag(mut self, name: &str, value: &str) -> Sig {
        self.spec = self.spec.tag(name, value);
        self
    }

    pub fn raw(mut self, tags: &str) -> Sig {
        self.spec.raw_tags = Some(tags.into());
        self
    }
}

/// A mail and its SMTP envelope. Header and body text may use the corpus placeholders.
#[derive(Clone, Debug)]
pub struct Mail {
    pub client_ip: String,
    pub helo: String,
    pub mail_from: String,
    /// Fields as on the wire; `{SIG0}`, `{SIG1}`... mark where signatures go (else on top).
    pub headers: Vec<String>,
    pub body: String,
    pub sigs: Vec<Sig>,
    /// Bytes appended to the built message after signing (tampering in transit).
    pub append_body: String,
}

impl Mail {
    /// Alice's genuine reply through her ministry's MTA.
    pub fn alice() -> Mail {
        Mail {
            client_ip: "127.0.0.25".into(),
            helo: "smtp.interieur.gouv.fr".into(),
            mail_from: "alice@interieur.gouv.fr".into(),
            headers: [
                "From: Alice Martin <alice@interieur.gouv.fr>",
                "To: <confirm+{TOKEN}@verify.example.gouv.fr>",
                "Subject: RE: Confirmation de votre adresse",
                "Date: {DATE}",
                "Message-ID: <{MSGID}@interieur.gouv.fr>",
                "MIME-Version: 1.0",
                "Content-Type: text/plain; charset=utf-8",
                "In-Reply-To: <{CHALLENGE_MSGID}>",
                "References: <{CHALLENGE_MSGID}>",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            body:
                "Code : {SESSION_CODE}\r\n\r\nJe confirme que cette adresse est bien la mienne.\r\n"
                    .into(),
            sigs: vec![Sig::gov()],
            append_body: String::new(),
        }
    }

    pub fn via(mut self, ip: &str, helo: &str) -> Mail {
        self.client_ip = ip.into();
        self.helo = helo.into();
        self
    }

    pub fn envelope(mut self, mail_from: &str) -> Mail {
        self.mail_from = mail_from.into();
        self
    }

    /// Replace the first field with this name (case-insensitive) by `field`.
    pub fn set(mut self, name: &str, field: &str) -> Mail {
        let pos = self.headers.iter().position(|h| has_name(h, name));
        match pos {
            Some(i) => self.headers[i] = field.into(),
            None => self.headers.push(field.into()),
        }
        self
    }

    /// Remove every field with this name.
    pub fn without(mut self, name: &str) -> Mail {
        self.headers.retain(|h| !has_name(h, name));
        self
    }

    /// Insert a field at position `at` (0 = top).
    pub fn insert(mut self, at: usize, field: &str) -> Mail {
        let at = at.min(self.headers.len());
        self.headers.insert(at, field.into());
        self
    }

    pub fn push(mut self, field: &str) -> Mail {
        self.headers.push(field.into());
        self
    }

    pub fn body(mut self, body: &str) -> Mail {
        self.body = body.into();
        self
    }

    pub fn sigs(mut self, sigs: Vec<Sig>) -> Mail {
        self.sigs = sigs;
        self
    }

    /// The message bytes with placeholders and signatures filled.
    pub fn build(&self, vars: &Vars) -> Vec<u8> {
        let headers: Vec<String> = self.headers.iter().map(|h| vars.fill(h)).collect();
        let body = vars.fill(&self.body);
        let plain: Vec<String> = headers
            .iter()
            .filter(|h| !h.starts_with("{SIG"))
            .cloned()
            .collect();
        let fields: Vec<String> = self
            .sigs
            .iter()
            .map(|s| {
                let mut spec = s.spec.clone();
                spec.tags = spec
                    .tags
                    .iter()
                    .map(|(k, v)| (k.clone(), vars.fill(v)))
                    .collect();
                spec.raw_tags = spec.raw_tags.as_ref().map(|r| vars.fill(r));
                match &s.over {
                    Some((oh, ob)) => {
                        let oh: Vec<String> = oh.iter().map(|h| vars.fill(h)).collect();
                        sign(corpus::key(&s.key), &spec, &oh, vars.fill(ob).as_bytes())
                    }
                    None => sign(corpus::key(&s.key), &spec, &plain, body.as_bytes()),
                }
            })
            .collect();
        let mut out: Vec<String> = Vec::new();
        let placed = headers.iter().any(|h| h.starts_with("{SIG"));
        if !placed {
            out.extend(fields.iter().cloned());
        }
        for h in &headers {
            if let Some(n) = h
                .strip_prefix("{SIG")
                .and_then(|r| r.strip_suffix('}'))
                .and_then(|n| n.parse::<usize>().ok())
            {
                if let Some(f) = fields.get(n) {
                    out.push(f.clone());
                }
            } else {
                out.push(h.clone());
            }
        }
        let mut msg = corpus::assemble(&out, &body);
        msg.extend_from_slice(vars.fill(&self.append_body).as_bytes());
        msg
    }

    pub fn transaction(&self, vars: &Vars, now: DateTime<Utc>) -> Transaction {
        transaction(
            &self.client_ip,
            &self.helo,
            &self.mail_from,
            vars,
            self.build(vars),
            now,
        )
    }
}

fn has_name(field: &str, name: &str) -> bool {
    field
        .split_once(':')
        .is_some_and(|(n, _)| n.eq_ignore_ascii_case(name))
}

/// The challenge for Alice.
pub fn alice_challenge(vars: &Vars) -> ChallengeBinding {
    challenge("alice@interieur.gouv.fr", vars)
}
