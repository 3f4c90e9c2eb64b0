//! One HTTP/1.1 POST, for the webhook sender: hyper's connection API over a TCP stream, or
//! over tokio-rustls (ring, the system roots) for `https`. One connection per attempt: an
//! attempt is rare (one per event) and a fresh connection never meets a half-closed one.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// The TLS client settings for `https` webhooks: rustls on ring, the system's roots.
pub fn tls_config() -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        // A system root rustls cannot parse is skipped, as every rustls client does.
        let _ = roots.add(cert);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// POST `body` to `url` with `headers`; the status code, or why there is none. Bounded by
/// `timeout` from connect to the status line.
pub async fn post(
    url: &url::Url,
    headers: &[(&'static str, String)],
    body: String,
    timeout: Duration,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<u16, String> {
    match tokio::time::timeout(timeout, attempt(url, headers, body, tls)).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {} s", timeout.as_secs())),
    }
}

async fn attempt(
    url: &url::Url,
    headers: &[(&'static str, String)],
    body: String,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<u16, String> {
    let host = match url.host() {
        Some(url::Host::Domain(d)) => d.to_owned(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        None => return Err("no host".into()),
    };
    let port = url.port_or_known_default().unwrap_or(80);
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let mut request = hyper::Request::post(match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    })
    .header(
        hyper::header::HOST,
        match url.port() {
            Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_owned(),
        },
    )
    .header(hyper::header::CONTENT_TYPE, "application/json")
    .header(
        hyper::header::USER_AGENT,
        concat!("gatekeeper/", env!("CARGO_PKG_VERSION")),
    );
    for (name, value) in headers {
        request = request.header(*name, value.as_str());
    }
    let request = request
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("request: {e}"))?;
    if url.scheme() == "https" {
        let name = rustls_pki_types::ServerName::try_from(host)
            .map_err(|e| format!("server name: {e}"))?;
        let stream = tokio_rustls::TlsConnector::from(Arc::clone(tls))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        exchange(stream, request).await
    } else {
        exchange(tcp, request).await
    }
}

async fn exchange<T>(io: T, request: hyper::Request<Full<Bytes>>) -> Result<u16, String>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    // The connection is driven until the answer is read; it ends when `sender` is dropped.
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let result = sender
        .send_request(request)
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| format!("HTTP: {e}"));
    drop(sender);
    driver.abort();
    result
}
