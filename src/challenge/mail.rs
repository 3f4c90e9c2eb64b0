//! The challenge mail (SPEC §6), built with lettre's message builder.
//!
//! - `From: outbound.from`, `To:` the claimed address, `Reply-To: <prefix>+<token>@<domain>`.
//! - `Message-ID: <{token}.{random}@{confirm.domain}>`: a reply's `In-Reply-To` /
//!   `References` then carry the token too, and `binding.not_a_reply` can check them.
//! - The token is also in the Subject (a reply's `RE:` subject carries it, usually signed)
//!   and in the body (quoted in the reply).
//! - The text, French then English, says what happened and what to do, but **never the
//!   session code**: the code is on the requester's screen only (SPEC §1).
//! - `Auto-Submitted: auto-generated` (RFC 3834), plus `X-Auto-Response-Suppress: All` so
//!   Exchange-like servers do not answer it with an out-of-office reply (which could carry
//!   the token back from the victim's own server).
//! - The body is `text/plain; charset=utf-8`, quoted-printable: 7-bit safe for any relay,
//!   and the token (`a-z2-7`) is never escaped; lines are kept short so it is never split by
//!   a soft line break.
//! - Optional DKIM signature (`outbound.dkim`): RSA-SHA256 or Ed25519-SHA256 with relaxed
//!   canonicalisation, over the headers listed in [`SIGNED_HEADERS`].

use std::path::Path;
use std::time::SystemTime;

use chrono::{DateTime, Utc};
use lettre::message::header::{ContentTransferEncoding, ContentType, HeaderName, HeaderValue};
use lettre::message::{Body, Mailbox as LettreMailbox, SinglePart};
use lettre::{Address, Message};
use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{Canonicalization, DkimSigner, Done};
use rustls_pki_types::PrivateKeyDer;

use super::Token;
use crate::address::Mailbox;
use crate::config::{Config, OutboundDkim};

/// Headers covered by the outbound DKIM signature.
pub const SIGNED_HEADERS: &[&str] = &[
    "From",
    "To",
    "Reply-To",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "Auto-Submitted",
];

/// A built challenge mail, ready for the outbound target.
pub struct ChallengeMail {
    /// Envelope sender: the address of `outbound.from`.
    pub envelope_from: Address,
    /// Envelope recipient: the claimed address.
    pub envelope_to: Address,
    /// The complete message (CRLF line endings), signed when configured.
    pub bytes: Vec<u8>,
}

/// Why the mail could not be built.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("outbound.from is not a mailbox: {0}")]
    From(String),
    #[error("address not usable in a mail: {0}")]
    Address(String),
    #[error("message: {0}")]
    Build(String),
    #[error("DKIM key {path}: {message}")]
    Key { path: String, message: String },
    #[error("DKIM signing: {0}")]
    Sign(String),
}

enum Signer {
    Rsa(DkimSigner<RsaKey<Sha256>, Done>),
    Ed25519(DkimSigner<Ed25519Key, Done>),
}

/// Builds challenge mails from the configuration (parsed and key loaded once, at start).
pub struct MailBuilder {
    from: LettreMailbox,
    confirm_domain: String,
    local_prefix: String,
    service_name: String,
    signer: Option<Signer>,
}

impl MailBuilder {
    pub fn new(config: &Config) -> Result<Self, MailError> {
        let from: LettreMailbox = config
            .outbound
            .from
            .parse()
            .map_err(|e: lettre::address::AddressError| MailError::From(e.to_string()))?;
        let signer = match &config.outbound.dkim {
            Some(dkim) => Some(load_signer(dkim)?),
            None => None,
        };
        Ok(Self {
            from,
            confirm_domain: config.confirm.domain.as_str().to_owned(),
            local_prefix: config.confirm.local_prefix.clone(),
            service_name: config.confirm.service_name.clone(),
            signer,
        })
    }

