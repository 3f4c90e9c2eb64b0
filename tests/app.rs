//! The production backend (`App`) driven through the `Backend` trait, over a real SQLite
//! store, with a scripted `Verify` (defined here) standing in for SPF/DKIM: RCPT token
//! states, accept → durable confirmation with evidence, idempotent redelivery after a lost
//! 250, concurrent double delivery (TOKEN-12), rejections that keep the token usable, and
//! store failures → `store.unavailable`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use gatekeeper::backend::{
    Backend, ChallengeBinding, Decision, Evidence, RcptOutcome, Recipient, SessionInfo,
    Transaction, Verdict, Verify,
};
use gatekeeper::reason::Reason;
use gatekeeper::store::{CreateOutcome, RateLimits, SqliteOptions, SqliteStore, Status, Store};

use common::challenge::{DownStore, config, new_challenge};
use common::mailbox;
use gatekeeper::app::App;

const LIMITS: RateLimits = RateLimits {
    max_pending: 100,
    max_per_hour: 100,
};
const ALICE: &str = "alice@interieur.gouv.fr";

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-26T08:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

/// Accepts unless the message contains `REFUSE:<reason code>`; checks that the binding it
/// is given is the stored challenge; waits a little so concurrent deliveries overlap.
#[derive(Default)]
struct ScriptedVerifier {
    calls: AtomicUsize,
}

impl Verify for ScriptedVerifier {
    async fn verify(
        &self,
        tx: &Transaction,
        challenge: &ChallengeBinding,
        _now: DateTime<Utc>,
    ) -> Verdict {
        self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let text = String::from_utf8_lossy(&tx.message).into_owned();
        let message_id = text
            .lines()
            .find_map(|l| l.strip_prefix("Message-ID: <"))
            .map(|v| v.trim_end_matches('>').to_owned());
        assert_eq!(
            challenge.token, tx.rcpt.token,
            "binding carries the RCPT token"
        );
        assert_eq!(challenge.id, tx.challenge_id);
        assert_eq!(challenge.session_code, "123456");
        assert_eq!(
            challenge.message_id,
            format!("{}.x@verify.example.gouv.fr", tx.rcpt.token)
        );
        let refusal = text
            .split("REFUSE:")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .map(|code| code.parse::<Reason>().unwrap());
        let from = tx.mail_from.to_string();
        Verdict {
            decision: refusal.map(Decision::Refuse).unwrap_or(Decision::Accept),
            checks: vec![],
            from: Some(from.clone()),
            message_id: message_id.clone(),
            challenge_id: None,
            evidence: refusal.is_none().then(|| Evidence {
                client_ip: tx.session.client_ip.to_string(),
                helo: tx.session.helo.clone(),
                mail_from: from.clone(),
                from,
                dkim_domain: "interieur.gouv.fr".into(),
                dkim_selector: "s2024".into(),
                dkim_algorithm: "rsa-sha256".into(),
                spf: "pass".into(),
                message_id,
                headers: text.split("\r\n\r\n").next().unwrap_or_default().to_owned(),
                ..Evidence::default()
            }),
        }
    }

    /// Probes follow the same script: `REFUSE:<code>` in the body is the reason a
    /// confirmation would get.
    async fn analyse(&self, tx: &Transaction, probe_id: &str, _now: DateTime<Utc>) -> Verdict {
        self.calls.fetch_add(1, Ordering::SeqCst);
        assert_eq!(probe_id, tx.challenge_id);
        let text = String::from_utf8_lossy(&tx.message).into_owned();
        let refusal = text
            .split("REFUSE:")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .map(|code| code.parse::<Reason>().unwrap());
        Verdict {
            decision: refusal.map(Decision::Refuse).unwrap_or(Decision::Accept),
            checks: vec![],
            from: Some(tx.mail_from.to_string()),
            message_id: None,
            challenge_id: None,
            evidence: None,
        }
    }
}

struct World {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    store: Arc<SqliteStore>,
    app: App<SqliteStore, ScriptedVerifier>,
}

fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let path = cfg.store.path.clone();
    let store = Arc::new(SqliteStore::open(&path, SqliteOptions::default()).unwrap());
    let app = App::new(&cfg, Arc::clone(&store), ScriptedVerifier::default());
    World {
        _dir: dir,
        path,
        store,
        app,
    }
}

