//! Hostile mails beyond the corpus: at least one per DATA reason code, replays through the
//! shared relay, insiders, sibling ministries, tag tricks in DKIM-Signature, From games.
//! Each is a genuine reply from Alice with one thing changed, so each is refused for its own
//! reason (and the unchanged mail is accepted, which the first test proves).
//!
//! Run: `cargo test --test verify_hostile`.

// Test code: a failed expectation is a test failure, with its message.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use chrono::{Duration as ChronoDuration, Utc};
use gatekeeper::backend::{Decision, Verdict, Verify};
use gatekeeper::config::{Alignment, DomainOverride};
use gatekeeper::reason::Reason;

use common::mail::{Mail, STD_H, Sig, alice_challenge};
use common::{Vars, World, domain};

const SHARED: (&str, &str) = ("127.0.0.77", "relay.shared.example");
const ATTACKER: (&str, &str) = ("127.0.0.66", "mail.evil.example");
const VILLE: (&str, &str) = ("127.0.0.50", "smtp.ville.gouv.fr");

async fn run(world: &World, mail: &Mail, n: u32) -> Verdict {
    let now = Utc::now();
    let vars = Vars::new(now, n);
    let tx = mail.transaction(&vars, now);
    world
        .verifier()
        .verify(&tx, &alice_challenge(&vars), now)
        .await
}

