//! `gatekeeper probe new|show` (SPEC §10): the API's `POST /v1/probes` and
//! `GET /v1/probes/{id}` from the command line, on the same store the daemon uses, so an
//! operator onboarding a ministry needs no API token. `--json` prints exactly the body the API
//! would answer; without it, the same fields as `key: value` lines like `challenge new|show`,
//! and the latest report as the one thing a person reads first: what a confirmation would get,
//! each check, the override that would fix it.

use chrono::Utc;
use serde_json::Value;

use super::CliError;
use crate::challenge::{ProbeCreated, ProbeView, format_time};
use crate::config::Config;
use crate::daemon::assemble::{open_store, service};
use crate::store::Access;

/// `gatekeeper probe new`: create a probe exactly as the API does (same rate limits).
pub async fn probe_new(config: &Config, json: bool) -> Result<String, CliError> {
    let store = open_store(config, Access::ReadWrite)?;
    let challenges = service(config, store)?;
    let created = challenges
        .create_probe(Utc::now())
        .await
        .map_err(|e| CliError {
            reason: Some(e.reason()),
            message: format!("rejected {} ({e})", e.reason()),
        })?;
    Ok(if json {
        json_line(&created)
    } else {
        created_text(&created)
    })
}

/// `gatekeeper probe show ID`: the probe as `GET /v1/probes/{id}` shows it. Read-only.
pub async fn probe_show(config: &Config, id: &str, json: bool) -> Result<String, CliError> {
    let store = open_store(config, Access::ReadOnly)?;
    let challenges = service(config, store)?;
    let view = challenges
        .show_probe(id, Utc::now())
        .await
        .map_err(|e| CliError {
            reason: Some(e.reason()),
            message: e.to_string(),
        })?
        .ok_or_else(|| CliError {
            reason: None,
            message: format!("no probe {id}"),
        })?;
    Ok(if json {
        json_line(&view)
    } else {
        view_text(&view)
    })
}

fn json_line<T: serde::Serialize>(value: &T) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text
}

fn created_text(c: &ProbeCreated) -> String {
    format!(
        "id: {}\naddress: {}\nexpires_at: {}\n",
        c.id,
        c.address,
        format_time(&c.expires_at)
    )
}

fn view_text(v: &ProbeView) -> String {
    let mut out = format!(
        "id: {}\nstatus: {}\ncreated_at: {}\nexpires_at: {}\nanalyses: {}\n",
        v.id,
        v.status,
        format_time(&v.created_at),
        format_time(&v.expires_at),
        v.analyses
    );
    if let Some(report) = &v.report {
        out.push_str(&report_text(report));
    }
    out
}

/// The report's analysis as lines; a report of another shape (written by a newer or older
/// version) is printed as JSON rather than lost.
fn report_text(report: &Value) -> String {
    let analysis = &report["analysis"];
    let Some(would_get) = analysis["would_get"].as_str() else {
        return format!("report: {}\n", json_line(report).trim_end());
    };
    let mut out = format!("would_get: {would_get}\n");
    if let Some(reply) = analysis["reply"].as_str() {
        out.push_str(&format!("reply: {reply}\n"));
    }
    if let Some(checks) = analysis["checks"].as_array() {
        out.push_str("checks:\n");
        for c in checks {
            let name = c["name"].as_str().unwrap_or("?");
            let result = c["result"].as_str().unwrap_or("?");
            out.push_str(&format!("  {name}: {result}\n"));
        }
    }
    if let Some(fix) = analysis["fix"].as_object() {
        if let Some(e) = fix.get("explanation").and_then(Value::as_str) {
            out.push_str(&format!("fix: {e}\n"));
        }
        if let Some(s) = fix.get("snippet").and_then(Value::as_str) {
            out.push_str(s);
            if !s.ends_with('\n') {
                out.push('\n');
            }
        }
    }
    if let Some(advice) = analysis["advice"].as_str() {
        out.push_str(&format!("advice: {advice}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn report_text_table() {
        let cases: &[(Value, &[&str])] = &[
            (
                json!({"analysis": {"would_get": "confirmed", "reply": "250 2.0.0 confirmed",
                    "checks": [{"name": "spf", "result": "pass"}], "fix": null, "advice": null}}),
                &["would_get: confirmed\n", "  spf: pass\n"],
            ),
            (
                json!({"analysis": {"would_get": "spf.fail", "checks": [],
                    "fix": {"explanation": "accept without SPF pass",
                            "snippet": "[policy.domains.\"a.gouv.fr\"]\nrequire_spf = false\n"},
                    "advice": "x"}}),
                &[
                    "would_get: spf.fail\n",
                    "fix: accept without SPF pass\n[policy.domains.\"a.gouv.fr\"]\nrequire_spf = false\n",
                    "advice: x\n",
                ],
            ),
            (json!({"other": 1}), &["report: {\n  \"other\": 1\n}\n"]),
        ];
        for (report, wants) in cases {
            let text = report_text(report);
            for want in *wants {
                assert!(text.contains(want), "{text:?} lacks {want:?}");
            }
        }
    }
}
