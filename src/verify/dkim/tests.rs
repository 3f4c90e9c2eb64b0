//! Table tests of the DKIM rules: alignment, tag lists, identities, key records, judging.

use super::*;

fn d(s: &str) -> Domain {
    Domain::parse(s.as_bytes(), &ParseOptions::default()).unwrap_or_else(|e| panic!("{s}: {e}"))
}

#[test]
fn alignment() {
    let from = d("interieur.gouv.fr");
    assert!(aligned(&d("Interieur.Gouv.Fr"), &from, &Alignment::Strict));
    assert!(!aligned(
        &d("dgsi.interieur.gouv.fr"),
        &from,
        &Alignment::Strict
    ));
    assert!(aligned(
        &d("dgsi.interieur.gouv.fr"),
        &from,
        &Alignment::Relaxed
    ));
    // gouv.fr is a public suffix: sibling ministries are different organisations.
    assert!(!aligned(&d("ville.gouv.fr"), &from, &Alignment::Relaxed));
    assert!(!aligned(&d("gouv.fr"), &from, &Alignment::Relaxed));
    assert!(!aligned(
        &d("interieur.gouv.fr.evil.example"),
        &from,
        &Alignment::Relaxed
    ));
    assert!(!aligned(&d("evilgouv.fr"), &from, &Alignment::Relaxed));
}

#[test]
fn tag_lists() {
    assert_eq!(
        tag_list(b"v=1; a = rsa-sha256;\r\n\td=x.fr; "),
        Some(vec![
            ("v".into(), "1".into()),
            ("a".into(), "rsa-sha256".into()),
            ("d".into(), "x.fr".into())
        ])
    );
    assert_eq!(tag_list(b"d=a.fr; d=b.fr"), None);
    assert_eq!(tag_list(b"d=a.fr; D=b.fr"), None);
    assert_eq!(tag_list(b"d"), None);
}

fn sig(value: &str) -> SigInfo {
    SigInfo::parse(0, value.as_bytes(), &ParseOptions::default())
}

const BASE: &str = "v=1; a=rsa-sha256; c=relaxed/relaxed; d=interieur.gouv.fr; s=s2024; h=from:to; bh=AAAA; b=BB BB";

#[test]
fn signature_fields() {
    let s = sig(BASE);
    assert!(!s.invalid);
    assert_eq!(s.domain, Some(d("interieur.gouv.fr")));
    assert_eq!(s.h, vec!["from", "to"]);
    assert_eq!(s.b, "BBBB");
    assert!(!s.has_l);
    assert!(sig(&format!("{BASE}; l=0")).has_l);
    assert!(sig(&format!("{BASE}; d=evil.example")).invalid);
    assert!(sig(&format!("{BASE}; t=soon")).invalid);
    assert!(sig(&BASE.replace("d=", "D=")).invalid);
    assert!(sig(&format!("{BASE}; L=5")).invalid);
    assert!(!sig(&format!("{BASE}; z=From:X=3DY")).invalid);
    assert!(sig(&BASE.replace("v=1", "v=2")).invalid);
    assert!(sig(&BASE.replace("s=s2024; ", "")).invalid);
    let many = vec!["from"; MAX_SIGNED_NAMES + 1].join(":");
    assert!(sig(&BASE.replace("h=from:to", &format!("h={many}"))).invalid);
    let enough = vec!["from"; MAX_SIGNED_NAMES].join(":");
    assert!(!sig(&BASE.replace("h=from:to", &format!("h={enough}"))).invalid);
    assert_eq!(sig(&format!("{BASE}; t=10; x=20")).t, Some(10));
    assert_eq!(
        sig(&BASE.replace("interieur.gouv.fr", "interieur.gouv.fr'a.evil.example")).domain,
        None
    );
}

#[test]
fn identity_rows() {
    let opts = ParseOptions::default();
    let alice = Mailbox::parse(b"alice@interieur.gouv.fr", &opts).unwrap_or_else(|e| panic!("{e}"));
    let rows: &[(&str, bool)] = &[
        ("", true),
        ("; i=alice@interieur.gouv.fr", true),
        ("; i=ALICE@Interieur.Gouv.Fr", true),
        ("; i=alice=40interieur.gouv.fr", true),
        ("; i=@interieur.gouv.fr", true),
        ("; i=@dgsi.interieur.gouv.fr", true),
        ("; i=bob@interieur.gouv.fr", false),
        ("; i=@gouv.fr", false),
        ("; i=@evil.example", false),
        ("; i=alice@@interieur.gouv.fr", false),
        ("; i=alice=4", false),
        ("; i=\"alice\"@interieur.gouv.fr", false),
    ];
    for (tag, want) in rows {
        let s = sig(&format!("{BASE}{tag}"));
        assert_eq!(identity_agrees(&s, &alice, &opts), *want, "{tag}");
    }
}

