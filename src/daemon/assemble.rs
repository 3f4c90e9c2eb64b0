//! The one assembly of the running program: store, challenge service, verifier, SIEM, HTTP
//! router, SMTP server and the background jobs are built here, and nowhere else, from the
//! configuration.
//!
//! Order at start ([`start`]): directories, SIEM (so that every later step can be audited),
//! the challenge side ([`build`]: store, outbound, mail, API token, router), the previous
//! run's sessions marked ended, the verifier and the metered backend and sink, the listeners,
//! then the tasks. Order at stop: control loop, SMTP drain, the gathered rejection counts,
//! purge loop, API, SIEM flush.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::control::Control;
use super::decorators::{Metered, MeteredSink, SwapVerifier, metered_verifier};
use super::source::ConfigSource;
use super::systemd::{self, Notifier};
use super::{DaemonError, Running, jobs};
use crate::api::Metrics;
use crate::app::App;
use crate::assertion::Signer;
use crate::audit::AuditSink;
use crate::challenge::{ChallengeService, MailBuilder, MailError, Outbound, OutboundError};
use crate::config::Config;
use crate::server::{self, ServerSettings};
use crate::siem::{Siem, SiemHandle};
use crate::store::{self, Access, DynStore, Store, StoreError};

/// How long the SIEM may keep delivering queued events at exit.
const SIEM_FLUSH_BOUND: Duration = Duration::from_secs(5);

/// The production backend as the SMTP server runs it.
pub type Production = Metered<App<DynStore, SwapVerifier>>;

/// Everything the daemon needs from the challenge side, built from the configuration.
pub struct Parts {
    pub store: Arc<DynStore>,
    pub challenges: Arc<ChallengeService<DynStore>>,
    pub metrics: Arc<Metrics>,
    /// The HTTP API (serve it on `api.listen`).
    pub router: axum::Router,
    /// Signs assertions (SPEC §11) with the OpenID Provider's key; `None` without `[oidc]`.
    pub signer: Option<Arc<Signer>>,
}

