//! `gatekeeper store migrate --from PATH --to URL` (issue 14, README "Several instances on
//! one PostgreSQL"): an SQLite store written through the real store API (challenges pending,
//! confirmed with evidence, expired, with rejections; a probe with its analysis; webhook
//! deliveries owed, retried and delivered) is moved by the real binary into a throwaway
//! PostgreSQL (`common::postgres`). Every record reads back equal through the PostgreSQL
//! store; a daemon on the migrated database confirms the pending challenge over SMTP and
//! refuses a new reply to the confirmed one (`token.used`). A second run into the same
//! database, and a source written by a newer program, are refused with exit status 1.
//!
//! Run: `cargo test --test store_migrate` (needs PostgreSQL 15, `.ci/packages`).

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use chrono::{DateTime, Duration, Utc};
use gatekeeper::backend::Evidence;
use gatekeeper::reason::Reason;
use gatekeeper::store::outbox::{Attempt, CONFIRMED, REJECTED, Subscription};
use gatekeeper::store::{
    ChallengeRecord, ConfirmOutcome, ConfirmRequest, Confirmation, CreateOutcome, NewChallenge,
    NewProbe, PostgresStore, ProbeRecord, RateLimits, Rejection, SqliteOptions, SqliteStore, Store,
    TokenHash,
};

use common::Vars;
use common::e2e::{Instance, Settings, Smtp, send_mail};
use common::mail::Mail;
use common::postgres::Cluster;

const LIMITS: RateLimits = RateLimits {
    max_pending: 100,
    max_per_hour: 100,
};
const TAIL: &str = "mg7@verify.example.gouv.fr";
const ALICE: &str = "alice@interieur.gouv.fr";

/// Tokens as the RCPT parser accepts them (lower-case base32).
const PENDING_TOKEN: &str = "migpendingaaaabbbbccccddddeeee";
const CONFIRMED_TOKEN: &str = "migconfirmedaaaabbbbccccdddd";

/// Now, at the stores' precision (Unix milliseconds).
fn now_ms() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap()
}

fn challenge(
    id: &str,
    token: &str,
    code: &str,
    created: DateTime<Utc>,
    ttl: Duration,
) -> NewChallenge {
    NewChallenge {
        id: id.into(),
        address: ALICE.into(),
        token_hash: TokenHash::of(token),
        session_code: code.into(),
        message_id_tail: TAIL.into(),
        created_at: created,
        expires_at: created + ttl,
    }
}

fn confirmation(msgid: &str, at: DateTime<Utc>) -> Confirmation {
    Confirmation {
        confirmed_at: at,
        evidence: Evidence {
            client_ip: "127.0.0.25".into(),
            helo: Some("smtp.interieur.gouv.fr".into()),
            mail_from: ALICE.into(),
            from: ALICE.into(),
            dkim_domain: "interieur.gouv.fr".into(),
            dkim_selector: "s2024".into(),
            dkim_algorithm: "rsa-sha256".into(),
            spf: "pass".into(),
            spf_dnssec: "insecure".into(),
            message_id: Some(msgid.into()),
            headers: "From: Alice <alice@interieur.gouv.fr>\r\nSubject: RE: x\r\n".into(),
            ..Evidence::default()
        },
        message_id: Some(msgid.into()),
        from: ALICE.into(),
        session_id: "sess-old".into(),
        session_ended: false,
    }
}

/// The challenge ids written by [`fill`], and the probe's (alphanumeric, as the API wants).
const IDS: [&str; 5] = [
    "cpending",
    "crejected",
    "cconfirmed",
    "cdelivered",
    "cexpired",
];
const PROBE: &str = "pone";

