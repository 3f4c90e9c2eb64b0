//! `dns.trust_anchor`: the DNSSEC trust anchor file, read and checked at configuration load
//! so that a typo is a `file:line` error at `check-config` time, not a resolver that calls
//! every answer bogus at 3 a.m.
//!
//! The file holds DNSKEY records in zone-file presentation format, one record per line
//! (`owner [ttl] [class] DNSKEY flags protocol algorithm base64-key`), the format of
//! `dig DNSKEY zone`, of `ldns-keygen`'s and `dnssec-keygen`'s `.key` files and of
//! `/usr/share/dns/root.key`. `;` starts a comment; blank lines are skipped.
//!
//! Decisions where the SPEC is silent:
//! - **DS records are refused, with their line.** hickory-resolver 0.26 anchors on DNSKEYs
//!   only (`TrustAnchors` has no DS form); accepting a DS line and ignoring it would leave
//!   the operator believing in a chain of trust that is not there. The error says how to get
//!   the DNSKEYs instead.
//! - **Multi-line (parenthesised) records are refused**: one record per line keeps the line
//!   number of every error exact, and every tool above writes one line per key.
//! - **A file with no key is an error**: validation with an empty anchor set would turn every
//!   answer into a temporary failure.
//! - Only the key's presentation is checked here (name, flags with the zone-key bit,
//!   protocol 3, a known algorithm number, base64); whether the key bytes make a valid public
//!   key is the resolver's business when the chain is walked.

use std::path::Path;

/// One trusted key: the zone it is for, and its DNSKEY fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnchorKey {
    /// The owner name, lower case, absolute (with its trailing dot; `.` for the root).
    pub zone: String,
    pub flags: u16,
    /// The DNSSEC algorithm number (RFC 8624 table).
    pub algorithm: u8,
    /// The public key as the DNSKEY RDATA carries it.
    pub public_key: Vec<u8>,
}

/// The parsed file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustAnchor {
    pub keys: Vec<AnchorKey>,
}

/// The DNSKEY zone-key flag (RFC 4034 §2.1.1): a key without it must not validate anything.
const ZONE_KEY_FLAG: u16 = 0x0100;

/// Algorithms a validator may meet (RFC 8624 §3.1): RSASHA1 (5), RSASHA1-NSEC3-SHA1 (7),
/// RSASHA256 (8), RSASHA512 (10), ECDSAP256SHA256 (13), ECDSAP384SHA384 (14), ED25519 (15).
const KNOWN_ALGORITHMS: [u8; 7] = [5, 7, 8, 10, 13, 14, 15];

/// The largest file read: a root anchor is ~400 bytes; this bounds a wrong path to a log file.
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Read and parse the file at `path`. `Err` is one line per problem, each
/// `path:line: message` (or `path: message` when the file cannot be read).
pub fn load(path: &Path) -> Result<TrustAnchor, Vec<String>> {
    let shown = path.display();
    let text = match std::fs::metadata(path) {
        Ok(m) if m.len() > MAX_FILE_BYTES => {
            return Err(vec![format!(
                "{shown}: larger than {MAX_FILE_BYTES} bytes: not a trust anchor file"
            )]);
        }
        Ok(_) => std::fs::read_to_string(path).map_err(|e| vec![format!("{shown}: {e}")])?,
        Err(e) => return Err(vec![format!("{shown}: {e}")]),
    };
    parse(&text).map_err(|problems| {
        problems
            .into_iter()
            .map(|(line, message)| format!("{shown}:{line}: {message}"))
            .collect()
    })
}

impl TrustAnchor {
    /// [`parse`] as a method, for callers outside the configuration (tests, tools).
    pub fn parse(text: &str) -> Result<TrustAnchor, Vec<(usize, String)>> {
        parse(text)
    }
}

/// Parse the text of an anchor file; `Err` lists `(1-based line, message)`.
pub fn parse(text: &str) -> Result<TrustAnchor, Vec<(usize, String)>> {
    let mut keys = Vec::new();
    let mut problems = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split(';').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        match parse_line(line) {
            Ok(key) => keys.push(key),
            Err(message) => problems.push((i + 1, message)),
        }
    }
    if problems.is_empty() && keys.is_empty() {
        problems.push((1, "no DNSKEY record: nothing could be validated".to_owned()));
    }
    if problems.is_empty() {
        Ok(TrustAnchor { keys })
    } else {
        Err(problems)
    }
}

