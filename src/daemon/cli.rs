//! The bodies of the `gatekeeper` commands (SPEC §6); `main.rs` parses the arguments into a
//! [`Command`] and maps what [`run`] returns to the exit status.
//!
//! Exit codes: 0 accepted / valid, 1 rejected / invalid, 2 the command itself could not run
//! (unreadable configuration, bad usage).
//!
//! `gatekeeper verify` (the whole decision on a message file, without SMTP) is in
//! [`verify`]; `gatekeeper store migrate` (SQLite to PostgreSQL, its own exit statuses: 0
//! copied, 1 refused, 2 could not run) in [`store_migrate`].

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use chrono::Utc;

use super::assemble::{BuildError, open_store, service};
use super::source::ConfigSource;
use crate::address::{Mailbox, ParseOptions};
use crate::challenge::{ChallengeView, CreateError, format_time};
use crate::config::Config;
use crate::reason::Reason;
use crate::store::{Access, Store};

pub mod domain_check;
pub mod probe;
pub mod store_migrate;
pub mod verify;

pub use verify::{VerifyArgs, exit_code, verdict_json};

/// Longest input `check-address -` reads from stdin: one octet more than the parser's own
/// input bound plus the newline, so a truncated input still reaches the parser as too long
/// (`length`, the detail the API gives for the same bytes) and never as a shorter prefix read
/// on its own merits.
const MAX_STDIN_ADDRESS: u64 = crate::address::MAX_INPUT as u64 + 2;

/// A parsed command line.
pub enum Command {
    /// Run the daemon until a signal stops it.
    Serve(ConfigSource),
    /// Validate a configuration.
    CheckConfig(ConfigSource),
    /// Parse an address (with the configuration's policy when one is named).
    CheckAddress {
        address: AddressInput,
        config: Option<PathBuf>,
    },
    /// The whole decision on a message file.
    Verify {
        config: PathBuf,
        file: PathBuf,
        args: VerifyArgs,
    },
    /// Issue a challenge exactly as the API does.
    ChallengeNew { config: PathBuf, address: Vec<u8> },
    /// Show a challenge as the API does.
    ChallengeShow { config: PathBuf, id: String },
    /// Create a probe as `POST /v1/probes` does.
    ProbeNew { config: PathBuf, json: bool },
    /// Show a probe as `GET /v1/probes/{id}` does.
    ProbeShow {
        config: PathBuf,
        id: String,
        json: bool,
    },
    /// What confirming an address at a domain needs (SPEC §10).
    DomainCheck {
        config: Option<PathBuf>,
        domain: String,
        json: bool,
    },
    /// Check one assertion offline.
    AssertionVerify { file: PathBuf, keys: AssertionKeys },
    /// Copy an SQLite store into an empty PostgreSQL database.
    StoreMigrate(store_migrate::MigrateArgs),
}

/// Where `assertion verify` takes its keys.
pub enum AssertionKeys {
    /// A JWKS document (a saved `/jwks.json`).
    Jwks(PathBuf),
    /// The `[oidc]` keys of this configuration.
    Config(PathBuf),
}

/// Where `check-address` reads the address.
pub enum AddressInput {
    Arg(Vec<u8>),
    /// Standard input, bounded, one trailing newline removed (for bytes argv cannot carry).
    Stdin,
}

