//! The SMTP server over real loopback sockets with a test backend: a real client (lettre),
//! raw PIPELINING, STARTTLS with a certificate made here, the STARTTLS injection, tls.required,
//! timeouts, connection caps, allowed networks and shutdown. Timeouts are short configured
//! durations; tests assert outcomes (reply classes, audit events), never timings.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};

use gatekeeper::audit::{Action, AuditEvent};
use gatekeeper::config::{Config, TlsConfig};
use gatekeeper::reason::Reason;
use gatekeeper::server::ServerSettings;

use common::domain;
use common::server::start;

/// Every socket wait in these tests is bounded by this.
const WAIT: Duration = Duration::from_secs(10);
const GOOD: &str = "confirm+good@verify.example.gouv.fr";

/// The shipped configuration with test-sized limits.
fn config() -> Config {
    let mut config =
        Config::from_toml_str(include_str!("../conf/gatekeeper.toml"), "conf").unwrap();
    config.smtp.max_message_bytes = 100_000;
    config.smtp.max_connections = 50;
    config.smtp.max_connections_per_ip = 20;
    config.smtp.command_timeout = Duration::from_secs(30);
    config.smtp.data_timeout = Duration::from_secs(30);
    config.smtp.session_timeout = Duration::from_secs(60);
    config.smtp.shutdown_grace = Duration::from_secs(10);
    config.policy.allowed_domains = vec![domain("gouv.fr")];
    config.policy.allowed_networks = vec![];
    config
}

fn settings() -> ServerSettings {
    ServerSettings::from_config(&config()).unwrap()
}

/// Settings with `[smtp.tls]` pointing at PEM files of a certificate made here (the files
/// live as long as the returned directory).
fn with_tls(
    required: bool,
) -> (
    ServerSettings,
    CertificateDer<'static>,
    String,
    tempfile::TempDir,
) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let certificate = dir.path().join("cert.pem");
    let private_key = dir.path().join("key.pem");
    std::fs::write(&certificate, ck.cert.pem()).unwrap();
    std::fs::write(&private_key, ck.signing_key.serialize_pem()).unwrap();
    let mut config = config();
    config.smtp.tls = Some(TlsConfig {
        certificate,
        private_key,
        required,
    });
    let settings = ServerSettings::from_config(&config).unwrap();
    assert!(settings.session.tls_offered);
    (settings, ck.cert.der().clone(), ck.cert.pem(), dir)
}

/// A raw SMTP client over any stream.
struct Client<S> {
    io: BufReader<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// Read one (possibly multi-line) reply: its code and full text.
    async fn reply(&mut self) -> (u16, String) {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(WAIT, self.io.read_line(&mut line))
                .await
                .unwrap()
                .unwrap();
            assert!(
                n > 0,
                "connection closed while waiting for a reply (got {text:?})"
            );
            text.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return (line.get(..3).unwrap().parse().unwrap(), text);
            }
        }
    }

    async fn send(&mut self, s: &str) {
        self.io.get_mut().write_all(s.as_bytes()).await.unwrap();
    }

    async fn cmd(&mut self, s: &str) -> u16 {
        self.send(s).await;
        self.reply().await.0
    }

    /// The server closed the connection (EOF or reset), with no further reply.
    async fn closed(&mut self) -> bool {
        let mut line = String::new();
        match tokio::time::timeout(WAIT, self.io.read_line(&mut line)).await {
            Ok(Ok(0)) | Ok(Err(_)) => true,
            Ok(Ok(_)) => panic!("unexpected reply {line:?}"),
            Err(_) => false,
        }
    }
}

async fn connect_from(source: &str, addr: SocketAddr) -> Client<TcpStream> {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let stream = tokio::time::timeout(WAIT, socket.connect(addr))
        .await
        .unwrap()
        .unwrap();
    Client {
        io: BufReader::new(stream),
    }
}

async fn connect(addr: SocketAddr) -> Client<TcpStream> {
    connect_from("127.0.0.1", addr).await
}

fn reasons(events: &[AuditEvent]) -> Vec<Reason> {
    events.iter().filter_map(|e| e.reason).collect()
}

fn message() -> String {
    "From: alice@interieur.gouv.fr\r\nSubject: re\r\n\r\nCode : 1234\r\n.\r\n".to_owned()
}

