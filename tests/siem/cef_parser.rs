//! A small, strict CEF:0 parser for the tests: written from the CEF rules, independent of the
//! serialiser, and stricter than collectors (any unknown escape, bare control character,
//! duplicate key or ambiguous value is an error).

use std::collections::BTreeMap;

#[derive(Debug)]
pub struct Cef {
    /// vendor, product, version, signature id, name, severity (unescaped).
    pub header: Vec<String>,
    pub ext: BTreeMap<String, String>,
}

pub fn parse(line: &str) -> Result<Cef, String> {
    if let Some(c) = line.chars().find(|c| c.is_control()) {
        return Err(format!("raw control character {c:?} in line"));
    }
    let rest = line.strip_prefix("CEF:0|").ok_or("no CEF:0| prefix")?;
    let mut header = Vec::new();
    let mut field = String::new();
    let mut chars = rest.char_indices();
    let mut ext_start = None;
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, e @ ('\\' | '|'))) => field.push(e),
                other => return Err(format!("bad header escape {other:?}")),
            },
            '|' => {
                header.push(std::mem::take(&mut field));
                if header.len() == 6 {
                    ext_start = Some(i + 1);
                    break;
                }
            }
            c => field.push(c),
        }
    }
    let ext_start = ext_start.ok_or("header has fewer than 7 fields")?;
    let ext = parse_extension(rest.get(ext_start..).unwrap_or_default())?;
    Ok(Cef { header, ext })
}

/// `key=value key=value ...`: values end where the next unescaped `=` begins a key (the word
/// after the last space before it).
fn parse_extension(ext: &str) -> Result<BTreeMap<String, String>, String> {
    // Split the raw text at unescaped '=' signs.
    let mut pieces = Vec::new();
    let mut cur = String::new();
    let mut chars = ext.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let e = chars.next().ok_or("dangling backslash")?;
                if !matches!(e, '\\' | '=' | 'r' | 'n') {
                    return Err(format!("bad value escape \\{e}"));
                }
                cur.push('\\');
                cur.push(e);
            }
            '=' => pieces.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    pieces.push(cur);
    if ext.is_empty() {
        return Ok(BTreeMap::new());
    }
    let (first, rest) = pieces.split_first().ok_or("empty")?;
    let mut key = first.clone();
    let mut out = BTreeMap::new();
    let count = rest.len();
    for (n, piece) in rest.iter().enumerate() {
        let (raw_value, next_key) = if n + 1 == count {
            (piece.as_str(), None)
        } else {
            let sp = piece
                .rfind(' ')
                .ok_or_else(|| format!("no space before a key in {piece:?}"))?;
            (&piece[..sp], Some(piece[sp + 1..].to_owned()))
        };
        check_key(&key)?;
        if out.insert(key.clone(), unescape(raw_value)).is_some() {
            return Err(format!("duplicate key {key}"));
        }
        if let Some(k) = next_key {
            key = k;
        }
    }
    Ok(out)
}

fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!("bad key {key:?}"));
    }
    Ok(())
}

fn unescape(raw: &str) -> String {
    let mut out = String::new();
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('r') => out.push('\r'),
                Some('n') => out.push('\n'),
                Some(e) => out.push(e),
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn parser_self_check() {
    let c = parse(r"CEF:0|a\|b|p|1|sig|name|5|k1=v 1 k2=x\=y\\ k3=\r\n|").unwrap();
    assert_eq!(c.header, ["a|b", "p", "1", "sig", "name", "5"]);
    assert_eq!(c.ext["k1"], "v 1");
    assert_eq!(c.ext["k2"], "x=y\\");
    assert_eq!(c.ext["k3"], "\r\n|");
    assert!(
        parse("CEF:0|a|b|c|d|e|f|k=v=w").is_err(),
        "unescaped = inside a value"
    );
    assert!(parse("CEF:0|a|b|c|d|e|f|k=v k=w").is_err(), "duplicate key");
    assert!(parse("CEF:0|a|b|c|d|e|f|k=v\nx").is_err(), "raw newline");
    assert!(parse("CEF:0|a|b|c|d|e|f|k=\\x").is_err(), "unknown escape");
}
