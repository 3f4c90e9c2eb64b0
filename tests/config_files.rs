//! The configuration files we ship load, unknown keys are refused everywhere with `file:line`,
//! and each validation rule refuses what it should with a message that names the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gatekeeper::address::EnvelopeTag;
use gatekeeper::config::{Config, OutboundTarget, SiemSink, SyslogTransport};

const DEFAULT: &str = include_str!("../conf/gatekeeper.toml");
const ORIGIN: &str = "gatekeeper.toml";

fn toml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            toml_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "toml") {
            out.push(path);
        }
    }
}

fn shipped_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    toml_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("conf"),
        &mut files,
    );
    files
}

#[test]
fn every_shipped_file_loads() {
    let files = shipped_files();
    assert!(
        files.len() >= 2,
        "expected conf/gatekeeper.toml and examples: {files:?}"
    );
    for path in files {
        if let Err(e) = Config::load(&path) {
            panic!("{}:\n{e}", path.display());
        }
    }
}

#[test]
fn default_file_is_the_developer_setup() {
    let c = Config::from_toml_str(DEFAULT, ORIGIN).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        c.smtp.listen,
        vec![SocketAddr::from(([127, 0, 0, 1], 2525))]
    );
    assert_eq!(c.api.listen, SocketAddr::from(([127, 0, 0, 1], 8025)));
    assert_eq!(c.store.path, PathBuf::from("var/gatekeeper.db"));
    assert_eq!(c.api.token_file, PathBuf::from("var/api-token"));
    assert!(
        matches!(&c.outbound.target, OutboundTarget::Directory(d) if d == Path::new("var/outbox"))
    );
    assert!(
        matches!(c.siem.sinks.as_slice(), [SiemSink::Stdout, SiemSink::File { path }] if path == Path::new("var/events.jsonl"))
    );
    assert_eq!(c.siem.spool_path, PathBuf::from("var/siem-spool.db"));
    assert!(c.dns.nameservers.is_empty());
    assert_eq!(c.confirm.domain.as_str(), "verify.example.gouv.fr");
    let allowed: Vec<&str> = c
        .policy
        .allowed_domains
        .iter()
        .map(|d| d.as_str())
        .collect();
    assert_eq!(allowed, ["gouv.fr"]);
    assert!(c.smtp.tls.is_none());
}

/// The smallest file that loads: only the required keys. Every other value is a default, and
/// the defaults must equal what conf/gatekeeper.toml writes down.
const MINIMAL: &str = r#"
[confirm]
domain = "verify.example.gouv.fr"
[policy]
allowed_domains = ["gouv.fr"]
[outbound]
from = "Inscription <noreply@verify.example.gouv.fr>"
directory = "var/outbox"
"#;

#[test]
fn defaults_match_the_documented_file() {
    let m = Config::from_toml_str(MINIMAL, "minimal.toml").unwrap_or_else(|e| panic!("{e}"));
    let d = Config::from_toml_str(DEFAULT, ORIGIN).unwrap_or_else(|e| panic!("{e}"));
    let min = Duration::from_secs(60);
    assert_eq!(m.smtp.max_message_bytes, 2 * 1024 * 1024);
    assert_eq!(m.smtp.max_buffered_bytes, 256 * 1024 * 1024);
    assert_eq!(m.smtp.max_connections, 1000);
    assert_eq!(m.smtp.max_connections_per_ip, 20);
    assert_eq!(m.smtp.command_timeout, 5 * min);
    assert_eq!(m.smtp.data_timeout, 10 * min);
    assert_eq!(m.smtp.session_timeout, 30 * min);
    assert_eq!(m.smtp.max_errors, 10);
    assert_eq!(m.smtp.max_transactions, 10);
    assert_eq!(m.smtp.shutdown_grace, Duration::from_secs(30));
    assert_eq!(m.smtp.hostname, "verify.example.gouv.fr");
    assert_eq!(m.dns.timeout, Duration::from_secs(5));
    assert_eq!(m.dns.cache_size, 10_000);
    assert_eq!(m.siem.spool_max_events, 100_000);
    assert_eq!(m.store.purge_interval, 60 * min);
    assert_eq!(m.confirm.challenge_ttl, 24 * 60 * min);
    assert_eq!(m.confirm.max_message_age, 48 * 60 * min);
    assert_eq!(m.confirm.max_pending_per_address, 5);
    assert_eq!(m.confirm.max_challenges_per_address_per_hour, 10);
    assert_eq!(m.confirm.local_prefix, "confirm");
    assert_eq!(m.policy.dkim_min_rsa_bits, 1024);
    assert!(matches!(m.siem.sinks.as_slice(), [SiemSink::Stdout]));
    // The documented file states the same values.
    assert_eq!(format!("{:?}", m.smtp), format!("{:?}", d.smtp));
    assert_eq!(format!("{:?}", m.confirm), format!("{:?}", d.confirm));
    assert_eq!(format!("{:?}", m.policy), format!("{:?}", d.policy));
    assert_eq!(format!("{:?}", m.dns), format!("{:?}", d.dns));
    assert_eq!(format!("{:?}", m.store), format!("{:?}", d.store));
    assert_eq!(format!("{:?}", m.api), format!("{:?}", d.api));
    assert_eq!(m.siem.spool_path, d.siem.spool_path);
}

