//! The real `gatekeeper` binary: `check-address` and `check-config` outputs and exit codes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_gatekeeper");

fn conf() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/gatekeeper.toml")
}

/// Run the binary with `args` and `stdin`, in `dir`, without `$GATEKEEPER_CONFIG` unless set.
fn run(args: &[&str], stdin: &[u8], dir: Option<&Path>, env: Option<&Path>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("GATEKEEPER_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(dir) = dir {
        cmd.current_dir(dir);
    }
    if let Some(env) = env {
        cmd.env("GATEKEEPER_CONFIG", env);
    }
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{BIN}: {e}"));
    if let Some(mut input) = child.stdin.take() {
        // The binary reads a bounded prefix and may exit before taking everything.
        match input.write_all(stdin) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => panic!("stdin: {e}"),
            _ => {}
        }
    }
    child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("{BIN}: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// (stdout, exit code) of `check-address`.
fn check_address(
    address: &str,
    stdin: &[u8],
    config: Option<&Path>,
) -> (String, Option<i32>, String) {
    let mut args = vec!["check-address", address];
    let config = config.map(|c| c.display().to_string());
    if let Some(c) = &config {
        args.extend(["-c", c.as_str()]);
    }
    let out = run(&args, stdin, None, None);
    (text(&out.stdout), out.status.code(), text(&out.stderr))
}

#[test]
fn check_address_argv() {
    let table: &[(&str, &str, i32)] = &[
        ("alice@interieur.gouv.fr", "alice@interieur.gouv.fr\n", 0),
        ("Alice@Interieur.GOUV.fr", "alice@interieur.gouv.fr\n", 0),
        (
            "attacker@evil.example@interieur.gouv.fr",
            "rejected envelope.syntax\n",
            1,
        ),
        (
            "\"alice\"@interieur.gouv.fr",
            "rejected envelope.syntax\n",
            1,
        ),
        ("alice@interieur.gouv.fr.", "rejected envelope.syntax\n", 1),
        ("<alice@interieur.gouv.fr>", "rejected envelope.syntax\n", 1),
        ("", "rejected envelope.syntax\n", 1),
        // Without a configuration there is no domain policy: only the syntax is judged.
        ("attacker@evil.example", "attacker@evil.example\n", 0),
    ];
    for (address, want, code) in table {
        let (out, status, err) = check_address(address, b"", None);
        assert_eq!(
            (out.as_str(), status),
            (*want, Some(*code)),
            "{address:?} stderr {err}"
        );
        if *code == 1 {
            assert!(err.starts_with("detail: "), "{address:?}: {err}");
        } else {
            assert_eq!(err, "", "{address:?}");
        }
    }
}

#[test]
fn check_address_names_the_two_at_detail() {
    let (out, status, err) = check_address("attacker@evil.example@interieur.gouv.fr", b"", None);
    assert_eq!(
        (out.as_str(), status, err.as_str()),
        ("rejected envelope.syntax\n", Some(1), "detail: two_at\n")
    );
}

#[test]
fn check_address_stdin_raw_bytes() {
    let table: &[(&[u8], &str, i32)] = &[
        (b"alice@interieur.gouv.fr\n", "alice@interieur.gouv.fr\n", 0),
        (b"alice@interieur.gouv.fr", "alice@interieur.gouv.fr\n", 0),
        // Only one newline is removed; what remains is part of the address.
        (
            b"alice@interieur.gouv.fr\n\n",
            "rejected envelope.syntax\n",
            1,
        ),
        (
            b"alice@interieur.gouv.fr\r\n",
            "rejected envelope.syntax\n",
            1,
        ),
        (
            b"alice\0@interieur.gouv.fr\n",
            "rejected envelope.syntax\n",
            1,
        ),
        (
            b"alice@interieur.gouv.fr\0\n",
            "rejected envelope.syntax\n",
            1,
        ),
        (
            b"alice\r@interieur.gouv.fr\n",
            "rejected envelope.syntax\n",
            1,
        ),
        (
            b"alice\n@interieur.gouv.fr\n",
            "rejected envelope.syntax\n",
            1,
        ),
        (
            b"al\xc3\xafce@interieur.gouv.fr\n",
            "rejected envelope.syntax\n",
            1,
        ),
        (b"\xff@interieur.gouv.fr\n", "rejected envelope.syntax\n", 1),
        (b"\n", "rejected envelope.syntax\n", 1),
    ];
    for (input, want, code) in table {
        let (out, status, err) = check_address("-", input, None);
        assert_eq!(
            (out.as_str(), status),
            (*want, Some(*code)),
            "{:?} stderr {err}",
            text(input)
        );
    }
    // Far more than any address: read bounded, refused, no crash.
    let long = vec![b'a'; 1 << 20];
    let (out, status, _) = check_address("-", &long, None);
    assert_eq!(
        (out.as_str(), status),
        ("rejected envelope.syntax\n", Some(1))
    );
}

#[test]
fn check_address_with_config_applies_domain_policy() {
    let conf = conf();
    let table: &[(&str, &str, i32)] = &[
        ("alice@interieur.gouv.fr", "alice@interieur.gouv.fr\n", 0),
        ("alice@gouv.fr", "alice@gouv.fr\n", 0),
        ("attacker@evil.example", "rejected domain.not_allowed\n", 1),
        ("attacker@evilgouv.fr", "rejected domain.not_allowed\n", 1),
        (
            "attacker@gouv.fr.evil.example",
            "rejected domain.not_allowed\n",
            1,
        ),
        (
            "attacker@evil.example@interieur.gouv.fr",
            "rejected envelope.syntax\n",
            1,
        ),
    ];
    for (address, want, code) in table {
        let (out, status, err) = check_address(address, b"", Some(&conf));
        assert_eq!(
            (out.as_str(), status),
            (*want, Some(*code)),
            "{address:?} stderr {err}"
        );
    }
    // The same through stdin.
    let (out, status, _) = check_address("-", b"attacker@evil.example\n", Some(&conf));
    assert_eq!(
        (out.as_str(), status),
        ("rejected domain.not_allowed\n", Some(1))
    );
}

#[test]
fn check_address_denied_domain_wins() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("denied.toml");
    let text = std::fs::read_to_string(conf()).unwrap_or_else(|e| panic!("{e}"));
    let text = text.replacen(
        "denied_domains = []",
        "denied_domains = [\"test.gouv.fr\"]",
        1,
    );
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    let (out, status, _) = check_address("x@a.test.gouv.fr", b"", Some(&path));
    assert_eq!(
        (out.as_str(), status),
        ("rejected domain.not_allowed\n", Some(1))
    );
    let (out, status, _) = check_address("x@attest.gouv.fr", b"", Some(&path));
    assert_eq!((out.as_str(), status), ("x@attest.gouv.fr\n", Some(0)));
}