#[test]
fn signed_instances_bottom_up() {
    let msg = "DKIM-Signature: x\r\nTo: top\r\nFrom: a@b.fr\r\nTo: bottom\r\n\r\n";
    let block = HeaderBlock::parse(msg.as_bytes());
    let s = sig(BASE);
    assert_eq!(s.signed_fields(&block), HashSet::from([2, 3]));
    let s2 = sig(&BASE.replace("h=from:to", "h=to:to:to:from:from"));
    assert_eq!(s2.signed_fields(&block), HashSet::from([1, 2, 3]));
    let s3 = sig(&BASE.replace("h=from:to", "h=subject"));
    assert!(s3.signed_fields(&block).is_empty());
}

#[test]
fn key_records_and_sizes() {
    let k = KeyRecord::parse(b"v=DKIM1; k=rsa; t=y; p=").unwrap_or_else(|| panic!("parse"));
    assert!(k.testing && k.revoked);
    let k = KeyRecord::parse(b"v=DKIM1; k=rsa; h=sha1; s=other; p=AAAA")
        .unwrap_or_else(|| panic!("parse"));
    assert_eq!(k.hashes, Some(vec!["sha1".to_string()]));
    assert_eq!(k.services, Some(vec!["other".to_string()]));
    assert_eq!(KeyRecord::parse(b"v=spf1 -all"), None);
    assert_eq!(KeyRecord::parse(b"v=DKIM2; p=AAAA"), None);
    // SPKI of a 12-bit toy modulus 0x0A01 and bare RSAPublicKey forms.
    let rsa_pub = [0x30, 0x07, 0x02, 0x02, 0x0A, 0x01, 0x02, 0x01, 0x03];
    assert_eq!(rsa_modulus_bits(&rsa_pub), Some(12));
    let mut spki = vec![
        0x30, 0x1a, 0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
        0x05, 0x00, 0x03, 0x0a, 0x00,
    ];
    spki.extend_from_slice(&rsa_pub);
    spki[1] = u8::try_from(spki.len() - 2).unwrap_or(0);
    assert_eq!(rsa_modulus_bits(&spki), Some(12));
    assert_eq!(rsa_modulus_bits(&[0x30, 0x80]), None);
    assert_eq!(rsa_modulus_bits(&[]), None);
}

fn key(bits: usize) -> KeyLookup {
    KeyLookup::Found(KeyRecord {
        testing: false,
        hashes: None,
        services: None,
        key_type: "rsa".into(),
        rsa_bits: Some(bits),
        revoked: false,
    })
}