/// One record line without its comment.
fn parse_line(line: &str) -> Result<AnchorKey, String> {
    if line.contains('(') || line.contains(')') {
        return Err("write each record on one line (no parentheses)".to_owned());
    }
    let mut fields = line.split_ascii_whitespace();
    let owner = fields.next().unwrap_or_default();
    let zone = owner_name(owner)?;
    // Optional TTL and class, in either order (RFC 1035 §5.1), then the type.
    let mut rtype = None;
    for field in fields.by_ref() {
        let upper = field.to_ascii_uppercase();
        if field.bytes().all(|b| b.is_ascii_digit()) || upper == "IN" {
            continue;
        }
        rtype = Some(upper);
        break;
    }
    match rtype.as_deref() {
        Some("DNSKEY") => {}
        Some("DS") => {
            return Err(format!(
                "DS records cannot anchor this resolver: give the DNSKEY records of {zone} \
                 instead (`dig DNSKEY {zone}`, or the signer's .key file)"
            ));
        }
        Some(other) => return Err(format!("{other} record: only DNSKEY records anchor")),
        None => return Err("no record type: expected DNSKEY".to_owned()),
    }
    let rest: Vec<&str> = fields.collect();
    let [flags, protocol, algorithm, key @ ..] = rest.as_slice() else {
        return Err("DNSKEY needs flags, protocol, algorithm and the key".to_owned());
    };
    let flags: u16 = flags
        .parse()
        .map_err(|_| format!("flags {flags:?} is not a number 0..=65535"))?;
    if flags & ZONE_KEY_FLAG == 0 {
        return Err(format!(
            "flags {flags}: not a zone key (256 or 257 expected)"
        ));
    }
    if *protocol != "3" {
        return Err(format!(
            "protocol {protocol:?}: must be 3 (RFC 4034 §2.1.2)"
        ));
    }
    let algorithm: u8 = algorithm
        .parse()
        .map_err(|_| format!("algorithm {algorithm:?} is not a number"))?;
    if !KNOWN_ALGORITHMS.contains(&algorithm) {
        return Err(format!(
            "algorithm {algorithm}: not a DNSSEC signing algorithm a validator knows \
             (5, 7, 8, 10, 13, 14, 15)"
        ));
    }
    // The key may be split into several base64 words (as `dig` prints long RSA keys).
    let b64: String = key.concat();
    if b64.is_empty() {
        return Err("the public key is missing".to_owned());
    }
    let public_key = data_encoding::BASE64
        .decode(b64.as_bytes())
        .map_err(|e| format!("the public key is not base64 ({e})"))?;
    Ok(AnchorKey {
        zone,
        flags,
        algorithm,
        public_key,
    })
}

