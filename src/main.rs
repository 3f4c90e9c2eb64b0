//! The `gatekeeper` command line (SPEC §6): clap definitions and dispatch only. The command
//! bodies live in `gatekeeper::daemon::cli`, which also documents the exit codes.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use gatekeeper::config::PgTls;
use gatekeeper::daemon::ConfigSource;
use gatekeeper::daemon::cli::{self, AddressInput, VerifyArgs};

// The allocator is a build choice (Cargo features, measured in bench/memory.sh); declaring one
// is safe code, the crates hold their own unsafe.
#[cfg(all(feature = "jemalloc", not(feature = "mimalloc")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Confirms that a person owns a mailbox at an allowed domain by accepting their DKIM-signed,
/// SPF-authorised reply to a one-time address.
#[derive(Debug, Parser)]
#[command(name = "gatekeeper", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon (the default when no subcommand is given): SMTP, the HTTP API and the
    /// SIEM trail. SIGHUP reloads, SIGTERM drains, SIGINT stops at once.
    ///
    /// Configuration: -c, else $GATEKEEPER_CONFIG, else conf/gatekeeper.toml, else the copy
    /// embedded in the binary.
    Serve {
        /// Configuration file.
        #[arg(short = 'c', long = "config", value_name = "PATH")]
        config: Option<PathBuf>,
    },
    /// Run the whole decision on a message file without SMTP (live DNS per the
    /// configuration) and print the verdict as JSON. Exit 0 accept, 1 reject, 2 temporary.
    Verify {
        /// Configuration file.
        #[arg(short = 'c', long = "config", value_name = "PATH")]
        config: PathBuf,
        /// The client IP address the message came from (for SPF and iprev).
        #[arg(long = "client-ip", value_name = "IP")]
        client_ip: std::net::IpAddr,
        /// The HELO/EHLO name the client gave.
        #[arg(long, value_name = "NAME")]
        helo: String,
        /// The envelope sender (MAIL FROM), with or without angle brackets.
        #[arg(long = "mail-from", value_name = "ADDR")]
        mail_from: OsString,
        /// The confirmation recipient; its challenge is read from the store. Without it the
        /// binding checks are skipped.
        #[arg(long, value_name = "ADDR")]
        rcpt: Option<OsString>,
        /// The message, as received (CRLF line endings).
        #[arg(value_name = "FILE.eml")]
        file: PathBuf,
    },
    /// Issue or inspect challenges from the command line.
    #[command(subcommand)]
    Challenge(ChallengeCommand),
    /// Check signed confirmations (the `assertion` of a confirmed challenge) offline.
    #[command(subcommand)]
    Assertion(AssertionCommand),
    /// Create or inspect probes (SPEC §10): an address a ministry writes to, to learn what a
    /// confirmation from its mail system would get. A probe never confirms anything.
    #[command(subcommand)]
    Probe(ProbeCommand),
    /// Operations on the store itself.
    #[command(subcommand)]
    Store(StoreCommand),
    /// What confirming an address at DOMAIN needs, from live DNS: SPF, DMARC, DKIM keys at
    /// the usual selectors and at those seen in earlier confirmations, MX; then a verdict.
    ///
    /// Exit 0 ready, 1 needs override (the `[policy.domains."…"]` snippet is printed),
    /// 2 cannot confirm (or the command could not run).
    DomainCheck {
        /// The domain a ministry's addresses are at (e.g. culture.gouv.fr).
        #[arg(value_name = "DOMAIN")]
        domain: String,
        /// Configuration file (its `[dns]`, `[policy]` and store). Without it: the system
        /// resolver and the default policy, and no earlier confirmations.
        #[arg(short = 'c', long = "config", value_name = "PATH")]
        config: Option<PathBuf>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Validate a configuration file; prints `ok`, or every error as `file:line: ...`.
    ///
    /// Without -c, checks the configuration `serve` would use: $GATEKEEPER_CONFIG, else
    /// conf/gatekeeper.toml, else the copy embedded in the binary.
    CheckConfig {
        /// Configuration file.
        #[arg(short = 'c', long = "config", value_name = "PATH")]
        config: Option<PathBuf>,
    },
    /// Parse an address with the strict parser; prints its canonical form or
    /// `rejected <reason code>`.
    ///
    /// With -c, the domain policy of the configuration applies too
    /// (policy.allowed_domains, policy.denied_domains) and its parser options
    /// (policy.local_part_extra_chars, policy.allow_idna).
    CheckAddress {
        /// The address; `-` reads the raw bytes from standard input, one trailing newline
        /// removed (to try NUL, CR and other bytes argv cannot carry).
        #[arg(value_name = "ADDRESS", allow_hyphen_values = true)]
        address: OsString,
        /// Configuration file whose policy applies.
        #[arg(short = 'c', long = "config", value_name = "PATH")]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum ChallengeCommand {
    /// Issue a challenge exactly as the API does (the mail is sent) and print its id, session
    /// code and expiry. Never the token.
    New {
        /// The claimed address.
        #[arg(value_name = "ADDRESS")]
        address: OsString,
        /// Configuration file.
        #[arg(short = 'c', long = "config", value_name = "PATH")]
        config: PathBuf,
    },
    /// Show a challenge as `GET /v1/challenges/{id}` does.
    Show {
        /// The challenge id.
        #[arg(value_name = "ID")]
        id: String,
        /// Configuration file.
        #[arg(short = 'c', long = "config", value_name = "PATH")]
        config: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum ProbeCommand {
    /// Create a probe exactly as `POST /v1/probes` does (same rate limits) and print its id,
    /// address and expiry.
    New {
        /// Configuration file.
        #[arg(short = 'c', long = "config", value_name = "PATH")]
        config: PathBuf,
        /// Print the API's JSON body instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Show a probe and its latest analysis as `GET /v1/probes/{id}` does.
    Show {
        /// The probe id.
        #[arg(value_name = "ID")]
        id: String,
        /// Configuration file.
        #[arg(short = 'c', long = "config", value_name = "PATH")]
        config: PathBuf,
        /// Print the API's JSON body instead of lines.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum StoreCommand {
    /// Copy an SQLite store (`[store] path`) into an empty PostgreSQL database (`[store]
    /// url`): challenges (every state, evidence, rejections), probes and the webhook
    /// deliveries still owed, in one transaction. Sign-in flows and codes of the OpenID
    /// Provider (minutes long) and finished deliveries are not copied. Stop the instance
    /// first. The source is only read.
    ///
    /// Exit 0 copied (counts printed per table), 1 refused (source schema newer than this
    /// program, not a gatekeeper store, target not empty), 2 could not run (nothing
    /// committed).
    Migrate {
        /// The SQLite store file.
        #[arg(long, value_name = "PATH")]
        from: PathBuf,
        /// postgresql://USER@HOST[:PORT]/DATABASE, without password or sslmode.
        #[arg(long, value_name = "URL")]
        to: String,
        /// A file whose first line is the role's password (as `store.password_file`).
        #[arg(long = "password-file", value_name = "PATH")]
        password_file: Option<PathBuf>,
        /// TLS to the database (as `store.tls`): `require` verifies the certificate and the
        /// host name; `disable` is for a database on loopback.
        #[arg(long, value_name = "MODE", default_value = "require")]
        tls: TlsMode,
        /// CA bundle (PEM) for `--tls require` (as `store.ca_file`); default: system roots.
        #[arg(long = "ca-file", value_name = "PATH")]
        ca_file: Option<PathBuf>,
    },
}

/// `store migrate --tls`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum TlsMode {
    Require,
    Disable,
}

#[derive(Debug, Subcommand)]
enum AssertionCommand {
    /// Verify one assertion (a compact JWS) and print its claims as JSON. Exit 0 valid, 1
    /// refused, 2 the keys could not be read. The keys: a JWKS file (`--jwks`, e.g. a saved
    /// copy of `/jwks.json`), or the `[oidc]` keys of a configuration (`-c`). Nothing is
    /// fetched over the network.
    Verify {
        /// The file holding the assertion (surrounding whitespace ignored).
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// A JWKS document.
        #[arg(
            long,
            value_name = "PATH",
            conflicts_with = "config",
            required_unless_present = "config"
        )]
        jwks: Option<PathBuf>,
        /// A configuration whose `[oidc]` keys (signing key and previous keys) verify.
        #[arg(short = 'c', long = "config", value_name = "PATH")]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    ExitCode::from(cli::run(command(Cli::parse())))
}

/// The library's [`cli::Command`] for the parsed arguments.
fn command(cli: Cli) -> cli::Command {
    match cli.command {
        None => cli::Command::Serve(ConfigSource::choose(None)),
        Some(Command::Serve { config }) => cli::Command::Serve(ConfigSource::choose(config)),
        Some(Command::CheckConfig { config }) => {
            cli::Command::CheckConfig(ConfigSource::choose(config))
        }
        Some(Command::CheckAddress { address, config }) => cli::Command::CheckAddress {
            address: if address == "-" {
                AddressInput::Stdin
            } else {
                AddressInput::Arg(address.into_encoded_bytes())
            },
            config,
        },
        Some(Command::Verify {
            config,
            client_ip,
            helo,
            mail_from,
            rcpt,
            file,
        }) => cli::Command::Verify {
            config,
            file,
            args: VerifyArgs {
                client_ip,
                helo,
                mail_from: mail_from.into_encoded_bytes(),
                rcpt: rcpt.map(OsString::into_encoded_bytes),
                message: Vec::new(),
            },
        },
        Some(Command::Challenge(ChallengeCommand::New { address, config })) => {
            cli::Command::ChallengeNew {
                config,
                address: address.into_encoded_bytes(),
            }
        }
        Some(Command::Challenge(ChallengeCommand::Show { id, config })) => {
            cli::Command::ChallengeShow { config, id }
        }
        Some(Command::Assertion(AssertionCommand::Verify { file, jwks, config })) => {
            cli::Command::AssertionVerify {
                file,
                keys: match (jwks, config) {
                    (Some(j), _) => cli::AssertionKeys::Jwks(j),
                    (None, Some(c)) => cli::AssertionKeys::Config(c),
                    // clap requires one of them.
                    (None, None) => cli::AssertionKeys::Jwks(PathBuf::new()),
                },
            }
        }
        Some(Command::Probe(ProbeCommand::New { config, json })) => {
            cli::Command::ProbeNew { config, json }
        }
        Some(Command::Probe(ProbeCommand::Show { id, config, json })) => {
            cli::Command::ProbeShow { config, id, json }
        }
        Some(Command::Store(StoreCommand::Migrate {
            from,
            to,
            password_file,
            tls,
            ca_file,
        })) => cli::Command::StoreMigrate(cli::store_migrate::MigrateArgs {
            from,
            to,
            password_file,
            tls: match tls {
                TlsMode::Require => PgTls::Require,
                TlsMode::Disable => PgTls::Disable,
            },
            ca_file,
        }),
        Some(Command::DomainCheck {
            domain,
            config,
            json,
        }) => cli::Command::DomainCheck {
            config,
            domain,
            json,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