/// Insert `typo_key_N = 1` right after every table header (and at the top, for the root) of
/// every shipped file: each must be refused at that line, naming the key.
#[test]
fn unknown_key_in_every_table_is_refused_at_its_line() {
    let mut tried = 0;
    for path in shipped_files() {
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
        let lines: Vec<&str> = text.lines().collect();
        let headers = lines
            .iter()
            .enumerate()
            .filter(|(_, l)| l.trim_start().starts_with('['))
            .map(|(i, _)| i + 1);
        // 0 = before the first line: the root table.
        for after in std::iter::once(0).chain(headers) {
            let key = format!("typo_key_{after}");
            let mut edited: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
            edited.insert(after, format!("{key} = 1"));
            let origin = path.display().to_string();
            let err = match Config::from_toml_str(&edited.join("\n"), &origin) {
                Ok(_) => panic!("{origin}: {key} after line {after} was accepted"),
                Err(e) => e.to_string(),
            };
            let want = format!("{origin}:{}: ", after + 1);
            assert!(err.starts_with(&want), "want {want:?}, got {err:?}");
            assert!(err.contains(&format!("unknown field `{key}`")), "{err}");
            tried += 1;
        }
    }
    // root + 10 tables in gatekeeper.toml + the production example's tables.
    assert!(tried >= 20, "only {tried} tables tried");
}

#[test]
fn syntax_and_type_errors_have_a_line() {
    let table: &[(&str, &str, &str)] = &[
        ("max_errors = 10", "max_errors = \"ten\"", "invalid type"),
        (
            "max_errors = 10",
            "max_errors = ",
            "string values must be quoted",
        ),
        (
            "alignment = \"strict\"",
            "alignment = \"loose\"",
            "unknown variant `loose`",
        ),
        (
            "type = \"stdout\"",
            "type = \"journal\"",
            "unknown variant `journal`",
        ),
        (
            "require_reply = true",
            "require_reply = \"yes\"",
            "invalid type",
        ),
    ];
    for (from, to, want) in table {
        let line = line_of(DEFAULT, from);
        let text = DEFAULT.replacen(from, to, 1);
        let err = error_of(&text);
        assert!(
            err.starts_with(&format!("{ORIGIN}:{line}: ")),
            "{to}: {err}"
        );
        assert!(err.contains(want), "{to}: {err}");
    }
}

#[test]
fn missing_required_key_is_named() {
    let text = DEFAULT.replacen("domain = \"verify.example.gouv.fr\"\n", "", 1);
    let err = error_of(&text);
    assert!(err.starts_with(&format!("{ORIGIN}:")), "{err}");
    assert!(err.contains("missing field `domain`"), "{err}");
}

/// One edit of the default file, and the exact message expected at that line.
struct Case {
    from: &'static str,
    to: &'static str,
    want: &'static str,
}

