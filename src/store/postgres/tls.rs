//! TLS to PostgreSQL for `store.tls = "require"`: rustls on ring (the one crypto provider of
//! the crate), the server's certificate checked against `store.ca_file` or, without it, the
//! system's roots, and its name against the URL's host.

use std::sync::Arc;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::{PgTls, PostgresConfig};
use crate::store::StoreError;

/// What connections are made with.
#[derive(Clone)]
pub(super) enum Connector {
    Plain,
    Rustls(MakeRustlsConnect),
}

pub(super) fn connector(config: &PostgresConfig) -> Result<Connector, StoreError> {
    if config.tls == PgTls::Disable {
        return Ok(Connector::Plain);
    }
    let mut roots = rustls::RootCertStore::empty();
    match &config.ca_file {
        Some(path) => {
            let name = path.display().to_string();
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| StoreError::Corrupt(format!("store.ca_file {name}: {e}")))?;
            if certs.is_empty() {
                return Err(StoreError::Corrupt(format!(
                    "store.ca_file {name}: no certificate"
                )));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| StoreError::Corrupt(format!("store.ca_file {name}: {e}")))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                // A system root rustls cannot parse is skipped, as every rustls client does.
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(StoreError::Corrupt(
                    "store.tls = \"require\" without store.ca_file, and no system root certificate found"
                        .into(),
                ));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Corrupt(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Connector::Rustls(MakeRustlsConnect::new(tls)))
}