#[tokio::test]
async fn lettre_client_delivers_a_confirmation() {
    let server = start(settings()).await;
    let transport =
        lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::builder_dangerous("127.0.0.1")
            .port(server.addr.port())
            .tls(lettre::transport::smtp::client::Tls::None)
            .timeout(Some(WAIT))
            .build();
    let email = lettre::Message::builder()
        .from("alice@interieur.gouv.fr".parse().unwrap())
        .to(GOOD.parse().unwrap())
        .subject("Re: confirmation")
        .body("Code : 1234".to_owned())
        .unwrap();
    use lettre::AsyncTransport;
    let response = transport.send(email).await.unwrap();
    assert_eq!(response.code().to_string(), "250");
    let delivered = server.backend.delivered.lock().unwrap();
    assert_eq!(delivered.len(), 1);
    assert_eq!(
        delivered[0].mail_from.to_string(),
        "alice@interieur.gouv.fr"
    );
    assert_eq!(delivered[0].rcpt.token, "good");
    assert_eq!(delivered[0].session.client_ip, IpAddr::from([127, 0, 0, 1]));
    let events = server.sink.take();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].action, Action::ConfirmationAccepted);
    assert_eq!(
        events[0].to.as_deref(),
        Some("confirm+[redacted]@verify.example.gouv.fr")
    );
}

#[tokio::test]
async fn lettre_client_with_required_starttls() {
    let (settings, _, pem, _dir) = with_tls(true);
    let server = start(settings).await;
    use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
    let tls = TlsParameters::builder("localhost".to_owned())
        .add_root_certificate(Certificate::from_pem(pem.as_bytes()).unwrap())
        .build_rustls()
        .unwrap();
    let transport =
        lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::builder_dangerous("127.0.0.1")
            .port(server.addr.port())
            .tls(Tls::Required(tls))
            .timeout(Some(WAIT))
            .build();
    let email = lettre::Message::builder()
        .from("alice@interieur.gouv.fr".parse().unwrap())
        .to(GOOD.parse().unwrap())
        .subject("Re: confirmation")
        .body("Code : 1234".to_owned())
        .unwrap();
    use lettre::AsyncTransport;
    transport.send(email).await.unwrap();
    let events = server.sink.take();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].action, Action::ConfirmationAccepted);
    assert!(events[0].tls_version.is_some());
    assert!(
        server.backend.delivered.lock().unwrap()[0]
            .session
            .tls_version
            .is_some()
    );
}

