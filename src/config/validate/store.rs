//! `[store]` with `url`: the PostgreSQL connection settings (SPEC §7), checked here so that a
//! bad URL or a conflicting key is a `file:line` error at start, not a connection failure
//! later.

use super::super::check::{Check, to_usize};
use super::super::error::KeyPath;
use super::super::raw::RawStore;
use super::super::{PgTls, PostgresConfig};

/// Inclusive range of `store.pool_size`: PostgreSQL's default `max_connections` is 100, and
/// several instances share it.
const POOL_SIZE: (u64, u64) = (1, 256);

impl Check {
    /// `None` for SQLite (no `url`), or when a key is wrong (the problem is recorded).
    pub(super) fn postgres(&mut self, raw: &RawStore) -> Option<PostgresConfig> {
        let at = KeyPath::of(&["store"]);
        let tls = match raw.tls.as_str() {
            "require" => Some(PgTls::Require),
            "disable" => Some(PgTls::Disable),
            other => {
                self.fail(
                    &at.key("tls"),
                    format!("{other:?} is neither \"require\" nor \"disable\""),
                );
                None
            }
        };
        let pool_size = to_usize(self.range(
            &at.key("pool_size"),
            raw.pool_size,
            POOL_SIZE.0,
            POOL_SIZE.1,
        ));
        let Some(url) = raw.url.as_deref() else {
            // The PostgreSQL-only keys without `url` are a mistake worth saying (the operator
            // believes they talk to PostgreSQL).
            for (key, set) in [
                ("password_file", raw.password_file.is_some()),
                ("ca_file", raw.ca_file.is_some()),
            ] {
                if set {
                    self.fail(&at.key(key), "only meaningful with store.url");
                }
            }
            return None;
        };
        if raw.path.is_some() {
            self.fail(
                &at.key("url"),
                "store.path and store.url are exclusive: set exactly one",
            );
        }
        let url_ok = self.postgres_url(&at.key("url"), url);
        let password_file = raw
            .password_file
            .as_deref()
            .map(|p| self.path(&at.key("password_file"), p));
        let ca_file = raw
            .ca_file
            .as_deref()
            .map(|p| self.path(&at.key("ca_file"), p));
        if tls == Some(PgTls::Disable) && ca_file.is_some() {
            self.fail(&at.key("ca_file"), "set but store.tls is \"disable\"");
        }
        Some(PostgresConfig {
            url: url.to_owned(),
            password_file,
            tls: tls?,
            ca_file,
            pool_size,
        })
        .filter(|_| url_ok)
    }

    /// A `postgres://` or `postgresql://` URL with a host and a database, and no password or
    /// `sslmode` (they have their own keys: a password in the configuration file would be
    /// readable by whoever reads the file, and two TLS settings could disagree).
    fn postgres_url(&mut self, at: &KeyPath, text: &str) -> bool {
        let problem = match url::Url::parse(text) {
            Err(e) => Some(format!("{text:?} is not a URL: {e}")),
            Ok(u) if !matches!(u.scheme(), "postgres" | "postgresql") => Some(format!(
                "{text:?}: scheme must be postgresql:// (or postgres://)"
            )),
            Ok(u) if u.password().is_some() => {
                Some("holds a password: put it in store.password_file".to_owned())
            }
            Ok(u) if u.host_str().is_none_or(str::is_empty) => {
                Some(format!("{text:?} names no host"))
            }
            Ok(u) if u.path().trim_start_matches('/').is_empty() => Some(format!(
                "{text:?} names no database (postgresql://user@host/DATABASE)"
            )),
            Ok(u)
                if u.query_pairs()
                    .any(|(k, _)| k == "sslmode" || k == "password") =>
            {
                Some(
                    "sslmode and password have their own keys: store.tls, store.password_file"
                        .to_owned(),
                )
            }
            Ok(_) => None,
        };
        match problem {
            Some(p) => {
                self.fail(at, p);
                false
            }
            None => true,
        }
    }
}