#[test]
fn validation_errors_point_at_the_key() {
    let cases = [
        // durations
        Case {
            from: "command_timeout = \"5m\"",
            to: "command_timeout = \"5\"",
            want: "smtp.command_timeout: \"5\" has no unit: write ms, s, m, h or d after the number, e.g. \"5s\"",
        },
        Case {
            from: "data_timeout = \"10m\"",
            to: "data_timeout = \"-10m\"",
            want: "smtp.data_timeout: \"-10m\" is not a duration: write a whole number and a unit (ms, s, m, h, d), e.g. \"60s\"",
        },
        Case {
            from: "session_timeout = \"30m\"",
            to: "session_timeout = \"30 minutes\"",
            want: "smtp.session_timeout: \"30 minutes\" has an unknown unit: use ms, s, m, h or d",
        },
        Case {
            from: "command_timeout = \"5m\"",
            to: "command_timeout = \"0s\"",
            want: "smtp.command_timeout: \"0s\" is out of range 1s..=1h",
        },
        Case {
            from: "challenge_ttl = \"24h\"",
            to: "challenge_ttl = \"60d\"",
            want: "confirm.challenge_ttl: \"60d\" is out of range 1m..=30d",
        },
        Case {
            from: "timeout = \"5s\"",
            to: "timeout = \"10ms\"",
            want: "dns.timeout: \"10ms\" is out of range 100ms..=1m",
        },
        Case {
            from: "purge_interval = \"1h\"",
            to: "purge_interval = \"1s\"",
            want: "store.purge_interval: \"1s\" is out of range 1m..=7d",
        },
        // limits
        Case {
            from: "max_message_bytes = 2097152",
            to: "max_message_bytes = 100",
            want: "smtp.max_message_bytes: 100 is out of range 1024..=67108864",
        },
        Case {
            from: "max_message_bytes = 2097152",
            to: "max_message_bytes = 67108865",
            want: "smtp.max_message_bytes: 67108865 is out of range 1024..=67108864",
        },
        // A budget smaller than one message could never receive a full-size one.
        Case {
            from: "max_buffered_bytes = 268435456",
            to: "max_buffered_bytes = 2097151",
            want: "smtp.max_buffered_bytes: 2097151 is out of range 2097152..=1099511627776",
        },
        Case {
            from: "max_buffered_bytes = 268435456",
            to: "max_buffered_bytes = 1099511627777",
            want: "smtp.max_buffered_bytes: 1099511627777 is out of range 2097152..=1099511627776",
        },
        Case {
            from: "max_connections = 1000",
            to: "max_connections = 0",
            want: "smtp.max_connections: 0 is out of range 1..=1000000",
        },
        Case {
            from: "max_connections_per_ip = 20",
            to: "max_connections_per_ip = 1001",
            want: "smtp.max_connections_per_ip: 1001 is out of range 1..=1000",
        },
        Case {
            from: "max_errors = 10",
            to: "max_errors = 0",
            want: "smtp.max_errors: 0 is out of range 1..=1000",
        },
        Case {
            from: "max_transactions = 10",
            to: "max_transactions = 5000",
            want: "smtp.max_transactions: 5000 is out of range 1..=1000",
        },
        Case {
            from: "max_pending_per_address = 5",
            to: "max_pending_per_address = 0",
            want: "confirm.max_pending_per_address: 0 is out of range 1..=100",
        },
        Case {
            from: "max_challenges_per_address_per_hour = 10",
            to: "max_challenges_per_address_per_hour = 0",
            want: "confirm.max_challenges_per_address_per_hour: 0 is out of range 1..=1000",
        },
        Case {
            from: "dkim_min_rsa_bits = 1024",
            to: "dkim_min_rsa_bits = 512",
            want: "policy.dkim_min_rsa_bits: 512 is out of range 1024..=8192",
        },
        Case {
            from: "cache_size = 10000",
            to: "cache_size = 0",
            want: "dns.cache_size: 0 is out of range 1..=10000000",
        },
        Case {
            from: "spool_max_events = 100000",
            to: "spool_max_events = 0",
            want: "siem.spool_max_events: 0 is out of range 1..=10000000",
        },
        Case {
            from: "max_errors = 10",
            to: "max_errors = -1",
            want: "smtp.max_errors: invalid value: integer `-1`",
        },
        // domains
        Case {
            from: "domain = \"verify.example.gouv.fr\"",
            to: "domain = \"verify..gouv.fr\"",
            want: "confirm.domain: \"verify..gouv.fr\" is not a valid domain",
        },
        Case {
            from: "allowed_domains = [\"gouv.fr\"]",
            to: "allowed_domains = [\"gouv.fr\", \"a@b.fr\"]",
            want: "policy.allowed_domains[1]: \"a@b.fr\" is not a valid domain",
        },
        Case {
            from: "allowed_domains = [\"gouv.fr\"]",
            to: "allowed_domains = []",
            want: "policy.allowed_domains: must list at least one domain (nobody could confirm)",
        },
        Case {
            from: "denied_domains = []",
            to: "denied_domains = [\"x\"]",
            want: "policy.denied_domains[0]: \"x\" is not a valid domain",
        },
        Case {
            from: "hostname = \"verify.example.gouv.fr\"",
            to: "hostname = \"mx\\r\\n250 x.fr\"",
            want: "smtp.hostname: \"mx\\r\\n250 x.fr\" is not a valid domain",
        },
        // local part characters
        Case {
            from: "local_part_extra_chars = \"\"",
            to: "local_part_extra_chars = \"%\"",
            want: "policy.local_part_extra_chars: \"%\" not allowed: only RFC 5322 atext from \"#$&*/=?^|~\" (never % ! @, quotes or brackets)",
        },
        Case {
            from: "local_part_extra_chars = \"\"",
            to: "local_part_extra_chars = \"#!@\\\"<\"",
            want: "policy.local_part_extra_chars: \"!\\\"<@\" not allowed",
        },
        Case {
            from: "local_part_extra_chars = \"\"",
            to: "local_part_extra_chars = \"'{}\"",
            want: "policy.local_part_extra_chars: \"'{}\" not allowed",
        },
        Case {
            from: "local_prefix = \"confirm\"",
            to: "local_prefix = \"Confirm+x\"",
            want: "confirm.local_prefix: \"Confirm+x\": use 1 to 16 of a-z 0-9 - _",
        },
        Case {
            from: "service_name = \"gatekeeper\"",
            to: "service_name = \"a\\r\\nBcc: x@y.fr\"",
            want: "confirm.service_name: must be 1 to 100 characters without control characters",
        },
        // socket addresses and networks
        Case {
            from: "listen = [\"127.0.0.1:2525\"]",
            to: "listen = [\"127.0.0.1\"]",
            want: "smtp.listen[0]: \"127.0.0.1\" is not a socket address \"ip:port\"",
        },
        Case {
            from: "listen = [\"127.0.0.1:2525\"]",
            to: "listen = [\"127.0.0.1:2525\", \"127.0.0.1:2525\"]",
            want: "smtp.listen[1]: \"127.0.0.1:2525\" is listed twice",
        },
        Case {
            from: "listen = [\"127.0.0.1:2525\"]",
            to: "listen = []",
            want: "smtp.listen: must list at least one \"ip:port\"",
        },
        Case {
            from: "listen = \"127.0.0.1:8025\"",
            to: "listen = \"localhost:8025\"",
            want: "api.listen: \"localhost:8025\" is not a socket address \"ip:port\"",
        },
        Case {
            from: "nameservers = []",
            to: "nameservers = [\"127.0.0.1:5300\", \"localhost:53\"]",
            want: "dns.nameservers[1]: \"localhost:53\" is not \"ip\" or \"ip:port\"",
        },
        Case {
            from: "allowed_networks = []",
            to: "allowed_networks = [\"10.0.0.1/8\"]",
            want: "policy.allowed_networks[0]: \"10.0.0.1/8\" has host bits set; did you mean \"10.0.0.0/8\"?",
        },
        Case {
            from: "allowed_networks = []",
            to: "allowed_networks = [\"10.0.0.0/33\"]",
            want: "policy.allowed_networks[0]: \"10.0.0.0/33\" is not a CIDR network",
        },
        // outbound
        Case {
            from: "# relay = \"smtp://relay.example.gouv.fr:25\"",
            to: "relay = \"smtp://relay.example.gouv.fr:25\"",
            want: "outbound.relay: set exactly one of outbound.directory and outbound.relay, not both",
        },
        Case {
            from: "directory = \"var/outbox\"",
            to: "relay = \"http://relay.example.gouv.fr\"",
            want: "outbound.relay: \"http://relay.example.gouv.fr\" is not smtp://host[:port] or smtps://host[:port]",
        },
        Case {
            from: "from = \"Inscription <noreply@verify.example.gouv.fr>\"",
            to: "from = \"noreply@@verify.example.gouv.fr\"",
            want: "outbound.from: not one strict mailbox",
        },
        // siem
        Case {
            from: "path = \"var/events.jsonl\"",
            to: "address = \"127.0.0.1:514\"",
            want: "siem.sink[1].address: does not apply to this sink type or transport",
        },
        Case {
            from: "type = \"stdout\"",
            to: "type = \"syslog\"\naddress = \"127.0.0.1\"",
            want: "siem.sink[0].address: \"127.0.0.1\" is not a socket address \"ip:port\"",
        },
        Case {
            from: "type = \"stdout\"",
            to: "type = \"syslog\"",
            want: "siem.sink[0].address: a syslog sink needs an address \"ip:port\"",
        },
        Case {
            from: "type = \"stdout\"",
            to: "type = \"file\"",
            want: "siem.sink[0].path: a file sink needs a path",
        },
        Case {
            from: "type = \"stdout\"",
            to: "type = \"syslog\"\naddress = \"127.0.0.1:514\"\nca_file = \"ca.pem\"",
            want: "siem.sink[0].ca_file: does not apply to this sink type or transport",
        },
    ];
    assert_cases(&cases);
}