    /// Build (and sign) the mail for `to`.
    pub fn build(
        &self,
        to: &Mailbox,
        token: &Token,
        message_id: &str,
        now: DateTime<Utc>,
    ) -> Result<ChallengeMail, MailError> {
        let to_addr = Address::new(to.local(), to.domain().as_str())
            .map_err(|e| MailError::Address(e.to_string()))?;
        let reply_to = Address::new(
            format!("{}+{}", self.local_prefix, token.expose()),
            &self.confirm_domain,
        )
        .map_err(|e| MailError::Address(e.to_string()))?;
        let subject = format!(
            "Confirmation de votre adresse / Confirm your address [{}]",
            token.expose()
        );
        let body =
            Body::new_with_encoding(self.text(token), ContentTransferEncoding::QuotedPrintable)
                .map_err(|_| MailError::Build("body encoding".into()))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(LettreMailbox::new(None, to_addr.clone()))
            .reply_to(LettreMailbox::new(None, reply_to))
            .subject(subject)
            .message_id(Some(format!("<{message_id}>")))
            .date(SystemTime::from(now))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("Auto-Submitted"),
                "auto-generated".into(),
            ))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("X-Auto-Response-Suppress"),
                "All".into(),
            ))
            .singlepart(
                SinglePart::builder()
                    .header(ContentType::TEXT_PLAIN)
                    .body(body),
            )
            .map_err(|e| MailError::Build(e.to_string()))?;
        let mut bytes = message.formatted();
        if let Some(signer) = &self.signer {
            let header = match signer {
                Signer::Rsa(s) => s.sign(&bytes).map(|sig| sig.to_header()),
                Signer::Ed25519(s) => s.sign(&bytes).map(|sig| sig.to_header()),
            }
            .map_err(|e| MailError::Sign(e.to_string()))?;
            let mut signed = header.into_bytes();
            signed.append(&mut bytes);
            bytes = signed;
        }
        Ok(ChallengeMail {
            envelope_from: self.from.email.clone(),
            envelope_to: to_addr,
            bytes,
        })
    }

    fn text(&self, token: &Token) -> String {
        let service = &self.service_name;
        let token = token.expose();
        format!(
            "Bonjour,\r\n\
             \r\n\
             Quelqu'un a demandé à inscrire cette adresse sur {service}.\r\n\
             Si c'est vous, répondez à ce message et écrivez dans votre\r\n\
             réponse le code affiché sur votre écran.\r\n\
             Si ce n'est pas vous, ignorez ce message : rien ne sera fait.\r\n\
             \r\n\
             ----\r\n\
             \r\n\
             Hello,\r\n\
             \r\n\
             Someone asked to register this address at {service}.\r\n\
             If it was you, reply to this message and write in your reply\r\n\
             the code shown on your screen.\r\n\
             If it was not you, ignore this message: nothing will happen.\r\n\
             \r\n\
             Référence / Reference:\r\n\
             {token}\r\n"
        )
    }
}

fn load_signer(dkim: &OutboundDkim) -> Result<Signer, MailError> {
    let key_error = |message: String| MailError::Key {
        path: dkim.private_key.display().to_string(),
        message,
    };
    let pem = read_pem(&dkim.private_key).map_err(key_error)?;
    let domain = dkim.domain.as_str().to_owned();
    let signer = match pem.label.as_str() {
        "RSA PRIVATE KEY" => {
            let der = PrivateKeyDer::Pkcs1(pem.der.clone().into());
            let key = RsaKey::<Sha256>::from_key_der(der).map_err(|e| key_error(e.to_string()))?;
            Signer::Rsa(configure(
                DkimSigner::from_key(key),
                &domain,
                &dkim.selector,
            ))
        }
        "PRIVATE KEY" => {
            match RsaKey::<Sha256>::from_key_der(PrivateKeyDer::Pkcs8(pem.der.clone().into())) {
                Ok(key) => Signer::Rsa(configure(
                    DkimSigner::from_key(key),
                    &domain,
                    &dkim.selector,
                )),
                Err(_) => {
                    let key = Ed25519Key::from_pkcs8_maybe_unchecked_der(&pem.der)
                        .map_err(|e| key_error(format!("neither RSA nor Ed25519 PKCS#8: {e}")))?;
                    Signer::Ed25519(configure(
                        DkimSigner::from_key(key),
                        &domain,
                        &dkim.selector,
                    ))
                }
            }
        }
        other => return Err(key_error(format!("unsupported PEM block {other:?}"))),
    };
    Ok(signer)
}

fn configure<K: mail_auth::common::crypto::SigningKey>(
    signer: DkimSigner<K, mail_auth::dkim::NeedDomain>,
    domain: &str,
    selector: &str,
) -> DkimSigner<K, Done> {
    signer
        .domain(domain)
        .selector(selector)
        .headers(SIGNED_HEADERS.iter().copied())
        .header_canonicalization(Canonicalization::Relaxed)
        .body_canonicalization(Canonicalization::Relaxed)
}

struct Pem {
    label: String,
    der: Vec<u8>,
}

/// The first PEM block of a file.
fn read_pem(path: &Path) -> Result<Pem, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let mut label = None;
    let mut b64 = String::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("-----BEGIN ") {
            label = Some(rest.trim_end_matches('-').to_owned());
            b64.clear();
        } else if line.starts_with("-----END ") {
            break;
        } else if label.is_some() {
            b64.push_str(line);
        }
    }
    let label = label.ok_or("no PEM block")?;
    let der = data_encoding::BASE64
        .decode(b64.as_bytes())
        .map_err(|e| format!("PEM base64: {e}"))?;
    Ok(Pem { label, der })
}