/// Write one record of every kind through the store API. Returns the session code of the
/// pending challenge.
async fn fill(store: &SqliteStore) -> String {
    store.set_webhooks(
        vec![Subscription {
            endpoint: "http://127.0.0.1:1/hook".into(),
            events: vec![CONFIRMED, REJECTED],
        }]
        .into(),
    );
    let now = now_ms();
    let hour = Duration::hours(1);
    let code = "482913".to_owned();
    let create = |c: NewChallenge| async move {
        assert_eq!(
            store.create(c, LIMITS, now).await.unwrap(),
            CreateOutcome::Created
        );
    };
    create(challenge("cpending", PENDING_TOKEN, &code, now, hour)).await;
    create(challenge(
        "crejected",
        "migrejectedaaaabbbb",
        "111111",
        now,
        hour,
    ))
    .await;
    create(challenge(
        "cconfirmed",
        CONFIRMED_TOKEN,
        "222222",
        now,
        hour,
    ))
    .await;
    create(challenge(
        "cdelivered",
        "migdeliveredaaaabbbb",
        "333333",
        now,
        hour,
    ))
    .await;
    create(challenge(
        "cexpired",
        "migexpiredaaaabbbb",
        "444444",
        now - Duration::days(2),
        Duration::days(1),
    ))
    .await;

    // Two refusals (the latest kept), then a third on the one confirmed later.
    for (reason, secs) in [(Reason::DkimNone, 10), (Reason::SpfFail, 20)] {
        store
            .record_rejection(
                "crejected",
                Rejection {
                    reason,
                    at: now + Duration::seconds(secs),
                },
            )
            .await
            .unwrap();
    }
    store
        .record_rejection(
            "cconfirmed",
            Rejection {
                reason: Reason::DkimNone,
                at: now + Duration::seconds(5),
            },
        )
        .await
        .unwrap();
    for (id, msgid) in [
        ("cconfirmed", "reply-c@interieur.gouv.fr"),
        ("cdelivered", "reply-d@interieur.gouv.fr"),
    ] {
        let outcome = store
            .confirm(ConfirmRequest {
                id: id.into(),
                confirmation: confirmation(msgid, now + Duration::seconds(30)),
                now: now + Duration::seconds(30),
            })
            .await
            .unwrap();
        assert_eq!(outcome, ConfirmOutcome::Confirmed);
    }
    // The webhook rows: c-delivered's confirmation delivered (not copied), the others
    // retried once (copied, with their attempt and error).
    let claimed = store
        .claim_deliveries(now + hour, now + hour + Duration::minutes(1), 10)
        .await
        .unwrap();
    assert!(claimed.len() >= 3, "{claimed:?}");
    for d in &claimed {
        let attempt = if d.challenge_id == "cdelivered" {
            Attempt::Delivered
        } else {
            Attempt::Retry {
                at: now + hour * 2,
                error: "HTTP 503".into(),
            }
        };
        store
            .finish_delivery(d.seq, attempt, now + hour)
            .await
            .unwrap();
    }

    let probe = NewProbe {
        id: PROBE.into(),
        token_hash: TokenHash::of("migprobeaaaabbbb"),
        created_at: now,
        expires_at: now + hour,
    };
    assert_eq!(
        store.create_probe(probe, LIMITS, now).await.unwrap(),
        CreateOutcome::Created
    );
    assert!(
        store
            .record_probe_analysis(PROBE, r#"{"verdict":"ready"}"#.into(), now)
            .await
            .unwrap()
    );
    code
}

async fn read_all(store: &impl Store) -> (Vec<ChallengeRecord>, ProbeRecord) {
    let mut records = Vec::new();
    for id in IDS {
        records.push(
            store
                .get(id)
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("{id} missing")),
        );
    }
    (
        records,
        store.get_probe(PROBE).await.unwrap().expect("probe"),
    )
}