/// `[store] url` and its keys (SPEC §7): each mistake at its key's line.
#[test]
fn postgres_store_keys_are_validated() {
    let path = "path = \"var/gatekeeper.db\"";
    let cases = [
        Case {
            from: path,
            to: "path = \"var/gatekeeper.db\"\nurl = \"postgresql://gk@db.example/gk\"",
            want: "store.url: store.path and store.url are exclusive: set exactly one",
        },
        Case {
            from: path,
            to: "url = \"mysql://gk@db.example/gk\"",
            want: "store.url: \"mysql://gk@db.example/gk\": scheme must be postgresql:// (or postgres://)",
        },
        Case {
            from: path,
            to: "url = \"postgresql://gk:secret@db.example/gk\"",
            want: "store.url: holds a password: put it in store.password_file",
        },
        Case {
            from: path,
            to: "url = \"postgresql://gk@db.example\"",
            want: "store.url: \"postgresql://gk@db.example\" names no database (postgresql://user@host/DATABASE)",
        },
        Case {
            from: path,
            to: "url = \"postgresql://gk@db.example/gk?sslmode=disable\"",
            want: "store.url: sslmode and password have their own keys: store.tls, store.password_file",
        },
        Case {
            from: path,
            to: "url = \"postgresql://gk@db.example/gk\"\ntls = \"prefer\"",
            want: "store.tls: \"prefer\" is neither \"require\" nor \"disable\"",
        },
        Case {
            from: path,
            to: "url = \"postgresql://gk@db.example/gk\"\npool_size = 0",
            want: "store.pool_size: 0 is out of range 1..=256",
        },
        Case {
            from: path,
            to: "url = \"postgresql://gk@127.0.0.1/gk\"\ntls = \"disable\"\nca_file = \"ca.pem\"",
            want: "store.ca_file: set but store.tls is \"disable\"",
        },
        Case {
            from: path,
            to: "path = \"var/gatekeeper.db\"\npassword_file = \"pw\"",
            want: "store.password_file: only meaningful with store.url",
        },
    ];
    assert_cases(&cases);
}

#[test]
fn postgres_store_url_is_read() {
    let text = DEFAULT.replacen(
        "path = \"var/gatekeeper.db\"",
        "url = \"postgresql://gk@db.example:5433/gk\"\npassword_file = \"/etc/gk/pw\"\nca_file = \"/etc/gk/ca.pem\"\npool_size = 4",
        1,
    );
    let c = Config::from_toml_str(&text, ORIGIN).unwrap_or_else(|e| panic!("{e}"));
    let Some(pg) = c.store.postgres else {
        panic!("url set: PostgreSQL expected");
    };
    assert_eq!(pg.url, "postgresql://gk@db.example:5433/gk");
    assert_eq!(pg.password_file, Some(PathBuf::from("/etc/gk/pw")));
    assert_eq!(pg.ca_file, Some(PathBuf::from("/etc/gk/ca.pem")));
    assert_eq!(pg.tls, gatekeeper::config::PgTls::Require);
    assert_eq!(pg.pool_size, 4);
    let d = Config::from_toml_str(DEFAULT, ORIGIN).unwrap_or_else(|e| panic!("{e}"));
    assert!(d.store.postgres.is_none(), "no url: SQLite");
}

