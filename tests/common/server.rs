//! The SMTP server on a loopback port with a fake backend: [`start`] runs `server::run` with
//! [`TestBackend`] and a memory audit sink, and hands back what a test inspects and the
//! handles to reload or stop it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use gatekeeper::audit::MemorySink;
use gatekeeper::backend::{
    Backend, Decision, RcptOutcome, Recipient, SessionInfo, Transaction, Verdict,
};
use gatekeeper::reason::Reason;
use gatekeeper::server::{self, ServerSettings};

/// Accepts the token `good`; accepts any delivered message that has a From header.
#[derive(Default)]
pub struct TestBackend {
    pub delivered: Mutex<Vec<Transaction>>,
    pub closed: Mutex<Vec<String>>,
}

impl Backend for TestBackend {
    async fn check_recipient(
        &self,
        _s: &SessionInfo,
        rcpt: &Recipient,
        _now: DateTime<Utc>,
    ) -> RcptOutcome {
        if rcpt.token == "good" {
            RcptOutcome::Accept {
                challenge_id: "ch-good".into(),
            }
        } else {
            RcptOutcome::Refuse(Reason::TokenUnknown)
        }
    }

    async fn deliver(&self, tx: Transaction) -> Verdict {
        let has_from = tx
            .message
            .windows(5)
            .any(|w| w.eq_ignore_ascii_case(b"from:"));
        let decision = if has_from {
            Decision::Accept
        } else {
            Decision::Refuse(Reason::HeaderFromCount)
        };
        self.delivered.lock().unwrap().push(tx);
        Verdict {
            decision,
            ..Verdict::refuse(Reason::DkimNone)
        }
    }

    fn session_closed(&self, session_id: &str) {
        self.closed.lock().unwrap().push(session_id.to_owned());
    }
}

/// A running server (see [`start`]).
pub struct Server {
    pub addr: SocketAddr,
    pub sink: Arc<MemorySink>,
    pub backend: Arc<TestBackend>,
    pub shutdown: CancellationToken,
    pub handle: JoinHandle<()>,
    /// The reload side of the settings channel (also keeps it open).
    pub settings_tx: watch::Sender<Arc<ServerSettings>>,
}

pub async fn start(settings: ServerSettings) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = watch::channel(Arc::new(settings));
    let sink = Arc::new(MemorySink::default());
    let backend = Arc::new(TestBackend::default());
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(server::run(
        vec![listener],
        rx,
        backend.clone(),
        sink.clone(),
        shutdown.clone(),
    ));
    Server {
        addr,
        sink,
        backend,
        shutdown,
        handle,
        settings_tx: tx,
    }
}
