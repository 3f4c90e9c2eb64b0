//! The challenge's half of the verdict: what the state of the challenge does to the message's
//! decision ([`decide`](super::decide)). Pure, like the message's half; the backend
//! (`app.rs`) only reads the store, calls these two steps and writes what they say.
//!
//! The store's conditional commit sits between the two steps, so there are two functions,
//! read top to bottom in the order they run:
//!
//! 1. [`before_commit`]: an expired challenge answers `token.expired` whatever the message
//!    proves; a refused message of a confirmed challenge answers `token.used`; a refused
//!    message of a pending challenge keeps its own reason, and a *permanent* refusal counts
//!    one rejection (a temporary one says nothing about the reply); an accepted message
//!    commits.
//! 2. [`after_commit`]: what the commit found. Confirmed now → accept. Confirmed before by
//!    the same message (same Message-ID and From) whose delivering session has ended →
//!    accept again (idempotent redelivery after a lost `250`); confirmed before otherwise →
//!    `token.used`. Expired meanwhile → `token.expired`, gone → `token.unknown`, store
//!    failure → its reason (`store.unavailable`, 4xx).

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::backend::Decision;
use crate::reason::{Class, Reason};
use crate::store::{ConfirmOutcome, Confirmation, Status};

/// What to do with the message's verdict before anything is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// The message's verdict stands as it is.
    Keep,
    /// The message's (permanent) refusal stands, and counts one rejection.
    KeepAndCount,
    /// The challenge's state refuses, whatever the message proved.
    Refuse(Reason),
    /// The message proved the binding: commit the confirmation, then [`after_commit`].
    Commit,
}

/// Step 1: the challenge's state (at the DATA time) against the message's decision.
pub fn before_commit(status: Status, message: &Decision) -> Step {
    match (status, message) {
        (Status::Expired, _) => Step::Refuse(Reason::TokenExpired),
        (Status::Confirmed, Decision::Refuse(_)) => Step::Refuse(Reason::TokenUsed),
        (Status::Pending, Decision::Refuse(r)) if r.class() == Class::Permanent => {
            Step::KeepAndCount
        }
        (Status::Pending, Decision::Refuse(_)) => Step::Keep,
        (Status::Pending | Status::Confirmed, Decision::Accept) => Step::Commit,
    }
}

/// The answer after the commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Committed {
    /// This message confirmed the challenge.
    Confirmed,
    /// The same message confirmed it before and its session has ended: accepted again.
    Redelivered,
    Refuse(Reason),
}

/// Step 2: what the commit found. `ours` is the confirmation that was offered; a confirmation
/// older than `session_timeout` counts as from an ended session (no session lives longer).
pub fn after_commit(
    outcome: Result<&ConfirmOutcome, Reason>,
    ours: &Confirmation,
    session_timeout: Duration,
    now: DateTime<Utc>,
) -> Committed {
    match outcome {
        Err(reason) => Committed::Refuse(reason),
        Ok(ConfirmOutcome::Confirmed) => Committed::Confirmed,
        Ok(ConfirmOutcome::AlreadyConfirmed(previous)) => {
            let same_message = previous.message_id.is_some()
                && previous.message_id == ours.message_id
                && previous.from == ours.from;
            if same_message && session_over(previous, session_timeout, now) {
                Committed::Redelivered
            } else {
                Committed::Refuse(Reason::TokenUsed)
            }
        }
        Ok(ConfirmOutcome::Expired) => Committed::Refuse(Reason::TokenExpired),
        Ok(ConfirmOutcome::NotFound) => Committed::Refuse(Reason::TokenUnknown),
    }
}