/// Apply each edit to the default file and expect its message at the key's line.
fn assert_cases(cases: &[Case]) {
    for case in cases {
        let text = DEFAULT.replacen(case.from, case.to, 1);
        let line = key_line(&text, line_of(DEFAULT, case.from), case.want);
        let err = error_of(&text);
        let want = format!("{ORIGIN}:{line}: {}", case.want);
        assert!(
            err.lines().any(|l| l.starts_with(&want)),
            "edit {:?}\nwant {want}\ngot  {err}",
            case.to
        );
    }
}

#[test]
fn more_validation_errors_point_at_the_key() {
    let cases = [
        Case {
            from: "nameservers = []",
            to: "nameservers = [\"::1:53\"]",
            want: "dns.nameservers[0]: \"::1:53\": write an IPv6 nameserver with brackets and a port, \"[::1:53]:53\"",
        },
        // more durations and ranges
        Case {
            from: "data_timeout = \"10m\"",
            to: "data_timeout = \"2h\"",
            want: "smtp.data_timeout: \"2h\" is out of range 1s..=1h",
        },
        Case {
            from: "session_timeout = \"30m\"",
            to: "session_timeout = \"2d\"",
            want: "smtp.session_timeout: \"2d\" is out of range 1s..=1d",
        },
        Case {
            from: "shutdown_grace = \"30s\"",
            to: "shutdown_grace = \"11m\"",
            want: "smtp.shutdown_grace: \"11m\" is out of range 0ms..=10m",
        },
        Case {
            from: "max_message_age = \"48h\"",
            to: "max_message_age = \"30s\"",
            want: "confirm.max_message_age: \"30s\" is out of range 1m..=30d",
        },
        // paths
        Case {
            from: "path = \"var/gatekeeper.db\"",
            to: "path = \"\"",
            want: "store.path: must be a non-empty path",
        },
        Case {
            from: "spool_path = \"var/siem-spool.db\"",
            to: "spool_path = \"\"",
            want: "siem.spool_path: must be a non-empty path",
        },
        Case {
            from: "token_file = \"var/api-token\"",
            to: "token_file = \"\"",
            want: "api.token_file: must be a non-empty path",
        },
        // outbound
        Case {
            from: "from = \"Inscription <noreply@verify.example.gouv.fr>\"",
            to: "from = \"Inscription <noreply@verify.example.gouv.fr>\\r\\nBcc: x@y.fr\"",
            want: "outbound.from: control characters are not allowed",
        },
        Case {
            from: "directory = \"var/outbox\"",
            to: "relay = \"smtps://\"",
            want: "outbound.relay: \"smtps://\" is not smtp://host[:port] or smtps://host[:port]",
        },
        Case {
            from: "directory = \"var/outbox\"",
            to: "relay = \"smtp://user@relay.example.gouv.fr\"",
            want: "outbound.relay: \"smtp://user@relay.example.gouv.fr\" is not smtp://host[:port] or smtps://host[:port]",
        },
        // siem
        Case {
            from: "type = \"stdout\"",
            to: "type = \"stdout\"\npath = \"x.jsonl\"",
            want: "siem.sink[0].path: does not apply to this sink type or transport",
        },
        Case {
            from: "type = \"stdout\"",
            to: "type = \"syslog\"\naddress = \"127.0.0.1:6514\"\ntransport = \"tls\"\nserver_name = \"siem..example\"",
            want: "siem.sink[0].server_name: \"siem..example\" is not a valid domain",
        },
        Case {
            from: "type = \"stdout\"",
            to: "type = \"file\"\npath = \"\"",
            want: "siem.sink[0].path: must be a non-empty path",
        },
    ];
    assert_cases(&cases);
}

/// Tables appended to the default file, and the message expected `offset` lines into the
/// text (2 = its header, after the blank line that separates it).
#[test]
fn appended_tables_are_validated() {
    let base_lines = DEFAULT.lines().count();
    let cases: &[(&str, &str, usize)] = &[
        (
            "[outbound.dkim]\ndomain = \"verify.example.gouv.fr\"\nselector = \"bad_selector\"\nprivate_key = \"k.pem\"\n",
            "outbound.dkim.selector: \"bad_selector\" is not a DNS selector",
            4,
        ),
        (
            "[outbound.dkim]\ndomain = \"other.gouv.fr\"\nselector = \"s1\"\nprivate_key = \"k.pem\"\n",
            "outbound.dkim.domain: must be the domain of outbound.from or a parent of it (alignment)",
            3,
        ),
        (
            "[outbound.dkim]\ndomain = \"-x.gouv.fr\"\nselector = \"s1\"\nprivate_key = \"k.pem\"\n",
            "outbound.dkim.domain: \"-x.gouv.fr\" is not a valid domain",
            3,
        ),
        (
            "[outbound.dkim]\ndomain = \"verify.example.gouv.fr\"\nselector = \"s1\"\nprivate_key = \"\"\n",
            "outbound.dkim.private_key: must be a non-empty path",
            5,
        ),
        (
            "[smtp.tls]\ncertificate = \"\"\nprivate_key = \"key.pem\"\n",
            "smtp.tls.certificate: must be a non-empty path",
            3,
        ),
    ];
    for (append, want, offset) in cases {
        let text = format!("{DEFAULT}\n{append}");
        let err = error_of(&text);
        let want = format!("{ORIGIN}:{}: {want}", base_lines + offset);
        assert!(
            err.lines().any(|l| l.starts_with(&want)),
            "want {want}\ngot  {err}"
        );
    }
    // A parent domain of the From domain is aligned (relaxed), and the signer is kept.
    let text = format!(
        "{DEFAULT}\n[outbound.dkim]\ndomain = \"example.gouv.fr\"\nselector = \"s1\"\nprivate_key = \"k.pem\"\n"
    );
    let c = Config::from_toml_str(&text, ORIGIN).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        c.outbound.dkim.map(|d| d.domain.to_string()),
        Some("example.gouv.fr".to_owned())
    );
}

