//! Table tests of [`decide`](super::decide): one row per reason, then the precedence rows.

use super::*;

fn refuse(r: Reason) -> Decision {
    Decision::Refuse(r)
}

/// One row per reason code the verifier can produce, all else passing.
#[test]
fn one_row_per_reason() {
    type Edit = fn(&mut CheckResults);
    let rows: &[(Edit, Reason)] = &[
        (
            |r| r.header.malformed = Outcome::Fail,
            Reason::HeaderMalformed,
        ),
        (
            |r| r.header.from_count = Outcome::Fail,
            Reason::HeaderFromCount,
        ),
        (
            |r| r.header.from_syntax = Outcome::Fail,
            Reason::HeaderFromSyntax,
        ),
        (
            |r| r.header.duplicate = Outcome::Fail,
            Reason::HeaderDuplicate,
        ),
        (
            |r| r.header.sender_mismatch = Outcome::Fail,
            Reason::HeaderSenderMismatch,
        ),
        (|r| r.header.resent = Outcome::Fail, Reason::HeaderResent),
        (
            |r| r.header.auto_submitted = Outcome::Fail,
            Reason::MessageAutoSubmitted,
        ),
        (|r| r.header.report = Outcome::Fail, Reason::MessageReport),
        (
            |r| r.envelope_mismatch = Outcome::Fail,
            Reason::EnvelopeMismatch,
        ),
        (|r| r.spf = Spf::Fail, Reason::SpfFail),
        (|r| r.spf = Spf::SoftFail, Reason::SpfSoftfail),
        (|r| r.spf = Spf::Neutral, Reason::SpfNeutral),
        (|r| r.spf = Spf::None, Reason::SpfNone),
        (|r| r.spf = Spf::PermError, Reason::SpfPermerror),
        (|r| r.spf = Spf::TempError, Reason::SpfTemperror),
        (|r| r.dkim = Dkim::None, Reason::DkimNone),
        (|r| r.dkim = Dkim::Fail, Reason::DkimFail),
        (|r| r.dkim = Dkim::Unaligned, Reason::DkimUnaligned),
        (|r| r.dkim = Dkim::Weak, Reason::DkimWeak),
        (|r| r.dkim = Dkim::Testing, Reason::DkimTesting),
        (|r| r.dkim = Dkim::Partial, Reason::DkimPartial),
        (|r| r.dkim = Dkim::FromUnsigned, Reason::DkimFromUnsigned),
        (|r| r.dkim = Dkim::TempError, Reason::DkimTemperror),
        (|r| r.date = Outcome::Fail, Reason::DateStale),
        (
            |r| r.binding_mismatch = Outcome::Fail,
            Reason::BindingMismatch,
        ),
        (
            |r| r.token_unsigned = Outcome::Fail,
            Reason::BindingTokenUnsigned,
        ),
        (|r| r.not_a_reply = Outcome::Fail, Reason::BindingNotAReply),
        (
            |r| r.session_code = Outcome::Fail,
            Reason::BindingSessionCode,
        ),
    ];
    let req = Requirements::strict();
    assert_eq!(decide(&CheckResults::all_pass(), &req).0, Decision::Accept);
    for (edit, want) in rows {
        let mut r = CheckResults::all_pass();
        edit(&mut r);
        assert_eq!(decide(&r, &req).0, refuse(*want), "{want}");
    }
    // iprev only when required.
    let mut r = CheckResults::all_pass();
    r.iprev = Iprev::Fail;
    assert_eq!(decide(&r, &req).0, Decision::Accept);
    let with_iprev = Requirements { iprev: true, ..req };
    assert_eq!(decide(&r, &with_iprev).0, refuse(Reason::IprevFail));
    r.iprev = Iprev::TempError;
    assert_eq!(decide(&r, &req).0, Decision::Accept);
    assert_eq!(decide(&r, &with_iprev).0, refuse(Reason::DnsTemperror));
}

#[test]
fn checks_list_every_result() {
    let (_, checks) = decide(&CheckResults::all_pass(), &Requirements::strict());
    let names: Vec<&str> = checks.iter().map(|c| c.name).collect();
    assert_eq!(names.len(), 20);
    for n in [
        "header.malformed",
        "spf",
        "dkim",
        "iprev",
        "date.stale",
        "binding.session_code",
    ] {
        assert!(names.contains(&n), "{n}");
    }
    let mut r = CheckResults::all_pass();
    r.spf = Spf::SoftFail;
    r.dkim = Dkim::TempError;
    let (_, checks) = decide(&r, &Requirements::strict());
    let get = |n: &str| {
        checks
            .iter()
            .find(|c| c.name == n)
            .map(|c| c.result.clone())
    };
    assert_eq!(get("spf").as_deref(), Some("softfail"));
    assert_eq!(get("dkim").as_deref(), Some("temperror"));
}