#[tokio::test]
async fn raw_pipelining_mail_rcpt_data_in_one_write() {
    let server = start(settings()).await;
    let mut c = connect(server.addr).await;
    assert_eq!(c.reply().await.0, 220);
    let (code, ehlo) = {
        c.send("EHLO smtp.interieur.gouv.fr\r\n").await;
        c.reply().await
    };
    assert_eq!(code, 250);
    assert!(ehlo.contains("PIPELINING") && !ehlo.contains("STARTTLS"));
    c.send(&format!(
        "MAIL FROM:<alice@interieur.gouv.fr>\r\nRCPT TO:<{GOOD}>\r\nDATA\r\n"
    ))
    .await;
    assert_eq!(c.reply().await.0, 250);
    assert_eq!(c.reply().await.0, 250);
    assert_eq!(c.reply().await.0, 354);
    c.send(&format!("{}QUIT\r\n", message())).await;
    assert_eq!(c.reply().await, (250, "250 2.0.0 confirmed\r\n".to_owned()));
    assert_eq!(c.reply().await.0, 221);
    assert!(c.closed().await);
    assert_eq!(server.backend.delivered.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn refusals_are_audited_with_session_facts() {
    let server = start(settings()).await;
    let mut c = connect_from("127.0.0.66", server.addr).await;
    c.reply().await;
    c.cmd("EHLO mail.evil.example\r\n").await;
    assert_eq!(c.cmd("MAIL FROM:<attacker@evil.example>\r\n").await, 550);
    assert_eq!(c.cmd("MAIL FROM:<alice@interieur.gouv.fr>\r\n").await, 250);
    assert_eq!(
        c.cmd("RCPT TO:<confirm+nosuch@verify.example.gouv.fr>\r\n")
            .await,
        550
    );
    assert_eq!(c.cmd("QUIT\r\n").await, 221);
    assert!(c.closed().await);
    let events = server.sink.take();
    assert_eq!(
        reasons(&events),
        vec![Reason::DomainNotAllowed, Reason::TokenUnknown]
    );
    let e = &events[1];
    assert_eq!(e.source_ip, Some(IpAddr::from([127, 0, 0, 66])));
    assert_eq!(e.helo.as_deref(), Some("mail.evil.example"));
    assert_eq!(
        e.to.as_deref(),
        Some("confirm+[redacted]@verify.example.gouv.fr")
    );
    assert_eq!(events[0].session_id, e.session_id);
    // session_closed is called once the connection ends.
    for _ in 0..100 {
        if !server.backend.closed.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        *server.backend.closed.lock().unwrap(),
        vec![e.session_id.clone()]
    );
}

async fn tls_connector(root: CertificateDer<'static>) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

#[tokio::test]
async fn starttls_then_transaction_over_tls() {
    let (settings, root, _, _dir) = with_tls(false);
    let server = start(settings).await;
    let mut c = connect(server.addr).await;
    c.reply().await;
    c.send("EHLO smtp.interieur.gouv.fr\r\n").await;
    let (_, ehlo) = c.reply().await;
    assert!(ehlo.contains("250 STARTTLS"), "{ehlo}");
    assert_eq!(c.cmd("STARTTLS\r\n").await, 220);
    let tcp = c.io.into_inner();
    let connector = tls_connector(root).await;
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let mut c = Client {
        io: BufReader::new(tls),
    };
    // RFC 3207: no new greeting; the session starts over at EHLO.
    assert_eq!(c.cmd("MAIL FROM:<alice@interieur.gouv.fr>\r\n").await, 503);
    c.send("EHLO smtp.interieur.gouv.fr\r\n").await;
    let (_, ehlo) = c.reply().await;
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    c.send(&format!(
        "MAIL FROM:<alice@interieur.gouv.fr>\r\nRCPT TO:<{GOOD}>\r\nDATA\r\n"
    ))
    .await;
    for code in [250, 250, 354] {
        assert_eq!(c.reply().await.0, code);
    }
    assert_eq!(c.cmd(&message()).await, 250);
    let events = server.sink.take();
    let accepted = events.last().unwrap();
    assert_eq!(accepted.action, Action::ConfirmationAccepted);
    assert_eq!(accepted.tls_version.as_deref(), Some("1.3"));
}

#[tokio::test]
async fn starttls_injection_over_a_real_socket() {
    let (settings, _, _, _dir) = with_tls(false);
    let server = start(settings).await;
    let mut c = connect(server.addr).await;
    c.reply().await;
    c.cmd("EHLO x.gouv.fr\r\n").await;
    c.send("STARTTLS\r\nMAIL FROM:<alice@interieur.gouv.fr>\r\n")
        .await;
    assert_eq!(c.reply().await.0, 554);
    assert!(c.closed().await);
    assert_eq!(
        reasons(&server.sink.take()),
        vec![Reason::SmtpPipelinedStarttls]
    );
}

#[tokio::test]
async fn tls_required_refuses_mail_in_clear() {
    let (settings, _, _, _dir) = with_tls(true);
    let server = start(settings).await;
    let mut c = connect(server.addr).await;
    c.reply().await;
    c.cmd("EHLO x.gouv.fr\r\n").await;
    assert_eq!(c.cmd("MAIL FROM:<alice@interieur.gouv.fr>\r\n").await, 530);
    assert_eq!(reasons(&server.sink.take()), vec![Reason::TlsRequired]);
}

#[tokio::test]
async fn command_and_data_timeouts() {
    let mut s = settings();
    s.command_timeout = Duration::from_millis(300);
    s.data_timeout = Duration::from_millis(300);
    let server = start(s).await;
    let mut c = connect(server.addr).await;
    c.reply().await;
    // Say nothing: 421 4.4.2 and close.
    let (code, text) = c.reply().await;
    assert_eq!((code, text.contains("4.4.2")), (421, true));
    assert!(c.closed().await);
    let mut c = connect(server.addr).await;
    c.reply().await;
    c.cmd("EHLO x.gouv.fr\r\n").await;
    c.send(&format!(
        "MAIL FROM:<alice@interieur.gouv.fr>\r\nRCPT TO:<{GOOD}>\r\nDATA\r\n"
    ))
    .await;
    for code in [250, 250, 354] {
        assert_eq!(c.reply().await.0, code);
    }
    c.send("From: alice@interieur.gouv.fr\r\n").await;
    assert_eq!(c.reply().await.0, 421);
    assert!(c.closed().await);
    let events = server.sink.take();
    assert_eq!(
        reasons(&events),
        vec![Reason::SmtpTimeout, Reason::SmtpTimeout]
    );
    assert_eq!(events[0].message.as_deref(), Some("command timeout"));
    assert_eq!(events[1].message.as_deref(), Some("data timeout"));
    assert!(server.backend.delivered.lock().unwrap().is_empty());
}

#[tokio::test]
async fn session_timeout_caps_a_busy_client() {
    let mut s = settings();
    s.session_timeout = Duration::from_millis(500);
    let server = start(s).await;
    let mut c = connect(server.addr).await;
    c.reply().await;
    // Keep talking; the session deadline still ends it (bounded loop).
    let mut last = 0;
    for _ in 0..200 {
        last = c.cmd("NOOP\r\n").await;
        if last != 250 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(last, 421);
    let events = server.sink.take();
    assert_eq!(
        events.last().unwrap().message.as_deref(),
        Some("session timeout")
    );
}

#[tokio::test]
async fn global_connection_cap() {
    let mut s = settings();
    s.max_connections = 2;
    let server = start(s).await;
    let mut a = connect(server.addr).await;
    let mut b = connect(server.addr).await;
    assert_eq!(a.reply().await.0, 220);
    assert_eq!(b.reply().await.0, 220);
    let mut c = connect_from("127.0.0.2", server.addr).await;
    let (code, text) = c.reply().await;
    assert_eq!((code, text.contains("4.7.0")), (421, true));
    assert!(c.closed().await);
    let events = server.sink.take();
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].action, events[0].reason),
        (Action::ConnectionRefused, Some(Reason::ConnLimit))
    );
    assert_eq!(events[0].source_ip, Some(IpAddr::from([127, 0, 0, 2])));
    // A slot comes back when a session ends.
    assert_eq!(a.cmd("QUIT\r\n").await, 221);
    let mut code = 0;
    for _ in 0..100 {
        let mut d = connect(server.addr).await;
        code = d.reply().await.0;
        if code == 220 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(code, 220);
}

#[tokio::test]
async fn per_ip_connection_cap() {
    let mut s = settings();
    s.max_connections_per_ip = 1;
    let server = start(s).await;
    let mut a = connect_from("127.0.0.2", server.addr).await;
    assert_eq!(a.reply().await.0, 220);
    let mut b = connect_from("127.0.0.2", server.addr).await;
    assert_eq!(b.reply().await.0, 421);
    let mut c = connect_from("127.0.0.3", server.addr).await;
    assert_eq!(c.reply().await.0, 220);
    assert_eq!(reasons(&server.sink.take()), vec![Reason::ConnLimit]);
}

#[tokio::test]
async fn allowed_networks() {
    let mut s = settings();
    s.allowed_networks = vec!["127.0.0.2/32".parse().unwrap()];
    let server = start(s).await;
    let mut inside = connect_from("127.0.0.2", server.addr).await;
    assert_eq!(inside.reply().await.0, 220);
    let mut outside = connect_from("127.0.0.3", server.addr).await;
    let (code, text) = outside.reply().await;
    assert_eq!((code, text.contains("5.7.1")), (550, true));
    assert!(outside.closed().await);
    let events = server.sink.take();
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].action, events[0].reason),
        (Action::ConnectionRefused, Some(Reason::ClientNetwork))
    );
}

