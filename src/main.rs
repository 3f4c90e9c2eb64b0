//! The `gatekeeper` command line (SPEC §6). `main` only parses arguments and maps outcomes to
//! exit codes; the work lives in the library.
//!
//! Exit codes: 0 accepted / valid, 1 rejected / invalid, 2 the command itself could not run
//! (unreadable configuration, bad usage).

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use gatekeeper::address::{Mailbox, ParseOptions};
use gatekeeper::config::{Config, ConfigError};
use gatekeeper::daemon::ConfigSource as DaemonSource;
use gatekeeper::daemon::cli::VerifyArgs;

/// The configuration compiled into the binary: used when no file is named or found, so that
/// `gatekeeper` runs on a fresh machine.
const EMBEDDED_CONFIG: &str = include_str!("../conf/gatekeeper.toml");
/// How the embedded configuration is named in error messages.
const EMBEDDED_ORIGIN: &str = "<embedded conf/gatekeeper.toml>";
/// Looked for in the working directory when neither `-c` nor the environment names a file.
const DEFAULT_CONFIG_PATH: &str = "conf/gatekeeper.toml";
/// Environment variable naming the configuration file.
const CONFIG_ENV: &str = "GATEKEEPER_CONFIG";
/// Longest input `check-address -` reads from stdin: one octet more than the parser's own
/// input bound plus the newline, so a truncated input still reaches the parser as too long
/// (`length`, the detail the API gives for the same bytes) and never as a shorter prefix read
/// on its own merits.
const MAX_STDIN_ADDRESS: u64 = gatekeeper::address::MAX_INPUT as u64 + 2;

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

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::CheckConfig { config }) => check_config(&config_path(config)),
        Some(Command::CheckAddress { address, config }) => check_address(address, config),
        Some(Command::Serve { config }) => serve(config_path(config)),
        None => serve(config_path(None)),
        Some(Command::Verify {
            config,
            client_ip,
            helo,
            mail_from,
            rcpt,
            file,
        }) => verify(config, client_ip, helo, mail_from, rcpt, file),
        Some(Command::Challenge(cmd)) => challenge(cmd),
    }
}

fn runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

fn serve(source: ConfigSource) -> ExitCode {
    gatekeeper::daemon::logging::init();
    let source = match source {
        ConfigSource::File(path) => DaemonSource::File(path),
        ConfigSource::Embedded => DaemonSource::Text {
            text: EMBEDDED_CONFIG,
            origin: EMBEDDED_ORIGIN,
        },
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(gatekeeper::daemon::serve(source)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gatekeeper: {e}");
            ExitCode::from(1)
        }
    }
}

fn load_config_or_exit(path: &Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(2)
    })
}

