//! A DKIM signer (RFC 6376, RFC 8463) able to produce every corpus case: chosen `h=` (a
//! repeated name signs one more instance, bottom-up), extra tags (`l`, `t`, `x`, `z`, `i`,
//! unknown ones), an exact `raw_tags` list with `{BH}`/`{B}` filled, signing one message and
//! sending another (`sign_over`), several signatures.
//!
//! Written independently of mail-auth's signer on purpose: the verifier under test must not
//! be checked against its own library's reading of the rules.

#![allow(dead_code)]

use super::keys::Key;

/// How to sign.
#[derive(Clone, Debug)]
pub struct SignSpec {
    pub domain: String,
    pub selector: String,
    /// `rsa-sha256`, `rsa-sha1` or `ed25519-sha256` (the value written in `a=`).
    pub algorithm: String,
    /// `relaxed/relaxed`, `simple/simple`, ...
    pub canonicalization: String,
    /// `h=` exactly, in order.
    pub signed_headers: Vec<String>,
    /// Extra tags, written between `s=` and `h=` in this order.
    pub tags: Vec<(String, String)>,
    /// The exact tag list, `{BH}` and `{B}` to fill; overrides everything above but the key
    /// and the algorithm used to hash.
    pub raw_tags: Option<String>,
}

impl SignSpec {
    pub fn new(domain: &str, selector: &str, algorithm: &str, headers: &[&str]) -> SignSpec {
        SignSpec {
            domain: domain.into(),
            selector: selector.into(),
            algorithm: algorithm.into(),
            canonicalization: "relaxed/relaxed".into(),
            signed_headers: headers.iter().map(|h| h.to_string()).collect(),
            tags: Vec::new(),
            raw_tags: None,
        }
    }

    pub fn tag(mut self, name: &str, value: &str) -> SignSpec {
        self.tags.push((name.into(), value.into()));
        self
    }
}

