//! Configuration errors that point at the offending line: `file:line: key: message`.
//!
//! Syntax, type and unknown-key errors carry toml's own span; semantic errors found after
//! deserialisation carry the key's path, which is looked up in a spanned parse of the same
//! text to recover its line.

use std::fmt;

use toml::de::{DeTable, DeValue};

/// One step of a key path: a table key or an index into an array of tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    /// A key of a table.
    Key(String),
    /// An element of an array (of tables), counted from 0.
    Index(usize),
}

/// The dotted path of a configuration key, e.g. `siem.sink[1].address`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyPath(pub Vec<Segment>);

impl KeyPath {
    /// A path from dotted plain keys, e.g. `KeyPath::of(&["smtp", "listen"])`.
    pub fn of(keys: &[&str]) -> Self {
        Self(keys.iter().map(|k| Segment::Key((*k).to_owned())).collect())
    }

    /// This path extended by one key.
    pub fn key(&self, key: &str) -> Self {
        let mut next = self.clone();
        next.0.push(Segment::Key(key.to_owned()));
        next
    }

    /// This path extended by one array index.
    pub fn index(&self, index: usize) -> Self {
        let mut next = self.clone();
        next.0.push(Segment::Index(index));
        next
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Index(n) => write!(f, "[{n}]")?,
                Segment::Key(k) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    // Keys such as domain names need quotes to read back as one key.
                    if k.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                    {
                        f.write_str(k)?;
                    } else {
                        write!(f, "{k:?}")?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// One thing wrong with a configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The file name (or another label for text that did not come from a file).
    pub origin: String,
    /// 1-based line of the key or value, when it could be found.
    pub line: Option<usize>,
    /// The key concerned, when the problem is about one key.
    pub key: Option<String>,
    /// What is wrong, in words.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.origin)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        f.write_str(": ")?;
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Why a configuration was refused: every problem found, one per line when displayed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    problems: Vec<Problem>,
}

impl ConfigError {
    /// An error that is not about the text: the file could not be read.
    pub(crate) fn io(origin: &str, err: &std::io::Error) -> Self {
        Self {
            problems: vec![Problem {
                origin: origin.to_owned(),
                line: None,
                key: None,
                message: format!("cannot read: {err}"),
            }],
        }
    }

    /// A syntax, type or unknown-key error reported by toml, located by its span.
    pub(crate) fn toml(origin: &str, text: &str, err: &toml::de::Error) -> Self {
        let start = err.span().map(|span| span.start);
        // A type or unknown-key error sits inside a well-formed document: name its key too.
        let key = start.and_then(|at| {
            let doc = DeTable::parse(text).ok()?;
            let path = key_at(doc.get_ref(), at, KeyPath::default())?;
            Some(path.to_string())
        });
        Self {
            problems: vec![Problem {
                origin: origin.to_owned(),
                line: start.map(|at| line_of(text, at)),
                key,
                message: err.message().trim_end().to_owned(),
            }],
        }
    }

    /// Semantic problems, each located by looking its key up in the spanned document.
    pub(crate) fn semantic(origin: &str, text: &str, found: Vec<(KeyPath, String)>) -> Self {
        let doc = DeTable::parse(text).ok();
        let problems = found
            .into_iter()
            .map(|(path, message)| Problem {
                origin: origin.to_owned(),
                line: doc
                    .as_ref()
                    .and_then(|d| line_of_path(text, d.get_ref(), &path)),
                key: Some(path.to_string()),
                message,
            })
            .collect();
        Self { problems }
    }

    /// Every problem found.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// 1-based line number of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()
        .get(..end)
        .map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count())
        + 1
}

/// The path of the deepest key whose key or value covers byte `at`.
fn key_at(table: &DeTable<'_>, at: usize, here: KeyPath) -> Option<KeyPath> {
    // Tables opened by `[header]` lines can be spread over the file, so their spans are not
    // trusted: look inside every table, and match scalars by their own spans.
    for (key, value) in table {
        let path = here.key(key.get_ref());
        if let Some(inner) = value_key_at(value.get_ref(), at, path.clone()) {
            return Some(inner);
        }
        if key.span().contains(&at) || value.span().contains(&at) {
            return Some(path);
        }
    }
    None
}

fn value_key_at(value: &DeValue<'_>, at: usize, here: KeyPath) -> Option<KeyPath> {
    match value {
        DeValue::Table(t) => key_at(t, at, here),
        DeValue::Array(items) => items.iter().enumerate().find_map(|(i, item)| {
            let path = here.index(i);
            match item.get_ref() {
                DeValue::Table(t) => key_at(t, at, path),
                _ if item.span().contains(&at) => Some(path),
                _ => None,
            }
        }),
        _ => None,
    }
}

/// The line of the deepest part of `path` present in the document: the key itself when it is
/// there, else its table (a required key that is missing is reported where it belongs).
fn line_of_path(text: &str, root: &DeTable<'_>, path: &KeyPath) -> Option<usize> {
    let mut segments = path.0.iter();
    let first = match segments.next()? {
        Segment::Key(k) => k,
        Segment::Index(_) => return None,
    };
    let (key, mut value) = root.get_key_value(first.as_str())?;
    let mut span = key.span();
    for segment in segments {
        let next = match segment {
            Segment::Key(k) => value
                .get_ref()
                .as_table()
                .and_then(|t| t.get_key_value(k.as_str()))
                .map(|(key, v)| (key.span(), v)),
            Segment::Index(i) => value
                .get_ref()
                .as_array()
                .and_then(|a| a.get(*i))
                .map(|v| (v.span(), v)),
        };
        let Some((next_span, next_value)) = next else {
            break;
        };
        span = next_span;
        value = next_value;
    }
    // Point at the value when it is a scalar or inline: that is where the fix goes.
    let value_span = value.span();
    let at = match value.get_ref() {
        DeValue::Table(_) => span.start,
        _ if value_span.start >= span.start => value_span.start,
        _ => span.start,
    };
    Some(line_of(text, at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_paths_read_back_as_toml() {
        let table: &[(KeyPath, &str)] = &[
            (KeyPath::of(&["smtp", "listen"]), "smtp.listen"),
            (
                KeyPath::of(&["siem", "sink"]).index(1).key("address"),
                "siem.sink[1].address",
            ),
            (
                KeyPath::of(&["policy", "domains", "culture.gouv.fr"]),
                "policy.domains.\"culture.gouv.fr\"",
            ),
        ];
        for (path, want) in table {
            assert_eq!(path.to_string(), *want);
        }
    }

    #[test]
    fn lines_of_keys_values_and_missing_keys() {
        let text = "[a]\nx = 1\n\n[[b]]\ny = [\n  \"p\",\n  \"q\",\n]\n[[b]]\nz = 2\n";
        let doc = DeTable::parse(text).unwrap_or_else(|e| panic!("{e}"));
        let table: &[(KeyPath, Option<usize>)] = &[
            (KeyPath::of(&["a", "x"]), Some(2)),
            (KeyPath::of(&["a", "missing"]), Some(1)),
            (KeyPath::of(&["b"]).index(0).key("y").index(1), Some(7)),
            (KeyPath::of(&["b"]).index(1).key("z"), Some(10)),
            (KeyPath::of(&["b"]).index(1).key("missing"), Some(9)),
            (KeyPath::of(&["nothing"]), None),
        ];
        for (path, want) in table {
            assert_eq!(line_of_path(text, doc.get_ref(), path), *want, "{path}");
        }
        let at = text.find('q').unwrap_or_default();
        assert_eq!(
            key_at(doc.get_ref(), at, KeyPath::default()).map(|p| p.to_string()),
            Some("b[0].y[1]".to_owned())
        );
    }
}
