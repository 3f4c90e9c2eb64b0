//! The one strict address parser (SPEC §3, invariant I2).
//!
//! Every address-bearing field (the API claim, `MAIL FROM`, `RCPT TO`, the From header, DKIM
//! `d=`, config domains) goes through this module, once, into one canonical form. Nothing
//! outside this module splits on `@` or lowercases an address. The parser accepts a deliberately
//! small subset of RFC 5321/5322: anything that some common parser could read differently is
//! refused, never interpreted.
//!
//! # Grammar accepted (a subset of RFC 5321 §4.1.2)
//!
//! ```text
//! Mailbox    = Local-part "@" Domain                 ; exactly one "@", total ≤ 254 octets
//! Local-part = Dot-string                            ; 1–64 octets
//! Dot-string = Atom *("." Atom)                      ; no leading, trailing or double dot
//! Atom       = 1*( ALPHA / DIGIT / "_" / "-" / "+" / extra )
//!              ; extra: policy.local_part_extra_chars ∩ "#$&*/=?^|~" (atext minus "!%'`{}")
//! Domain     = sub-domain 1*("." sub-domain)         ; ≥ 2 labels, total ≤ 253 octets
//! sub-domain = Let-dig [Ldh-str]                     ; 1–63 octets, no leading/trailing "-"
//!              ; no "xn--" label unless policy.allow_idna
//! TLD        = 1*ALPHA                               ; the last label is alphabetic
//! ```
//!
//! Not accepted from RFC 5321: `Quoted-string` local parts, `address-literal` (`[1.2.3.4]`),
//! source routes (`@a,@b:`), a trailing root dot. Canonical form: ASCII lower-case, both parts.
//!
//! # From header (RFC 5322 §3.4 subset)
//!
//! ```text
//! from-value   = [FWS] ( Mailbox / [display-name FWS-or-nothing] "<" Mailbox ">" ) [FWS]
//! display-name = word *(WSP word)
//! word         = atom-or-dots / quoted-string / encoded-word (RFC 2047, B or Q)
//! atom-or-dots = 1*(atext-without-"!%" / ".")  ; no leading ".", no ".." (obs-phrase)
//! ```
//!
//! Folding (CRLF followed by SP or HTAB) is unfolded first; any other CR or LF is refused. The
//! address between `<` and `>` goes through [`Mailbox::parse`], the same code path as the
//! envelope.
//!
//! # What is refused, and the attack each refusal stops
//!
//! | detail | example | attack it stops |
//! |---|---|---|
//! | `empty` | `` | an empty identity matching "anything" downstream |
//! | `length` | > 254 octets (> 4096 checked first) | truncation by a fixed-size buffer elsewhere; unbounded work |
//! | `local_length`, `domain_length`, `label_length` | 65-octet local part, 254-octet domain, 64-octet label | truncation that turns one address into another; DNS refusing what we accepted |
//! | `nul` | `attacker@evil.example\0@interieur.gouv.fr` | C-string truncation: one side reads up to the NUL, the other past it |
//! | `control` | `alice@x.fr\r\nBcc: y@z` | header and SMTP command injection, bare CR/LF smuggling |
//! | `whitespace` | `alice @x.fr`, `a@x.fr b@y.fr` | trimming differences; lists split on spaces |
//! | `non_ascii` | `alice@interieur．gouv．fr` (U+FF0E) | Unicode full stops that IDNA maps to `.`; homographs; SMTPUTF8 |
//! | `two_at` | `attacker@evil.example@interieur.gouv.fr` | CVE-2019-16056 / CVE-2019-11340 / CVE-2023-27043: the domain check and the mailer split at different `@` |
//! | `no_at` | `alice` | a local name that a mailer completes with its own domain |
//! | `quoted_local` | `"a@evil.example"@gouv.fr`, `a\@b@x.fr` | quoted `@` or backslash escapes read differently by each parser |
//! | `comment` | `alice(@evil.example)@gouv.fr` | comments that one parser drops and another keeps |
//! | `encoded_word` | `=?utf-8?q?alice=40evil.example?=@gouv.fr` | RFC 2047 smuggling: one layer decodes, another does not |
//! | `route` | `@relay.gouv.fr:attacker@evil.example` | obsolete source routes: delivery to the last hop, checks on the first |
//! | `percent_hack` | `attacker%evil.example@gouv.fr` | the percent hack: a relay re-routes to the part after `%` |
//! | `bang_path` | `evil.example!attacker@gouv.fr` | UUCP bang paths: a relay routes to `evil.example` |
//! | `ip_literal` | `alice@[127.0.0.1]`, `alice@127.0.0.1` | bypassing the domain policy with an address literal |
//! | `idna` | `alice@xn--intrieur-b1a.gouv.fr` | IDNA homographs of an allowed domain (unless `policy.allow_idna`) |
//! | `trailing_dot` | `alice@interieur.gouv.fr.`, `alice.@x.fr` | absolute names compared as different strings; dot-atom violations |
//! | `leading_dot`, `double_dot`, `empty_label` | `.alice@x.fr`, `a..b@x.fr`, `a@x..fr`, `a@` | dot handling that differs between parsers (Gmail-style dot folding, empty labels) |
//! | `hyphen` | `a@-x.gouv.fr` | non-LDH names that resolvers and policy code treat differently |
//! | `tld` | `a@x.gouv.123` | numeric TLDs that are IP addresses in disguise |
//! | `single_label` | `alice@localhost` | dotless names completed by a resolver search list |
//! | `bad_char` | `a#b@x.fr`, `a@x_y.fr` | every other character some parser treats as special (`'`, `/`, `=`, `|`, ...) |
//! | `angle_brackets` | `<a@x.fr>` as a claim; `<<a@x.fr>>` in From | nested or stray brackets that select a different address |
//! | `list` | `a@x.fr,b@y.fr`, `a@x.fr;b@y.fr` | several recipients where one is expected |
//! | `group` | `From: team: a@x.fr;` | RFC 5322 groups hiding or multiplying mailboxes |
//! | `display_name_at` | `From: "alice@interieur.gouv.fr" <attacker@evil.example>` | a display name that a mail client shows as the address (raw, quoted or encoded) |
//! | `trailing` | `From: <a@x.fr> b@y.fr` | text after the address that another parser takes as the address |
//! | `display_name` | `From: .J Doe <a@x.fr>`, `From: J..Doe <a@x.fr>` | a display name outside the atom/quoted/encoded/obs-phrase subset |
//!
//! The checks run in a fixed order so the detail names the real attack: a NUL anywhere is `nul`,
//! a `!` anywhere is `bang_path`, a `"` anywhere is `quoted_local`, before `two_at` or any
//! length check.

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

    /// The reason code for a refused From header value ([`Mailbox::parse_header`]).
    pub fn header_reason(&self) -> Reason {
        Reason::HeaderFromSyntax
    }
}

/// Refuse work on anything longer than this before looking at it (callers already bound
/// their lines to ~1000 octets).
pub const MAX_INPUT: usize = 4096;
/// RFC 5321 §4.5.3.1.3 path limit minus the angle brackets.
pub const MAX_ADDRESS: usize = 254;
/// RFC 5321 §4.5.3.1.1.
pub const MAX_LOCAL: usize = 64;
/// RFC 1035 name limit in text form without the root dot.
pub const MAX_DOMAIN: usize = 253;
/// RFC 1035 label limit.
pub const MAX_LABEL: usize = 63;

/// RFC 5322 atext specials that `policy.local_part_extra_chars` may add. `!` and `%` are atext
/// but are routing operators (bang path, percent hack); `'` and `` ` `` are quote-like and `{`
/// `}` bracket-like to other parsers: never added, whatever the configuration says (the config
/// loader refuses them too).
pub const LOCAL_EXTRA_ALLOWED: &str = "#$&*/=?^|~";

fn err(detail: &'static str) -> AddressError {
    AddressError { detail }
}

