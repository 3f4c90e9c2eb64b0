//! Table tests of the strict address parser and the domain policy (SPEC §3).
//!
//! `data/addresses.tsv` is the public corpus, byte-identical to the shared copy; every row
//! runs through `Mailbox::parse` then `DomainPolicy` (allowed `gouv.fr`) and must give the
//! stated verdict and reason code. `data/addresses_strict.tsv` adds a row for every refusal
//! detail; the length boundaries are built in code (at and one past each limit).

use gatekeeper::address::{Domain, Mailbox, ParseOptions};
use gatekeeper::config::{Alignment, PolicyConfig};
use gatekeeper::domains::DomainPolicy;
use gatekeeper::reason::Reason;

/// Decode the corpus escapes: `\\`, `\t`, `\r`, `\n`, `\0`, `\xHH`; everything else literal.
fn unescape(field: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        match chars.next() {
            Some('\\') => out.push(b'\\'),
            Some('t') => out.push(b'\t'),
            Some('r') => out.push(b'\r'),
            Some('n') => out.push(b'\n'),
            Some('0') => out.push(0),
            Some('x') => {
                let hex: String = chars.by_ref().take(2).collect();
                let byte = u8::from_str_radix(&hex, 16)
                    .unwrap_or_else(|_| panic!("bad \\x escape in {field:?}"));
                out.push(byte);
            }
            other => panic!("unknown escape {other:?} in {field:?}"),
        }
    }
    out
}

#[test]
fn unescape_decodes_every_escape() {
    assert_eq!(
        unescape(r"a\\b\tc\rd\ne\0f\x7fg"),
        b"a\\b\tc\rd\ne\0f\x7fg".to_vec()
    );
    assert_eq!(unescape("．"), "．".as_bytes().to_vec());
}

fn policy() -> DomainPolicy {
    let gouv = Domain::parse(b"gouv.fr", &ParseOptions::default())
        .unwrap_or_else(|e| panic!("gouv.fr: {e}"));
    DomainPolicy::new(&PolicyConfig {
        allowed_domains: vec![gouv],
        denied_domains: Vec::new(),
        alignment: Alignment::Strict,
        require_iprev: false,
        dkim_min_rsa_bits: 1024,
        allowed_networks: Vec::new(),
        local_part_extra_chars: String::new(),
        allow_idna: false,
        domains: Vec::new(),
    })
}

/// The verdict of a claim: `Ok(canonical)` or `Err((reason, detail))`.
fn verdict(input: &[u8], policy: &DomainPolicy) -> Result<String, (Reason, &'static str)> {
    let opts = ParseOptions::default();
    let mailbox = Mailbox::parse(input, &opts).map_err(|e| (e.reason(), e.detail))?;
    policy.check(mailbox.domain()).map_err(|r| (r, "-"))?;
    Ok(mailbox.to_string())
}

struct Row {
    line: usize,
    address: Vec<u8>,
    expected: String,
    reason: String,
    detail: Option<String>,
}

fn load(tsv: &str, with_detail: bool) -> Vec<Row> {
    let mut rows = Vec::new();
    for (i, line) in tsv.lines().enumerate().skip(1) {
        if line.is_empty() {
            continue;
        }
        let cols: Vec<&str> = line.split('\t').collect();
        assert!(cols.len() >= 4, "line {}: {} columns", i + 1, cols.len());
        rows.push(Row {
            line: i + 1,
            address: unescape(cols[0]),
            expected: cols[1].to_string(),
            reason: cols[2].to_string(),
            detail: with_detail.then(|| cols[3].to_string()),
        });
    }
    rows
}

