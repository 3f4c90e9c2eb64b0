//! `dns.trust_anchor`: the DNSSEC trust anchor file, read and checked at configuration load
//! so that a typo is a `file:line` error at `check-config` time, not a resolver that calls
//! every answer bogus at 3 a.m.
//!
//! The file holds DNSKEY or DS records in zone-file presentation format, one record per line
//! (`owner [ttl] [class] DNSKEY flags protocol algorithm base64-key` or
//! `owner [ttl] [class] DS key-tag algorithm digest-type hex-digest`), the format of
//! `dig DNSKEY zone`, of `ldns-keygen`'s and `dnssec-keygen`'s `.key` files, of
//! `ldns-key2ds` / `dnssec-dsfromkey`, of `/usr/share/dns/root.key` and of the DS records IANA
//! publishes for the root (`root-anchors.xml`). `;` starts a comment; blank lines are skipped.
//!
//! Decisions where the SPEC is silent:
//! - **DS lines are kept with their line number**: hickory-resolver 0.26 anchors on DNSKEYs
//!   only, so a DS is turned into the keys it vouches for when the resolver is built
//!   (`dns::resolve_ds_anchors`, at start and on reload); a DS that matches no published key
//!   is then reported as this file's `path:line`.
//! - **SHA-1 DS digests (type 1) are refused**: RFC 8624 §3.3 forbids creating them, every
//!   tool above writes SHA-256 (type 2) by default, and a trust anchor is the one place
//!   where a weak digest would undo everything else. SHA-256 (2) and SHA-384 (4) are
//!   accepted, and the digest must have that hash's length.
//! - **Multi-line (parenthesised) records are refused**: one record per line keeps the line
//!   number of every error exact, and every tool above writes one line per key.
//! - **A file with no record is an error**: validation with an empty anchor set would turn
//!   every answer into a temporary failure.
//! - Only the record's presentation is checked here (name, flags with the zone-key bit,
//!   protocol 3, a known algorithm number, base64 or hex); whether the key bytes make a valid
//!   public key is the resolver's business when the chain is walked.

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

/// One DS line: the zone it is for and its fields, with where it was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnchorDs {
    /// The owner name, lower case, absolute (with its trailing dot; `.` for the root).
    pub zone: String,
    pub key_tag: u16,
    pub algorithm: u8,
    /// 2 (SHA-256) or 4 (SHA-384).
    pub digest_type: u8,
    pub digest: Vec<u8>,
    /// `path:line` (or `line N` for text parsed without a file), for errors found later,
    /// when the DS is matched against the zone's published keys.
    pub at: String,
}

/// The parsed file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustAnchor {
    /// The DNSKEY lines (and, once `dns::resolve_ds_anchors` ran, the keys the DS lines
    /// vouch for).
    pub keys: Vec<AnchorKey>,
    /// The DS lines not yet turned into keys.
    pub ds: Vec<AnchorDs>,
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
    let mut anchor = parse(&text).map_err(|problems| {
        problems
            .into_iter()
            .map(|(line, message)| format!("{shown}:{line}: {message}"))
            .collect::<Vec<_>>()
    })?;
    for ds in &mut anchor.ds {
        // `line N` (from `parse`) becomes `path:N`.
        let line = ds.at.strip_prefix("line ").unwrap_or(&ds.at);
        ds.at = format!("{shown}:{line}");
    }
    Ok(anchor)
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
    let mut ds = Vec::new();
    let mut problems = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split(';').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        match parse_line(line) {
            Ok(Record::Key(key)) => keys.push(key),
            Ok(Record::Ds(mut d)) => {
                d.at = format!("line {}", i + 1);
                ds.push(d);
            }
            Err(message) => problems.push((i + 1, message)),
        }
    }
    if problems.is_empty() && keys.is_empty() && ds.is_empty() {
        problems.push((
            1,
            "no DNSKEY or DS record: nothing could be validated".to_owned(),
        ));
    }
    if problems.is_empty() {
        Ok(TrustAnchor { keys, ds })
    } else {
        Err(problems)
    }
}

/// One parsed line.
enum Record {
    Key(AnchorKey),
    Ds(AnchorDs),
}

/// One record line without its comment.
fn parse_line(line: &str) -> Result<Record, String> {
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
    let rest: Vec<&str> = fields.collect();
    match rtype.as_deref() {
        Some("DNSKEY") => parse_dnskey(zone, &rest).map(Record::Key),
        Some("DS") => parse_ds(zone, &rest).map(Record::Ds),
        Some(other) => Err(format!("{other} record: only DNSKEY and DS records anchor")),
        None => Err("no record type: expected DNSKEY or DS".to_owned()),
    }
}

/// The DS digest types accepted, with their digest length (see the module decisions).
const DIGESTS: [(u8, usize); 2] = [(2, 32), (4, 48)];

/// The fields after `DS`.
fn parse_ds(zone: String, rest: &[&str]) -> Result<AnchorDs, String> {
    let [key_tag, algorithm, digest_type, digest @ ..] = rest else {
        return Err("DS needs key tag, algorithm, digest type and the digest".to_owned());
    };
    let key_tag: u16 = key_tag
        .parse()
        .map_err(|_| format!("key tag {key_tag:?} is not a number 0..=65535"))?;
    let algorithm = algorithm_number(algorithm)?;
    let digest_type: u8 = digest_type
        .parse()
        .map_err(|_| format!("digest type {digest_type:?} is not a number"))?;
    if digest_type == 1 {
        return Err(
            "digest type 1 (SHA-1) is too weak for a trust anchor: give the SHA-256 DS \
             (digest type 2, `ldns-key2ds -2` or `dnssec-dsfromkey -2`)"
                .to_owned(),
        );
    }
    let Some(&(_, length)) = DIGESTS.iter().find(|(t, _)| *t == digest_type) else {
        return Err(format!(
            "digest type {digest_type}: expected 2 (SHA-256) or 4 (SHA-384)"
        ));
    };
    // The digest may be split into several hex words (as `dig` prints it).
    let hex = digest.concat().to_ascii_uppercase();
    if hex.is_empty() {
        return Err("the digest is missing".to_owned());
    }
    let digest = data_encoding::HEXUPPER
        .decode(hex.as_bytes())
        .map_err(|e| format!("the digest is not hexadecimal ({e})"))?;
    if digest.len() != length {
        return Err(format!(
            "the digest has {} bytes; digest type {digest_type} has {length}",
            digest.len()
        ));
    }
    Ok(AnchorDs {
        zone,
        key_tag,
        algorithm,
        digest_type,
        digest,
        at: String::new(),
    })
}