/// Checks common to every address-bearing input, in attack order. Returns the input as an
/// ASCII `&str` with no control octet; spaces and specials are left to the caller's grammar.
fn ascii_printable(input: &[u8]) -> Result<&str, AddressError> {
    if input.is_empty() {
        return Err(err("empty"));
    }
    if input.len() > MAX_INPUT {
        return Err(err("length"));
    }
    if input.contains(&0) {
        return Err(err("nul"));
    }
    if !input.is_ascii() {
        return Err(err("non_ascii"));
    }
    if input.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(err("control"));
    }
    std::str::from_utf8(input).map_err(|_| err("non_ascii"))
}

/// Specials checks shared by `Mailbox::parse` and `Domain::parse`, ordered so the detail names
/// the routing trick rather than a generic syntax error.
fn specials(s: &str) -> Result<(), AddressError> {
    if s.contains("=?") {
        return Err(err("encoded_word"));
    }
    if s.contains('!') {
        return Err(err("bang_path"));
    }
    if s.contains('%') {
        return Err(err("percent_hack"));
    }
    if s.starts_with('@') || s.contains(':') {
        return Err(err("route"));
    }
    if s.contains('"') || s.contains('\\') {
        return Err(err("quoted_local"));
    }
    if s.contains('(') || s.contains(')') {
        return Err(err("comment"));
    }
    if s.contains('[') || s.contains(']') {
        return Err(err("ip_literal"));
    }
    if s.contains('<') || s.contains('>') {
        return Err(err("angle_brackets"));
    }
    if s.contains(',') || s.contains(';') {
        return Err(err("list"));
    }
    if s.contains(' ') || s.contains('\t') {
        return Err(err("whitespace"));
    }
    Ok(())
}

fn local_char_ok(c: char, opts: &ParseOptions) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(c, '.' | '_' | '-' | '+')
        || (LOCAL_EXTRA_ALLOWED.contains(c) && opts.local_part_extra_chars.contains(c))
}

fn check_local(local: &str, opts: &ParseOptions) -> Result<(), AddressError> {
    if local.is_empty() || local.len() > MAX_LOCAL {
        return Err(err("local_length"));
    }
    if local.starts_with('.') {
        return Err(err("leading_dot"));
    }
    if local.ends_with('.') {
        return Err(err("trailing_dot"));
    }
    if local.contains("..") {
        return Err(err("double_dot"));
    }
    if !local.chars().all(|c| local_char_ok(c, opts)) {
        return Err(err("bad_char"));
    }
    Ok(())
}

/// The domain rules of SPEC §3 on an ASCII string already free of controls and specials.
fn check_domain(d: &str, opts: &ParseOptions) -> Result<(), AddressError> {
    if d.is_empty() {
        return Err(err("empty_label"));
    }
    if d.len() > MAX_DOMAIN {
        return Err(err("domain_length"));
    }
    if d.ends_with('.') {
        return Err(err("trailing_dot"));
    }
    if d.starts_with('.') {
        return Err(err("leading_dot"));
    }
    if d.contains("..") {
        return Err(err("double_dot"));
    }
    let labels: Vec<&str> = d.split('.').collect();
    if labels.len() < 2 {
        return Err(err("single_label"));
    }
    // A dotted quad (or any all-numeric name) is an address literal without its brackets.
    if labels
        .iter()
        .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(err("ip_literal"));
    }
    for label in &labels {
        if label.is_empty() {
            return Err(err("empty_label"));
        }
        if label.len() > MAX_LABEL {
            return Err(err("label_length"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(err("bad_char"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(err("hyphen"));
        }
        if !opts.allow_idna
            && label
                .get(..4)
                .is_some_and(|p| p.eq_ignore_ascii_case("xn--"))
        {
            return Err(err("idna"));
        }
    }
    match labels.last() {
        Some(tld) if tld.bytes().all(|b| b.is_ascii_alphabetic()) => Ok(()),
        _ => Err(err("tld")),
    }
}

impl Domain {
    /// Parse a bare domain (config values, DKIM `d=`), strict as in SPEC §3.
    pub fn parse(input: &[u8], opts: &ParseOptions) -> Result<Self, AddressError> {
        let s = ascii_printable(input)?;
        specials(s)?;
        if s.contains('@') {
            return Err(err("bad_char"));
        }
        check_domain(s, opts)?;
        Ok(Domain(s.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when `self` is `parent` or a subdomain of it on a label boundary: `gouv.fr`
    /// contains `interieur.gouv.fr`, not `evilgouv.fr`, not `gouv.fr.evil.example`.
    pub fn is_within(&self, parent: &Domain) -> bool {
        match self.0.strip_suffix(parent.0.as_str()) {
            Some("") => true,
            Some(prefix) => prefix.ends_with('.'),
            None => false,
        }
    }
}

/// A bounce-address tag that an outbound gateway may put before the local part of the
/// envelope sender (SPEC §3 "Envelope tags"), accepted only in MAIL FROM and only for a domain
/// whose override names it (`[policy.domains."…"] envelope_tag`).
///
/// | tag | shape accepted | source |
/// |---|---|---|
/// | `batv` | `prvs=KDDDSSSSSS=local@domain`: K one digit, DDD three digits, SSSSSS six hex digits | draft-levine-smtp-batv-01 §4.1 |
/// | `batv` | `prvs=DDDSSSSSS=local@domain`: the same without the key digit | what Cisco Secure Email (IronPort) gateways write, e.g. `prvs=234d5777c=…@citrix.com` in public list archives |
/// | `btv1` | `btv1==HHHHHHHHHHH==local@domain`: eleven hex digits | what Barracuda gateways write, e.g. `btv1==1086afe1179==…@heig-vd.ch` in public list archives (no public specification) |
///
/// Refused on purpose: the reversed `prvs=local=TAG` form that some filters also strip (it
/// cannot be told apart from the draft form when the local part looks like a tag, and no
/// gateway seen in real mail writes it), `msprvs1=` and every other tag type, a tag inside a
/// tag, and any other `=` in the local part (`policy.local_part_extra_chars` still decides).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnvelopeTag {
    Batv,
    Btv1,
}

impl EnvelopeTag {
    /// The configuration value (`envelope_tag = "batv"`).
    pub fn as_str(self) -> &'static str {
        match self {
            EnvelopeTag::Batv => "batv",
            EnvelopeTag::Btv1 => "btv1",
        }
    }

    /// The prefix that opens the tag, lower-case (matched without regard to case).
    fn prefix(self) -> &'static str {
        match self {
            EnvelopeTag::Batv => "prvs=",
            EnvelopeTag::Btv1 => "btv1==",
        }
    }

    /// Split `local` after the tag: the untagged local part, or the refusal detail of a local
    /// part that opens with this tag's prefix but is not exactly its shape.
    fn strip(self, local: &str) -> Option<Result<&str, AddressError>> {
        let rest = strip_prefix_ci(local, self.prefix())?;
        Some(match self {
            EnvelopeTag::Batv => {
                let Some((tag, untagged)) = rest.split_once('=') else {
                    return Some(Err(err("batv_tag")));
                };
                let b = tag.as_bytes();
                let digits = |r: std::ops::Range<usize>| {
                    b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit))
                };
                let hex = |r: std::ops::Range<usize>| {
                    b.get(r)
                        .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
                };
                let shaped = match b.len() {
                    10 => digits(0..4) && hex(4..10),
                    9 => digits(0..3) && hex(3..9),
                    _ => false,
                };
                if shaped {
                    Ok(untagged)
                } else if untagged.len() >= 9 && is_batv_value(untagged) {
                    // `prvs=alice=1234abcdef`: the reversed form, named so that an operator
                    // can tell it from a broken tag.
                    Err(err("batv_reversed"))
                } else {
                    Err(err("batv_tag"))
                }
            }
            EnvelopeTag::Btv1 => match rest.split_once("==") {
                Some((tag, untagged))
                    if tag.len() == 11 && tag.bytes().all(|c| c.is_ascii_hexdigit()) =>
                {
                    Ok(untagged)
                }
                _ => Err(err("btv1_tag")),
            },
        })
    }
}

/// `KDDDSSSSSS` or `DDDSSSSSS` alone (used to name the reversed form).
fn is_batv_value(s: &str) -> bool {
    let b = s.as_bytes();
    let split = match b.len() {
        10 => 4,
        9 => 3,
        _ => return false,
    };
    b.iter().enumerate().all(|(i, c)| {
        if i < split {
            c.is_ascii_digit()
        } else {
            c.is_ascii_hexdigit()
        }
    })
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| s.get(prefix.len()..))
        .flatten()
}