#[test]
fn audit_events_need_a_sink() {
    let text = format!("{MINIMAL}[siem]\nsink = []\n");
    let line = text.lines().count();
    let want = format!(
        "minimal.toml:{line}: siem.sink: at least one sink is needed: every refusal is an audit event"
    );
    let err = Config::from_toml_str(&text, "minimal.toml")
        .err()
        .map(|e| e.to_string());
    assert_eq!(err, Some(want));
}

#[test]
fn nameservers_default_to_port_53() {
    let text = DEFAULT.replacen(
        "nameservers = []",
        "nameservers = [\"127.0.0.1\", \"127.0.0.2:5300\", \"[::1]:53\"]",
        1,
    );
    let c = Config::from_toml_str(&text, ORIGIN).unwrap_or_else(|e| panic!("{e}"));
    let got: Vec<String> = c.dns.nameservers.iter().map(ToString::to_string).collect();
    assert_eq!(got, ["127.0.0.1:53", "127.0.0.2:5300", "[::1]:53"]);
}

#[test]
fn no_outbound_target_points_at_the_table() {
    let text = DEFAULT.replacen("directory = \"var/outbox\"", "", 1);
    let want = format!(
        "{ORIGIN}:{}: outbound: set exactly one of outbound.directory and outbound.relay",
        line_of(DEFAULT, "[outbound]")
    );
    assert_eq!(error_of(&text), want);
}

#[test]
fn overrides_never_remove_both_dkim_and_spf() {
    let base_lines = DEFAULT.lines().count();
    let cases: &[(&str, &str)] = &[
        (
            "[policy.domains.\"culture.gouv.fr\"]\nrequire_dkim = false\nrequire_spf = false\nrequire_iprev = true\n",
            "policy.domains.\"culture.gouv.fr\": an override cannot remove both DKIM and SPF (require_dkim and require_spf both false)",
        ),
        (
            "[policy.domains.\"culture.gouv.fr\"]\nrequire_dkim = false\n",
            "policy.domains.\"culture.gouv.fr\": require_dkim = false needs require_iprev = true (SPF pass and reverse DNS carry the proof)",
        ),
        (
            "[policy.domains.\"evil.example\"]\nrequire_spf = false\n",
            "policy.domains.\"evil.example\": override for a domain outside policy.allowed_domains",
        ),
        (
            "[policy.domains.\"not_a_domain\"]\nrequire_spf = false\n",
            "policy.domains.not_a_domain: \"not_a_domain\" is not a valid domain",
        ),
    ];
    for (append, want) in cases {
        let text = format!("{DEFAULT}\n{append}");
        let err = error_of(&text);
        let want = format!("{ORIGIN}:{}: {want}", base_lines + 2);
        assert!(
            err.lines().any(|l| l.starts_with(&want)),
            "want {want}\ngot  {err}"
        );
    }
    // Relaxing one of them is fine, and the table carries it.
    let text = format!(
        "{DEFAULT}\n[policy.domains.\"culture.gouv.fr\"]\nrequire_dkim = false\nrequire_iprev = true\n"
    );
    let c = Config::from_toml_str(&text, ORIGIN).unwrap_or_else(|e| panic!("{e}"));
    let o = c.policy.domains.first().map(|o| {
        (
            o.domain.as_str().to_owned(),
            o.require_dkim,
            o.require_spf,
            o.require_iprev,
        )
    });
    assert_eq!(o, Some(("culture.gouv.fr".to_owned(), false, true, true)));
}