/// Run a command; returns the exit status.
pub fn run(command: Command) -> u8 {
    match command {
        Command::CheckConfig(source) => check_config(&source),
        Command::CheckAddress { address, config } => check_address(address, config.as_deref()),
        Command::Serve(source) => {
            super::logging::init();
            block_on(async move {
                match super::serve(source).await {
                    Ok(()) => 0,
                    Err(e) => {
                        eprintln!("gatekeeper: {e}");
                        1
                    }
                }
            })
        }
        Command::Verify { config, file, args } => {
            block_on(verify::verify_file(&config, &file, args))
        }
        Command::ChallengeNew { config, address } => block_on(challenge(&config, |c| async move {
            cli_new(&c, &address).await
        })),
        Command::AssertionVerify { file, keys } => assertion_verify(&file, &keys),
        Command::ChallengeShow { config, id } => {
            block_on(challenge(
                &config,
                |c| async move { cli_show(&c, &id).await },
            ))
        }
        Command::ProbeNew { config, json } => block_on(challenge(&config, |c| async move {
            probe::probe_new(&c, json).await
        })),
        Command::ProbeShow { config, id, json } => block_on(challenge(&config, |c| async move {
            probe::probe_show(&c, &id, json).await
        })),
        Command::DomainCheck {
            config,
            domain,
            json,
        } => block_on(domain_check::run(config.as_deref(), &domain, json)),
        Command::StoreMigrate(args) => block_on(store_migrate::run(args)),
    }
}

/// The one runtime start-up of the program: run `command` to its exit status on a
/// multi-threaded runtime (2 if the runtime cannot start).
fn block_on(command: impl std::future::Future<Output = u8>) -> u8 {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(command),
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            2
        }
    }
}

/// The configuration at `path`, or the exit status 2 with the error printed.
fn load_config(path: &Path) -> Result<Config, u8> {
    Config::load(path).map_err(|e| {
        eprintln!("{e}");
        2
    })
}

fn check_config(source: &ConfigSource) -> u8 {
    match source.load() {
        Ok(_) => {
            println!("ok");
            0
        }
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

/// `challenge new|show` and `probe new|show`: print the text, or the reason and the message.
async fn challenge<F, Fut>(config: &Path, body: F) -> u8
where
    F: FnOnce(Config) -> Fut,
    Fut: std::future::Future<Output = Result<String, CliError>>,
{
    let config = match load_config(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match body(config).await {
        Ok(text) => {
            print!("{text}");
            0
        }
        Err(e) => {
            if let Some(r) = e.reason {
                println!("rejected {r}");
            }
            eprintln!("{}", e.message);
            1
        }
    }
}

/// `gatekeeper assertion verify`: 0 and the claims as JSON, 1 and why it is refused, 2 when
/// the keys or the file cannot be read.
fn assertion_verify(file: &Path, keys: &AssertionKeys) -> u8 {
    let jwks = match load_jwks(keys) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    let token = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{}: {e}", file.display());
            return 2;
        }
    };
    match crate::assertion::verify(&token, &jwks) {
        Ok(claims) => match serde_json::to_string_pretty(&claims) {
            Ok(text) => {
                println!("{text}");
                0
            }
            Err(e) => {
                eprintln!("{e}");
                2
            }
        },
        Err(e) => {
            println!("invalid");
            eprintln!("{e}");
            1
        }
    }
}

fn load_jwks(keys: &AssertionKeys) -> Result<jsonwebtoken::jwk::JwkSet, String> {
    match keys {
        AssertionKeys::Jwks(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            serde_json::from_str(&text).map_err(|e| format!("{}: not a JWKS: {e}", path.display()))
        }
        AssertionKeys::Config(path) => {
            let config = Config::load(path).map_err(|e| e.to_string())?;
            let oidc = config
                .oidc
                .as_ref()
                .ok_or_else(|| format!("{}: no [oidc], so no assertion key", path.display()))?;
            // Verifying must not create a key: a missing one is an error here.
            if !oidc.signing_key.exists() {
                return Err(format!("{}: no such key file", oidc.signing_key.display()));
            }
            crate::oidc::Keys::load(
                &oidc.signing_key,
                oidc.signing_alg,
                &oidc.previous_keys,
                &oidc.subject_key,
            )
            .map(|k| k.jwks())
            .map_err(|e| e.to_string())
        }
    }
}

/// A CLI failure: the reason code when there is one (for the exit status and the message).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CliError {
    pub reason: Option<Reason>,
    pub message: String,
}

impl From<BuildError> for CliError {
    fn from(e: BuildError) -> Self {
        Self {
            reason: None,
            message: e.to_string(),
        }
    }
}