/// A MAIL FROM address: the untagged mailbox that every check compares, and the address as
/// the client sent it when a configured tag was removed (kept for the event and the evidence).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    pub mailbox: Mailbox,
    /// `Some` only when an [`EnvelopeTag`] was removed: the raw `local@domain` as sent.
    pub tagged: Option<String>,
}

impl Envelope {
    /// Parse the inside of `MAIL FROM:<...>`. `tag_for` names the tag the domain's override
    /// accepts. Without one, or when the local part does not open with that tag's prefix, this
    /// is exactly [`Mailbox::parse`] (same result, same detail).
    pub fn parse(
        input: &[u8],
        opts: &ParseOptions,
        tag_for: impl Fn(&Domain) -> Option<EnvelopeTag>,
    ) -> Result<Self, AddressError> {
        let plain = Mailbox::parse(input, opts);
        // Only an input that is otherwise a strict address with a strict domain can be tagged:
        // every earlier refusal (NUL, controls, specials, two `@`, length) keeps its detail.
        let s = ascii_printable(input)?;
        specials(s)?;
        let Some((local, domain)) = s.split_once('@') else {
            return plain.map(Self::untagged);
        };
        if domain.contains('@') || s.len() > MAX_ADDRESS || check_domain(domain, opts).is_err() {
            return plain.map(Self::untagged);
        }
        let domain = Domain(domain.to_ascii_lowercase());
        let Some(tag) = tag_for(&domain) else {
            return plain.map(Self::untagged);
        };
        let untagged = match tag.strip(local) {
            None => return plain.map(Self::untagged),
            Some(r) => r?,
        };
        if [EnvelopeTag::Batv, EnvelopeTag::Btv1]
            .iter()
            .any(|t| strip_prefix_ci(untagged, t.prefix()).is_some())
        {
            return Err(err("tag_nested"));
        }
        check_local(untagged, opts)?;
        Ok(Envelope {
            mailbox: Mailbox {
                local: untagged.to_ascii_lowercase(),
                domain,
            },
            tagged: Some(s.to_owned()),
        })
    }

    fn untagged(mailbox: Mailbox) -> Self {
        Envelope {
            mailbox,
            tagged: None,
        }
    }
}

impl Mailbox {
    /// Parse `local@domain` exactly (SPEC §3). Also used for the API claim and for the
    /// inside of `MAIL FROM:<...>` / `RCPT TO:<...>`.
    pub fn parse(input: &[u8], opts: &ParseOptions) -> Result<Self, AddressError> {
        let s = ascii_printable(input)?;
        specials(s)?;
        let (local, domain) = match s.split_once('@') {
            None => return Err(err("no_at")),
            Some((_, rest)) if rest.contains('@') => return Err(err("two_at")),
            Some(parts) => parts,
        };
        if s.len() > MAX_ADDRESS {
            return Err(err("length"));
        }
        check_local(local, opts)?;
        check_domain(domain, opts)?;
        Ok(Mailbox {
            local: local.to_ascii_lowercase(),
            domain: Domain(domain.to_ascii_lowercase()),
        })
    }

    /// Parse the value of a From header (after the colon, possibly folded): one mailbox,
    /// optional display name, nothing else (SPEC §3).
    pub fn parse_header(value: &[u8], opts: &ParseOptions) -> Result<Self, AddressError> {
        if value.len() > MAX_INPUT {
            return Err(err("length"));
        }
        if value.contains(&0) {
            return Err(err("nul"));
        }
        if !value.is_ascii() {
            return Err(err("non_ascii"));
        }
        let unfolded = unfold(value)?;
        let v = unfolded.trim_matches(|c| c == ' ' || c == '\t');
        if v.is_empty() {
            return Err(err("empty"));
        }
        let (display, addr) = split_display(v)?;
        match display {
            None => Self::parse(addr.as_bytes(), opts),
            Some(display) => {
                // The address is checked first: an attack in the address names itself.
                let mailbox = Self::parse(addr.as_bytes(), opts)?;
                check_display_name(display)?;
                Ok(mailbox)
            }
        }
    }

    pub fn local(&self) -> &str {
        &self.local
    }

    pub fn domain(&self) -> &Domain {
        &self.domain
    }
}

/// Remove folding (CRLF followed by SP/HTAB). Any other CR or LF, and any other control, is
/// refused. The input is ASCII and free of NUL.
fn unfold(value: &[u8]) -> Result<String, AddressError> {
    let mut out = String::with_capacity(value.len());
    let mut it = value.iter().copied().peekable();
    while let Some(b) = it.next() {
        match b {
            b'\r' => {
                if it.next() != Some(b'\n') {
                    return Err(err("control"));
                }
                match it.peek() {
                    Some(b' ') | Some(b'\t') => {}
                    _ => return Err(err("control")),
                }
            }
            b'\n' => return Err(err("control")),
            b'\t' => out.push('\t'),
            b if b < 0x20 || b == 0x7f => return Err(err("control")),
            b => out.push(char::from(b)),
        }
    }
    Ok(out)
}

/// Split a trimmed, unfolded From value into (display name, address). Without `<` the whole
/// value is the address. Refuses comments, groups, lists, nested brackets and trailing text,
/// scanning with quoted-string awareness so that the refusal names the construct.
fn split_display(v: &str) -> Result<(Option<&str>, &str), AddressError> {
    let mut in_quote = false;
    let mut escaped = false;
    let mut open: Option<usize> = None;
    let mut close: Option<usize> = None;
    for (i, c) in v.char_indices() {
        if in_quote {
            if escaped {
                escaped = false;
                continue;
            }
            match c {
                '\\' => escaped = true,
                '"' => in_quote = false,
                _ => {}
            }
            continue;
        }
        if close.is_some() && c != ' ' && c != '\t' {
            return Err(err(if c == ',' { "list" } else { "trailing" }));
        }
        match c {
            '"' if open.is_none() => in_quote = true,
            '(' | ')' => return Err(err("comment")),
            // Inside `<>` a `,` is an obsolete route (`<@a,@b:x@y>`): left to `Mailbox::parse`.
            ',' if open.is_none() => return Err(err("list")),
            ':' | ';' if open.is_none() => return Err(err("group")),
            '<' if open.is_some() => return Err(err("angle_brackets")),
            '<' => open = Some(i),
            '>' if open.is_none() => return Err(err("angle_brackets")),
            '>' => close = Some(i),
            _ => {}
        }
    }
    if in_quote {
        return Err(err("quoted_local"));
    }
    match (open, close) {
        (None, _) => Ok((None, v)),
        (Some(_), None) => Err(err("angle_brackets")),
        (Some(o), Some(c)) => {
            let display = v.get(..o).unwrap_or("");
            let inner = v.get(o + 1..c).unwrap_or("");
            if inner.is_empty() {
                return Err(err("empty"));
            }
            // RFC 2047 §5: an encoded word ends at whitespace. `=?utf-8?Q?x?=<a@b.fr>` is
            // refused: Python's parser flags it as invalid, others may read the `<` into it.
            let last_word = display.rsplit([' ', '\t']).next().unwrap_or("");
            if last_word.starts_with("=?") {
                return Err(err("encoded_word"));
            }
            // `Bob.<a@b.fr>`: an obs-phrase dot touching the bracket, on which Python's parser
            // fails; with a space (`Bob. <a@b.fr>`) every reader agrees.
            if display.ends_with('.') {
                return Err(err("display_name"));
            }
            let display = display.trim_matches(|c| c == ' ' || c == '\t');
            Ok((Some(display), inner))
        }
    }
}