fn verify(
    config: PathBuf,
    client_ip: std::net::IpAddr,
    helo: String,
    mail_from: OsString,
    rcpt: Option<OsString>,
    file: PathBuf,
) -> ExitCode {
    let config = match load_config_or_exit(&config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let message = match std::fs::read(&file) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("{}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    let args = VerifyArgs {
        client_ip,
        helo,
        mail_from: mail_from.as_encoded_bytes().to_vec(),
        rcpt: rcpt.map(|r| r.as_encoded_bytes().to_vec()),
        message,
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let verdict = rt.block_on(gatekeeper::daemon::cli::verify(&config, args));
    let json = gatekeeper::daemon::cli::verdict_json(&verdict);
    println!("{json:#}");
    ExitCode::from(gatekeeper::daemon::cli::exit_code(&verdict))
}

fn challenge(cmd: ChallengeCommand) -> ExitCode {
    let config_path = match &cmd {
        ChallengeCommand::New { config, .. } | ChallengeCommand::Show { config, .. } => {
            config.clone()
        }
    };
    let config = match load_config_or_exit(&config_path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = rt.block_on(async {
        match cmd {
            ChallengeCommand::New { address, .. } => {
                gatekeeper::app::cli_new(&config, address.as_encoded_bytes()).await
            }
            ChallengeCommand::Show { id, .. } => gatekeeper::app::cli_show(&config, &id).await,
        }
    });
    match result {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            if let Some(r) = e.reason {
                println!("rejected {r}");
            }
            eprintln!("{}", e.message);
            ExitCode::from(1)
        }
    }
}

/// Where the configuration comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
enum ConfigSource {
    /// A file on disk.
    File(PathBuf),
    /// The copy of conf/gatekeeper.toml compiled into the binary.
    Embedded,
}

impl ConfigSource {
    fn load(&self) -> Result<Config, ConfigError> {
        match self {
            ConfigSource::File(path) => Config::load(path),
            ConfigSource::Embedded => Config::from_toml_str(EMBEDDED_CONFIG, EMBEDDED_ORIGIN),
        }
    }
}

/// SPEC §6 order: `-c`, else `$GATEKEEPER_CONFIG`, else `conf/gatekeeper.toml` when it exists,
/// else the embedded default.
fn config_path(cli_arg: Option<PathBuf>) -> ConfigSource {
    choose_config(
        cli_arg,
        std::env::var_os(CONFIG_ENV),
        Path::new(DEFAULT_CONFIG_PATH).is_file(),
    )
}

/// The decision of [`config_path`], without the process environment (testable).
fn choose_config(
    cli_arg: Option<PathBuf>,
    env: Option<OsString>,
    default_exists: bool,
) -> ConfigSource {
    if let Some(path) = cli_arg {
        return ConfigSource::File(path);
    }
    // An empty variable is treated as unset, as shells make it easy to export one by mistake.
    if let Some(path) = env.filter(|p| !p.is_empty()) {
        return ConfigSource::File(PathBuf::from(path));
    }
    if default_exists {
        ConfigSource::File(PathBuf::from(DEFAULT_CONFIG_PATH))
    } else {
        ConfigSource::Embedded
    }
}

fn check_config(source: &ConfigSource) -> ExitCode {
    match source.load() {
        Ok(_) => {
            println!("ok");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn check_address(address: OsString, config: Option<PathBuf>) -> ExitCode {
    let config = match config.map(|path| Config::load(&path)).transpose() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let input = if address == "-" {
        match read_stdin_address() {
            Ok(bytes) => bytes,
            Err(e) => {
                eprintln!("cannot read standard input: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        address.into_encoded_bytes()
    };
    let opts = config
        .as_ref()
        .map_or_else(ParseOptions::default, Config::parse_options);
    let verdict = Mailbox::parse(&input, &opts)
        .map_err(|e| (e.reason(), Some(e.detail)))
        .and_then(|mailbox| match &config {
            Some(c) => gatekeeper::domains::DomainPolicy::new(&c.policy)
                .check_claim(mailbox.domain(), &c.confirm.domain)
                .map(|()| mailbox)
                .map_err(|reason| (reason, None)),
            None => Ok(mailbox),
        });
    let mut out = io::stdout().lock();
    match verdict {
        Ok(mailbox) => {
            let _ = writeln!(out, "{mailbox}");
            ExitCode::SUCCESS
        }
        Err((reason, detail)) => {
            let _ = writeln!(out, "rejected {reason}");
            if let Some(detail) = detail {
                eprintln!("detail: {detail}");
            }
            ExitCode::FAILURE
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_source_order() {
        let cli = Some(PathBuf::from("a.toml"));
        let env = Some(OsString::from("b.toml"));
        let table: &[(Option<PathBuf>, Option<OsString>, bool, ConfigSource)] = &[
            (
                cli.clone(),
                env.clone(),
                true,
                ConfigSource::File("a.toml".into()),
            ),
            (None, env.clone(), true, ConfigSource::File("b.toml".into())),
            (
                None,
                Some(OsString::new()),
                true,
                ConfigSource::File(DEFAULT_CONFIG_PATH.into()),
            ),
            (
                None,
                None,
                true,
                ConfigSource::File(DEFAULT_CONFIG_PATH.into()),
            ),
            (None, None, false, ConfigSource::Embedded),
        ];
        for (cli, env, exists, want) in table {
            assert_eq!(&choose_config(cli.clone(), env.clone(), *exists), want);
        }
    }

    #[test]
    fn embedded_config_is_valid() {
        assert!(ConfigSource::Embedded.load().is_ok());
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