/// `envelope_tag` and `dkim_domains` (SPEC §3 "Envelope tags", §4 "Microsoft 365 tenants"):
/// every foot-gun refused with its message, the deliberate forms accepted.
#[test]
fn envelope_tags_and_tenant_domains() {
    let t = |body: &str| format!("{DEFAULT}\n[policy.domains.\"culture.gouv.fr\"]\n{body}");
    let refused: &[(&str, &str)] = &[
        ("envelope_tag = \"srs\"\n", "unknown variant `srs`"),
        ("envelope_tag = \"BATV\"\n", "unknown variant `BATV`"),
        (
            "dkim_domains = [\"not a domain\"]\n",
            "is not a valid domain",
        ),
        (
            "dkim_domains = [\"culture@onmicrosoft.com\"]\n",
            "is not a valid domain",
        ),
        (
            "dkim_domains = [\"*.onmicrosoft.com\"]\n",
            "wildcards are not accepted",
        ),
        (
            "dkim_domains = [\"onmicrosoft.com\"]\n",
            "is shared by every tenant",
        ),
        ("dkim_domains = [\"gouv.fr\"]\n", "is a public suffix"),
        ("dkim_domains = [\"co.uk\"]\n", "is a public suffix"),
        (
            "dkim_domains = [\"culture.gouv.fr\"]\n",
            "is the domain itself",
        ),
        (
            "dkim_domains = [\"culture.onmicrosoft.com\", \"Culture.onmicrosoft.com\"]\n",
            "is listed twice",
        ),
        (
            "dkim_domains = [\"interieur.gouv.fr\"]\n",
            "is under another allowed domain",
        ),
        (
            "dkim_domains = [\"mail.interieur.gouv.fr\"]\n",
            "is under another allowed domain",
        ),
        (
            "dkim_domains = [\"culture.onmicrosoft.com\"]\ndkim_domains_cross_allowed = [\"interieur.gouv.fr\"]\n",
            "is not in dkim_domains",
        ),
        (
            "dkim_domains = [\"verify.example.gouv.fr\"]\ndkim_domains_cross_allowed = [\"verify.example.gouv.fr\"]\n",
            "is under confirm.domain",
        ),
    ];
    for (body, want) in refused {
        let err = error_of(&t(body));
        assert!(err.contains(want), "{body}: want {want:?}\ngot  {err}");
    }
    // One tenant for two ministries: refused unless both state it twice.
    let two = |cross: &str| {
        format!(
            "{DEFAULT}\n[policy.domains.\"culture.gouv.fr\"]\ndkim_domains = [\"shared.onmicrosoft.com\"]\n{cross}\n\
             [policy.domains.\"interieur.gouv.fr\"]\ndkim_domains = [\"shared.onmicrosoft.com\"]\n{cross}\n"
        )
    };
    let err = error_of(&two(""));
    assert!(err.contains("is also listed for"), "{err}");
    let both = two("dkim_domains_cross_allowed = [\"shared.onmicrosoft.com\"]");
    assert!(Config::from_toml_str(&both, ORIGIN).is_ok());

    // Accepted: a tenant, an own subdomain, a cross entry stated twice, each tag.
    let accepted: &[(&str, Option<EnvelopeTag>, &[&str])] = &[
        ("envelope_tag = \"batv\"\n", Some(EnvelopeTag::Batv), &[]),
        ("envelope_tag = \"btv1\"\n", Some(EnvelopeTag::Btv1), &[]),
        (
            "dkim_domains = [\"Culture.OnMicrosoft.com\"]\n",
            None,
            &["culture.onmicrosoft.com"],
        ),
        (
            "dkim_domains = [\"mail.culture.gouv.fr\"]\n",
            None,
            &["mail.culture.gouv.fr"],
        ),
        (
            "dkim_domains = [\"interieur.gouv.fr\"]\ndkim_domains_cross_allowed = [\"interieur.gouv.fr\"]\n",
            None,
            &["interieur.gouv.fr"],
        ),
    ];
    for (body, tag, domains) in accepted {
        let c = Config::from_toml_str(&t(body), ORIGIN).unwrap_or_else(|e| panic!("{body}: {e}"));
        let Some(o) = c.policy.domains.first() else {
            panic!("{body}: no override");
        };
        assert_eq!(o.envelope_tag, *tag, "{body}");
        let got: Vec<&str> = o.dkim_domains.iter().map(|d| d.as_str()).collect();
        assert_eq!(got, *domains, "{body}");
    }
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = DEFAULT
        .replacen("max_errors = 10", "max_errors = 0", 1)
        .replacen("timeout = \"5s\"", "timeout = \"5\"", 1);
    let err = Config::from_toml_str(&text, ORIGIN)
        .err()
        .map(|e| e.problems().len());
    assert_eq!(err, Some(2));
}

#[test]
fn production_example_uses_what_it_shows() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/examples/production.toml");
    let c = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(c.smtp.listen.iter().all(|a| a.port() == 25));
    assert!(c.smtp.tls.as_ref().is_some_and(|t| t.required));
    assert!(
        matches!(&c.outbound.target, OutboundTarget::Relay(u) if u == "smtp://relay.example.gouv.fr:25")
    );
    assert!(c.outbound.dkim.is_some());
    assert!(c.siem.sinks.iter().any(|s| matches!(
        s,
        SiemSink::Syslog {
            transport: SyslogTransport::Tls,
            ..
        }
    )));
    assert_eq!(c.policy.domains.len(), 2);
}

#[test]
fn unreadable_file_is_named() {
    let err = Config::load(Path::new("no/such/gatekeeper.toml"))
        .err()
        .map(|e| e.to_string());
    assert!(err.is_some_and(|e| e.starts_with("no/such/gatekeeper.toml: cannot read: ")));
}