/// A display name: words (atoms, quoted strings, RFC 2047 encoded words) separated by
/// whitespace. Refused when it carries an `@` raw, quoted or once decoded (or a full-width
/// look-alike), because clients show such a name as if it were the address.
fn check_display_name(display: &str) -> Result<(), AddressError> {
    let mut text: Vec<u8> = Vec::with_capacity(display.len());
    let mut rest = display;
    while !rest.is_empty() {
        rest = rest.trim_start_matches([' ', '\t']);
        if rest.is_empty() {
            break;
        }
        if let Some(after) = rest.strip_prefix('"') {
            let (content, tail) = quoted_string(after)?;
            text.extend_from_slice(content.as_bytes());
            rest = tail;
        } else {
            let end = rest.find([' ', '\t', '"']).unwrap_or(rest.len());
            let word = rest.get(..end).unwrap_or("");
            rest = rest.get(end..).unwrap_or("");
            if word.starts_with("=?") {
                text.extend_from_slice(&decode_encoded_word(word)?);
            } else {
                if word.contains('@') {
                    return Err(err("display_name_at"));
                }
                if word.contains("=?") {
                    return Err(err("encoded_word"));
                }
                // An unquoted `.` is RFC 5322 obs-phrase (`Alice M. Martin`, `J. Doe`), which
                // mail clients write and every reader we test against reads as one name; not
                // at the start of a word (Python's parser fails on `.Alice`) nor doubled.
                if word.starts_with('.') || word.contains("..") {
                    return Err(err("display_name"));
                }
                if !word
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "#$&'*+-./=?^_`{|}~".contains(c))
                {
                    return Err(err("display_name"));
                }
                text.extend_from_slice(word.as_bytes());
            }
        }
        text.push(b' ');
    }
    if contains_at_like(&text) {
        return Err(err("display_name_at"));
    }
    Ok(())
}

/// The content of a quoted string that started just before `s`, and what follows its closing
/// quote. Escapes (`\x`) are resolved. Encoded words inside quotes are refused: RFC 2047 says
/// not to decode them, and some parsers do.
fn quoted_string(s: &str) -> Result<(String, &str), AddressError> {
    let mut content = String::new();
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            content.push(c);
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '"' => {
                if content.contains('@') {
                    return Err(err("display_name_at"));
                }
                if content.contains("=?") {
                    return Err(err("encoded_word"));
                }
                return Ok((content, s.get(i + 1..).unwrap_or("")));
            }
            _ => content.push(c),
        }
    }
    Err(err("quoted_local"))
}

/// Decode one RFC 2047 encoded word (`=?charset?B|Q?text?=`), bounded by its length. Only
/// ASCII-compatible charsets are decoded (UTF-7 or UTF-16 could hide an `@`); anything else is
/// refused. The decoded octets must be free of controls.
fn decode_encoded_word(word: &str) -> Result<Vec<u8>, AddressError> {
    let inner = word
        .strip_prefix("=?")
        .and_then(|w| w.strip_suffix("?="))
        .ok_or(err("encoded_word"))?;
    let mut parts = inner.split('?');
    let (Some(charset), Some(encoding), Some(text), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(err("encoded_word"));
    };
    let charset = charset.to_ascii_lowercase();
    let utf8 = match charset.as_str() {
        "utf-8" | "utf8" => true,
        "us-ascii" | "iso-8859-1" | "iso-8859-15" | "windows-1252" => false,
        _ => return Err(err("encoded_word")),
    };
    if text.is_empty() || text.contains(' ') || text.contains('\t') {
        return Err(err("encoded_word"));
    }
    let decoded = match encoding {
        "B" | "b" => data_encoding::BASE64
            .decode(text.as_bytes())
            .map_err(|_| err("encoded_word"))?,
        "Q" | "q" => decode_q(text)?,
        _ => return Err(err("encoded_word")),
    };
    if decoded.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return Err(err("control"));
    }
    if utf8 && std::str::from_utf8(&decoded).is_err() {
        return Err(err("encoded_word"));
    }
    if !utf8 && charset == "us-ascii" && !decoded.is_ascii() {
        return Err(err("encoded_word"));
    }
    Ok(decoded)
}

fn decode_q(text: &str) -> Result<Vec<u8>, AddressError> {
    let mut out = Vec::with_capacity(text.len());
    let mut it = text.bytes();
    while let Some(b) = it.next() {
        match b {
            b'_' => out.push(b' '),
            b'=' => {
                let hi = it.next().and_then(hex_val).ok_or(err("encoded_word"))?;
                let lo = it.next().and_then(hex_val).ok_or(err("encoded_word"))?;
                out.push(hi * 16 + lo);
            }
            b'?' => return Err(err("encoded_word")),
            b => out.push(b),
        }
    }
    Ok(out)
}

