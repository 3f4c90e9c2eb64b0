//! Where the configuration comes from (SPEC §6): `-c`, else `$GATEKEEPER_CONFIG`, else
//! `conf/gatekeeper.toml` when it exists, else the copy compiled into the binary. The one
//! [`ConfigSource`] of the program: the CLI chooses it, the daemon keeps it so that SIGHUP
//! re-reads the same source.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::config::{Config, ConfigError};

/// The configuration compiled into the binary: used when no file is named or found, so that
/// `gatekeeper` runs on a fresh machine.
const EMBEDDED_CONFIG: &str = include_str!("../../conf/gatekeeper.toml");
/// How the embedded configuration is named in error messages.
const EMBEDDED_ORIGIN: &str = "<embedded conf/gatekeeper.toml>";
/// Looked for in the working directory when neither `-c` nor the environment names a file.
pub const DEFAULT_CONFIG_PATH: &str = "conf/gatekeeper.toml";
/// Environment variable naming the configuration file.
pub const CONFIG_ENV: &str = "GATEKEEPER_CONFIG";

/// Where the configuration comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigSource {
    /// A file on disk.
    File(PathBuf),
    /// A text compiled into the binary, with its name for errors.
    Text {
        text: &'static str,
        origin: &'static str,
    },
}

impl ConfigSource {
    /// The copy of conf/gatekeeper.toml compiled into the binary.
    pub fn embedded() -> Self {
        ConfigSource::Text {
            text: EMBEDDED_CONFIG,
            origin: EMBEDDED_ORIGIN,
        }
    }

    /// SPEC §6 order: `cli_arg`, else `$GATEKEEPER_CONFIG`, else `conf/gatekeeper.toml` when
    /// it exists, else the embedded default.
    pub fn choose(cli_arg: Option<PathBuf>) -> Self {
        choose(
            cli_arg,
            std::env::var_os(CONFIG_ENV),
            Path::new(DEFAULT_CONFIG_PATH).is_file(),
        )
    }

    pub fn load(&self) -> Result<Config, ConfigError> {
        match self {
            ConfigSource::File(path) => Config::load(path),
            ConfigSource::Text { text, origin } => Config::from_toml_str(text, origin),
        }
    }
}

/// The decision of [`ConfigSource::choose`], without the process environment (testable).
fn choose(cli_arg: Option<PathBuf>, env: Option<OsString>, default_exists: bool) -> ConfigSource {
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
        ConfigSource::embedded()
    }
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
            (None, None, false, ConfigSource::embedded()),
        ];
        for (cli, env, exists, want) in table {
            assert_eq!(&choose(cli.clone(), env.clone(), *exists), want);
        }
    }

    #[test]
    fn embedded_config_is_valid() {
        assert!(ConfigSource::embedded().load().is_ok());
    }
}
