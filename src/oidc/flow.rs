//! The sign-in page as a pure function of what is stored: the flow, the challenge it names
//! (if any), the browser's cookie and `now` decide what the page shows and what it may do.
//! The HTTP side (`http/`) only reads the rows, calls [`view`] and renders or redirects.
//!
//! ```text
//!  /authorize ──▶ Address ──POST address──▶ AwaitReply ──reply confirmed──▶ Confirmed
//!                   ▲   │ refused: Address with the explanation      │        (code issued,
//!                   │   ▼                                            ▼         redirect)
//!                   └── ChallengeExpired (type the address again)  Finished
//!  any state past `flow.expires_at` ──▶ FlowExpired
//! ```

use chrono::{DateTime, Utc};

use crate::challenge::secrets_equal;
use crate::store::oidc::FlowRecord;
use crate::store::{ChallengeRecord, Status};

/// What the page shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum View {
    /// The address form.
    Address,
    /// The challenge is out: session code and instructions.
    AwaitReply {
        address: String,
        session_code: String,
        expires_at: DateTime<Utc>,
    },
    /// The challenge expired unanswered: the form again, with that said.
    ChallengeExpired,
    /// The reply confirmed the address: issue the code and redirect.
    Confirmed { challenge_id: String },
    /// A code was issued already: nothing more to do here.
    Finished,
    /// The page lived past `oidc.flow_ttl`.
    FlowExpired,
}

impl View {
    /// The status the page's script polls (`/authorize/status`).
    pub fn status(&self) -> &'static str {
        match self {
            View::Address => "address",
            View::AwaitReply { .. } => "pending",
            View::ChallengeExpired | View::FlowExpired => "expired",
            View::Confirmed { .. } => "confirmed",
            View::Finished => "finished",
        }
    }
}

/// Whether the browser's cookie is the one the flow is bound to (constant time).
pub fn same_browser(flow: &FlowRecord, cookie: Option<&str>) -> bool {
    cookie.is_some_and(|c| secrets_equal(&browser_hash(c), &flow.browser_hash))
}

/// What the store keeps of a browser cookie.
pub fn browser_hash(cookie: &str) -> [u8; 32] {
    sha256(cookie)
}

/// SHA-256 of a secret the store keeps only hashed (the browser cookie, a code).
pub fn sha256(secret: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// Decide the page. `challenge` is the row `flow.challenge_id` names (None if none or gone).
pub fn view(flow: &FlowRecord, challenge: Option<&ChallengeRecord>, now: DateTime<Utc>) -> View {
    if flow.finished {
        return View::Finished;
    }
    if flow.expires_at <= now {
        return View::FlowExpired;
    }
    let Some(c) = challenge.filter(|c| Some(&c.id) == flow.challenge_id.as_ref()) else {
        return if flow.challenge_id.is_some() {
            // Named but purged: it can no longer be answered.
            View::ChallengeExpired
        } else {
            View::Address
        };
    };
    match c.status(now) {
        Status::Pending => View::AwaitReply {
            address: c.address.clone(),
            session_code: c.session_code.clone(),
            expires_at: c.expires_at.min(flow.expires_at),
        },
        Status::Confirmed => View::Confirmed {
            challenge_id: c.id.clone(),
        },
        Status::Expired => View::ChallengeExpired,
    }
}

/// Whether the address form may be posted in this state (a person who typed the wrong
/// address may type another while waiting; the challenge limits still apply).
pub fn accepts_address(v: &View) -> bool {
    matches!(
        v,
        View::Address | View::AwaitReply { .. } | View::ChallengeExpired
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::backend::Evidence;
    use crate::store::Confirmation;

    fn flow(now: DateTime<Utc>) -> FlowRecord {
        FlowRecord {
            id: "f".into(),
            version: 1,
            browser_hash: browser_hash("cookie"),
            csrf: "x".into(),
            client_id: "c".into(),
            redirect_uri: "https://rp/cb".into(),
            scope: "openid".into(),
            state: None,
            nonce: None,
            code_challenge: None,
            challenge_id: None,
            finished: false,
            created_at: now,
            expires_at: now + chrono::Duration::minutes(30),
        }
    }

    fn challenge(now: DateTime<Utc>, confirmed: bool, expires_in: i64) -> ChallengeRecord {
        ChallengeRecord {
            id: "ch".into(),
            address: "a@x.gouv.fr".into(),
            token_hash: crate::store::TokenHash::of("t"),
            session_code: "123456".into(),
            message_id_tail: "t".into(),
            created_at: now,
            expires_at: now + chrono::Duration::minutes(expires_in),
            rejections: 0,
            last_rejection: None,
            confirmation: confirmed.then(|| Confirmation {
                confirmed_at: now,
                evidence: Evidence::default(),
                message_id: None,
                from: "a@x.gouv.fr".into(),
                session_id: "s".into(),
                session_ended: true,
            }),
        }
    }

    #[test]
    fn view_table() {
        let now = Utc::now();
        let f = flow(now);
        let with = FlowRecord {
            challenge_id: Some("ch".into()),
            ..f.clone()
        };
        let done = FlowRecord {
            finished: true,
            ..with.clone()
        };
        let old = FlowRecord {
            expires_at: now,
            ..with.clone()
        };
        let pending = challenge(now, false, 60);
        let rows: Vec<(&FlowRecord, Option<ChallengeRecord>, &str)> = vec![
            (&f, None, "address"),
            (&with, Some(pending.clone()), "pending"),
            (&with, Some(challenge(now, true, 60)), "confirmed"),
            (&with, Some(challenge(now, false, 0)), "expired"),
            (&with, None, "expired"),
            (&done, Some(challenge(now, true, 60)), "finished"),
            (&old, Some(pending.clone()), "expired"),
            // A challenge row that is not the one the flow names is ignored.
            (&f, Some(pending), "address"),
        ];
        for (i, (flow, ch, want)) in rows.into_iter().enumerate() {
            assert_eq!(view(flow, ch.as_ref(), now).status(), want, "row {i}");
        }
        // The page never waits past the flow's own end.
        if let View::AwaitReply { expires_at, .. } =
            view(&with, Some(&challenge(now, false, 600)), now)
        {
            assert_eq!(expires_at, with.expires_at);
        } else {
            panic!("not awaiting");
        }
    }

    #[test]
    fn browser_binding() {
        let f = flow(Utc::now());
        assert!(same_browser(&f, Some("cookie")));
        assert!(!same_browser(&f, Some("other")));
        assert!(!same_browser(&f, None));
    }
}