/// Run rows; every row must give its expected decision.
async fn table(world: &World, rows: Vec<(&str, Mail, Option<Reason>)>) {
    let mut failures = Vec::new();
    for (n, (name, mail, want)) in rows.into_iter().enumerate() {
        let v = run(world, &mail, n as u32).await;
        let want = match want {
            Some(r) => Decision::Refuse(r),
            None => Decision::Accept,
        };
        if v.decision != want {
            failures.push(format!(
                "{name}: want {want:?}, got {}",
                common::show_verdict(&v)
            ));
        }
        assert_eq!(
            v.checks.len(),
            gatekeeper::policy::CheckResults::all_pass().checks().len(),
            "{name}: every check listed"
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn genuine_variants_are_accepted() {
    let world = World::start().await;
    let rows = vec![
        ("plain", Mail::alice(), None),
        // The token only in the signed Subject, not in To.
        (
            "token in signed subject",
            Mail::alice()
                .set("to", "To: Inscription <noreply@verify.example.gouv.fr>")
                .set("subject", "Subject: Confirmation {TOKEN}"),
            None,
        ),
        // The token only in the signed References (the challenge Message-ID carries it).
        (
            "token in signed references",
            Mail::alice().set("to", "To: <someone@verify.example.gouv.fr>"),
            None,
        ),
        // The token only in the body.
        (
            "token in body",
            Mail::alice()
                .set("to", "To: <someone@verify.example.gouv.fr>")
                .without("references")
                .set("in-reply-to", "In-Reply-To: <{CHALLENGE_MSGID}>")
                .sigs(vec![Sig::gov().h(&[
                    "from",
                    "to",
                    "subject",
                    "date",
                    "message-id",
                ])])
                .body("Code : {SESSION_CODE}\r\nconfirm+{TOKEN}@verify.example.gouv.fr\r\n"),
            None,
        ),
        // The session code only in the signed Subject, empty body.
        (
            "code in signed subject",
            Mail::alice()
                .set("subject", "Subject: Code : {SESSION_CODE}")
                .body(""),
            None,
        ),
        // Oversigning: `h=from:from` signs the one From and "no second From".
        (
            "oversigned from",
            Mail::alice().sigs(vec![Sig::gov().h(&[
                "from",
                "from",
                "to",
                "to",
                "subject",
                "date",
                "message-id",
            ])]),
            None,
        ),
        // The signature below the other fields.
        (
            "signature at the bottom",
            Mail::alice().push("{SIG0}"),
            None,
        ),
        // simple/simple canonicalization.
        (
            "simple canonicalization",
            Mail::alice().sigs(vec![{
                let mut s = Sig::gov();
                s.spec.canonicalization = "simple/simple".into();
                s
            }]),
            None,
        ),
        // A 1024-bit key meets the default minimum (RFC 8301).
        (
            "rsa 1024",
            Mail::alice().sigs(vec![Sig::with(
                "gov-rsa1024",
                "interieur.gouv.fr",
                "s1024",
                "rsa-sha256",
            )]),
            None,
        ),
        // Ed25519 alone.
        (
            "ed25519 only",
            Mail::alice().sigs(vec![Sig::with(
                "gov-ed25519",
                "interieur.gouv.fr",
                "ed2024",
                "ed25519-sha256",
            )]),
            None,
        ),
        // A provider's extra unaligned signature next to the ministry's.
        (
            "extra provider signature",
            Mail::alice().sigs(vec![
                Sig::gov(),
                Sig::with("provider-rsa2048", "mailhost.example", "gw", "rsa-sha256"),
            ]),
            None,
        ),
        // Two aligned signatures: the first does not cover the token, the second does.
        (
            "second aligned signature covers the token",
            Mail::alice().sigs(vec![
                Sig::gov().h(&["from", "subject", "date"]),
                Sig::with(
                    "gov-ed25519",
                    "interieur.gouv.fr",
                    "ed2024",
                    "ed25519-sha256",
                ),
            ]),
            None,
        ),
        // Fresh t= and a far x=.
        (
            "t and x",
            Mail::alice().sigs(vec![Sig::gov().tag("t", "{NOW}").tag("x", "{NOW_PLUS_1D}")]),
            None,
        ),
        // Unknown tags and z= are ignored.
        (
            "unknown tags",
            Mail::alice().sigs(vec![
                Sig::gov()
                    .tag("xx", "future")
                    .tag("z", "From:=20<bob@interieur.gouv.fr>"),
            ]),
            None,
        ),
        // Auto-Submitted: no is a person.
        (
            "auto-submitted no",
            Mail::alice().push("Auto-Submitted: no"),
            None,
        ),
        // QP body with a soft line break inside the code.
        (
            "quoted-printable body",
            Mail::alice()
                .push("Content-Transfer-Encoding: quoted-printable")
                .body("Code : {SESSION_CODE_QP}\r\n\r\nMerci=2E\r\n"),
            None,
        ),
        // Sender equal to From.
        (
            "sender equals from",
            Mail::alice().push("Sender: alice@INTERIEUR.gouv.fr"),
            None,
        ),
    ];
    table(
        &world,
        rows.into_iter()
            .map(|(a, m, r)| (a, fill_time(m), r))
            .collect(),
    )
    .await;
}

/// `{NOW}`/`{NOW_PLUS_1D}` for rows that need them (Vars knows `{UNIX_PLUS_1D}` only), and
/// `{SESSION_CODE_QP}`: the code cut by a quoted-printable soft line break.
fn fill_time(mut m: Mail) -> Mail {
    let now = Utc::now().timestamp();
    for s in &mut m.sigs {
        for (_, v) in &mut s.spec.tags {
            *v = v
                .replace("{NOW_PLUS_1D}", &(now + 86400).to_string())
                .replace("{NOW}", &now.to_string());
        }
    }
    m.body = m.body.replace(
        "{SESSION_CODE_QP}",
        "{SESSION_CODE_HEAD}=\r\n{SESSION_CODE_REST}",
    );
    m
}

#[tokio::test]
async fn header_structure_reasons() {
    let world = World::start().await;
    let long = format!("X-Long: {}", "a".repeat(1000));
    let rows = vec![
        ("nul in header", Mail::alice().push("X-Note: a\u{0}b"), Some(Reason::HeaderMalformed)),
        ("8-bit in header", Mail::alice().push("X-Note: caf\u{e9}"), Some(Reason::HeaderMalformed)),
        ("line without colon", Mail::alice().push("Not a header line"), Some(Reason::HeaderMalformed)),
        ("space before colon", Mail::alice().push("Subject : x"), Some(Reason::HeaderMalformed)),
        ("line over 998", Mail::alice().push(&long), Some(Reason::HeaderMalformed)),
        ("whitespace-only continuation", Mail::alice().push("X-Note: a\r\n \r\n b"), Some(Reason::HeaderMalformed)),
        ("no From", Mail::alice().without("from"), Some(Reason::HeaderFromCount)),
        // Two From fields, the bottom one signed (h=from picks bottom-up).
        (
            "two from, one signed",
            Mail::alice().insert(0, "From: <attacker@evil.example>").sigs(vec![Sig::gov()]),
            Some(Reason::HeaderFromCount),
        ),
        // h= lists from twice so that both are signed.
        (
            "two from, h lists from twice",
            Mail::alice()
                .insert(0, "From: <alice@interieur.gouv.fr>")
                .sigs(vec![Sig::gov().h(&["from", "from", "to", "subject", "date"])]),
            Some(Reason::HeaderFromCount),
        ),
        ("FROM in upper case twice", Mail::alice().push("FROM: <bob@interieur.gouv.fr>"), Some(Reason::HeaderFromCount)),
        (
            "two mailboxes in From",
            Mail::alice().set("from", "From: alice@interieur.gouv.fr, bob@interieur.gouv.fr"),
            Some(Reason::HeaderFromSyntax),
        ),
        (
            "display name with @",
            Mail::alice().set("from", "From: \"bob@interieur.gouv.fr\" <alice@interieur.gouv.fr>"),
            Some(Reason::HeaderFromSyntax),
        ),
        ("comment in From", Mail::alice().set("from", "From: alice@interieur.gouv.fr (Alice)"), Some(Reason::HeaderFromSyntax)),
        ("duplicate Cc", Mail::alice().push("Cc: a@b.fr").push("Cc: c@d.fr"), Some(Reason::HeaderDuplicate)),
        ("duplicate References", Mail::alice().push("References: <x@y.fr>"), Some(Reason::HeaderDuplicate)),
        ("duplicate In-Reply-To", Mail::alice().insert(0, "In-Reply-To: <x@y.fr>"), Some(Reason::HeaderDuplicate)),
        ("duplicate Sender", Mail::alice().push("Sender: alice@interieur.gouv.fr").push("Sender: alice@interieur.gouv.fr"), Some(Reason::HeaderDuplicate)),
        ("sender differs", Mail::alice().push("Sender: bob@interieur.gouv.fr"), Some(Reason::HeaderSenderMismatch)),
        ("sender unparsable", Mail::alice().push("Sender: bob"), Some(Reason::HeaderSenderMismatch)),
        ("resent-from", Mail::alice().push("Resent-From: alice@interieur.gouv.fr"), Some(Reason::HeaderResent)),
        ("resent-message-id", Mail::alice().push("resent-message-id: <x@y.fr>"), Some(Reason::HeaderResent)),
        ("auto-submitted", Mail::alice().push("Auto-Submitted: auto-replied"), Some(Reason::MessageAutoSubmitted)),
        ("precedence list", Mail::alice().push("Precedence: list"), Some(Reason::MessageAutoSubmitted)),
        (
            "delivery report",
            Mail::alice()
                .set("content-type", "Content-Type: multipart/report; report-type=delivery-status; boundary=\"b\"")
                .body("--b\r\nContent-Type: text/plain\r\n\r\nCode : {SESSION_CODE}\r\n--b--\r\n"),
            Some(Reason::MessageReport),
        ),
        (
            "calendar reply",
            Mail::alice().set("content-type", "Content-Type: text/calendar; method=REPLY; charset=utf-8"),
            Some(Reason::MessageReport),
        ),
        (
            "read receipt inside a mixed mail",
            Mail::alice()
                .set("content-type", "Content-Type: multipart/mixed; boundary=\"b\"")
                .body("--b\r\nContent-Type: text/plain\r\n\r\nCode : {SESSION_CODE}\r\n--b\r\nContent-Type: message/disposition-notification\r\n\r\nReporting-UA: x\r\n--b--\r\n"),
            Some(Reason::MessageReport),
        ),
        // Forged results headers never count (the mail is genuine otherwise: accepted).
        (
            "forged authentication-results are ignored",
            Mail::alice().push("Authentication-Results: verify.example.gouv.fr; dkim=fail; spf=fail"),
            None,
        ),
    ];
    table(&world, rows).await;
}

#[tokio::test]
async fn identity_and_binding_reasons() {
    let world = World::start().await;
    let rows = vec![
        // Insider: envelope his, From Alice's (the ministry MTA signs for any user).
        (
            "insider envelope",
            Mail::alice().envelope("bob@interieur.gouv.fr"),
            Some(Reason::EnvelopeMismatch),
        ),
        // Insider confirming Alice's challenge with his own mail.
        (
            "insider as himself",
            Mail::alice()
                .envelope("bob@interieur.gouv.fr")
                .set("from", "From: Bob Durand <bob@interieur.gouv.fr>"),
            Some(Reason::BindingMismatch),
        ),
        // Sub-address in From only.
        (
            "sub-address in From",
            Mail::alice().set("from", "From: <alice+x@interieur.gouv.fr>"),
            Some(Reason::BindingMismatch),
        ),
        // Token only in an unsigned To.
        (
            "token in unsigned To",
            Mail::alice()
                .set("references", "References: <other@interieur.gouv.fr>")
                .set("in-reply-to", "In-Reply-To: <{CHALLENGE_MSGID}>")
                .sigs(vec![Sig::gov().h(&[
                    "from",
                    "subject",
                    "date",
                    "message-id",
                    "references",
                ])]),
            Some(Reason::BindingTokenUnsigned),
        ),
        // Token only in an extra unsigned header.
        (
            "token in an unsigned X- header",
            Mail::alice()
                .set("to", "To: <someone@verify.example.gouv.fr>")
                .set("references", "References: <other@interieur.gouv.fr>")
                .push("X-Token: confirm+{TOKEN}@verify.example.gouv.fr")
                .sigs(vec![Sig::gov().h(&[
                    "from",
                    "to",
                    "subject",
                    "date",
                    "message-id",
                    "references",
                ])]),
            Some(Reason::BindingTokenUnsigned),
        ),
        (
            "not a reply",
            Mail::alice()
                .without("in-reply-to")
                .without("references")
                .sigs(vec![Sig::gov().h(&["from", "to", "subject", "date"])]),
            Some(Reason::BindingNotAReply),
        ),
        (
            "reply to another mail",
            Mail::alice()
                .set("in-reply-to", "In-Reply-To: <x@y.fr>")
                .set("references", "References: <x@y.fr>"),
            Some(Reason::BindingNotAReply),
        ),
        (
            "no session code",
            Mail::alice().body("Oui c'est moi.\r\n"),
            Some(Reason::BindingSessionCode),
        ),
        // Code only in an unsigned Subject, empty body.
        (
            "code in unsigned subject",
            Mail::alice()
                .set("subject", "Subject: Code {SESSION_CODE}")
                .body("")
                .sigs(vec![Sig::gov().h(&[
                    "from",
                    "to",
                    "date",
                    "message-id",
                    "in-reply-to",
                    "references",
                ])]),
            Some(Reason::BindingSessionCode),
        ),
        (
            "old signed date",
            Mail::alice().set("date", "Date: Mon, 1 Jan 2024 10:00:00 +0000"),
            Some(Reason::DateStale),
        ),
        (
            "date two hours ahead",
            Mail::alice().set(
                "date",
                &format!(
                    "Date: {}",
                    (Utc::now() + ChronoDuration::hours(2)).to_rfc2822()
                ),
            ),
            Some(Reason::DateStale),
        ),
        (
            "unreadable signed date",
            Mail::alice().set("date", "Date: yesterday"),
            Some(Reason::DateStale),
        ),
        // Unsigned old Date, no t=: the signed content has no date; accepted.
        (
            "unsigned old date",
            Mail::alice()
                .set("date", "Date: Mon, 1 Jan 2024 10:00:00 +0000")
                .sigs(vec![Sig::gov().h(&[
                    "from",
                    "to",
                    "subject",
                    "message-id",
                    "in-reply-to",
                    "references",
                ])]),
            None,
        ),
        // Unsigned Date, old t=.
        (
            "old t=",
            Mail::alice().sigs(vec![
                Sig::gov()
                    .h(&[
                        "from",
                        "to",
                        "subject",
                        "message-id",
                        "in-reply-to",
                        "references",
                    ])
                    .tag("t", "1700000000"),
            ]),
            Some(Reason::DateStale),
        ),
    ];
    table(&world, rows).await;
}

#[tokio::test]
async fn dkim_reasons_and_tag_tricks() {
    let world = World::start().await;
    let tampered = {
        let mut m = Mail::alice();
        m.append_body = "P.S. extra line\r\n".into();
        m
    };
    let std_raw = "v=1; a=rsa-sha256; c=relaxed/relaxed; d=interieur.gouv.fr; s=s2024; h=from:to:subject:date:message-id:in-reply-to:references; bh={BH}; b={B}";
    let rows = vec![
        (
            "no signature",
            Mail::alice().sigs(vec![]),
            Some(Reason::DkimNone),
        ),
        (
            "body changed after signing",
            tampered,
            Some(Reason::DkimFail),
        ),
        (
            "attacker's key under the ministry's selector",
            Mail::alice().sigs(vec![Sig::with(
                "evil-rsa2048",
                "interieur.gouv.fr",
                "s2024",
                "rsa-sha256",
            )]),
            Some(Reason::DkimFail),
        ),
        (
            "revoked key",
            Mail::alice().sigs(vec![Sig::with(
                "gov-revoked",
                "interieur.gouv.fr",
                "revoked",
                "rsa-sha256",
            )]),
            Some(Reason::DkimFail),
        ),
        (
            "key restricted to sha1",
            Mail::alice().sigs(vec![Sig::with(
                "gov-sha1only",
                "interieur.gouv.fr",
                "sha1only",
                "rsa-sha256",
            )]),
            Some(Reason::DkimFail),
        ),
        (
            "key for another service",
            Mail::alice().sigs(vec![Sig::with(
                "gov-svc",
                "interieur.gouv.fr",
                "svc",
                "rsa-sha256",
            )]),
            Some(Reason::DkimFail),
        ),
        (
            "no key published",
            Mail::alice().sigs(vec![Sig::with(
                "gov-rsa2048",
                "interieur.gouv.fr",
                "nosuch",
                "rsa-sha256",
            )]),
            Some(Reason::DkimFail),
        ),
        (
            "testing key",
            Mail::alice().sigs(vec![Sig::with(
                "gov-testing",
                "interieur.gouv.fr",
                "testing",
                "rsa-sha256",
            )]),
            Some(Reason::DkimTesting),
        ),
        (
            "rsa-sha1",
            Mail::alice().sigs(vec![Sig::with(
                "gov-rsa2048",
                "interieur.gouv.fr",
                "s2024",
                "rsa-sha1",
            )]),
            Some(Reason::DkimWeak),
        ),
        (
            "512-bit key",
            Mail::alice().sigs(vec![Sig::with(
                "gov-rsa512",
                "interieur.gouv.fr",
                "weak512",
                "rsa-sha256",
            )]),
            Some(Reason::DkimWeak),
        ),
        (
            "l= body length",
            Mail::alice().sigs(vec![Sig::gov().tag("l", "20")]),
            Some(Reason::DkimPartial),
        ),
        (
            "l=0",
            Mail::alice().sigs(vec![Sig::gov().tag("l", "0")]),
            Some(Reason::DkimPartial),
        ),
        (
            "h= without from",
            Mail::alice().sigs(vec![Sig::gov().h(&["to", "subject", "date", "message-id"])]),
            Some(Reason::DkimFromUnsigned),
        ),
        (
            "expired x=",
            Mail::alice().sigs(vec![
                Sig::gov().tag("t", "1700000000").tag("x", "1700000100"),
            ]),
            Some(Reason::DkimFail),
        ),
        (
            "t= a day ahead",
            Mail::alice().sigs(vec![Sig::gov().tag("t", "{UNIX_PLUS_1D}")]),
            Some(Reason::DkimFail),
        ),
        // Tag tricks.
        (
            "d= twice (aligned last)",
            Mail::alice().sigs(vec![Sig::gov().raw(&std_raw.replace(
                "d=interieur.gouv.fr;",
                "d=evil.example; d=interieur.gouv.fr;",
            ))]),
            Some(Reason::DkimFail),
        ),
        (
            "h= twice",
            Mail::alice().sigs(vec![
                Sig::gov().raw(&std_raw.replace("h=from:", "h=subject; h=from:")),
            ]),
            Some(Reason::DkimFail),
        ),
        (
            "v=2",
            Mail::alice().sigs(vec![Sig::gov().raw(&std_raw.replace("v=1;", "v=2;"))]),
            Some(Reason::DkimFail),
        ),
        (
            "folded tags (accepted)",
            Mail::alice().sigs(vec![
                Sig::gov().raw(
                    &std_raw
                        .replace("; h=", ";\r\n\th =")
                        .replace("; bh=", ";\r\n bh = "),
                ),
            ]),
            None,
        ),
        (
            "unaligned d= with i= of the ministry (i= outside d=: fails)",
            Mail::alice().via(SHARED.0, SHARED.1).sigs(vec![
                Sig::with("evil-rsa2048", "evil.example", "sel", "rsa-sha256")
                    .tag("i", "alice@interieur.gouv.fr"),
            ]),
            Some(Reason::DkimFail),
        ),
        // Sibling ministry: ville.gouv.fr's valid signature on a From of interieur.gouv.fr.
        (
            "sibling ministry signature",
            Mail::alice().via(SHARED.0, SHARED.1).sigs(vec![Sig::with(
                "ville-rsa2048",
                "ville.gouv.fr",
                "mail",
                "rsa-sha256",
            )]),
            Some(Reason::DkimUnaligned),
        ),
        // Sub-domain signature under strict alignment.
        (
            "sub-domain under strict alignment",
            Mail::alice().sigs(vec![Sig::with(
                "dgsi-rsa2048",
                "dgsi.interieur.gouv.fr",
                "s2024",
                "rsa-sha256",
            )]),
            Some(Reason::DkimUnaligned),
        ),
        // A broken aligned signature next to a valid unaligned one.
        (
            "broken aligned plus valid unaligned",
            Mail::alice().via(SHARED.0, SHARED.1).sigs(vec![
                Sig::with("evil-rsa2048", "interieur.gouv.fr", "s2024", "rsa-sha256"),
                Sig::with("evil-rsa2048", "evil.example", "sel", "rsa-sha256"),
            ]),
            Some(Reason::DkimFail),
        ),
        // Weak aligned signature next to a good one: the good one confirms.
        (
            "weak plus good aligned",
            Mail::alice().sigs(vec![
                Sig::with("gov-rsa512", "interieur.gouv.fr", "weak512", "rsa-sha256"),
                Sig::gov(),
            ]),
            None,
        ),
    ];
    table(&world, rows).await;
}

#[tokio::test]
async fn replays_and_spf() {
    let world = World::start().await;
    // Alice's genuine mail to the attacker, signed by her ministry.
    let original_headers: Vec<String> = [
        "From: Alice Martin <alice@interieur.gouv.fr>",
        "To: Jean Attaquant <attacker@evil.example>",
        "Subject: RE: Invitation",
        "Date: {DATE_MINUS_10M}",
        "Message-ID: <orig-1@interieur.gouv.fr>",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let original_body = "Code : {SESSION_CODE}\r\n\r\nVolontiers.\r\n".to_string();
    let replay_sig = Sig {
        over: Some((original_headers.clone(), original_body.clone())),
        ..Sig::gov().h(&[
            "from",
            "to",
            "subject",
            "date",
            "message-id",
            "mime-version",
            "content-type",
        ])
    };
    let replay = |extra: &[&str]| {
        let mut m = Mail::alice().via(SHARED.0, SHARED.1);
        m.headers = original_headers.clone();
        for e in extra {
            m.headers.push(e.to_string());
        }
        m.body = original_body.clone();
        m.sigs = vec![replay_sig.clone()];
        m
    };
    let rows = vec![
        // Through the SPF-authorised shared relay, the token only in an unsigned Cc.
        (
            "replay via shared relay, token in unsigned Cc",
            replay(&[
                "Cc: <confirm+{TOKEN}@verify.example.gouv.fr>",
                "In-Reply-To: <{CHALLENGE_MSGID}>",
            ]),
            Some(Reason::BindingTokenUnsigned),
        ),
        // The token in unsigned References (a reply marker the attacker adds).
        (
            "replay via shared relay, token in unsigned References",
            replay(&["References: <{CHALLENGE_MSGID}>"]),
            Some(Reason::BindingTokenUnsigned),
        ),
        // From the attacker's own server: SPF fails first.
        (
            "replay from the attacker's IP",
            {
                let mut m = replay(&[
                    "Cc: <confirm+{TOKEN}@verify.example.gouv.fr>",
                    "In-Reply-To: <{CHALLENGE_MSGID}>",
                ]);
                m.client_ip = ATTACKER.0.into();
                m.helo = ATTACKER.1.into();
                m
            },
            Some(Reason::SpfFail),
        ),
        // Another allowed ministry's server sending as Alice.
        (
            "ville's server as alice",
            Mail::alice().via(VILLE.0, VILLE.1),
            Some(Reason::SpfFail),
        ),
        // mallory of ville.gouv.fr confirming Alice's challenge with his own genuine mail.
        (
            "mallory's own genuine mail",
            Mail::alice()
                .via(VILLE.0, VILLE.1)
                .envelope("mallory@ville.gouv.fr")
                .set("from", "From: <mallory@ville.gouv.fr>")
                .sigs(vec![Sig::with(
                    "ville-rsa2048",
                    "ville.gouv.fr",
                    "mail",
                    "rsa-sha256",
                )]),
            Some(Reason::BindingMismatch),
        ),
        (
            "unlisted ministry server",
            Mail::alice().via("127.0.0.99", "smtp2.interieur.gouv.fr"),
            Some(Reason::SpfFail),
        ),
    ];
    table(&world, rows).await;

    // SPF records changed per row.
    let spf_rows: Vec<(&str, Option<&str>, Reason)> = vec![
        (
            "softfail",
            Some("v=spf1 ip4:127.0.0.1 ~all"),
            Reason::SpfSoftfail,
        ),
        ("neutral", Some("v=spf1 ?all"), Reason::SpfNeutral),
        ("none", None, Reason::SpfNone),
        (
            "permerror",
            Some("v=spf1 include:nosuch.example -all"),
            Reason::SpfPermerror,
        ),
        ("fail", Some("v=spf1 -all"), Reason::SpfFail),
    ];
    for (n, (name, record, want)) in spf_rows.into_iter().enumerate() {
        world.reset_dns();
        world.dns.remove("interieur.gouv.fr", "TXT");
        if let Some(r) = record {
            world.dns.add("interieur.gouv.fr", "TXT", r);
        }
        let v = run(&world, &Mail::alice(), 100 + n as u32).await;
        assert_eq!(
            v.decision,
            Decision::Refuse(want),
            "{name}: {}",
            common::show_verdict(&v)
        );
    }
    world.reset_dns();
}

#[tokio::test]
async fn configuration_changes_the_rules() {
    let mut world = World::start().await;

    // Relaxed alignment: a sub-domain of the same organisation aligns, a sibling does not.
    world.policy.alignment = Alignment::Relaxed;
    let sub = Mail::alice().sigs(vec![Sig::with(
        "dgsi-rsa2048",
        "dgsi.interieur.gouv.fr",
        "s2024",
        "rsa-sha256",
    )]);
    assert_eq!(run(&world, &sub, 1).await.decision, Decision::Accept);
    let sibling = Mail::alice().via(SHARED.0, SHARED.1).sigs(vec![Sig::with(
        "ville-rsa2048",
        "ville.gouv.fr",
        "mail",
        "rsa-sha256",
    )]);
    assert_eq!(
        run(&world, &sibling, 2).await.decision,
        Decision::Refuse(Reason::DkimUnaligned)
    );
    world.policy.alignment = Alignment::Strict;

    // A higher RSA minimum: the 1024-bit key becomes weak, the 2048-bit one still passes.
    world.policy.dkim_min_rsa_bits = 2048;
    let k1024 = Mail::alice().sigs(vec![Sig::with(
        "gov-rsa1024",
        "interieur.gouv.fr",
        "s1024",
        "rsa-sha256",
    )]);
    assert_eq!(
        run(&world, &k1024, 3).await.decision,
        Decision::Refuse(Reason::DkimWeak)
    );
    assert_eq!(
        run(&world, &Mail::alice(), 4).await.decision,
        Decision::Accept
    );
    world.policy.dkim_min_rsa_bits = 1024;

    // Reply and session code not required.
    world.confirm.require_reply = false;
    world.confirm.require_session_code = false;
    let bare = Mail::alice()
        .without("in-reply-to")
        .without("references")
        .body("Oui.\r\n");
    let v = run(&world, &bare, 5).await;
    assert_eq!(v.decision, Decision::Accept, "{}", common::show_verdict(&v));
    assert!(
        v.checks
            .iter()
            .any(|c| c.name == "binding.not_a_reply" && c.result == "not_required")
    );
    world.confirm.require_reply = true;
    world.confirm.require_session_code = true;
    assert_eq!(
        run(&world, &bare, 6).await.decision,
        Decision::Refuse(Reason::BindingNotAReply)
    );

    // Shorter maximum age.
    world.confirm.max_message_age = std::time::Duration::from_secs(60);
    let older = Mail::alice().set("date", "Date: {DATE_MINUS_10M}");
    assert_eq!(
        run(&world, &older, 7).await.decision,
        Decision::Refuse(Reason::DateStale)
    );
    world.confirm.max_message_age = std::time::Duration::from_secs(48 * 3600);
    assert_eq!(run(&world, &older, 8).await.decision, Decision::Accept);

    // require_iprev: the loopback client's reverse name is `localhost.` (hickory answers
    // 127.0.0.0/8 itself), which does not resolve back to 127.0.0.25: iprev fails.
    world.policy.require_iprev = true;
    let v = run(&world, &Mail::alice(), 9).await;
    assert_eq!(
        v.decision,
        Decision::Refuse(Reason::IprevFail),
        "{}",
        common::show_verdict(&v)
    );
    world.policy.require_iprev = false;

    // A domain denied after its challenge was issued no longer confirms.
    world.policy.denied_domains = vec![domain("interieur.gouv.fr")];
    let v = run(&world, &Mail::alice(), 12).await;
    assert_eq!(
        v.decision,
        Decision::Refuse(Reason::DomainNotAllowed),
        "{}",
        common::show_verdict(&v)
    );
    world.policy.denied_domains.clear();

    // A per-domain override without DKIM: SPF pass and iprev become mandatory.
    world.policy.domains = vec![DomainOverride {
        domain: domain("interieur.gouv.fr"),
        require_dkim: false,
        require_spf: true,
        require_iprev: true,
        require_dnssec: false,
        envelope_tag: None,
        dkim_domains: Vec::new(),
    }];
    let unsigned = Mail::alice().sigs(vec![]);
    let v = run(&world, &unsigned, 10).await;
    assert_eq!(
        v.decision,
        Decision::Refuse(Reason::IprevFail),
        "{}",
        common::show_verdict(&v)
    );
    world.policy.domains.clear();
    assert_eq!(
        run(&world, &unsigned, 11).await.decision,
        Decision::Refuse(Reason::DkimNone)
    );
}

/// Forward-confirmed reverse DNS against the test server: the client address is a
/// documentation address (192.0.2.0/24) used only as data in DNS queries, never contacted.
#[tokio::test]
async fn iprev_through_the_test_server() {
    let mut world = World::start().await;
    world.policy.require_iprev = true;
    let setup = |w: &World| {
        w.reset_dns();
        w.dns
            .add("25.2.0.192.in-addr.arpa", "PTR", "out.interieur.gouv.fr");
        w.dns.add("out.interieur.gouv.fr", "A", "192.0.2.25");
        w.dns
            .replace("interieur.gouv.fr", "TXT", "v=spf1 ip4:192.0.2.25 -all");
    };
    let mail = Mail::alice().via("192.0.2.25", "out.interieur.gouv.fr");

    setup(&world);
    let v = run(&world, &mail, 1).await;
    assert_eq!(v.decision, Decision::Accept, "{}", common::show_verdict(&v));
    assert!(
        v.checks
            .iter()
            .any(|c| c.name == "iprev" && c.result == "pass")
    );

    // The forward name points elsewhere.
    setup(&world);
    world
        .dns
        .replace("out.interieur.gouv.fr", "A", "192.0.2.26");
    let v = run(&world, &mail, 2).await;
    assert_eq!(
        v.decision,
        Decision::Refuse(Reason::IprevFail),
        "{}",
        common::show_verdict(&v)
    );

    // No PTR at all.
    setup(&world);
    world.dns.remove("25.2.0.192.in-addr.arpa", "PTR");
    let v = run(&world, &mail, 3).await;
    assert_eq!(
        v.decision,
        Decision::Refuse(Reason::IprevFail),
        "{}",
        common::show_verdict(&v)
    );

    // SERVFAIL on the reverse zone: temporary.
    setup(&world);
    world.dns.servfail("2.0.192.in-addr.arpa");
    let v = run(&world, &mail, 4).await;
    assert_eq!(
        v.decision,
        Decision::Refuse(Reason::DnsTemperror),
        "{}",
        common::show_verdict(&v)
    );

    // Not required: the same SERVFAIL does not matter.
    world.policy.require_iprev = false;
    let v = run(&world, &mail, 5).await;
    assert_eq!(v.decision, Decision::Accept, "{}", common::show_verdict(&v));
    assert!(
        v.checks
            .iter()
            .any(|c| c.name == "iprev" && c.result == "temperror")
    );
}

#[tokio::test]
async fn without_a_challenge_bindings_are_skipped() {
    let world = World::start().await;
    let now = Utc::now();
    let vars = Vars::new(now, 1);
    let tx = Mail::alice().transaction(&vars, now);
    let v = world.verifier().verify_message(&tx, None, now).await;
    assert_eq!(v.decision, Decision::Accept, "{}", common::show_verdict(&v));
    for name in [
        "binding.mismatch",
        "binding.token_unsigned",
        "binding.not_a_reply",
        "binding.session_code",
    ] {
        assert!(
            v.checks
                .iter()
                .any(|c| c.name == name && c.result == "skipped"),
            "{name}"
        );
    }
    // Structural faults still refuse.
    let tx = Mail::alice()
        .push("From: <bob@interieur.gouv.fr>")
        .transaction(&vars, now);
    let v = world.verifier().verify_message(&tx, None, now).await;
    assert_eq!(v.decision, Decision::Refuse(Reason::HeaderFromCount));
}

#[tokio::test]
async fn evidence_of_an_accepted_mail() {
    let world = World::start().await;
    let now = Utc::now();
    let vars = Vars::new(now, 1);
    let tx = Mail::alice().transaction(&vars, now);
    let v = world
        .verifier()
        .verify(&tx, &alice_challenge(&vars), now)
        .await;
    assert_eq!(v.decision, Decision::Accept);
    let e = v.evidence.expect("evidence");
    assert_eq!(e.from, "alice@interieur.gouv.fr");
    assert_eq!(e.mail_from, "alice@interieur.gouv.fr");
    assert_eq!(e.dkim_domain, "interieur.gouv.fr");
    assert_eq!(e.dkim_selector, "s2024");
    assert_eq!(e.dkim_algorithm, "rsa-sha256");
    assert_eq!(e.spf, "pass");
    assert_eq!(e.client_ip, "127.0.0.25");
    assert!(e.headers.contains("DKIM-Signature:"));
    assert_eq!(v.from.as_deref(), Some("alice@interieur.gouv.fr"));
    assert_eq!(v.challenge_id.as_deref(), Some("ch-test"));
    assert!(
        v.message_id
            .is_some_and(|m| m.contains("@interieur.gouv.fr"))
    );
    let _ = STD_H;
}

/// Hundreds of signature fields cost no more than [`MAX_SIGNATURES`]: only the top-most are
/// considered, so junk added on top of a genuine signature can only hurt its sender.
#[tokio::test]
async fn signature_count_and_h_length_are_bounded() {
    use gatekeeper::verify::dkim::{MAX_SIGNATURES, MAX_SIGNED_NAMES};
    let world = World::start().await;
    let junk = || Sig::with("evil-rsa2048", "interieur.gouv.fr", "s2024", "rsa-sha256");

    // The genuine signature first, then junk: accepted.
    let mut sigs = vec![Sig::gov()];
    sigs.extend((0..MAX_SIGNATURES + 4).map(|_| junk()));
    let v = run(&world, &Mail::alice().sigs(sigs), 1).await;
    assert_eq!(v.decision, Decision::Accept, "{}", common::show_verdict(&v));

    // 200 junk fields on top push the genuine one out of consideration.
    let mut sigs: Vec<Sig> = (0..200).map(|_| junk()).collect();
    sigs.push(Sig::gov());
    let started = std::time::Instant::now();
    let v = run(&world, &Mail::alice().sigs(sigs), 2).await;
    assert_eq!(
        v.decision,
        Decision::Refuse(Reason::DkimFail),
        "{}",
        common::show_verdict(&v)
    );
    eprintln!("200 signatures decided in {:?}", started.elapsed());

    // An h= longer than the bound fails even though it verifies.
    let mut names: Vec<&str> = vec!["from", "to", "subject", "date", "in-reply-to", "references"];
    names.extend(std::iter::repeat_n("x-pad", MAX_SIGNED_NAMES));
    let v = run(&world, &Mail::alice().sigs(vec![Sig::gov().h(&names)]), 3).await;
    assert_eq!(
        v.decision,
        Decision::Refuse(Reason::DkimFail),
        "{}",
        common::show_verdict(&v)
    );
}

/// Two key records at one selector (a factorable 512-bit key published next to the real
/// one): which key verified would be undefined, so the signature is refused.
#[tokio::test]
async fn two_key_records_at_one_selector_are_refused() {
    let world = World::start().await;
    assert_eq!(
        run(&world, &Mail::alice(), 1).await.decision,
        Decision::Accept
    );
    let weak = common::corpus::fill_pubkeys("v=DKIM1; k=rsa; p={PUBKEY:gov-rsa512}");
    world
        .dns
        .add("s2024._domainkey.interieur.gouv.fr", "TXT", &weak);
    let v = run(&world, &Mail::alice(), 2).await;
    assert_eq!(
        v.decision,
        Decision::Refuse(Reason::DkimFail),
        "{}",
        common::show_verdict(&v)
    );
    // A record that is not a key next to the key is harmless.
    world.reset_dns();
    world.dns.add(
        "s2024._domainkey.interieur.gouv.fr",
        "TXT",
        "some other text",
    );
    assert_eq!(
        run(&world, &Mail::alice(), 3).await.decision,
        Decision::Accept
    );
}

/// Random one-octet changes to a genuine mail (replace, insert, delete; CR, LF, NUL, 8-bit
/// and printable octets): the verifier always finishes with every check listed, and it
/// accepts only changes that DKIM's relaxed canonicalization makes invisible (whitespace and
/// header-name case), never a change of content.
#[tokio::test]
async fn random_mutations_of_a_genuine_mail() {
    let world = World::start().await;
    let now = Utc::now();
    let vars = Vars::new(now, 7);
    let mail = Mail::alice();
    let original = mail.build(&vars);
    let normal = |m: &[u8]| -> Vec<u8> {
        m.iter()
            .filter(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
            .map(u8::to_ascii_lowercase)
            .collect()
    };
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let alphabet: &[u8] = b"\r\n\0\t :;=<>@.aZ9\x80\xff";
    let verifier = world.verifier();
    let mut accepted = 0;
    for i in 0..200 {
        let mut m = original.clone();
        let pos = (next() as usize) % m.len();
        let byte = alphabet[(next() as usize) % alphabet.len()];
        match next() % 3 {
            0 => m[pos] = byte,
            1 => m.insert(pos, byte),
            _ => {
                m.remove(pos);
            }
        }
        let mut tx = mail.transaction(&vars, now);
        tx.message = m.clone();
        let v = verifier.verify(&tx, &alice_challenge(&vars), now).await;
        assert_eq!(
            v.checks.len(),
            gatekeeper::policy::CheckResults::all_pass().checks().len()
        );
        if v.decision == Decision::Accept {
            accepted += 1;
            assert_eq!(
                normal(&m),
                normal(&original),
                "mutation {i} at {pos} accepted: {:?}",
                String::from_utf8_lossy(&m)
            );
        }
    }
    eprintln!("{accepted} of 200 mutations were canonicalization-neutral and accepted");
}

/// `Verifier::new` from the shipped configuration, pointed at the test DNS server.
#[tokio::test]
async fn verifier_from_the_shipped_config() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/gatekeeper.toml");
    let mut cfg = gatekeeper::config::Config::load(&path).expect("shipped config loads");
    let world = World::start().await;
    cfg.dns.nameservers = vec![world.dns.addr];
    cfg.dns.timeout = std::time::Duration::from_secs(3);
    let verifier = gatekeeper::verify::Verifier::new(&cfg).expect("resolver");
    let now = Utc::now();
    let vars = Vars::new(now, 1);
    let v = verifier
        .verify(
            &Mail::alice().transaction(&vars, now),
            &alice_challenge(&vars),
            now,
        )
        .await;
    assert_eq!(v.decision, Decision::Accept, "{}", common::show_verdict(&v));
    let tx = Mail::alice().body("Oui.\r\n").transaction(&vars, now);
    let v = verifier.verify(&tx, &alice_challenge(&vars), now).await;
    assert_eq!(v.decision, Decision::Refuse(Reason::BindingSessionCode));
}