fn is_wsp(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// RFC 6376 §3.4.2 relaxed header canonicalization of one field (`name: value` text, folds
/// included, no final CRLF).
pub fn relaxed_header(field: &str) -> String {
    let (name, value) = field.split_once(':').unwrap_or((field, ""));
    let unfolded = value.replace("\r\n", "");
    let mut out = String::new();
    let mut in_wsp = false;
    for c in unfolded.chars() {
        if is_wsp(c) {
            in_wsp = true;
        } else {
            if in_wsp && !out.is_empty() {
                out.push(' ');
            }
            in_wsp = false;
            out.push(c);
        }
    }
    format!(
        "{}:{}",
        name.trim_end_matches(is_wsp).to_ascii_lowercase(),
        out
    )
}

/// RFC 6376 §3.4.4 relaxed body canonicalization.
pub fn relaxed_body(body: &[u8]) -> Vec<u8> {
    let text = body;
    let mut lines: Vec<Vec<u8>> = Vec::new();
    let mut rest = text;
    loop {
        match rest.windows(2).position(|w| w == b"\r\n") {
            Some(i) => {
                lines.push(rest[..i].to_vec());
                rest = &rest[i + 2..];
            }
            None => {
                if !rest.is_empty() {
                    lines.push(rest.to_vec());
                }
                break;
            }
        }
    }
    let mut out_lines: Vec<Vec<u8>> = lines
        .into_iter()
        .map(|line| {
            let mut out = Vec::new();
            let mut in_wsp = false;
            for &b in &line {
                if b == b' ' || b == b'\t' {
                    in_wsp = true;
                } else {
                    if in_wsp {
                        out.push(b' ');
                    }
                    in_wsp = false;
                    out.push(b);
                }
            }
            out
        })
        .collect();
    while out_lines.last().is_some_and(|l| l.is_empty()) {
        out_lines.pop();
    }
    let mut out = Vec::new();
    for l in out_lines {
        out.extend_from_slice(&l);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// RFC 6376 §3.4.3 simple body canonicalization.
pub fn simple_body(body: &[u8]) -> Vec<u8> {
    let mut b = body.to_vec();
    if b.is_empty() {
        return b"\r\n".to_vec();
    }
    if !b.ends_with(b"\r\n") {
        b.extend_from_slice(b"\r\n");
    }
    while b.ends_with(b"\r\n\r\n") {
        b.truncate(b.len() - 2);
    }
    b
}

fn split_canon(c: &str) -> (bool, bool) {
    let (h, b) = c.split_once('/').unwrap_or((c, "simple"));
    (
        h.trim().eq_ignore_ascii_case("relaxed"),
        b.trim().eq_ignore_ascii_case("relaxed"),
    )
}

fn b64(data: &[u8]) -> String {
    data_encoding::BASE64.encode(data)
}

/// Pick the instances `h=` signs, bottom-up, each used once; absent ones sign nothing.
pub fn pick_headers<'a>(headers: &'a [String], names: &[String]) -> Vec<&'a String> {
    let mut used = vec![false; headers.len()];
    let mut out = Vec::new();
    for name in names {
        let found = headers.iter().enumerate().rev().find(|(i, h)| {
            !used[*i]
                && h.split_once(':').is_some_and(|(n, _)| {
                    n.trim_end_matches(is_wsp).eq_ignore_ascii_case(name.trim())
                })
        });
        if let Some((i, h)) = found {
            used[i] = true;
            out.push(h);
        }
    }
    out
}

/// Sign `headers` (fields as on the wire, no final CRLF) and `body`; returns the whole
/// `DKIM-Signature: ...` field (b= folded), no final CRLF.
pub fn sign(key: &Key, spec: &SignSpec, headers: &[String], body: &[u8]) -> String {
    let alg = spec.algorithm.to_ascii_lowercase();
    let sha1 = alg.ends_with("sha1");
    let (relaxed_h, relaxed_b) = split_canon(&spec.canonicalization);
    let mut canon_body = if relaxed_b {
        relaxed_body(body)
    } else {
        simple_body(body)
    };
    let l_tag = spec
        .raw_tags
        .as_deref()
        .and_then(|raw| {
            raw.split(';')
                .filter_map(|t| t.split_once('='))
                .find(|(k, _)| k.trim() == "l")
                .map(|(_, v)| v.trim().to_string())
        })
        .or_else(|| {
            spec.tags
                .iter()
                .find(|(k, _)| k == "l")
                .map(|(_, v)| v.clone())
        });
    if let Some(l) = l_tag.and_then(|l| l.parse::<usize>().ok()) {
        canon_body.truncate(l);
    }
    let digest = if sha1 {
        ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &canon_body)
    } else {
        ring::digest::digest(&ring::digest::SHA256, &canon_body)
    };
    let bh = b64(digest.as_ref());

    let (tag_list, h_names): (String, Vec<String>) = match &spec.raw_tags {
        Some(raw) => {
            let names = raw
                .split(';')
                .filter_map(|t| t.split_once('='))
                .find(|(k, _)| k.trim() == "h")
                .map(|(_, v)| v.split(':').map(|s| s.trim().to_string()).collect())
                .unwrap_or_default();
            (raw.replace("{BH}", &bh), names)
        }
        None => {
            let mut t = format!(
                "v=1; a={}; c={}; d={}; s={};",
                spec.algorithm, spec.canonicalization, spec.domain, spec.selector
            );
            for (k, v) in &spec.tags {
                t.push_str(&format!(" {k}={v};"));
            }
            t.push_str(&format!(
                "\r\n\th={}; bh={}; b={{B}}",
                spec.signed_headers.join(":"),
                bh
            ));
            (t, spec.signed_headers.clone())
        }
    };
    let unsigned_field = format!("DKIM-Signature: {}", tag_list.replace("{B}", ""));

    let mut data = Vec::new();
    for h in pick_headers(headers, &h_names) {
        if relaxed_h {
            data.extend_from_slice(relaxed_header(h).as_bytes());
        } else {
            data.extend_from_slice(h.as_bytes());
        }
        data.extend_from_slice(b"\r\n");
    }
    if relaxed_h {
        data.extend_from_slice(relaxed_header(&unsigned_field).as_bytes());
    } else {
        data.extend_from_slice(unsigned_field.as_bytes());
    }
    let sig = b64(&key.sign(&alg, &data));
    let folded: Vec<String> = sig
        .as_bytes()
        .chunks(72)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    format!(
        "DKIM-Signature: {}",
        tag_list.replace("{B}", &folded.join("\r\n\t "))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonicalization_examples() {
        // RFC 6376 §3.4.5.
        assert_eq!(relaxed_header("A: X"), "a:X");
        assert_eq!(relaxed_header("B : Y\t\r\n\tZ  "), "b:Y Z");
        assert_eq!(
            relaxed_body(b" C \r\nD \t E\r\n\r\n\r\n"),
            b" C\r\nD E\r\n".to_vec()
        );
        assert_eq!(simple_body(b""), b"\r\n".to_vec());
        assert_eq!(simple_body(b"x\r\n\r\n"), b"x\r\n".to_vec());
    }

    #[test]
    fn bottom_up_selection() {
        let h: Vec<String> = ["To: a", "From: x", "To: b"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let names: Vec<String> = ["to", "to", "to", "from"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let picked: Vec<&str> = pick_headers(&h, &names)
            .iter()
            .map(|s| s.as_str())
            .collect();
        assert_eq!(picked, vec!["To: b", "To: a", "From: x"]);
    }
}