/// An algorithm number a validator knows.
fn algorithm_number(algorithm: &str) -> Result<u8, String> {
    let number: u8 = algorithm
        .parse()
        .map_err(|_| format!("algorithm {algorithm:?} is not a number"))?;
    if KNOWN_ALGORITHMS.contains(&number) {
        Ok(number)
    } else {
        Err(format!(
            "algorithm {number}: not a DNSSEC signing algorithm a validator knows \
             (5, 7, 8, 10, 13, 14, 15)"
        ))
    }
}

/// The fields after `DNSKEY`.
fn parse_dnskey(zone: String, rest: &[&str]) -> Result<AnchorKey, String> {
    let [flags, protocol, algorithm, key @ ..] = rest else {
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
    let algorithm = algorithm_number(algorithm)?;
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

    /// The root KSK-2017 and KSK-2024 as IANA publishes their DS (`root-anchors.xml`).
    const ROOT_DS: &str = ". IN DS 20326 8 2 E06D44B80B8F1D39A95C0B0D7C65D08458E880409BBC683457104237C7F8EC8D\n\
                           . IN DS 38696 8 2 683D2D0ACB8C9B712A1948B27F741219298D0A450D612C483AF444A4C0FB2B16\n";

    /// A DS with a SHA-1 digest (type 1): refused.
    const DS_SHA1: &str = "gouv.fr. IN DS 7746 13 1 95d492676bc76d52dde875596b5994d6fb4e6a83";

    #[test]
    fn ds_lines_are_kept_with_their_line() {
        let anchor = parse(ROOT_DS).unwrap_or_else(|e| panic!("{e:?}"));
        assert!(anchor.keys.is_empty());
        let got: Vec<(&str, u16, u8, u8, usize, &str)> = anchor
            .ds
            .iter()
            .map(|d| {
                let at = d.at.as_str();
                (
                    d.zone.as_str(),
                    d.key_tag,
                    d.algorithm,
                    d.digest_type,
                    d.digest.len(),
                    at,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (".", 20326, 8, 2, 32, "line 1"),
                (".", 38696, 8, 2, 32, "line 2"),
            ]
        );
        // A DS mixed with a DNSKEY, the digest in lower case and split in two words (as `dig`
        // prints it), SHA-384.
        let text = format!(
            "{ROOT_2017}\n; child\ngouv.fr. 3600 IN DS 7746 13 4 {} {}\n",
            "ab".repeat(24),
            "CD".repeat(24)
        );
        let anchor = parse(&text).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(anchor.keys.len(), 1);
        let ds = &anchor.ds[0];
        assert_eq!(
            (ds.zone.as_str(), ds.digest_type, ds.at.as_str()),
            ("gouv.fr.", 4, "line 3")
        );
        assert_eq!(ds.digest[..24], [0xab; 24]);
        assert_eq!(ds.digest[24..], [0xcd; 24]);
    }

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
            ("", 1, "no DNSKEY or DS record"),
            ("; only a comment\n", 1, "no DNSKEY or DS record"),
            // A SHA-256 digest cut short (20 bytes), then the DS fields one by one.
            (
                "\ngouv.fr. 3600 IN DS 7746 13 2 95d492676bc76d52dde875596b5994d6fb4e6a83",
                2,
                "the digest has 20 bytes; digest type 2 has 32",
            ),
            (DS_SHA1, 1, "SHA-1"),
            ("gouv.fr. IN DS 7746 13 3 AAAA", 1, "digest type 3"),
            ("gouv.fr. IN DS 7746 13 2", 1, "digest is missing"),
            ("gouv.fr. IN DS 7746 13", 1, "DS needs"),
            ("gouv.fr. IN DS 70000 13 2 AA", 1, "key tag"),
            ("gouv.fr. IN DS 7746 99 2 AA", 1, "algorithm 99"),
            ("gouv.fr. IN DS 7746 13 2 XYZ", 1, "not hexadecimal"),
            ("gouv.fr IN DNSKEY 257 3 13 AAAA", 1, "must be absolute"),
            ("gouv.fr. IN TXT \"x\"", 1, "only DNSKEY and DS"),
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
        // A DS line's place is the file's, for errors found when the keys are fetched.
        std::fs::write(&path, format!("; root\n{ROOT_DS}")).unwrap_or_else(|e| panic!("{e}"));
        let anchor = load(&path).unwrap_or_else(|e| panic!("{e:?}"));
        let at: Vec<&str> = anchor.ds.iter().map(|d| d.at.as_str()).collect();
        assert_eq!(
            at,
            [
                format!("{}:2", path.display()),
                format!("{}:3", path.display())
            ]
        );
        let missing = dir.path().join("missing");
        let Err(problems) = load(&missing) else {
            panic!("accepted");
        };
        assert!(problems[0].starts_with(&format!("{}: ", missing.display())));
    }
}