fn hex_val(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// `@`, or its full-width (U+FF20) and small (U+FE6B) look-alikes in UTF-8.
fn contains_at_like(text: &[u8]) -> bool {
    text.contains(&b'@')
        || text
            .windows(3)
            .any(|w| w == [0xEF, 0xBC, 0xA0] || w == [0xEF, 0xB9, 0xAB])
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header(v: &[u8]) -> Result<String, &'static str> {
        Mailbox::parse_header(v, &ParseOptions::default())
            .map(|m| m.to_string())
            .map_err(|e| e.detail)
    }

    #[test]
    fn header_accepted_forms() {
        let rows: &[(&[u8], &str)] = &[
            (b"alice@interieur.gouv.fr", "alice@interieur.gouv.fr"),
            (b" Alice@Interieur.Gouv.Fr ", "alice@interieur.gouv.fr"),
            (b"<alice@interieur.gouv.fr>", "alice@interieur.gouv.fr"),
            (b" <alice@interieur.gouv.fr> ", "alice@interieur.gouv.fr"),
            (
                b"Alice <alice@interieur.gouv.fr>",
                "alice@interieur.gouv.fr",
            ),
            (
                b"Alice Martin<alice@interieur.gouv.fr>",
                "alice@interieur.gouv.fr",
            ),
            (
                b"Jean-Pierre O'Neil <jp@interieur.gouv.fr>",
                "jp@interieur.gouv.fr",
            ),
            (
                b"\"Martin, Alice\" <alice@interieur.gouv.fr>",
                "alice@interieur.gouv.fr",
            ),
            (
                b"\"Alice \\\"Ali\\\" Martin\" <alice@interieur.gouv.fr>",
                "alice@interieur.gouv.fr",
            ),
            (
                b"\"A. Martin (DGPN)\" <alice@interieur.gouv.fr>",
                "alice@interieur.gouv.fr",
            ),
            (
                b"=?utf-8?Q?Am=C3=A9lie_Martin?= <amelie@interieur.gouv.fr>",
                "amelie@interieur.gouv.fr",
            ),
            (
                b"=?UTF-8?B?QW3DqWxpZQ==?= Martin <amelie@interieur.gouv.fr>",
                "amelie@interieur.gouv.fr",
            ),
            (
                b"=?iso-8859-1?q?Am=E9lie?= <amelie@interieur.gouv.fr>",
                "amelie@interieur.gouv.fr",
            ),
            // Real display names of French administrations (issue 15).
            (
                b"\"MARTIN Alice (DGSI/SDSI)\" <alice.martin@interieur.gouv.fr>",
                "alice.martin@interieur.gouv.fr",
            ),
            (
                b"Alice M. Martin <alice.martin@interieur.gouv.fr>",
                "alice.martin@interieur.gouv.fr",
            ),
            (
                b"J. Martin <alice@interieur.gouv.fr>",
                "alice@interieur.gouv.fr",
            ),
            (
                b"Alice M.Martin <a@interieur.gouv.fr>",
                "a@interieur.gouv.fr",
            ),
            (
                b"=?utf-8?Q?Am=C3=A9lie?= M. Martin <amelie@interieur.gouv.fr>",
                "amelie@interieur.gouv.fr",
            ),
            (
                b"Alice Martin\r\n <alice@interieur.gouv.fr>",
                "alice@interieur.gouv.fr",
            ),
            (
                b"\r\n\tAlice\r\n Martin\r\n <alice@interieur.gouv.fr>\r\n ",
                "alice@interieur.gouv.fr",
            ),
        ];
        for (v, want) in rows {
            assert_eq!(
                header(v),
                Ok((*want).to_string()),
                "{:?}",
                String::from_utf8_lossy(v)
            );
        }
    }

    #[test]
    fn header_refused_forms() {
        let rows: &[(&[u8], &str)] = &[
            (b"", "empty"),
            (b"   ", "empty"),
            (b"\r\n ", "empty"),
            (b"<>", "empty"),
            (b"Alice <>", "empty"),
            (b"alice@interieur.gouv.fr\0", "nul"),
            (b"Al\0ice <alice@interieur.gouv.fr>", "nul"),
            (b"Am\xc3\xa9lie <amelie@interieur.gouv.fr>", "non_ascii"),
            (b"Alice\r\n<alice@interieur.gouv.fr>", "control"),
            (b"Alice\n <alice@interieur.gouv.fr>", "control"),
            (b"Alice\r <alice@interieur.gouv.fr>", "control"),
            (b"Alice <alice@interieur.gouv.fr>\r\n", "control"),
            (b"Al\x1bice <alice@interieur.gouv.fr>", "control"),
            // Display names that show an address.
            (
                b"\"alice@interieur.gouv.fr\" <attacker@evil.example>",
                "display_name_at",
            ),
            (
                b"alice@interieur.gouv.fr <attacker@evil.example>",
                "display_name_at",
            ),
            (b"Alice \"@\" <attacker@evil.example>", "display_name_at"),
            (
                b"\"alice\\@interieur.gouv.fr\" <attacker@evil.example>",
                "display_name_at",
            ),
            (
                b"=?utf-8?Q?alice=40interieur.gouv.fr?= <attacker@evil.example>",
                "display_name_at",
            ),
            (
                b"=?utf-8?B?YWxpY2VAaW50ZXJpZXVyLmdvdXYuZnI=?= <attacker@evil.example>",
                "display_name_at",
            ),
            (
                b"=?utf-8?Q?alice=EF=BC=A0interieur.gouv.fr?= <attacker@evil.example>",
                "display_name_at",
            ),
            (
                b"=?utf-8?Q?alice?= =?utf-8?Q?=40x?= <attacker@evil.example>",
                "display_name_at",
            ),
            // Encoded-word tricks.
            (
                b"\"=?utf-8?Q?alice=40x?=\" <attacker@evil.example>",
                "encoded_word",
            ),
            (
                b"=?utf-7?Q?alice+AEA-x?= <attacker@evil.example>",
                "encoded_word",
            ),
            (b"=?utf-8?X?abc?= <alice@interieur.gouv.fr>", "encoded_word"),
            (b"=?utf-8?B?!!!?= <alice@interieur.gouv.fr>", "encoded_word"),
            (b"=?utf-8?Q?=ZZ?= <alice@interieur.gouv.fr>", "encoded_word"),
            (b"=?utf-8?Q?=C3?= <alice@interieur.gouv.fr>", "encoded_word"),
            (b"=?utf-8?Q?a=0Db?= <alice@interieur.gouv.fr>", "control"),
            (b"x=?utf-8?Q?a?= <alice@interieur.gouv.fr>", "encoded_word"),
            (b"=?utf-8?Q?x?=<alice@interieur.gouv.fr>", "encoded_word"),
            (
                b"Alice =?utf-8?Q?x?=<alice@interieur.gouv.fr>",
                "encoded_word",
            ),
            (b"=?utf-8?Q?alice=40interieur.gouv.fr?=", "encoded_word"),
            (b"<=?utf-8?Q?alice?=@interieur.gouv.fr>", "encoded_word"),
            // Comments anywhere.
            (b"alice@interieur.gouv.fr (Alice)", "comment"),
            (b"Alice (x) <alice@interieur.gouv.fr>", "comment"),
            (b"<alice(x)@interieur.gouv.fr>", "comment"),
            (
                b"(alice@interieur.gouv.fr) <attacker@evil.example>",
                "comment",
            ),
            // Groups, lists, routes.
            (b"team: alice@interieur.gouv.fr;", "group"),
            (b"team:;", "group"),
            (b"alice@interieur.gouv.fr, attacker@evil.example", "list"),
            (
                b"Alice <alice@interieur.gouv.fr>, <attacker@evil.example>",
                "list",
            ),
            (b"<@relay.gouv.fr:attacker@evil.example>", "route"),
            (b"<@a.gouv.fr,@b.gouv.fr:attacker@evil.example>", "route"),
            // Brackets and trailing text.
            (b"Alice <<alice@interieur.gouv.fr>>", "angle_brackets"),
            (b"Alice <alice@interieur.gouv.fr", "angle_brackets"),
            (b"Alice alice@interieur.gouv.fr>", "angle_brackets"),
            (
                b"<alice@interieur.gouv.fr> attacker@evil.example",
                "trailing",
            ),
            (b"<alice@interieur.gouv.fr>x", "trailing"),
            (
                b"<alice@interieur.gouv.fr><attacker@evil.example>",
                "trailing",
            ),
            // The address inside <> goes through Mailbox::parse.
            (b"Alice <attacker@evil.example@interieur.gouv.fr>", "two_at"),
            (b"Alice < alice@interieur.gouv.fr>", "whitespace"),
            (b"Alice <\"a@b\"@interieur.gouv.fr>", "quoted_local"),
            (b"Alice <evil.example!a@interieur.gouv.fr>", "bang_path"),
            (b"Alice <a%evil.example@interieur.gouv.fr>", "percent_hack"),
            (b"Alice <alice@[127.0.0.1]>", "ip_literal"),
            (b"Alice <alice@interieur.gouv.fr.>", "trailing_dot"),
            (b"Alice <alice>", "no_at"),
            // Display-name syntax outside the subset.
            (b".J Martin <alice@interieur.gouv.fr>", "display_name"),
            (b"J..Martin <alice@interieur.gouv.fr>", "display_name"),
            (b"Alice M.<alice@interieur.gouv.fr>", "display_name"),
            (b"Alice . Martin <alice@interieur.gouv.fr>", "display_name"),
            // Unquoted parentheses are comments, which readers drop or keep differently.
            (
                b"MARTIN Alice (DGSI/SDSI) <alice@interieur.gouv.fr>",
                "comment",
            ),
            // An unquoted comma splits the list.
            (b"Martin, Alice <alice@interieur.gouv.fr>", "list"),
            (b"Alice M. <alice@interieur.gouv.fr> x", "trailing"),
            (b"\"unterminated <alice@interieur.gouv.fr>", "quoted_local"),
            (b"\"alice\"@interieur.gouv.fr", "quoted_local"),
        ];
        for (v, want) in rows {
            assert_eq!(header(v), Err(*want), "{:?}", String::from_utf8_lossy(v));
        }
        let long = vec![b'a'; MAX_INPUT + 1];
        assert_eq!(header(&long), Err("length"));
    }

    /// `envelope(input, tag)`: what [`Envelope::parse`] gives when `interieur.gouv.fr` (and
    /// only it) is configured with `tag`.
    fn envelope(
        v: &str,
        tag: Option<EnvelopeTag>,
    ) -> Result<(String, Option<String>), &'static str> {
        let own = Domain("interieur.gouv.fr".into());
        Envelope::parse(v.as_bytes(), &ParseOptions::default(), |d| {
            (d == &own).then_some(tag).flatten()
        })
        .map(|e| (e.mailbox.to_string(), e.tagged))
        .map_err(|e| e.detail)
    }

    #[test]
    fn envelope_tags_accepted() {
        use EnvelopeTag::{Batv, Btv1};
        let rows: &[(&str, EnvelopeTag, &str)] = &[
            // draft-levine-smtp-batv-01: K DDD SSSSSS.
            (
                "prvs=4068eb2540=alice@interieur.gouv.fr",
                Batv,
                "alice@interieur.gouv.fr",
            ),
            (
                "prvs=9905C7C8D6=Alice.Martin@Interieur.Gouv.Fr",
                Batv,
                "alice.martin@interieur.gouv.fr",
            ),
            (
                "PRVS=0000000000=a@interieur.gouv.fr",
                Batv,
                "a@interieur.gouv.fr",
            ),
            // Cisco Secure Email (IronPort): DDD SSSSSS.
            (
                "prvs=234d5777c=ross.lagerwall@interieur.gouv.fr",
                Batv,
                "ross.lagerwall@interieur.gouv.fr",
            ),
            (
                "prvs=039576d22=a+b@interieur.gouv.fr",
                Batv,
                "a+b@interieur.gouv.fr",
            ),
            // Barracuda: eleven hex digits between `==`.
            (
                "btv1==1086afe1179==rick@interieur.gouv.fr",
                Btv1,
                "rick@interieur.gouv.fr",
            ),
            (
                "BTV1==34826E458E2==Ryan.Carmichael@interieur.gouv.fr",
                Btv1,
                "ryan.carmichael@interieur.gouv.fr",
            ),
        ];
        for (v, tag, want) in rows {
            assert_eq!(
                envelope(v, Some(*tag)),
                Ok(((*want).to_string(), Some((*v).to_string()))),
                "{v}"
            );
        }
        // Untagged senders of a tagged domain are unchanged.
        assert_eq!(
            envelope("alice@interieur.gouv.fr", Some(Batv)),
            Ok(("alice@interieur.gouv.fr".into(), None))
        );
    }

    #[test]
    fn envelope_tags_refused() {
        use EnvelopeTag::{Batv, Btv1};
        let rows: &[(&str, Option<EnvelopeTag>, &str)] = &[
            // No override, another domain, or the other tag: `=` is an ordinary bad char.
            ("prvs=4068eb2540=alice@interieur.gouv.fr", None, "bad_char"),
            (
                "prvs=4068eb2540=alice@culture.gouv.fr",
                Some(Batv),
                "bad_char",
            ),
            (
                "prvs=4068eb2540=alice@dgsi.interieur.gouv.fr",
                Some(Batv),
                "bad_char",
            ),
            (
                "prvs=4068eb2540=alice@interieur.gouv.fr",
                Some(Btv1),
                "bad_char",
            ),
            (
                "btv1==1086afe1179==alice@interieur.gouv.fr",
                Some(Batv),
                "bad_char",
            ),
            (
                "btv1==1086afe1179==alice@interieur.gouv.fr",
                None,
                "bad_char",
            ),
            // BATV near misses.
            ("prvs=alice@interieur.gouv.fr", Some(Batv), "batv_tag"),
            ("prvs==alice@interieur.gouv.fr", Some(Batv), "batv_tag"),
            (
                "prvs=4068eb25=alice@interieur.gouv.fr",
                Some(Batv),
                "batv_tag",
            ),
            (
                "prvs=40x8eb254=alice@interieur.gouv.fr",
                Some(Batv),
                "batv_tag",
            ),
            (
                "prvs=4068eb25400=alice@interieur.gouv.fr",
                Some(Batv),
                "batv_tag",
            ),
            (
                "prvs=40a8eb2540=alice@interieur.gouv.fr",
                Some(Batv),
                "batv_tag",
            ),
            (
                "prvs=4068eb254g=alice@interieur.gouv.fr",
                Some(Batv),
                "batv_tag",
            ),
            (
                "prvs=23ad5777c=alice@interieur.gouv.fr",
                Some(Batv),
                "batv_tag",
            ),
            (
                "prvs=4068eb2540alice@interieur.gouv.fr",
                Some(Batv),
                "batv_tag",
            ),
            (
                "prvs=alice=4068eb2540@interieur.gouv.fr",
                Some(Batv),
                "batv_reversed",
            ),
            (
                "prvs=alice=234d5777c@interieur.gouv.fr",
                Some(Batv),
                "batv_reversed",
            ),
            (
                "prvs=4068eb2540=@interieur.gouv.fr",
                Some(Batv),
                "local_length",
            ),
            (
                "prvs=4068eb2540==alice@interieur.gouv.fr",
                Some(Batv),
                "bad_char",
            ),
            (
                "prvs=4068eb2540=alice=x@interieur.gouv.fr",
                Some(Batv),
                "bad_char",
            ),
            (
                "prvs=4068eb2540=.alice@interieur.gouv.fr",
                Some(Batv),
                "leading_dot",
            ),
            (
                "prvs=4068eb2540=prvs=4068eb2540=alice@interieur.gouv.fr",
                Some(Batv),
                "tag_nested",
            ),
            (
                "prvs=4068eb2540=btv1==1086afe1179==alice@interieur.gouv.fr",
                Some(Batv),
                "tag_nested",
            ),
            (
                "msprvs1=1202020UU5ulBw=alice@interieur.gouv.fr",
                Some(Batv),
                "bad_char",
            ),
            (
                "alice=prvs=4068eb2540@interieur.gouv.fr",
                Some(Batv),
                "bad_char",
            ),
            (
                "alice+prvs=4068eb2540@interieur.gouv.fr",
                Some(Batv),
                "bad_char",
            ),
            // Barracuda near misses.
            (
                "btv1=1086afe1179=alice@interieur.gouv.fr",
                Some(Btv1),
                "bad_char",
            ),
            (
                "btv1==1086afe117==alice@interieur.gouv.fr",
                Some(Btv1),
                "btv1_tag",
            ),
            (
                "btv1==1086afe11790==alice@interieur.gouv.fr",
                Some(Btv1),
                "btv1_tag",
            ),
            (
                "btv1==1086afe117g==alice@interieur.gouv.fr",
                Some(Btv1),
                "btv1_tag",
            ),
            ("btv1====alice@interieur.gouv.fr", Some(Btv1), "btv1_tag"),
            (
                "btv1==1086afe1179=alice@interieur.gouv.fr",
                Some(Btv1),
                "btv1_tag",
            ),
            (
                "btv1==1086afe1179==@interieur.gouv.fr",
                Some(Btv1),
                "local_length",
            ),
            (
                "btv1==1086afe1179===alice@interieur.gouv.fr",
                Some(Btv1),
                "bad_char",
            ),
            (
                "btv1==1086afe1179==btv1==1086afe1179==a@interieur.gouv.fr",
                Some(Btv1),
                "tag_nested",
            ),
            // Everything the plain parser refuses keeps its own detail.
            (
                "prvs=4068eb2540=a@evil.example@interieur.gouv.fr",
                Some(Batv),
                "two_at",
            ),
            (
                "prvs=4068eb2540=a%evil.example@interieur.gouv.fr",
                Some(Batv),
                "percent_hack",
            ),
            (
                "prvs=4068eb2540=a\\b@interieur.gouv.fr",
                Some(Batv),
                "quoted_local",
            ),
            ("prvs=4068eb2540=a\0@interieur.gouv.fr", Some(Batv), "nul"),
            (
                "prvs=4068eb2540=a b@interieur.gouv.fr",
                Some(Batv),
                "whitespace",
            ),
            (
                "prvs=4068eb2540=a@interieur.gouv.fr.",
                Some(Batv),
                "bad_char",
            ),
            ("prvs=4068eb2540=alice", Some(Batv), "no_at"),
        ];
        for (v, tag, want) in rows {
            assert_eq!(envelope(v, *tag), Err(*want), "{v} with {tag:?}");
        }
        let long = format!("prvs=4068eb2540={}@interieur.gouv.fr", "a".repeat(65));
        assert_eq!(envelope(&long, Some(Batv)), Err("local_length"));
        let too_long = format!(
            "prvs=4068eb2540={}@{}interieur.gouv.fr",
            "a".repeat(60),
            "b.".repeat(90)
        );
        assert_eq!(envelope(&too_long, Some(Batv)), Err("length"));
    }

    #[test]
    fn header_errors_map_to_from_syntax() {
        let e = Mailbox::parse_header(b"a@b@c.fr", &ParseOptions::default());
        assert_eq!(
            e.map_err(|e| e.header_reason()),
            Err(Reason::HeaderFromSyntax)
        );
        let e = Mailbox::parse(b"a@b@c.fr", &ParseOptions::default());
        assert_eq!(e.map_err(|e| e.reason()), Err(Reason::EnvelopeSyntax));
    }

    fn local_strategy() -> impl Strategy<Value = String> {
        proptest::collection::vec("[A-Za-z0-9_+-]{1,10}", 1..4).prop_map(|atoms| atoms.join("."))
    }

    fn domain_strategy() -> impl Strategy<Value = String> {
        (
            proptest::collection::vec("[A-Za-z0-9]([A-Za-z0-9-]{0,8}[A-Za-z0-9])?", 1..4),
            "[A-Za-z]{2,6}",
        )
            .prop_map(|(mut labels, tld)| {
                labels.push(tld);
                labels.join(".")
            })
            .prop_filter("IDNA labels are refused by default", |d| {
                !d.to_ascii_lowercase()
                    .split('.')
                    .any(|l| l.starts_with("xn--"))
            })
    }

    fn address_strategy() -> impl Strategy<Value = String> {
        (local_strategy(), domain_strategy()).prop_map(|(l, d)| format!("{l}@{d}"))
    }

    fn encode_q(text: &str) -> String {
        let mut out = String::new();
        for b in text.bytes() {
            if b.is_ascii_alphanumeric() {
                out.push(char::from(b));
            } else if b == b' ' {
                out.push('_');
            } else {
                out.push_str(&format!("={b:02X}"));
            }
        }
        out
    }

    /// A display name in one of the accepted shapes, from a text without `@`.
    fn display_strategy() -> impl Strategy<Value = String> {
        let atoms = proptest::collection::vec("[A-Za-z0-9#$&'*+/=^_`{|}~-]{1,8}", 1..4)
            .prop_map(|w| w.join(" "));
        let quoted = "[A-Za-z0-9 .,:;<>()'\"\\\\-]{0,20}".prop_map(|t| {
            let escaped: String = t
                .chars()
                .flat_map(|c| match c {
                    '"' | '\\' => vec!['\\', c],
                    c => vec![c],
                })
                .collect();
            format!("\"{escaped}\"")
        });
        let encoded_q = "[A-Za-zé ,.-]{1,15}".prop_map(|t| format!("=?utf-8?Q?{}?=", encode_q(&t)));
        let encoded_b = "[A-Za-zé ,.<>-]{1,15}"
            .prop_map(|t| format!("=?UTF-8?B?{}?=", data_encoding::BASE64.encode(t.as_bytes())));
        // obs-phrase words with dots: `M.`, `J.-P.`, `M.Martin`.
        let dotted = "[A-Za-z][A-Za-z-]{0,5}(\\.[A-Za-z][A-Za-z-]{0,5}){0,2}\\.?";
        // What French administrations write: a service in parentheses, "Last, First".
        let service = (
            "[A-Z]{2,8}",
            "[A-Z][a-z]{1,8}",
            "[A-Z]{2,5}(/[A-Z]{2,5}){0,2}",
        )
            .prop_map(|(last, first, unit)| format!("\"{last} {first} ({unit})\""));
        let last_first = ("[A-Z][a-z]{1,8}", "[A-Z][a-z]{1,8}")
            .prop_map(|(last, first)| format!("\"{last}, {first}\""));
        let word = prop_oneof![
            atoms,
            quoted,
            encoded_q,
            encoded_b,
            dotted.prop_map(String::from),
            service,
            last_first
        ];
        proptest::collection::vec(
            (word, prop_oneof![Just(" "), Just("\r\n "), Just("\r\n\t")]),
            1..4,
        )
        .prop_map(|words| {
            let mut out = String::new();
            for (i, (w, sep)) in words.iter().enumerate() {
                if i > 0 {
                    out.push_str(sep);
                }
                out.push_str(w);
            }
            out
        })
    }

    /// A From value we should accept: bare, angle, or display + angle, optionally folded.
    fn from_value_strategy() -> impl Strategy<Value = String> {
        (
            address_strategy(),
            proptest::option::of(display_strategy()),
            0u8..4,
            any::<bool>(),
        )
            .prop_map(|(addr, display, shape, fold)| {
                let sep = if fold { "\r\n " } else { " " };
                match (shape, display) {
                    (0, _) => format!(" {addr}"),
                    (1, _) | (_, None) => format!(" <{addr}>"),
                    (2, Some(d)) => format!(" {d}{sep}<{addr}>"),
                    (_, Some(d)) => format!("{sep}{d} <{addr}>{sep}"),
                }
            })
    }

    const SOUP: &[&str] = &[
        "\"",
        "<",
        ">",
        "a@b.fr",
        "@",
        " ",
        " ",
        " ",
        "\r\n ",
        "\t",
        "=?utf-8?Q?x?=",
        "=?utf-8?B?QA==?=",
        "=?utf-8?Q?x_y?=",
        "Alice",
        "Bob",
        "\\",
        "(",
        ")",
        ",",
        ":",
        ";",
        ".",
        "!",
        "%",
        "[",
        "]",
        "'",
        "=?",
        "?=",
        "#",
    ];

    /// What mail-parser reads in `From:<value>`: exactly one address, in our canonical form.
    fn mail_parser_reads(value: &str) -> Result<String, String> {
        let raw = format!("From:{value}\r\n\r\n");
        let msg = mail_parser::MessageParser::default()
            .parse(raw.as_bytes())
            .ok_or("no message")?;
        let list = match msg.from() {
            Some(mail_parser::Address::List(list)) => list,
            other => return Err(format!("read {other:?}")),
        };
        match list.as_slice() {
            [one] => {
                let addr = one.address.as_deref().ok_or("no address")?;
                Mailbox::parse(addr.as_bytes(), &ParseOptions::default())
                    .map(|m| m.to_string())
                    .map_err(|e| format!("{addr:?}: {e}"))
            }
            more => Err(format!("{} addresses", more.len())),
        }
    }

    /// What Python's `email` package (policy `strict`, `email.headerregistry`) reads in each
    /// `From:<value>`, from one run of `tests/tools/from_header.py` over the whole batch:
    /// `Ok(address)` when it reads exactly one mailbox with no defect other than
    /// `ObsoleteHeaderDefect` (obs-phrase, which it reads the same way) and no `@` in the
    /// display name; `Err(why)` otherwise. `None` when python3 cannot be run.
    fn python_reads(values: &[String]) -> Option<Vec<Result<String, String>>> {
        use std::io::Write;
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/from_header.py");
        let mut child = std::process::Command::new("python3")
            .arg(script)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .ok()?;
        let mut input = String::new();
        for v in values {
            input.push_str(&serde_json::to_string(v).ok()?);
            input.push('\n');
        }
        child.stdin.take()?.write_all(input.as_bytes()).ok()?;
        let out = child.wait_with_output().ok()?;
        let text = String::from_utf8(out.stdout).ok()?;
        let read = |line: &str| -> Result<String, String> {
            let v: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
            if let Some(e) = v["error"].as_str() {
                return Err(e.to_string());
            }
            let defects: Vec<&str> = v["defects"]
                .as_array()
                .map(|d| d.iter().filter_map(|x| x.as_str()).collect())
                .unwrap_or_default();
            if defects.iter().any(|d| *d != "ObsoleteHeaderDefect") {
                return Err(format!("defects {defects:?}"));
            }
            match v["addresses"].as_array().map(Vec::as_slice) {
                Some([one]) => {
                    let name = one[0].as_str().unwrap_or_default();
                    let addr = one[1].as_str().unwrap_or_default();
                    if name.contains('@') {
                        return Err(format!("display name {name:?}"));
                    }
                    Mailbox::parse(addr.as_bytes(), &ParseOptions::default())
                        .map(|m| m.to_string())
                        .map_err(|e| format!("{addr:?}: {e}"))
                }
                _ => Err(format!("read {}", v["addresses"])),
            }
        };
        let results: Vec<_> = text.lines().map(read).collect();
        (results.len() == values.len()).then_some(results)
    }

    /// The differential against Python, once over a batch: every From value we accept
    /// (generated accepted shapes, the real-world forms, and hostile token soups), Python reads
    /// as exactly one mailbox equal to ours, as mail-parser does.
    #[test]
    fn from_header_agrees_with_python() {
        use proptest::strategy::ValueTree;
        use proptest::test_runner::TestRunner;
        let mut runner = TestRunner::deterministic();
        let mut values: Vec<String> = Vec::new();
        let shapes = from_value_strategy();
        let soup = (
            proptest::collection::vec(proptest::sample::select(SOUP.to_vec()), 0..8),
            any::<bool>(),
        )
            .prop_map(|(before, bracketed)| {
                let addr = if bracketed {
                    "<alice@interieur.gouv.fr>"
                } else {
                    "alice@interieur.gouv.fr"
                };
                format!("{}{addr}", before.concat())
            });
        for _ in 0..1500 {
            if let Ok(tree) = shapes.new_tree(&mut runner) {
                values.push(tree.current());
            }
            if let Ok(tree) = soup.new_tree(&mut runner) {
                values.push(tree.current());
            }
        }
        let opts = ParseOptions::default();
        let accepted: Vec<(String, String)> = values
            .into_iter()
            .filter_map(|v| {
                let ours = Mailbox::parse_header(v.as_bytes(), &opts).ok()?;
                Some((v, ours.to_string()))
            })
            .collect();
        assert!(
            accepted.len() > 1000,
            "too few accepted: {}",
            accepted.len()
        );
        let batch: Vec<String> = accepted.iter().map(|(v, _)| v.clone()).collect();
        let Some(python) = python_reads(&batch) else {
            eprintln!("SKIPPED: python3 could not run tests/tools/from_header.py");
            return;
        };
        for ((value, ours), theirs) in accepted.iter().zip(python) {
            assert_eq!(theirs.as_ref(), Ok(ours), "python on {value:?}");
            assert_eq!(
                mail_parser_reads(value).as_ref(),
                Ok(ours),
                "mail-parser on {value:?}"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn accepted_addresses_round_trip(addr in address_strategy()) {
            let opts = ParseOptions::default();
            let m = Mailbox::parse(addr.as_bytes(), &opts);
            prop_assert!(m.is_ok(), "{addr}: {m:?}");
            let Ok(m) = m else { unreachable!() };
            let canonical = m.to_string();
            prop_assert_eq!(&canonical, &addr.to_ascii_lowercase());
            let again = Mailbox::parse(canonical.as_bytes(), &opts).map(|m| m.to_string());
            prop_assert_eq!(again.as_ref(), Ok(&canonical));
            let upper = Mailbox::parse(addr.to_ascii_uppercase().as_bytes(), &opts).map(|m| m.to_string());
            prop_assert_eq!(upper.as_ref(), Ok(&canonical));
            let d = Domain::parse(m.domain().as_str().as_bytes(), &opts);
            prop_assert_eq!(d.as_ref(), Ok(m.domain()));
            prop_assert!(m.domain().is_within(m.domain()));
        }

        /// Without a tag for the domain the envelope parser is exactly the strict parser
        /// (same result, same detail); with one, a well-shaped tag is removed and the raw
        /// address kept, and whatever is accepted re-parses to itself.
        #[test]
        fn envelope_parse_is_the_strict_parser_plus_one_shape(
            local in local_strategy(),
            tag in prop_oneof![
                "prvs=[0-9]{4}[0-9a-f]{6}=",
                "prvs=[0-9]{3}[0-9a-fA-F]{6}=",
                "btv1==[0-9a-f]{11}==",
                "(prvs|btv1)=[0-9a-z=]{0,14}",
                "",
            ],
            noise in "[a-z0-9=@.<> \"-]{0,12}",
        ) {
            let opts = ParseOptions::default();
            let own = Domain("interieur.gouv.fr".into());
            for input in [
                format!("{tag}{local}@interieur.gouv.fr"),
                format!("{tag}{local}{noise}@interieur.gouv.fr"),
                format!("{tag}{local}@culture.gouv.fr"),
            ] {
                let plain = Mailbox::parse(input.as_bytes(), &opts);
                let none = Envelope::parse(input.as_bytes(), &opts, |_| None);
                prop_assert_eq!(none.map(|e| e.mailbox), plain.clone(), "{}", input);
                for kind in [EnvelopeTag::Batv, EnvelopeTag::Btv1] {
                    let tagged = Envelope::parse(input.as_bytes(), &opts, |d| {
                        (d == &own).then_some(kind)
                    });
                    match tagged {
                        Ok(Envelope { mailbox, tagged: Some(raw) }) => {
                            prop_assert_eq!(&raw, &input);
                            prop_assert_eq!(mailbox.domain(), &own);
                            let prefix_len = raw.len() - mailbox.to_string().len();
                            prop_assert!(raw
                                .get(..prefix_len)
                                .is_some_and(|p| p.to_ascii_lowercase().starts_with(kind.prefix())));
                            prop_assert_eq!(
                                Mailbox::parse(mailbox.to_string().as_bytes(), &opts),
                                Ok(mailbox.clone())
                            );
                        }
                        Ok(Envelope { mailbox, tagged: None }) => {
                            prop_assert_eq!(Ok(mailbox), plain.clone(), "{}", input);
                        }
                        Err(_) => {}
                    }
                }
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let opts = ParseOptions { local_part_extra_chars: "#'~".into(), allow_idna: true };
            if let Ok(m) = Mailbox::parse(&bytes, &opts) {
                let again = Mailbox::parse(m.to_string().as_bytes(), &opts);
                prop_assert_eq!(again, Ok(m));
            }
            let _ = Domain::parse(&bytes, &opts);
            let _ = Mailbox::parse_header(&bytes, &opts);
            for kind in [EnvelopeTag::Batv, EnvelopeTag::Btv1] {
                if let Ok(e) = Envelope::parse(&bytes, &opts, |_| Some(kind)) {
                    let again = Mailbox::parse(e.mailbox.to_string().as_bytes(), &opts);
                    prop_assert_eq!(again, Ok(e.mailbox));
                }
            }
        }

        #[test]
        fn address_alphabet_never_panics(s in "[a-zA-Z0-9@.<>\"()\\\\,;: \t\r\n=?%!\\[\\]_+-]{0,80}") {
            let opts = ParseOptions::default();
            if let Ok(m) = Mailbox::parse(s.as_bytes(), &opts) {
                prop_assert_eq!(m.to_string(), s.to_ascii_lowercase());
            }
            if let Ok(m) = Mailbox::parse_header(s.as_bytes(), &opts) {
                let again = Mailbox::parse(m.to_string().as_bytes(), &opts);
                prop_assert_eq!(again.as_ref(), Ok(&m));
                // Whatever we accept, mail-parser must read as the same single address.
                prop_assert_eq!(mail_parser_reads(&s), Ok(m.to_string()), "{:?}", s);
            }
            let _ = Domain::parse(s.as_bytes(), &opts);
        }

        /// Differential on hostile token soups around a bracketed address: whenever we accept
        /// one, mail-parser reads the same single address.
        #[test]
        fn token_soup_agrees_with_mail_parser(
            before in proptest::collection::vec(proptest::sample::select(SOUP.to_vec()), 0..8),
            after in proptest::collection::vec(proptest::sample::select(SOUP.to_vec()), 0..3),
            bracketed in any::<bool>(),
        ) {
            let addr = if bracketed { "<alice@interieur.gouv.fr>" } else { "alice@interieur.gouv.fr" };
            let value = format!("{}{addr}{}", before.concat(), after.concat());
            if let Ok(m) = Mailbox::parse_header(value.as_bytes(), &ParseOptions::default()) {
                prop_assert_eq!(mail_parser_reads(&value), Ok(m.to_string()), "{:?}", value);
            }
        }

        /// Differential against mail-parser: every From value we accept, mail-parser reads as
        /// exactly one address equal to ours (compared through our canonical form).
        #[test]
        fn from_header_agrees_with_mail_parser(value in from_value_strategy()) {
            let opts = ParseOptions::default();
            let ours = Mailbox::parse_header(value.as_bytes(), &opts);
            prop_assert!(ours.is_ok(), "{value:?}: {ours:?}");
            let Ok(ours) = ours else { unreachable!() };
            prop_assert_eq!(mail_parser_reads(&value), Ok(ours.to_string()), "{:?}", value);
        }
    }
}