/// The line, at or after `from`, where the key named at the start of `want` is written; when
/// the key is absent (a missing required key), the header of its table above `from`.
fn key_line(text: &str, from: usize, want: &str) -> usize {
    let key = want.split(": ").next().unwrap_or_default();
    let leaf = key.rsplit('.').next().unwrap_or_default();
    let leaf = leaf.split('[').next().unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let written = lines
        .iter()
        .enumerate()
        .skip(from - 1)
        .take_while(|(i, l)| *i < from || !l.starts_with('['))
        .find(|(_, l)| l.starts_with(&format!("{leaf} =")));
    match written {
        Some((i, _)) => i + 1,
        None => lines
            .iter()
            .take(from)
            .rposition(|l| l.starts_with('['))
            .map_or(from, |i| i + 1),
    }
}

fn error_of(text: &str) -> String {
    match Config::from_toml_str(text, ORIGIN) {
        Ok(_) => panic!(
            "accepted:\n{}",
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .collect::<Vec<_>>()
                .join("\n")
        ),
        Err(e) => e.to_string(),
    }
}

/// 1-based line of the first line containing `needle` in the default file.
fn line_of(text: &str, needle: &str) -> usize {
    let first = needle.lines().next().unwrap_or(needle);
    text.lines()
        .position(|l| l.contains(first))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("{needle:?} not in the default file"))
}

/// `[[webhook]]` (SPEC §11): a valid table loads with its defaults, and every mistake is
/// refused at the line of its key (the secret file is read at load, so a missing or
/// malformed secret is a configuration error too).
#[test]
#[allow(clippy::unwrap_used)] // test code: a failed expectation is a failure
fn webhooks_are_validated_with_lines() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.secret");
    let plain = dir.path().join("plain.secret");
    std::fs::write(&good, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n").unwrap();
    std::fs::write(&plain, "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n").unwrap();
    let hook = |url: &str, secret: &Path, extra: &str| {
        format!(
            "\n[[webhook]]\nurl = \"{url}\"\nsecret_file = \"{}\"\n{extra}",
            secret.display()
        )
    };
    let ok = format!(
        "{DEFAULT}{}",
        hook("https://backend.example.gouv.fr/hooks/gk", &good, "")
    );
    let c = Config::from_toml_str(&ok, "t.toml").unwrap_or_else(|e| panic!("{e}"));
    let [w] = c.webhooks.as_slice() else {
        panic!("{:?}", c.webhooks)
    };
    assert_eq!(
        w.events,
        [
            "challenge.confirmed",
            "challenge.rejected",
            "challenge.expired"
        ]
    );
    assert_eq!(w.timeout, Duration::from_secs(10));
    assert_eq!(w.retry_max, Duration::from_secs(600));
    assert_eq!(w.max_age, Duration::from_secs(72 * 3600));
    assert_eq!(w.secret.as_bytes().len(), 24);
    assert!(
        !format!("{w:?}").contains("MfKQ"),
        "the secret is not in Debug"
    );
    assert!(
        Config::from_toml_str(DEFAULT, ORIGIN)
            .unwrap()
            .webhooks
            .is_empty(),
        "no webhook by default"
    );

    let url = "https://backend.example.gouv.fr/hooks/gk";
    let rows: Vec<(String, &str, &str)> = vec![
        (
            hook("ftp://backend.example.gouv.fr/x", &good, ""),
            "url",
            "http or https",
        ),
        (hook("/relative", &good, ""), "url", "absolute"),
        (
            hook("https://u:p@backend.example.gouv.fr/", &good, ""),
            "url",
            "user info",
        ),
        (hook(url, &plain, ""), "secret_file", "whsec_"),
        (
            hook(url, Path::new("/nonexistent/s"), ""),
            "secret_file",
            "cannot read",
        ),
        (
            hook(url, &good, "events = [\"challenge.created\"]\n"),
            "events",
            "not one of",
        ),
        (
            hook(
                url,
                &good,
                "events = [\"challenge.expired\", \"challenge.expired\"]\n",
            ),
            "events",
            "repeated",
        ),
        (hook(url, &good, "events = []\n"), "events", "at least one"),
        (
            hook(url, &good, "timeout = \"0s\"\n"),
            "timeout",
            "out of range",
        ),
        (
            hook(url, &good, "max_age = \"1s\"\n"),
            "max_age",
            "out of range",
        ),
        (
            hook(url, &good, "retry_max = \"2d\"\n"),
            "retry_max",
            "out of range",
        ),
        (
            hook(url, &good, "colour = \"blue\"\n"),
            "colour",
            "unknown field",
        ),
        (
            format!("{}{}", hook(url, &good, ""), hook(url, &good, "")),
            "url",
            "another [[webhook]]",
        ),
    ];
    for (tail, key, want) in rows {
        let text = format!("{DEFAULT}{tail}");
        let err = Config::from_toml_str(&text, "t.toml")
            .err()
            .unwrap_or_else(|| panic!("{key} {want}: accepted"))
            .to_string();
        // The line of the offending key: its last occurrence (the duplicate's url).
        let line = text
            .lines()
            .enumerate()
            .filter(|(_, l)| l.starts_with(&format!("{key} =")))
            .map(|(i, _)| i + 1)
            .last()
            .unwrap();
        assert!(
            err.contains(&format!("t.toml:{line}:")),
            "{key}: want line {line}: {err}"
        );
        assert!(err.contains(want), "{key}: want {want:?}: {err}");
    }
}