/// `gatekeeper challenge new ADDRESS`: issue a challenge exactly as the API does (mail
/// included) and return the text to print: id, address, session code, expiry. Never the
/// token.
pub async fn cli_new(config: &Config, address: &[u8]) -> Result<String, CliError> {
    let store = open_store(config, Access::ReadWrite)?;
    let challenges = service(config, store)?;
    match challenges.create(address, Utc::now()).await {
        Ok(c) => Ok(format!(
            "id: {}\naddress: {}\nsession_code: {}\nexpires_at: {}\nstatus: {}\n",
            c.id,
            c.address,
            c.session_code,
            format_time(&c.expires_at),
            c.status
        )),
        Err(e) => Err(CliError {
            reason: Some(e.reason()),
            message: create_error_text(&e),
        }),
    }
}

/// `gatekeeper challenge show ID`: the challenge as `GET /v1/challenges/{id}` shows it,
/// evidence as JSON. Opens the store read-only.
pub async fn cli_show(config: &Config, id: &str) -> Result<String, CliError> {
    let store = open_store(config, Access::ReadOnly)?;
    let record = store.get(id).await.map_err(|e| CliError {
        reason: Some(e.reason()),
        message: e.to_string(),
    })?;
    let Some(record) = record else {
        return Err(CliError {
            reason: None,
            message: format!("no challenge {id}"),
        });
    };
    let view = ChallengeView::from_record(&record, Utc::now());
    let mut out = format!(
        "id: {}\naddress: {}\nstatus: {}\ncreated_at: {}\nexpires_at: {}\nconfirmed_at: {}\nrejections: {}\n",
        view.id,
        view.address,
        view.status,
        format_time(&view.created_at),
        format_time(&view.expires_at),
        view.confirmed_at
            .as_ref()
            .map(format_time)
            .unwrap_or_else(|| "-".into()),
        view.rejections
    );
    if let Some(evidence) = &view.evidence {
        let json = serde_json::to_string_pretty(evidence).unwrap_or_default();
        out.push_str("evidence: ");
        out.push_str(&json);
        out.push('\n');
    }
    Ok(out)
}

fn create_error_text(e: &CreateError) -> String {
    match e {
        CreateError::Refused {
            reason,
            detail: Some(d),
        } => format!("rejected {reason} ({d})"),
        other => format!("rejected {} ({other})", other.reason()),
    }
}

/// `gatekeeper check-address`: the canonical form, or `rejected <reason>` (detail on
/// stderr). With a configuration, its parser options and domain policy apply.
fn check_address(address: AddressInput, config: Option<&Path>) -> u8 {
    let config = match config.map(Config::load).transpose() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    let input = match address {
        AddressInput::Arg(bytes) => bytes,
        AddressInput::Stdin => match read_stdin_address() {
            Ok(bytes) => bytes,
            Err(e) => {
                eprintln!("cannot read standard input: {e}");
                return 2;
            }
        },
    };
    let opts = config
        .as_ref()
        .map_or_else(ParseOptions::default, Config::parse_options);
    let verdict = Mailbox::parse(&input, &opts)
        .map_err(|e| (e.reason(), Some(e.detail)))
        .and_then(|mailbox| match &config {
            Some(c) => crate::domains::DomainPolicy::new(&c.policy)
                .check_claim(mailbox.domain(), &c.confirm.domain)
                .map(|()| mailbox)
                .map_err(|reason| (reason, None)),
            None => Ok(mailbox),
        });
    let mut out = io::stdout().lock();
    match verdict {
        Ok(mailbox) => {
            let _ = writeln!(out, "{mailbox}");
            0
        }
        Err((reason, detail)) => {
            let _ = writeln!(out, "rejected {reason}");
            if let Some(detail) = detail {
                eprintln!("detail: {detail}");
            }
            1
        }
    }
}

/// The raw bytes of standard input, bounded, with one trailing `\n` removed.
fn read_stdin_address() -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    io::stdin()
        .lock()
        .take(MAX_STDIN_ADDRESS)
        .read_to_end(&mut bytes)?;
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
    }
    Ok(bytes)
}