#[tokio::test]
async fn shutdown_lets_data_finish_and_sends_421() {
    let server = start(settings()).await;
    let mut busy = connect(server.addr).await;
    busy.reply().await;
    busy.cmd("EHLO x.gouv.fr\r\n").await;
    busy.send(&format!(
        "MAIL FROM:<alice@interieur.gouv.fr>\r\nRCPT TO:<{GOOD}>\r\nDATA\r\n"
    ))
    .await;
    for code in [250, 250, 354] {
        assert_eq!(busy.reply().await.0, code);
    }
    busy.send("From: alice@interieur.gouv.fr\r\n").await;
    let mut idle = connect(server.addr).await;
    idle.reply().await;
    idle.cmd("EHLO y.gouv.fr\r\n").await;

    server.shutdown.cancel();
    let (code, text) = idle.reply().await;
    assert_eq!((code, text.contains("4.3.0")), (421, true));
    assert!(idle.closed().await);
    // The busy session finishes its message within the grace, then gets the 421.
    busy.send("\r\nhello\r\n.\r\n").await;
    assert_eq!(
        busy.reply().await,
        (250, "250 2.0.0 confirmed\r\n".to_owned())
    );
    assert_eq!(busy.reply().await.0, 421);
    assert!(busy.closed().await);
    tokio::time::timeout(WAIT, server.handle)
        .await
        .unwrap()
        .unwrap();
    // The listener is gone.
    assert!(TcpStream::connect(server.addr).await.is_err());
    let reasons = reasons(&server.sink.take());
    assert_eq!(reasons, vec![Reason::SmtpShutdown, Reason::SmtpShutdown]);
}