fn run(rows: &[Row]) -> usize {
    let policy = policy();
    for row in rows {
        let got = verdict(&row.address, &policy);
        let shown = String::from_utf8_lossy(&row.address);
        match row.expected.as_str() {
            "accept" => {
                let canonical =
                    got.unwrap_or_else(|e| panic!("line {} {shown:?}: refused {e:?}", row.line));
                // Canonical form is ASCII lower-case of the input.
                assert_eq!(
                    canonical.as_bytes(),
                    row.address.to_ascii_lowercase(),
                    "line {}",
                    row.line
                );
            }
            "reject" => {
                let (reason, detail) = match got {
                    Ok(c) => panic!("line {} {shown:?}: accepted as {c}", row.line),
                    Err(e) => e,
                };
                assert_eq!(
                    reason.as_str(),
                    row.reason,
                    "line {} {shown:?} ({detail})",
                    row.line
                );
                if let Some(want) = row.detail.as_deref().filter(|w| *w != "-") {
                    assert_eq!(detail, want, "line {} {shown:?}", row.line);
                }
            }
            other => panic!("line {}: bad expected {other}", row.line),
        }
    }
    rows.len()
}

#[test]
fn public_corpus() {
    let rows = load(include_str!("data/addresses.tsv"), false);
    assert_eq!(run(&rows), 24);
}

#[test]
fn strict_table_every_detail() {
    let rows = load(include_str!("data/addresses_strict.tsv"), true);
    let n = run(&rows);
    assert!(n > 70, "{n} rows");
    // Every refusal detail the SPEC names appears at least once in the table.
    let details: Vec<&str> = rows.iter().filter_map(|r| r.detail.as_deref()).collect();
    for want in [
        "empty",
        "two_at",
        "no_at",
        "nul",
        "control",
        "whitespace",
        "non_ascii",
        "quoted_local",
        "comment",
        "encoded_word",
        "route",
        "percent_hack",
        "bang_path",
        "ip_literal",
        "idna",
        "trailing_dot",
        "leading_dot",
        "double_dot",
        "empty_label",
        "hyphen",
        "tld",
        "single_label",
        "bad_char",
        "angle_brackets",
        "list",
    ] {
        assert!(details.contains(&want), "no row for {want}");
    }
}

/// A domain of exactly `len` octets under `gouv.fr`, made of labels of at most 63 octets.
fn domain_of_len(len: usize) -> String {
    let suffix = "gouv.fr";
    let mut labels: Vec<String> = Vec::new();
    let mut remaining = len - suffix.len();
    while remaining > 0 {
        // Each label costs its length plus one dot; keep at least 1 octet per label.
        let take = remaining.saturating_sub(1).min(63);
        assert!(take > 0, "cannot build domain of {len}");
        labels.push("d".repeat(take));
        remaining -= take + 1;
    }
    labels.push(suffix.to_string());
    let d = labels.join(".");
    assert_eq!(d.len(), len);
    d
}

fn parse(s: &str) -> Result<String, &'static str> {
    Mailbox::parse(s.as_bytes(), &ParseOptions::default())
        .map(|m| m.to_string())
        .map_err(|e| e.detail)
}

fn parse_domain(s: &str) -> Result<String, &'static str> {
    Domain::parse(s.as_bytes(), &ParseOptions::default())
        .map(|d| d.to_string())
        .map_err(|e| e.detail)
}