/// The session that delivered `previous` is over: marked ended, or older than any session.
fn session_over(previous: &Confirmation, session_timeout: Duration, now: DateTime<Utc>) -> bool {
    if previous.session_ended {
        return true;
    }
    let age = now.signed_duration_since(previous.confirmed_at);
    age.to_std().map(|a| a > session_timeout).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Evidence;

    fn refuse(r: Reason) -> Decision {
        Decision::Refuse(r)
    }

    #[test]
    fn before_commit_table() {
        let rows: &[(Status, Decision, Step)] = &[
            // Expired wins over anything the message proves.
            (
                Status::Expired,
                Decision::Accept,
                Step::Refuse(Reason::TokenExpired),
            ),
            (
                Status::Expired,
                refuse(Reason::SpfFail),
                Step::Refuse(Reason::TokenExpired),
            ),
            (
                Status::Expired,
                refuse(Reason::DkimTemperror),
                Step::Refuse(Reason::TokenExpired),
            ),
            // Used: a refused message is token.used; an accepted one goes to the commit,
            // which tells a redelivery from another message.
            (
                Status::Confirmed,
                refuse(Reason::BindingMismatch),
                Step::Refuse(Reason::TokenUsed),
            ),
            (
                Status::Confirmed,
                refuse(Reason::SpfTemperror),
                Step::Refuse(Reason::TokenUsed),
            ),
            (Status::Confirmed, Decision::Accept, Step::Commit),
            // Pending: permanent refusals count, temporary ones do not.
            (Status::Pending, Decision::Accept, Step::Commit),
            (
                Status::Pending,
                refuse(Reason::BindingMismatch),
                Step::KeepAndCount,
            ),
            (
                Status::Pending,
                refuse(Reason::DkimFail),
                Step::KeepAndCount,
            ),
            (Status::Pending, refuse(Reason::DkimTemperror), Step::Keep),
            (Status::Pending, refuse(Reason::DnsTemperror), Step::Keep),
            (
                Status::Pending,
                refuse(Reason::StoreUnavailable),
                Step::Keep,
            ),
        ];
        for (status, decision, want) in rows {
            assert_eq!(
                before_commit(*status, decision),
                *want,
                "{status:?} {decision:?}"
            );
        }
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap_or_default()
    }

    fn confirmation(message_id: Option<&str>, from: &str, secs: i64, ended: bool) -> Confirmation {
        Confirmation {
            confirmed_at: at(secs),
            evidence: Evidence::default(),
            message_id: message_id.map(str::to_owned),
            from: from.to_owned(),
            session_id: "s1".to_owned(),
            session_ended: ended,
        }
    }

    #[test]
    fn after_commit_table() {
        let timeout = Duration::from_secs(300);
        let now = at(60);
        let ours = confirmation(Some("<m1@a.fr>"), "alice@a.fr", 60, false);
        let already = |c: Confirmation| ConfirmOutcome::AlreadyConfirmed(Box::new(c));
        let rows: &[(Result<ConfirmOutcome, Reason>, Committed)] = &[
            (Ok(ConfirmOutcome::Confirmed), Committed::Confirmed),
            // Same Message-ID and From, session ended: idempotent 250.
            (
                Ok(already(confirmation(
                    Some("<m1@a.fr>"),
                    "alice@a.fr",
                    0,
                    true,
                ))),
                Committed::Redelivered,
            ),
            // Same message, session not known to have ended but older than any session.
            (
                Ok(already(confirmation(
                    Some("<m1@a.fr>"),
                    "alice@a.fr",
                    -400,
                    false,
                ))),
                Committed::Redelivered,
            ),
            // Same message, its session may still be delivering it: one 250 only.
            (
                Ok(already(confirmation(
                    Some("<m1@a.fr>"),
                    "alice@a.fr",
                    0,
                    false,
                ))),
                Committed::Refuse(Reason::TokenUsed),
            ),
            // Another Message-ID, another From, or none stored: token.used.
            (
                Ok(already(confirmation(
                    Some("<m2@a.fr>"),
                    "alice@a.fr",
                    0,
                    true,
                ))),
                Committed::Refuse(Reason::TokenUsed),
            ),
            (
                Ok(already(confirmation(
                    Some("<m1@a.fr>"),
                    "bob@a.fr",
                    0,
                    true,
                ))),
                Committed::Refuse(Reason::TokenUsed),
            ),
            (
                Ok(already(confirmation(None, "alice@a.fr", 0, true))),
                Committed::Refuse(Reason::TokenUsed),
            ),
            (
                Ok(ConfirmOutcome::Expired),
                Committed::Refuse(Reason::TokenExpired),
            ),
            (
                Ok(ConfirmOutcome::NotFound),
                Committed::Refuse(Reason::TokenUnknown),
            ),
            (
                Err(Reason::StoreUnavailable),
                Committed::Refuse(Reason::StoreUnavailable),
            ),
        ];
        for (outcome, want) in rows {
            let got = after_commit(outcome.as_ref().map_err(|r| *r), &ours, timeout, now);
            assert_eq!(got, *want, "{outcome:?}");
        }
        // Neither Message-ID known: never the same message.
        let ours = confirmation(None, "alice@a.fr", 60, false);
        let previous = already(confirmation(None, "alice@a.fr", 0, true));
        assert_eq!(
            after_commit(Ok(&previous), &ours, timeout, now),
            Committed::Refuse(Reason::TokenUsed)
        );
    }
}