/// An absolute owner name, lower case: relative names have no origin in this file.
fn owner_name(owner: &str) -> Result<String, String> {
    if owner == "." {
        return Ok(".".to_owned());
    }
    let Some(name) = owner.strip_suffix('.') else {
        return Err(format!(
            "owner {owner:?} must be absolute (end with a dot): this file has no $ORIGIN"
        ));
    };
    let labels_ok = name.split('.').all(|label| {
        (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    if !labels_ok || owner.len() > 254 {
        return Err(format!("owner {owner:?} is not a domain name"));
    }
    Ok(owner.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The root KSK-2017 as IANA publishes it (`root.key`).
    const ROOT_2017: &str = ". 172800 IN DNSKEY 257 3 8 AwEAAaz/tAm8yTn4Mfeh5eyI96WSVexTBAvkMgJzkKTOiW1vkIbzxeF3+/4RgWOq7HrxRixHlFlExOLAJr5emLvN7SWXgnLh4+B5xQlNVz8Og8kvArMtNROxVQuCaSnIDdD5LKyWbRd2n9WGe2R8PzgCmr3EgVLrjyBxWezF0jLHwVN8efS3rCj/EWgvIWgb9tarpVUDK/b58Da+sqqls3eNbuv7pr+eoZG+SrDK6nWeL3c6H5Apxz7LjVc1uTIdsIXxuOLYA4/ilBmSVIzuDWfdRUfhHdY6+cn8HFRm+2hM8AnXGXws9555KrUB5qihylGa8subX2Nn6UwNR1AkUTV74bU=";

    #[test]
    fn accepted_files() {
        /// (file text, the keys it gives: zone, flags, algorithm)
        type Row = (&'static str, &'static [(&'static str, u16, u8)]);
        let table: &[Row] = &[
            (ROOT_2017, &[(".", 257, 8)]),
            // ldns-keygen's .key file: tabs, no TTL, trailing comment.
            (
                "gouv.fr.\tIN\tDNSKEY\t257 3 13 slIT4ZvhSKCmb6tFpwRDNtsSpp0oOBATyh/Yd84DMgnaHMFlMqrsBfotgkVk0U/onbQ/sS7KaBmsRaiGPfVWLQ== ;{id = 36844 (ksk), size = 256b}",
                &[("gouv.fr.", 257, 13)],
            ),
            // Class before TTL, upper case owner, a key split in two words, comments, blanks.
            (
                "; anchors\n\nGouv.FR. IN 3600 DNSKEY 256 3 15 l02Woi0iS8Aa25FQkUd9RMzZHJpBoRQwAQEX 1SxZJA4=\n",
                &[("gouv.fr.", 256, 15)],
            ),
        ];
        for (text, want) in table {
            let got = parse(text).unwrap_or_else(|e| panic!("{text}: {e:?}"));
            let got: Vec<(&str, u16, u8)> = got
                .keys
                .iter()
                .map(|k| (k.zone.as_str(), k.flags, k.algorithm))
                .collect();
            assert_eq!(&got, want, "{text}");
        }
    }

    #[test]
    fn refused_lines_name_their_line() {
        let table: &[(&str, usize, &str)] = &[
            ("", 1, "no DNSKEY record"),
            ("; only a comment\n", 1, "no DNSKEY record"),
            (
                "\ngouv.fr. 3600 IN DS 7746 13 2 95d492676bc76d52dde875596b5994d6fb4e6a83",
                2,
                "DS records cannot anchor",
            ),
            ("gouv.fr IN DNSKEY 257 3 13 AAAA", 1, "must be absolute"),
            ("gouv.fr. IN TXT \"x\"", 1, "only DNSKEY"),
            ("gouv.fr. IN DNSKEY 257 3 13", 1, "key is missing"),
            ("gouv.fr. IN DNSKEY 257 3", 1, "needs flags"),
            ("gouv.fr. IN DNSKEY 1 3 13 AAAA", 1, "not a zone key"),
            ("gouv.fr. IN DNSKEY 257 2 13 AAAA", 1, "protocol"),
            ("gouv.fr. IN DNSKEY 257 3 99 AAAA", 1, "algorithm 99"),
            ("gouv.fr. IN DNSKEY 257 3 13 not*base64", 1, "not base64"),
            ("gouv.fr. IN DNSKEY 257 3 13 ( AAAA\n AAAA )", 1, "one line"),
            ("gouv..fr. IN DNSKEY 257 3 13 AAAA", 1, "not a domain name"),
            ("gouv.fr.", 1, "no record type"),
        ];
        for (text, line, needle) in table {
            let Err(problems) = parse(text) else {
                panic!("{text:?} was accepted");
            };
            let (at, message) = &problems[0];
            assert_eq!(at, line, "{text:?}: {message}");
            assert!(message.contains(needle), "{text:?}: {message}");
        }
    }

    #[test]
    fn load_prefixes_path_and_line() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("anchor");
        std::fs::write(&path, format!("{ROOT_2017}\nbad line\n")).unwrap_or_else(|e| panic!("{e}"));
        let Err(problems) = load(&path) else {
            panic!("accepted");
        };
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with(&format!("{}:2: ", path.display())),
            "{problems:?}"
        );
        let missing = dir.path().join("missing");
        let Err(problems) = load(&missing) else {
            panic!("accepted");
        };
        assert!(problems[0].starts_with(&format!("{}: ", missing.display())));
    }
}