#[test]
fn judge_table() {
    let now = 1_000_000;
    let signed = HashSet::from([1usize]);
    let good = sig(BASE);
    let j = |s: &SigInfo, c: Crypto, k: &KeyLookup| judge(s, c, k, &signed, Some(1), 1024, now);
    assert_eq!(j(&good, Crypto::Pass, &key(2048)), SigStatus::Good);
    assert_eq!(j(&good, Crypto::Pass, &key(1024)), SigStatus::Good);
    assert_eq!(j(&good, Crypto::Pass, &key(1023)), SigStatus::Weak);
    assert_eq!(j(&good, Crypto::Fail, &key(512)), SigStatus::Weak);
    assert_eq!(j(&good, Crypto::Fail, &key(2048)), SigStatus::Fail);
    assert_eq!(
        j(&good, Crypto::TempError, &key(2048)),
        SigStatus::TempError
    );
    assert_eq!(
        j(&good, Crypto::Pass, &KeyLookup::TempError),
        SigStatus::TempError
    );
    assert_eq!(j(&good, Crypto::Pass, &KeyLookup::Missing), SigStatus::Fail);
    assert_eq!(
        j(
            &sig(&BASE.replace("rsa-sha256", "rsa-sha1")),
            Crypto::Pass,
            &key(2048)
        ),
        SigStatus::Weak
    );
    assert_eq!(
        j(
            &sig(&BASE.replace("rsa-sha256", "rsa-sha512")),
            Crypto::Pass,
            &key(2048)
        ),
        SigStatus::Fail
    );
    assert_eq!(
        j(&sig(&format!("{BASE}; l=10")), Crypto::Pass, &key(2048)),
        SigStatus::Partial
    );
    assert_eq!(
        j(
            &sig(&format!("{BASE}; x={}", now - 1)),
            Crypto::Pass,
            &key(2048)
        ),
        SigStatus::Fail
    );
    assert_eq!(
        j(
            &sig(&format!("{BASE}; t=10; x=10")),
            Crypto::Pass,
            &key(2048)
        ),
        SigStatus::Fail
    );
    assert_eq!(
        j(
            &sig(&format!("{BASE}; t={}", now + 86400)),
            Crypto::Pass,
            &key(2048)
        ),
        SigStatus::Fail
    );
    assert_eq!(
        j(
            &sig(&format!("{BASE}; t={}", now + 60)),
            Crypto::Pass,
            &key(2048)
        ),
        SigStatus::Good
    );
    // A clock up to an hour fast is tolerated, as for the Date (SPEC §4 `date.stale`).
    for (ahead, want) in [(3000, SigStatus::Good), (3700, SigStatus::Fail)] {
        let s = sig(&format!("{BASE}; t={}", now + ahead));
        assert_eq!(j(&s, Crypto::Pass, &key(2048)), want, "t= {ahead}s ahead");
    }
    assert_eq!(
        judge(
            &good,
            Crypto::Pass,
            &key(2048),
            &HashSet::new(),
            Some(1),
            1024,
            now
        ),
        SigStatus::FromUnsigned
    );
    let mut k = KeyRecord::parse(b"v=DKIM1; t=y; p=").unwrap_or_else(|| panic!("parse"));
    k.revoked = false;
    k.rsa_bits = Some(2048);
    assert_eq!(
        j(&good, Crypto::Pass, &KeyLookup::Found(k.clone())),
        SigStatus::Testing
    );
    assert_eq!(
        j(&good, Crypto::Fail, &KeyLookup::Found(k.clone())),
        SigStatus::Fail
    );
    k.testing = false;
    k.hashes = Some(vec!["sha1".into()]);
    assert_eq!(
        j(&good, Crypto::Pass, &KeyLookup::Found(k.clone())),
        SigStatus::Fail
    );
    k.hashes = None;
    k.services = Some(vec!["other".into()]);
    assert_eq!(
        j(&good, Crypto::Pass, &KeyLookup::Found(k.clone())),
        SigStatus::Fail
    );
    k.services = Some(vec!["email".into()]);
    assert_eq!(
        j(&good, Crypto::Pass, &KeyLookup::Found(k.clone())),
        SigStatus::Good
    );
    k.key_type = "ed25519".into();
    assert_eq!(
        j(&good, Crypto::Pass, &KeyLookup::Found(k)),
        SigStatus::Fail
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
    /// Parsers of peer bytes never panic.
    #[test]
    fn parsers_take_any_bytes(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
        let _ = tag_list(&bytes);
        let _ = KeyRecord::parse(&bytes);
        let _ = rsa_modulus_bits(&bytes);
        let s = SigInfo::parse(0, &bytes, &ParseOptions::default());
        let block = HeaderBlock::parse(&bytes);
        let _ = s.signed_fields(&block);
    }
}

#[test]
fn aggregate_table() {
    use SigStatus::*;
    assert_eq!(aggregate(0, &[], false), Dkim::None);
    assert_eq!(aggregate(1, &[], true), Dkim::Unaligned);
    assert_eq!(aggregate(1, &[], false), Dkim::Fail);
    assert_eq!(aggregate(2, &[Weak, Good], true), Dkim::Pass);
    assert_eq!(aggregate(2, &[Fail, TempError], false), Dkim::TempError);
    assert_eq!(aggregate(2, &[Fail], true), Dkim::Fail);
    assert_eq!(aggregate(1, &[Testing], true), Dkim::Testing);
    assert_eq!(aggregate(2, &[Fail, Partial], true), Dkim::Partial);
    assert_eq!(aggregate(1, &[FromUnsigned], true), Dkim::FromUnsigned);
    assert_eq!(aggregate(1, &[Weak], false), Dkim::Weak);
}