fn migrate(from: &Path, cluster: &Cluster, url: &str) -> Output {
    let config = cluster.config();
    Command::new(env!("CARGO_BIN_EXE_gatekeeper"))
        .args(["store", "migrate", "--tls", "disable", "--from"])
        .arg(from)
        .args(["--to", url, "--password-file"])
        .arg(config.password_file.unwrap())
        .output()
        .expect("run gatekeeper store migrate")
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The webhook rows still owed, as one comparable line (columns as text, by `seq`).
const OUTBOX_SQLITE: &str = "SELECT group_concat(r, ';') FROM (SELECT seq || '|' || id || '|' \
    || endpoint || '|' || event || '|' || challenge_id || '|' || payload || '|' || created_at \
    || '|' || attempts || '|' || next_attempt_at || '|' || coalesce(last_error, '') AS r \
    FROM webhook_outbox WHERE done_at IS NULL ORDER BY seq)";
const OUTBOX_PG: &str = "SELECT string_agg(seq || '|' || id || '|' || endpoint || '|' || event \
    || '|' || challenge_id || '|' || payload || '|' || created_at || '|' || attempts || '|' \
    || next_attempt_at || '|' || coalesce(last_error, ''), ';' ORDER BY seq) FROM webhook_outbox";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_store_moves_to_postgres_whole_and_keeps_working() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("gatekeeper.db");
    let store = SqliteStore::open(&path, SqliteOptions::default()).unwrap();
    let code = fill(&store).await;
    let (before, probe_before) = read_all(&store).await;
    drop(store);
    let outbox_before: String = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row(OUTBOX_SQLITE, [], |r| r.get(0))
        .unwrap();
    assert!(
        outbox_before.contains("HTTP 503") && !outbox_before.contains("cdelivered"),
        "the source has retried rows and the delivered one is done: {outbox_before}"
    );

    let cluster = Cluster::start();
    let out = migrate(&path, &cluster, &cluster.url());
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in [
        "challenges: 5 copied",
        "probes: 1 copied",
        "webhook_outbox: 4 copied, 1 skipped (delivered or given up)",
    ] {
        assert!(stdout.contains(line), "{line:?} in:\n{}", text(&out));
    }

    // Every record reads back equal through the PostgreSQL store.
    let pg = PostgresStore::open(&cluster.config(), false).unwrap();
    let (after, probe_after) = read_all(&pg).await;
    assert_eq!(after, before);
    assert_eq!(probe_after, probe_before);
    assert!(after[1].last_rejection.is_some() && after[1].rejections == 2);
    assert!(after[2].confirmation.is_some() && after[2].rejections == 1);
    assert_eq!(cluster.query(OUTBOX_PG), outbox_before);
    // New outbox rows come after the copied ones.
    assert_eq!(
        cluster.query(
            "SELECT nextval(pg_get_serial_sequence('webhook_outbox', 'seq')) \
             > (SELECT max(seq) FROM webhook_outbox)"
        ),
        "t"
    );
    drop(pg);

    // Refused: a second run into the same (now non-empty) database; nothing changes.
    let again = migrate(&path, &cluster, &cluster.url());
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("not empty"),
        "{}",
        text(&again)
    );
    assert_eq!(cluster.query("SELECT count(*) FROM challenges"), "5");

    // Refused: a source written by a newer program (into an empty database).
    let newer = tmp.path().join("newer.db");
    std::fs::copy(&path, &newer).unwrap();
    rusqlite::Connection::open(&newer)
        .unwrap()
        .execute_batch("UPDATE schema_version SET version = version + 1")
        .unwrap();
    let target = cluster.fresh_database("gk_newer");
    let refused = migrate(&newer, &cluster, &target.url);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("newer than this program"),
        "{}",
        text(&refused)
    );

    // A daemon on the migrated database: the pending challenge confirms over SMTP, a new
    // reply to the confirmed one's token is `token.used`.
    let world = common::World::start().await;
    let settings = Settings {
        postgres: Some(cluster.config()),
        ..Settings::default()
    };
    let daemon = Instance::start(world.dns.addr, &settings).await;
    let alice = Mail::alice();
    let reply_to = |token: &str, n: u32, code: &str| {
        let mut vars = Vars::new(Utc::now(), n);
        vars.token = token.to_owned();
        vars.challenge_msgid = gatekeeper::store::message_id(token, TAIL);
        vars.session_code = code.to_owned();
        vars
    };
    let deliver = async |vars: &Vars| {
        let ip = alice.client_ip.parse().unwrap();
        let mut smtp = Smtp::connect(ip, daemon.smtp).await.expect("connect");
        let rcpt = format!("confirm+{}@verify.example.gouv.fr", vars.token);
        let reply = send_mail(
            &mut smtp,
            &alice.helo,
            &alice.mail_from,
            &rcpt,
            &alice.build(vars),
        )
        .await
        .expect("reply");
        smtp.quit().await;
        reply
    };
    let reply = deliver(&reply_to(PENDING_TOKEN, 1, &code)).await;
    assert_eq!(reply.code, 250, "{reply}");
    let shown = daemon.api.show("cpending").await;
    assert_eq!(shown["status"], "confirmed", "{shown}");
    let reply = deliver(&reply_to(CONFIRMED_TOKEN, 2, "222222")).await;
    let used = "token.used".parse::<Reason>().unwrap();
    assert_eq!(reply.code, used.reply().code, "{reply}");
    assert!(reply.text.contains("already used"), "{reply}");
}