/// Checks that could not run say `skipped` in the list, never `fail` or `unaligned`, and a
/// skipped required check never accepts: the primary reason is what stopped it, or the
/// fail-closed reason when nothing else failed.
#[test]
fn skipped_checks_are_listed_as_skipped() {
    type Edit = fn(&mut CheckResults);
    // The From header did not parse: alignment, the domain and the binding cannot run.
    let no_from: Edit = |r| {
        r.header.from_syntax = Outcome::Fail;
        r.envelope_mismatch = Outcome::Skipped;
        r.domain_allowed = Outcome::Skipped;
        r.dkim = Dkim::Skipped;
        r.binding_mismatch = Outcome::Skipped;
        r.token_unsigned = Outcome::Skipped;
        r.session_code = Outcome::Skipped;
        r.date = Outcome::Skipped;
    };
    // No signature: nothing binds the token, the code or the date.
    let unsigned: Edit = |r| {
        r.dkim = Dkim::None;
        r.token_unsigned = Outcome::Skipped;
        r.session_code = Outcome::Skipped;
        r.date = Outcome::Skipped;
    };
    let only_dkim: Edit = |r| r.dkim = Dkim::Skipped;
    let rows: &[(Edit, &[&str], Reason)] = &[
        (
            no_from,
            &[
                "envelope.mismatch",
                "domain.not_allowed",
                "dkim",
                "binding.mismatch",
                "binding.token_unsigned",
                "binding.session_code",
                "date.stale",
            ],
            Reason::HeaderFromSyntax,
        ),
        (
            unsigned,
            &[
                "binding.token_unsigned",
                "binding.session_code",
                "date.stale",
            ],
            Reason::DkimNone,
        ),
        (only_dkim, &["dkim"], Reason::DkimNone),
    ];
    for (edit, skipped, reason) in rows {
        let mut r = CheckResults::all_pass();
        edit(&mut r);
        let (decision, checks) = decide(&r, &Requirements::strict());
        assert_eq!(decision, refuse(*reason), "{skipped:?}");
        for c in &checks {
            let want_skipped = skipped.contains(&c.name);
            assert_eq!(
                c.result == "skipped",
                want_skipped,
                "{}: {} ({skipped:?})",
                c.name,
                c.result
            );
        }
    }
}

/// Several checks failing at once: the documented order decides.
#[test]
fn several_failures() {
    let req = Requirements::strict();
    let rows: &[(CheckResults, Reason)] = &[
        // Structure beats DNS trouble: a two-From mail is refused even when DNS is down.
        (
            CheckResults {
                header: HeaderChecks {
                    from_count: Outcome::Fail,
                    from_syntax: Outcome::Skipped,
                    ..HeaderChecks::all_pass()
                },
                spf: Spf::TempError,
                dkim: Dkim::TempError,
                ..CheckResults::all_pass()
            },
            Reason::HeaderFromCount,
        ),
        // Malformed first of all.
        (
            CheckResults {
                header: HeaderChecks {
                    malformed: Outcome::Fail,
                    from_count: Outcome::Fail,
                    ..HeaderChecks::all_pass()
                },
                ..CheckResults::all_pass()
            },
            Reason::HeaderMalformed,
        ),
        // A certain SPF fail beats a DKIM temporary error.
        (
            CheckResults {
                spf: Spf::Fail,
                dkim: Dkim::TempError,
                ..CheckResults::all_pass()
            },
            Reason::SpfFail,
        ),
        // A certain DKIM failure beats an SPF temporary error.
        (
            CheckResults {
                spf: Spf::TempError,
                dkim: Dkim::Unaligned,
                ..CheckResults::all_pass()
            },
            Reason::DkimUnaligned,
        ),
        // SPF before DKIM.
        (
            CheckResults {
                spf: Spf::Fail,
                dkim: Dkim::None,
                ..CheckResults::all_pass()
            },
            Reason::SpfFail,
        ),
        // Both temporary: SPF named first.
        (
            CheckResults {
                spf: Spf::TempError,
                dkim: Dkim::TempError,
                token_unsigned: Outcome::Skipped,
                ..CheckResults::all_pass()
            },
            Reason::SpfTemperror,
        ),
        // Temporary DKIM with bindings that could not run: 4xx, not a binding 5xx.
        (
            CheckResults {
                dkim: Dkim::TempError,
                token_unsigned: Outcome::Skipped,
                session_code: Outcome::Skipped,
                date: Outcome::Skipped,
                ..CheckResults::all_pass()
            },
            Reason::DkimTemperror,
        ),
        // ...but a binding that is certain (not a reply) is a 5xx even then.
        (
            CheckResults {
                dkim: Dkim::TempError,
                token_unsigned: Outcome::Skipped,
                not_a_reply: Outcome::Fail,
                ..CheckResults::all_pass()
            },
            Reason::BindingNotAReply,
        ),
        // Identity before authentication (the insider: envelope his, From Alice's).
        (
            CheckResults {
                envelope_mismatch: Outcome::Fail,
                binding_mismatch: Outcome::Fail,
                spf: Spf::Pass,
                ..CheckResults::all_pass()
            },
            Reason::BindingMismatch,
        ),
        // Authentication before content (a replay from an unlisted IP).
        (
            CheckResults {
                spf: Spf::Fail,
                token_unsigned: Outcome::Fail,
                date: Outcome::Fail,
                ..CheckResults::all_pass()
            },
            Reason::SpfFail,
        ),
        (
            CheckResults {
                header: HeaderChecks {
                    auto_submitted: Outcome::Fail,
                    report: Outcome::Fail,
                    ..HeaderChecks::all_pass()
                },
                ..CheckResults::all_pass()
            },
            Reason::MessageReport,
        ),
        (
            CheckResults {
                date: Outcome::Fail,
                token_unsigned: Outcome::Fail,
                session_code: Outcome::Fail,
                ..CheckResults::all_pass()
            },
            Reason::DateStale,
        ),
        (
            CheckResults {
                not_a_reply: Outcome::Fail,
                session_code: Outcome::Fail,
                ..CheckResults::all_pass()
            },
            Reason::BindingNotAReply,
        ),
    ];
    for (r, want) in rows {
        assert_eq!(decide(r, &req).0, refuse(*want), "{r:?}");
    }
}