#[test]
fn check_address_with_a_bad_config_cannot_run() {
    let (out, status, err) = check_address(
        "alice@interieur.gouv.fr",
        b"",
        Some(Path::new("no/such.toml")),
    );
    assert_eq!((out.as_str(), status), ("", Some(2)));
    assert!(err.starts_with("no/such.toml: cannot read"), "{err}");
}

#[test]
fn check_config_good_and_bad() {
    let out = run(
        &["check-config", "-c", &conf().display().to_string()],
        b"",
        None,
        None,
    );
    assert_eq!(
        (text(&out.stdout).as_str(), out.status.code()),
        ("ok\n", Some(0))
    );

    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let bad = dir.path().join("bad.toml");
    let good = std::fs::read_to_string(conf()).unwrap_or_else(|e| panic!("{e}"));
    let line = good
        .lines()
        .position(|l| l == "max_errors = 10")
        .map(|i| i + 1);
    std::fs::write(&bad, good.replacen("max_errors = 10", "max_erors = 10", 1))
        .unwrap_or_else(|e| panic!("{e}"));
    let out = run(
        &["check-config", "-c", &bad.display().to_string()],
        b"",
        None,
        None,
    );
    let err = text(&out.stderr);
    assert_eq!(
        (text(&out.stdout).as_str(), out.status.code()),
        ("", Some(1))
    );
    let want = format!(
        "{}:{}: smtp.max_erors: unknown field `max_erors`",
        bad.display(),
        line.unwrap_or(0)
    );
    assert!(err.starts_with(&want), "want {want}\ngot {err}");

    // Several semantic problems: each on its own line with file:line.
    std::fs::write(
        &bad,
        good.replacen("max_errors = 10", "max_errors = 0", 1)
            .replacen("challenge_ttl = \"24h\"", "challenge_ttl = 24", 1),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let out = run(
        &["check-config", "-c", &bad.display().to_string()],
        b"",
        None,
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("invalid type: integer `24`, expected a string"),
        "{err}"
    );
}

#[test]
fn check_config_finds_the_config_like_serve() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    // No -c, no environment, no conf/ in the working directory: the embedded copy.
    let out = run(&["check-config"], b"", Some(dir.path()), None);
    assert_eq!(
        (text(&out.stdout).as_str(), out.status.code()),
        ("ok\n", Some(0))
    );
    // conf/gatekeeper.toml in the working directory is used next.
    std::fs::create_dir(dir.path().join("conf")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.path().join("conf/gatekeeper.toml"), "bogus = 1\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let out = run(&["check-config"], b"", Some(dir.path()), None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with("conf/gatekeeper.toml:1: bogus: unknown field `bogus`"),
        "{}",
        text(&out.stderr)
    );
    // $GATEKEEPER_CONFIG wins over conf/, and -c over both.
    let out = run(&["check-config"], b"", Some(dir.path()), Some(&conf()));
    assert_eq!(
        (text(&out.stdout).as_str(), out.status.code()),
        ("ok\n", Some(0))
    );
    let out = run(
        &["check-config", "-c", "conf/gatekeeper.toml"],
        b"",
        Some(dir.path()),
        Some(&conf()),
    );
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn every_subcommand_has_help() {
    for args in [
        &["--help"][..],
        &["check-config", "--help"],
        &["check-address", "--help"],
        &["probe", "new", "--help"],
        &["probe", "show", "--help"],
        &["domain-check", "--help"],
        &["store", "migrate", "--help"],
    ] {
        let out = run(args, b"", None, None);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert!(text(&out.stdout).contains("Usage: gatekeeper"), "{args:?}");
    }
}