fn session(id: &str) -> SessionInfo {
    SessionInfo {
        session_id: id.into(),
        client_ip: "127.0.0.25".parse::<IpAddr>().unwrap(),
        client_port: 40000,
        helo: Some("smtp.interieur.gouv.fr".into()),
        tls_version: None,
    }
}

fn rcpt(token: &str) -> Recipient {
    Recipient {
        token: token.into(),
        address: mailbox(&format!("confirm+{token}@verify.example.gouv.fr")),
    }
}

fn message(msgid: &str, extra: &str) -> Vec<u8> {
    format!(
        "From: Alice <alice@interieur.gouv.fr>\r\nMessage-ID: <{msgid}>\r\nSubject: RE: x\r\n\r\nCode : 123456\r\n{extra}\r\n"
    )
    .into_bytes()
}

fn tx(
    session_id: &str,
    token: &str,
    challenge_id: &str,
    msg: Vec<u8>,
    at: DateTime<Utc>,
) -> Transaction {
    Transaction {
        session: session(session_id),
        mail_from: mailbox(ALICE),
        mail_from_tagged: None,
        rcpt: rcpt(token),
        challenge_id: challenge_id.into(),
        message: msg,
        received_at: at,
    }
}

async fn add(store: &SqliteStore, id: &str, token: &str, ttl_secs: i64) {
    let c = new_challenge(id, ALICE, token, t0(), ttl_secs);
    assert_eq!(
        store.create(c, LIMITS, t0()).await.unwrap(),
        CreateOutcome::Created
    );
}