/// Requirements turned off, and required checks that could not run (fail closed):
/// (requirements, results, decision).
#[test]
fn requirements_and_fail_closed() {
    let strict = Requirements::strict();
    // Reply and session code turned off: their failures do not count.
    let no_reply = Requirements {
        reply: false,
        session_code: false,
        ..strict
    };
    // A domain override without DKIM: DKIM results ignored, SPF and iprev decide.
    let no_dkim = Requirements {
        dkim: false,
        iprev: true,
        ..strict
    };
    let no_spf = Requirements {
        spf: false,
        ..strict
    };
    // No challenge (`gatekeeper verify` without a recipient): bindings skipped, ignored.
    let no_binding = Requirements {
        binding: false,
        ..strict
    };
    let pass = CheckResults::all_pass;
    let bindings_skipped = CheckResults {
        binding_mismatch: Outcome::Skipped,
        token_unsigned: Outcome::Skipped,
        not_a_reply: Outcome::Skipped,
        session_code: Outcome::Skipped,
        ..pass()
    };
    let rows: Vec<(Requirements, CheckResults, Decision)> = vec![
        (
            no_reply,
            CheckResults {
                not_a_reply: Outcome::NotRequired,
                session_code: Outcome::NotRequired,
                ..pass()
            },
            Decision::Accept,
        ),
        // Required but skipped never accepts.
        (
            strict,
            CheckResults {
                token_unsigned: Outcome::Skipped,
                ..pass()
            },
            refuse(Reason::BindingTokenUnsigned),
        ),
        (
            strict,
            CheckResults {
                binding_mismatch: Outcome::Skipped,
                ..pass()
            },
            refuse(Reason::BindingMismatch),
        ),
        (
            strict,
            CheckResults {
                spf: Spf::Skipped,
                ..pass()
            },
            refuse(Reason::SpfNone),
        ),
        (
            strict,
            CheckResults {
                dkim: Dkim::Skipped,
                ..pass()
            },
            refuse(Reason::DkimNone),
        ),
        // Date not measurable: not a refusal by itself.
        (
            strict,
            CheckResults {
                date: Outcome::Skipped,
                ..pass()
            },
            Decision::Accept,
        ),
        (
            no_dkim,
            CheckResults {
                dkim: Dkim::None,
                ..pass()
            },
            Decision::Accept,
        ),
        (
            no_dkim,
            CheckResults {
                dkim: Dkim::None,
                iprev: Iprev::Fail,
                ..pass()
            },
            refuse(Reason::IprevFail),
        ),
        (
            no_spf,
            CheckResults {
                spf: Spf::Fail,
                ..pass()
            },
            Decision::Accept,
        ),
        (no_binding, bindings_skipped.clone(), Decision::Accept),
        (strict, bindings_skipped, refuse(Reason::BindingMismatch)),
    ];
    for (req, r, want) in rows {
        assert_eq!(decide(&r, &req).0, want, "{req:?} {r:?}");
    }
}

#[test]
fn every_temporary_outcome_is_4xx() {
    use crate::reason::Class;
    for reason in [
        Reason::SpfTemperror,
        Reason::DkimTemperror,
        Reason::DnsTemperror,
    ] {
        assert_eq!(reason.class(), Class::Temporary);
    }
}