#[test]
fn length_limits_at_and_past_each_boundary() {
    // local part: 64 accepted, 65 refused.
    let local64 = format!("{}@gouv.fr", "l".repeat(64));
    let local65 = format!("{}@gouv.fr", "l".repeat(65));
    assert_eq!(parse(&local64), Ok(local64.clone()));
    assert_eq!(parse(&local65), Err("local_length"));

    // label: 63 accepted, 64 refused (in an address and as a bare domain).
    let label63 = format!("a@{}.gouv.fr", "b".repeat(63));
    let label64 = format!("a@{}.gouv.fr", "b".repeat(64));
    assert_eq!(parse(&label63), Ok(label63.clone()));
    assert_eq!(parse(&label64), Err("label_length"));
    assert_eq!(
        parse_domain(&format!("{}.fr", "b".repeat(63))).map(|d| d.len()),
        Ok(66)
    );
    assert_eq!(
        parse_domain(&format!("{}.fr", "b".repeat(64))),
        Err("label_length")
    );

    // domain: 253 accepted, 254 refused (bare domain: an address cannot hold 253 + "a@").
    let d253 = domain_of_len(253);
    let d254 = domain_of_len(254);
    assert_eq!(parse_domain(&d253), Ok(d253.clone()));
    assert_eq!(parse_domain(&d254), Err("domain_length"));

    // whole address: 254 accepted, 255 refused.
    let a254 = format!("a@{}", domain_of_len(252));
    let a255 = format!("ab@{}", domain_of_len(252));
    assert_eq!(a254.len(), 254);
    assert_eq!(parse(&a254), Ok(a254.clone()));
    assert_eq!(a255.len(), 255);
    assert_eq!(parse(&a255), Err("length"));
    // An address holding a 253-octet domain is over the address limit.
    assert_eq!(parse(&format!("a@{d253}")), Err("length"));

    // Early bound: more than 4096 octets refused before any other look.
    let huge = "a".repeat(4097);
    assert_eq!(parse(&huge), Err("length"));
    let huge_nul = format!("{}\0", "a".repeat(4096));
    assert_eq!(parse(&huge_nul), Err("length"));
    let at_bound = "a".repeat(4096);
    assert_eq!(parse(&at_bound), Err("no_at"));
    assert_eq!(
        Mailbox::parse_header(huge.as_bytes(), &ParseOptions::default()).map_err(|e| e.detail),
        Err("length")
    );
}

#[test]
fn extra_local_chars_only_from_atext() {
    let opts = ParseOptions {
        local_part_extra_chars: "#'!%@\"[]\\<>(),;: ~{`".to_string(),
        allow_idna: false,
    };
    let p = |s: &str| {
        Mailbox::parse(s.as_bytes(), &opts)
            .map(|m| m.to_string())
            .map_err(|e| e.detail)
    };
    assert_eq!(p("a#b~c@gouv.fr"), Ok("a#b~c@gouv.fr".to_string()));
    // Configured, atext, but quote-like: never added.
    assert_eq!(p("o'brien@gouv.fr"), Err("bad_char"));
    assert_eq!(p("a{b@gouv.fr"), Err("bad_char"));
    assert_eq!(p("a`b@gouv.fr"), Err("bad_char"));
    // Not in the configured set, though atext.
    assert_eq!(p("a/b@gouv.fr"), Err("bad_char"));
    // Configured but never allowed.
    assert_eq!(p("a!b@gouv.fr"), Err("bang_path"));
    assert_eq!(p("a%b@gouv.fr"), Err("percent_hack"));
    assert_eq!(p("\"a\"@gouv.fr"), Err("quoted_local"));
    assert_eq!(p("a b@gouv.fr"), Err("whitespace"));
    // Extra characters never reach the domain.
    assert_eq!(p("a@b#c.gouv.fr"), Err("bad_char"));
}

#[test]
fn idna_allowed_by_option() {
    let opts = ParseOptions {
        local_part_extra_chars: String::new(),
        allow_idna: true,
    };
    let m = Mailbox::parse(b"a@XN--intrieur-b1a.gouv.fr", &opts).map(|m| m.to_string());
    assert_eq!(m, Ok("a@xn--intrieur-b1a.gouv.fr".to_string()));
    assert_eq!(parse("a@xn--intrieur-b1a.gouv.fr"), Err("idna"));
}

#[test]
fn is_within_label_boundary() {
    let d = |s: &str| {
        Domain::parse(s.as_bytes(), &ParseOptions::default()).unwrap_or_else(|e| panic!("{s}: {e}"))
    };
    let gouv = d("gouv.fr");
    assert!(d("gouv.fr").is_within(&gouv));
    assert!(d("GOUV.FR").is_within(&gouv));
    assert!(d("interieur.gouv.fr").is_within(&gouv));
    assert!(!d("evilgouv.fr").is_within(&gouv));
    assert!(!d("gouv.fr.evil.example").is_within(&gouv));
    assert!(!gouv.is_within(&d("interieur.gouv.fr")));
}