#[tokio::test]
async fn shutdown_grace_expires_mid_data() {
    let mut s = settings();
    s.shutdown_grace = Duration::from_millis(300);
    let server = start(s).await;
    let mut busy = connect(server.addr).await;
    busy.reply().await;
    busy.cmd("EHLO x.gouv.fr\r\n").await;
    busy.send(&format!(
        "MAIL FROM:<alice@interieur.gouv.fr>\r\nRCPT TO:<{GOOD}>\r\nDATA\r\n"
    ))
    .await;
    for code in [250, 250, 354] {
        assert_eq!(busy.reply().await.0, code);
    }
    server.shutdown.cancel();
    let (code, text) = busy.reply().await;
    assert_eq!((code, text.contains("4.3.0")), (421, true));
    tokio::time::timeout(WAIT, server.handle)
        .await
        .unwrap()
        .unwrap();
    assert!(server.backend.delivered.lock().unwrap().is_empty());
}

#[tokio::test]
async fn cleartext_after_starttls_reply_never_becomes_a_command() {
    let (settings, _, _, _dir) = with_tls(false);
    let server = start(settings).await;
    let mut c = connect(server.addr).await;
    c.reply().await;
    c.cmd("EHLO x.gouv.fr\r\n").await;
    assert_eq!(c.cmd("STARTTLS\r\n").await, 220);
    // The injection arriving after the 220: it is read as a TLS ClientHello and fails.
    c.send("MAIL FROM:<alice@interieur.gouv.fr>\r\n").await;
    let mut rest = Vec::new();
    let read = tokio::io::AsyncReadExt::read_to_end(&mut c.io, &mut rest);
    let _ = tokio::time::timeout(WAIT, read).await.unwrap();
    assert!(!String::from_utf8_lossy(&rest).contains("250"), "{rest:?}");
    assert!(server.backend.delivered.lock().unwrap().is_empty());
}

#[tokio::test]
async fn reloaded_settings_apply_to_new_connections() {
    let server = start(settings()).await;
    let mut before = connect(server.addr).await;
    assert!(before.reply().await.1.contains("verify.example.gouv.fr"));
    let mut config = config();
    config.smtp.hostname = "mx2.verify.example.gouv.fr".into();
    config.smtp.max_connections_per_ip = 1;
    server
        .settings_tx
        .send(Arc::new(ServerSettings::from_config(&config).unwrap()))
        .unwrap();
    // The running session keeps its settings; a new one gets the new limits and name.
    assert_eq!(before.cmd("NOOP\r\n").await, 250);
    let mut other = connect_from("127.0.0.5", server.addr).await;
    assert!(
        other
            .reply()
            .await
            .1
            .starts_with("220 mx2.verify.example.gouv.fr")
    );
    let mut second = connect_from("127.0.0.5", server.addr).await;
    assert_eq!(second.reply().await.0, 421);
}