/// DNSSEC (SPEC §6 `[dns]`): a bogus answer, or one not secure under `require_dnssec`, is
/// `dns.temperror` before the checks' own temporary errors; certain failures still win; an
/// answer a domain does not require (DKIM waived, `Skipped`) does not count.
#[test]
fn dnssec_refusals() {
    use Dnssec::*;
    let with = |spf: Dnssec, dkim: Dnssec, required: bool| CheckResults {
        dnssec: DnssecChecks {
            spf,
            dkim,
            required,
        },
        ..CheckResults::all_pass()
    };
    let strict = Requirements::strict();
    let no_dkim = Requirements {
        dkim: false,
        iprev: true,
        ..strict
    };
    let rows: Vec<(&str, CheckResults, Requirements, Decision)> = vec![
        (
            "all secure",
            with(Secure, Secure, false),
            strict,
            Decision::Accept,
        ),
        (
            "all secure, required",
            with(Secure, Secure, true),
            strict,
            Decision::Accept,
        ),
        ("off", with(Off, Off, false), strict, Decision::Accept),
        (
            "insecure accepted",
            with(Insecure, Insecure, false),
            strict,
            Decision::Accept,
        ),
        (
            "insecure key accepted",
            with(Secure, Insecure, false),
            strict,
            Decision::Accept,
        ),
        (
            "insecure spf, required",
            with(Insecure, Secure, true),
            strict,
            refuse(Reason::DnsTemperror),
        ),
        (
            "insecure key, required",
            with(Secure, Insecure, true),
            strict,
            refuse(Reason::DnsTemperror),
        ),
        (
            "off, required: fail closed",
            with(Off, Off, true),
            strict,
            refuse(Reason::DnsTemperror),
        ),
        (
            "bogus spf",
            with(Bogus, Secure, false),
            strict,
            refuse(Reason::DnsTemperror),
        ),
        (
            "bogus key",
            with(Secure, Bogus, false),
            strict,
            refuse(Reason::DnsTemperror),
        ),
        (
            "waived DKIM: its key does not count",
            with(Secure, Skipped, true),
            no_dkim,
            Decision::Accept,
        ),
        (
            "bogus beats the checks' own temperror",
            CheckResults {
                spf: Spf::TempError,
                ..with(Bogus, Secure, false)
            },
            strict,
            refuse(Reason::DnsTemperror),
        ),
        (
            "a certain failure beats bogus",
            CheckResults {
                header: HeaderChecks {
                    resent: Outcome::Fail,
                    ..HeaderChecks::all_pass()
                },
                ..with(Bogus, Bogus, false)
            },
            strict,
            refuse(Reason::HeaderResent),
        ),
    ];
    for (row, r, req, want) in rows {
        assert_eq!(decide(&r, &req).0, want, "{row}");
        assert_ne!(
            decide(&r, &req).0,
            refuse(Reason::SpfTemperror),
            "{row}: a DNSSEC refusal is dns.temperror"
        );
    }
}

#[test]
fn dnssec_results_in_the_check_list() {
    use Dnssec::*;
    let table = [
        (Secure, false, "secure"),
        (Insecure, false, "insecure"),
        (Insecure, true, "insecure_refused"),
        (Off, true, "insecure_refused"),
        (Bogus, true, "bogus"),
        (Bogus, false, "bogus"),
        (Skipped, true, "skipped"),
        (Off, false, "off"),
    ];
    for (proof, required, want) in table {
        let r = CheckResults {
            dnssec: DnssecChecks {
                spf: proof,
                dkim: proof,
                required,
            },
            ..CheckResults::all_pass()
        };
        let checks = r.checks();
        for name in ["dnssec.spf", "dnssec.dkim"] {
            let got = checks
                .iter()
                .find(|c| c.name == name)
                .map(|c| c.result.as_str());
            assert_eq!(got, Some(want), "{name} {proof:?} {required}");
        }
    }
}

#[test]
fn weakest_proof_wins() {
    use Dnssec::*;
    let table = [
        (Secure, Secure, Secure),
        (Secure, Insecure, Insecure),
        (Insecure, Secure, Insecure),
        (Secure, Bogus, Bogus),
        (Insecure, Bogus, Bogus),
        (Unknown, Insecure, Unknown),
        (Bogus, Unknown, Bogus),
        (Off, Off, Off),
        (Off, Secure, Off),
        (Skipped, Secure, Secure),
        (Insecure, Skipped, Insecure),
        (Skipped, Skipped, Skipped),
    ];
    for (a, b, want) in table {
        assert_eq!(a.weakest(b), want, "{a:?} {b:?}");
    }
}