async fn accept_id(app: &impl Backend, session_id: &str, token: &str, at: DateTime<Utc>) -> String {
    match app
        .check_recipient(&session(session_id), &rcpt(token), at)
        .await
    {
        RcptOutcome::Accept { challenge_id } => challenge_id,
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rcpt_token_states() {
    let w = world();
    let now = t0() + chrono::Duration::seconds(5);
    add(&w.store, "live", "tokenlive", 3600).await;
    add(&w.store, "old", "tokenold", 1).await;

    assert_eq!(
        w.app
            .check_recipient(&session("s"), &rcpt("nosuchtoken"), now)
            .await,
        RcptOutcome::Refuse(Reason::TokenUnknown)
    );
    assert_eq!(
        w.app
            .check_recipient(&session("s"), &rcpt("tokenold"), now)
            .await,
        RcptOutcome::Refuse(Reason::TokenExpired)
    );
    assert_eq!(accept_id(&w.app, "s", "tokenlive", now).await, "live");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_stores_the_confirmation_with_evidence_then_token_is_used() {
    let w = world();
    let now = t0() + chrono::Duration::seconds(5);
    add(&w.store, "c1", "tok1", 3600).await;
    let id = accept_id(&w.app, "s1", "tok1", now).await;
    let mut msg = b"To: <confirm+tok1@verify.example.gouv.fr>\r\nIn-Reply-To: <TOK1.x@verify.example.gouv.fr>\r\n".to_vec();
    msg.extend(message("m1@interieur.gouv.fr", ""));
    let verdict = w.app.deliver(tx("s1", "tok1", &id, msg, now)).await;
    assert_eq!(verdict.decision, Decision::Accept);
    assert_eq!(verdict.challenge_id.as_deref(), Some("c1"));

    // Durable before the answer: a fresh handle on the file sees it.
    let other = SqliteStore::open(&w.path, SqliteOptions::default()).unwrap();
    let record = other.get("c1").await.unwrap().unwrap();
    assert_eq!(record.status(now), Status::Confirmed);
    let conf = record.confirmation.unwrap();
    assert_eq!(conf.session_id, "s1");
    assert_eq!(conf.from, ALICE);
    assert_eq!(conf.message_id.as_deref(), Some("m1@interieur.gouv.fr"));
    assert_eq!(conf.evidence.client_ip, "127.0.0.25");
    assert_eq!(conf.evidence.dkim_domain, "interieur.gouv.fr");
    assert!(conf.evidence.headers.contains("Subject: RE: x"));
    assert!(
        conf.evidence
            .headers
            .contains("To: <confirm+[redacted]@verify.example.gouv.fr>")
    );
    assert!(
        !conf.evidence.headers.to_ascii_lowercase().contains("tok1"),
        "token redacted in the stored headers"
    );

    // A used token passes RCPT (a redelivery may follow) ...
    let id = accept_id(&w.app, "s2", "tok1", now).await;
    // ... but another message gets token.used.
    let v = w
        .app
        .deliver(tx(
            "s2",
            "tok1",
            &id,
            message("m2@interieur.gouv.fr", ""),
            now,
        ))
        .await;
    assert_eq!(v.decision, Decision::Refuse(Reason::TokenUsed));
    assert!(v.evidence.is_none());
    // So does a refused message on a used token, and it is not counted.
    let v = w
        .app
        .deliver(tx(
            "s2",
            "tok1",
            &id,
            message("m3@interieur.gouv.fr", "REFUSE:dkim.fail"),
            now,
        ))
        .await;
    assert_eq!(v.decision, Decision::Refuse(Reason::TokenUsed));
    assert_eq!(w.store.get("c1").await.unwrap().unwrap().rejections, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_message_again_is_accepted_only_after_its_session_ended() {
    let w = world();
    let now = t0() + chrono::Duration::seconds(5);
    add(&w.store, "c1", "tok1", 3600).await;
    let msg = message("m1@interieur.gouv.fr", "");
    let first = w
        .app
        .deliver(tx("s1", "tok1", "c1", msg.clone(), now))
        .await;
    assert_eq!(first.decision, Decision::Accept);

    // Same message while the first session is still open: token.used.
    let v = w
        .app
        .deliver(tx("s2", "tok1", "c1", msg.clone(), now))
        .await;
    assert_eq!(v.decision, Decision::Refuse(Reason::TokenUsed));

    // The first session ends (its 250 was lost); the sender retries the same message.
    w.app.session_closed("s1");
    let mut ended = false;
    for _ in 0..200 {
        let c = w
            .store
            .get("c1")
            .await
            .unwrap()
            .unwrap()
            .confirmation
            .unwrap();
        if c.session_ended {
            ended = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(ended, "session end recorded in the store");
    let later = now + chrono::Duration::seconds(60);
    let v = w
        .app
        .deliver(tx("s3", "tok1", "c1", msg.clone(), later))
        .await;
    assert_eq!(v.decision, Decision::Accept, "idempotent redelivery");
    // Different Message-ID or different From: still token.used.
    let v = w
        .app
        .deliver(tx(
            "s3",
            "tok1",
            "c1",
            message("other@interieur.gouv.fr", ""),
            later,
        ))
        .await;
    assert_eq!(v.decision, Decision::Refuse(Reason::TokenUsed));
    let mut bob = tx("s3", "tok1", "c1", msg.clone(), later);
    bob.mail_from = mailbox("bob@interieur.gouv.fr");
    assert_eq!(
        w.app.deliver(bob).await.decision,
        Decision::Refuse(Reason::TokenUsed)
    );
    // The stored confirmation is still the first one.
    let c = w
        .store
        .get("c1")
        .await
        .unwrap()
        .unwrap()
        .confirmation
        .unwrap();
    assert_eq!(c.session_id, "s1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_older_than_the_session_timeout_counts_as_ended() {
    let w = world();
    let now = t0() + chrono::Duration::seconds(5);
    add(&w.store, "c1", "tok1", 3600).await;
    let msg = message("m1@interieur.gouv.fr", "");
    assert_eq!(
        w.app
            .deliver(tx("s1", "tok1", "c1", msg.clone(), now))
            .await
            .decision,
        Decision::Accept
    );
    // No session_closed (say the instance crashed): after smtp.session_timeout (600 s in
    // the test config) the confirming session cannot be alive any more.
    let v = w
        .app
        .deliver(tx(
            "s2",
            "tok1",
            "c1",
            msg.clone(),
            now + chrono::Duration::seconds(599),
        ))
        .await;
    assert_eq!(v.decision, Decision::Refuse(Reason::TokenUsed));
    let v = w
        .app
        .deliver(tx(
            "s2",
            "tok1",
            "c1",
            msg,
            now + chrono::Duration::seconds(601),
        ))
        .await;
    assert_eq!(v.decision, Decision::Accept);
}

/// Corpus TOKEN-12: the same message over two simultaneous sessions, on one instance and on
/// two instances sharing the store: exactly one 250.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_double_delivery_gives_exactly_one_accept() {
    let w = Arc::new(world());
    let dir2 = tempfile::tempdir().unwrap();
    let cfg2 = config(dir2.path());
    let store2 = Arc::new(SqliteStore::open(&w.path, SqliteOptions::default()).unwrap());
    let second_instance = Arc::new(App::new(&cfg2, store2, ScriptedVerifier::default()));
    let now = t0() + chrono::Duration::seconds(5);

    for round in 0..10 {
        let id = format!("c{round}");
        let token = format!("tok{round}");
        add(&w.store, &id, &token, 3600).await;
        let msg = message(&format!("m{round}@interieur.gouv.fr"), "");
        let a = {
            let w = Arc::clone(&w);
            let t = tx(&format!("a{round}"), &token, &id, msg.clone(), now);
            tokio::spawn(async move { w.app.deliver(t).await })
        };
        let b = {
            let t = tx(&format!("b{round}"), &token, &id, msg.clone(), now);
            if round % 2 == 0 {
                let w = Arc::clone(&w);
                tokio::spawn(async move { w.app.deliver(t).await })
            } else {
                let app = Arc::clone(&second_instance);
                tokio::spawn(async move { app.deliver(t).await })
            }
        };
        let decisions = [a.await.unwrap().decision, b.await.unwrap().decision];
        let accepted = decisions.iter().filter(|d| **d == Decision::Accept).count();
        assert_eq!(accepted, 1, "round {round}: {decisions:?}");
        assert!(
            decisions.contains(&Decision::Refuse(Reason::TokenUsed)),
            "round {round}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusal_keeps_the_challenge_pending_and_counts_it() {
    let w = world();
    let now = t0() + chrono::Duration::seconds(5);
    add(&w.store, "c1", "tok1", 3600).await;
    let v = w
        .app
        .deliver(tx(
            "s1",
            "tok1",
            "c1",
            message("m1@interieur.gouv.fr", "REFUSE:binding.session_code"),
            now,
        ))
        .await;
    assert_eq!(v.decision, Decision::Refuse(Reason::BindingSessionCode));
    let v = w
        .app
        .deliver(tx(
            "s1",
            "tok1",
            "c1",
            message("m2@interieur.gouv.fr", "REFUSE:spf.fail"),
            now,
        ))
        .await;
    assert_eq!(v.decision, Decision::Refuse(Reason::SpfFail));
    // A temporary failure says nothing about the reply: not counted.
    let v = w
        .app
        .deliver(tx(
            "s1",
            "tok1",
            "c1",
            message("m3@interieur.gouv.fr", "REFUSE:dns.temperror"),
            now,
        ))
        .await;
    assert_eq!(v.decision, Decision::Refuse(Reason::DnsTemperror));
    let record = w.store.get("c1").await.unwrap().unwrap();
    assert_eq!(record.status(now), Status::Pending);
    assert_eq!(record.rejections, 2);
    // The token is not used up: the fixed reply confirms.
    let v = w
        .app
        .deliver(tx(
            "s1",
            "tok1",
            "c1",
            message("m4@interieur.gouv.fr", ""),
            now,
        ))
        .await;
    assert_eq!(v.decision, Decision::Accept);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_between_rcpt_and_data_and_mismatched_token() {
    let w = world();
    add(&w.store, "c1", "tok1", 60).await;
    let rcpt_time = t0() + chrono::Duration::seconds(59);
    let id = accept_id(&w.app, "s1", "tok1", rcpt_time).await;
    let v = w
        .app
        .deliver(tx(
            "s1",
            "tok1",
            &id,
            message("m1@interieur.gouv.fr", ""),
            t0() + chrono::Duration::seconds(61),
        ))
        .await;
    assert_eq!(v.decision, Decision::Refuse(Reason::TokenExpired));
    // The `token.expired` answer is kept as the last rejection: the challenge stays expired
    // even at a time before `expires_at` (a wall clock stepped back, README "Clocks").
    let record = w.app.store().get("c1").await.unwrap().unwrap();
    assert_eq!(record.rejections, 1);
    assert_eq!(
        record.last_rejection.map(|r| r.reason),
        Some(Reason::TokenExpired)
    );
    assert_eq!(record.status(rcpt_time), gatekeeper::store::Status::Expired);

    // A transaction whose token does not name that challenge, or no challenge at all.
    add(&w.store, "c2", "tok2", 3600).await;
    let now = t0() + chrono::Duration::seconds(5);
    let v = w
        .app
        .deliver(tx(
            "s1",
            "tok1",
            "c2",
            message("m1@interieur.gouv.fr", ""),
            now,
        ))
        .await;
    assert_eq!(v.decision, Decision::Refuse(Reason::TokenUnknown));
    let v = w
        .app
        .deliver(tx(
            "s1",
            "tok9",
            "gone",
            message("m1@interieur.gouv.fr", ""),
            now,
        ))
        .await;
    assert_eq!(v.decision, Decision::Refuse(Reason::TokenUnknown));
    assert!(
        w.store
            .get("c2")
            .await
            .unwrap()
            .unwrap()
            .confirmation
            .is_none()
    );
}

/// A commit that cannot happen (lock held past the busy timeout): 4xx, nothing stored, and
/// the same message is accepted once the store is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_failure_is_store_unavailable_and_retry_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let store = Arc::new(
        SqliteStore::open(
            &cfg.store.path,
            SqliteOptions {
                busy_timeout: Duration::from_millis(200),
                read_only: false,
            },
        )
        .unwrap(),
    );
    let app = App::new(&cfg, Arc::clone(&store), ScriptedVerifier::default());
    add(&store, "c1", "tok1", 3600).await;
    let now = t0() + chrono::Duration::seconds(5);

    let locker = rusqlite::Connection::open(&cfg.store.path).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let msg = message("m1@interieur.gouv.fr", "");
    let v = app.deliver(tx("s1", "tok1", "c1", msg.clone(), now)).await;
    assert_eq!(v.decision, Decision::Refuse(Reason::StoreUnavailable));
    assert_eq!(Reason::StoreUnavailable.reply().code, 451);
    assert!(v.evidence.is_none());
    locker.execute_batch("ROLLBACK").unwrap();
    assert!(
        store
            .get("c1")
            .await
            .unwrap()
            .unwrap()
            .confirmation
            .is_none()
    );

    let v = app.deliver(tx("s1", "tok1", "c1", msg, now)).await;
    assert_eq!(v.decision, Decision::Accept);
}

#[tokio::test]
async fn unreadable_store_is_store_unavailable_at_rcpt_and_data() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let verifier = ScriptedVerifier::default();
    let app = App::new(&cfg, Arc::new(DownStore), verifier);
    assert_eq!(
        app.check_recipient(&session("s"), &rcpt("tok1"), t0())
            .await,
        RcptOutcome::Refuse(Reason::StoreUnavailable)
    );
    let v = app
        .deliver(tx("s", "tok1", "c1", message("m@x.gouv.fr", ""), t0()))
        .await;
    assert_eq!(v.decision, Decision::Refuse(Reason::StoreUnavailable));
    assert_eq!(v.challenge_id.as_deref(), Some("c1"));
}

/// A store that counts the reads of the SMTP path and passes everything to SQLite.
struct CountingStore {
    inner: SqliteStore,
    reads: AtomicUsize,
}

impl Store for CountingStore {
    async fn create(
        &self,
        c: gatekeeper::store::NewChallenge,
        l: RateLimits,
        now: DateTime<Utc>,
    ) -> Result<CreateOutcome, gatekeeper::store::StoreError> {
        self.inner.create(c, l, now).await
    }
    async fn get(
        &self,
        id: &str,
    ) -> Result<Option<gatekeeper::store::ChallengeRecord>, gatekeeper::store::StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.get(id).await
    }
    async fn find_by_token_hash(
        &self,
        h: &gatekeeper::store::TokenHash,
    ) -> Result<Option<gatekeeper::store::ChallengeRecord>, gatekeeper::store::StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.find_by_token_hash(h).await
    }
    async fn delete(&self, id: &str) -> Result<bool, gatekeeper::store::StoreError> {
        self.inner.delete(id).await
    }
    async fn confirm(
        &self,
        r: gatekeeper::store::ConfirmRequest,
    ) -> Result<gatekeeper::store::ConfirmOutcome, gatekeeper::store::StoreError> {
        self.inner.confirm(r).await
    }
    async fn record_rejection(
        &self,
        id: &str,
        rejection: gatekeeper::store::Rejection,
    ) -> Result<(), gatekeeper::store::StoreError> {
        self.inner.record_rejection(id, rejection).await
    }
    fn count_rejection(&self, id: &str, rejection: gatekeeper::store::Rejection) {
        self.inner.count_rejection(id, rejection)
    }
    async fn session_ended(&self, s: &str) -> Result<u64, gatekeeper::store::StoreError> {
        self.inner.session_ended(s).await
    }
    async fn purge(&self, c: DateTime<Utc>) -> Result<u64, gatekeeper::store::StoreError> {
        self.inner.purge(c).await
    }
    async fn pending_count(
        &self,
        a: &str,
        now: DateTime<Utc>,
    ) -> Result<u32, gatekeeper::store::StoreError> {
        self.inner.pending_count(a, now).await
    }
    async fn confirmed_signers(
        &self,
        domain: &str,
    ) -> Result<Vec<gatekeeper::store::Signer>, gatekeeper::store::StoreError> {
        self.inner.confirmed_signers(domain).await
    }
    async fn created_since(
        &self,
        a: &str,
        since: DateTime<Utc>,
    ) -> Result<u32, gatekeeper::store::StoreError> {
        self.inner.created_since(a, since).await
    }
    async fn end_open_sessions(&self) -> Result<u64, gatekeeper::store::StoreError> {
        self.inner.end_open_sessions().await
    }
    async fn flush_rejections(&self) {
        self.inner.flush_rejections().await
    }
    async fn create_probe(
        &self,
        p: gatekeeper::store::NewProbe,
        l: RateLimits,
        now: DateTime<Utc>,
    ) -> Result<CreateOutcome, gatekeeper::store::StoreError> {
        self.inner.create_probe(p, l, now).await
    }
    async fn get_probe(
        &self,
        id: &str,
    ) -> Result<Option<gatekeeper::store::ProbeRecord>, gatekeeper::store::StoreError> {
        self.inner.get_probe(id).await
    }
    async fn find_probe_by_token_hash(
        &self,
        h: &gatekeeper::store::TokenHash,
    ) -> Result<Option<gatekeeper::store::ProbeRecord>, gatekeeper::store::StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.find_probe_by_token_hash(h).await
    }
    async fn record_probe_analysis(
        &self,
        id: &str,
        report: String,
        at: DateTime<Utc>,
    ) -> Result<bool, gatekeeper::store::StoreError> {
        self.inner.record_probe_analysis(id, report, at).await
    }
}

/// One store read per message: DATA uses the record its session's RCPT read. Without one
/// (no RCPT in this session, the session closed, another challenge) DATA reads the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_uses_the_record_read_at_rcpt() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let store = Arc::new(CountingStore {
        inner: SqliteStore::open(&cfg.store.path, SqliteOptions::default()).unwrap(),
        reads: AtomicUsize::new(0),
    });
    let app = App::new(&cfg, Arc::clone(&store), ScriptedVerifier::default());
    for (id, tok) in [("c1", "tok1"), ("c2", "tok2"), ("c3", "tok3")] {
        add(&store.inner, id, tok, 3600).await;
    }
    let now = t0() + chrono::Duration::seconds(5);
    let reads = || store.reads.load(Ordering::SeqCst);

    // RCPT then DATA in one session: one read; the refusal is counted.
    let id = accept_id(&app, "s1", "tok1", now).await;
    assert_eq!(reads(), 1);
    let v = app
        .deliver(tx(
            "s1",
            "tok1",
            &id,
            message("m1@interieur.gouv.fr", "REFUSE:spf.fail"),
            now,
        ))
        .await;
    assert_eq!(v.decision, Decision::Refuse(Reason::SpfFail));
    assert_eq!(reads(), 1, "DATA did not read the store again");
    assert_eq!(store.get("c1").await.unwrap().unwrap().rejections, 1);
    let after_get = reads();

    // The kept record was used up: the same session's next DATA reads.
    let v = app
        .deliver(tx(
            "s1",
            "tok1",
            &id,
            message("m2@interieur.gouv.fr", ""),
            now,
        ))
        .await;
    assert_eq!(v.decision, Decision::Accept);
    assert_eq!(reads(), after_get + 1);

    // Session closed between RCPT and DATA: its record is dropped.
    let id2 = accept_id(&app, "s2", "tok2", now).await;
    app.session_closed("s2");
    let before = reads();
    app.deliver(tx(
        "s2",
        "tok2",
        &id2,
        message("m3@interieur.gouv.fr", ""),
        now,
    ))
    .await;
    assert_eq!(reads(), before + 1);

    // A transaction naming another challenge than the kept record: read, and judged on its own.
    accept_id(&app, "s3", "tok3", now).await;
    let before = reads();
    let v = app
        .deliver(tx(
            "s3",
            "tok2",
            "c2",
            message("m4@interieur.gouv.fr", ""),
            now,
        ))
        .await;
    assert_eq!(reads(), before + 1);
    assert_eq!(v.challenge_id.as_deref(), Some("c2"));
}