/// Why the challenge side could not start.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("store {path}: {source}")]
    Store { path: String, source: StoreError },
    #[error(transparent)]
    Mail(#[from] MailError),
    #[error(transparent)]
    Outbound(#[from] OutboundError),
    #[error("assertion key (the OpenID Provider's): {0}")]
    Keys(#[from] crate::oidc::KeyError),
    #[error("webhook TLS settings: {0}")]
    WebhookTls(#[from] rustls::Error),
    #[error("API token file {path}: {message}")]
    ApiToken { path: String, message: String },
}

/// Open the store, prepare the outbound target and the mail builder, load (or create) the
/// API token and build the router. Blocking I/O: call at start-up.
pub fn build(config: &Config) -> Result<Parts, BuildError> {
    let store = open_store(config, Access::ReadWrite)?;
    // Before any write: every confirmation from now on writes its deliveries.
    store.set_webhooks(crate::webhook::subscriptions(&config.webhooks));
    let signer = assertion_signer(config)?;
    let challenges = Arc::new(service(config, Arc::clone(&store))?);
    let metrics = Arc::new(Metrics::new());
    let token = crate::api::load_or_create_token(&config.api.token_file).map_err(|e| {
        BuildError::ApiToken {
            path: config.api.token_file.display().to_string(),
            message: e.to_string(),
        }
    })?;
    let router = crate::api::router(
        crate::api::ApiState::new(Arc::clone(&challenges), Arc::clone(&metrics), token)
            .with_signer(signer.clone()),
    );
    Ok(Parts {
        store,
        challenges,
        metrics,
        router,
        signer,
    })
}

/// The assertion signer: the OpenID Provider's current key (one key source, SPEC §11),
/// loaded (or created) from `[oidc] signing_key` as the provider itself does. `None` without
/// `[oidc]`: assertions are then left out (module docs of [`crate::assertion`]).
pub(crate) fn assertion_signer(config: &Config) -> Result<Option<Arc<Signer>>, BuildError> {
    let Some(oidc) = &config.oidc else {
        if !config.webhooks.is_empty() {
            tracing::warn!(
                "no [oidc]: challenge.confirmed webhooks and GET /v1/challenges carry no assertion"
            );
        }
        return Ok(None);
    };
    let keys = crate::oidc::Keys::load(
        &oidc.signing_key,
        oidc.signing_alg,
        &oidc.previous_keys,
        &oidc.subject_key,
    )?;
    Ok(Some(Arc::new(Signer::new(
        keys.current.kid.clone(),
        keys.current.alg,
        keys.encoding().clone(),
    ))))
}

/// The store `[store]` names (the one call of [`store::open`] of the program).
pub(crate) fn open_store(config: &Config, access: Access) -> Result<Arc<DynStore>, BuildError> {
    store::open(&config.store, access)
        .map(Arc::new)
        .map_err(|source| BuildError::Store {
            path: store::describe(&config.store),
            source,
        })
}

/// The challenge service over `store`, with the configured outbound target and mail.
pub(crate) fn service<S: Store>(
    config: &Config,
    store: Arc<S>,
) -> Result<ChallengeService<S>, BuildError> {
    let outbound = Outbound::from_target(&config.outbound.target)?;
    let mail = MailBuilder::new(config)?;
    Ok(ChallengeService::new(config, store, outbound, mail))
}

/// The built parts, before anything listens.
struct Assembly {
    parts: Parts,
    siem: Siem,
    siem_handle: SiemHandle,
    verifier: SwapVerifier,
    backend: Arc<Production>,
    sink: Arc<MeteredSink>,
}

fn assemble(config: &Config) -> Result<Assembly, DaemonError> {
    prepare_dirs(config)?;
    let (siem, siem_handle) = Siem::start(&config.siem, &config.smtp.hostname)?;
    let parts = build(config)?;
    let verifier = SwapVerifier::new(metered_verifier(config, &parts.metrics)?);
    let app = App::new(config, Arc::clone(&parts.store), verifier.clone());
    let backend = Arc::new(Metered::new(app, Arc::clone(&parts.metrics)));
    let sink = Arc::new(MeteredSink::new(siem.clone(), Arc::clone(&parts.metrics)));
    Ok(Assembly {
        parts,
        siem,
        siem_handle,
        verifier,
        backend,
        sink,
    })
}

/// The bound listeners and their addresses.
struct Listeners {
    smtp: Vec<TcpListener>,
    smtp_addrs: Vec<SocketAddr>,
    api: TcpListener,
    api_addr: SocketAddr,
}

async fn bind(config: &Config) -> Result<Listeners, DaemonError> {
    let smtp = smtp_listeners(config).await?;
    let smtp_addrs = smtp.iter().filter_map(|l| l.local_addr().ok()).collect();
    let bind_error = |source| DaemonError::Bind {
        addr: config.api.listen.to_string(),
        source,
    };
    let api = TcpListener::bind(config.api.listen)
        .await
        .map_err(bind_error)?;
    let api_addr = api.local_addr().map_err(bind_error)?;
    Ok(Listeners {
        smtp,
        smtp_addrs,
        api,
        api_addr,
    })
}

/// Start every part of the daemon and return once the listeners are bound and the store is
/// open. Listeners: inherited from systemd when `LISTEN_FDS` says so, else `smtp.listen`.
pub async fn start(source: ConfigSource) -> Result<Running, DaemonError> {
    let mut config = source.load()?;
    // DS trust anchors become keys now, through the configured resolver: without them every
    // answer would be bogus, so a failure refuses the start (`dns::resolve_ds_anchors`).
    crate::dns::resolve_ds_anchors(&mut config.dns).await?;
    let notifier = Notifier::from_env();
    let a = assemble(&config)?;
    jobs::end_previous_sessions(&*a.parts.store).await;
    let listeners = bind(&config).await?;
    let settings = ServerSettings::from_config(&config)?;
    let (settings_tx, settings_rx) = watch::channel(Arc::new(settings));
    let shutdown = CancellationToken::new();
    let abort = CancellationToken::new();
    let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(4);

    let smtp_task = tokio::spawn(server::run_until(
        listeners.smtp,
        settings_rx,
        Arc::clone(&a.backend),
        Arc::clone(&a.sink) as Arc<dyn AuditSink>,
        shutdown.clone(),
        abort.clone(),
    ));
    let api_shutdown = shutdown.clone();
    let api_task = tokio::spawn(crate::api::serve(
        listeners.api,
        a.parts.router.clone(),
        async move { api_shutdown.cancelled().await },
    ));
    let purge_task = tokio::spawn(jobs::purge_loop(
        Arc::clone(&a.parts.store),
        config.store.purge_interval,
    ));
    // The webhook sender (SPEC §11), when any `[[webhook]]` is configured.
    let webhook_task = if config.webhooks.is_empty() {
        None
    } else {
        let tls = crate::webhook::http::tls_config().map_err(BuildError::from)?;
        let sender = crate::webhook::Sender::new(
            Arc::clone(&a.parts.store),
            &config.webhooks,
            a.parts.signer.clone(),
            Arc::clone(&a.parts.metrics),
            Arc::clone(&a.sink) as Arc<dyn AuditSink>,
            tls,
        );
        Some(tokio::spawn(sender.run()))
    };
    // The OpenID Provider (SPEC §9): its own listener over the same challenge service.
    let oidc = match &config.oidc {
        Some(oidc) => {
            let stop = shutdown.clone();
            Some(
                crate::oidc::start(
                    &config,
                    oidc,
                    Arc::clone(&a.parts.challenges),
                    Arc::clone(&a.sink) as Arc<dyn AuditSink>,
                    Arc::clone(&a.parts.metrics),
                    async move { stop.cancelled().await },
                )
                .await?,
            )
        }
        None => None,
    };
    let oidc_addr = oidc.as_ref().map(|o| o.addr);

    tracing::info!(
        smtp = ?listeners.smtp_addrs,
        api = %listeners.api_addr,
        store = %store::describe(&config.store),
        "gatekeeper serving"
    );
    notifier.ready(&a.sink.status_line());

    let control = Control {
        source,
        notifier,
        settings_tx,
        verifier: a.verifier,
        siem: a.siem,
        sink: Arc::clone(&a.sink),
        metrics: Arc::clone(&a.parts.metrics),
        store: Arc::clone(&a.parts.store),
    };
    let main_shutdown = shutdown.clone();
    let last_store = Arc::clone(&a.parts.store);
    let siem_handle = a.siem_handle;
    let task = tokio::spawn(async move {
        control.run(main_shutdown.clone(), reload_rx).await;
        let _ = smtp_task.await;
        // Rejection counts still gathering (not awaited by the sessions) are written now.
        last_store.flush_rejections().await;
        purge_task.abort();
        // An attempt cut short here is sent again after its lease (at least once).
        if let Some(t) = webhook_task {
            t.abort();
        }
        let _ = api_task.await;
        if let Some(oidc) = oidc {
            oidc.purge.abort();
            let _ = oidc.server.await;
        }
        // The SIEM's last flush blocks (files, SQLite, sockets): off the runtime threads.
        let stats =
            tokio::task::spawn_blocking(move || siem_handle.shutdown(SIEM_FLUSH_BOUND)).await;
        if let Ok(stats) = stats {
            tracing::info!(?stats, "SIEM flushed");
        }
        tracing::info!("gatekeeper stopped");
    });

    Ok(Running {
        smtp_addrs: listeners.smtp_addrs,
        api_addr: listeners.api_addr,
        oidc_addr,
        shutdown,
        abort,
        task,
        reload: reload_tx,
    })
}

/// Listeners inherited from systemd, else bound from `smtp.listen`.
async fn smtp_listeners(config: &Config) -> Result<Vec<TcpListener>, DaemonError> {
    let inherited = systemd::inherited_listeners().map_err(DaemonError::Inherited)?;
    if !inherited.is_empty() {
        tracing::info!(count = inherited.len(), "using listeners passed by systemd");
        return inherited
            .into_iter()
            .map(TcpListener::from_std)
            .collect::<Result<Vec<_>, _>>()
            .map_err(DaemonError::Inherited);
    }
    let mut listeners = Vec::with_capacity(config.smtp.listen.len());
    for addr in &config.smtp.listen {
        let l = TcpListener::bind(addr)
            .await
            .map_err(|source| DaemonError::Bind {
                addr: addr.to_string(),
                source,
            })?;
        listeners.push(l);
    }
    Ok(listeners)
}

/// Create the parent directories of every file the daemon writes (SIEM files and spool, the
/// store, the outbox), so the embedded default runs from an empty working directory.
fn prepare_dirs(config: &Config) -> Result<(), DaemonError> {
    use crate::config::{OutboundTarget, SiemSink};
    let mut dirs: Vec<&std::path::Path> = Vec::new();
    for sink in &config.siem.sinks {
        if let SiemSink::File { path } = sink {
            dirs.extend(path.parent());
        }
    }
    dirs.extend(config.siem.spool_path.parent());
    dirs.extend(store::local_dir(&config.store));
    dirs.extend(config.api.token_file.parent());
    if let OutboundTarget::Directory(dir) = &config.outbound.target {
        dirs.push(dir);
    }
    for dir in dirs {
        if dir.as_os_str().is_empty() {
            continue;
        }
        std::fs::create_dir_all(dir).map_err(|source| DaemonError::Dir {
            path: dir.display().to_string(),
            source,
        })?;
    }
    Ok(())
}
