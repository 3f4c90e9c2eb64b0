//! The webhook outbox (SPEC §11, schema 5 in both stores): one row per event and subscribed
//! `[[webhook]]`, written in the same transaction as the state change it reports, so a
//! confirmation is never committed without its delivery nor a delivery without its
//! confirmation.
//!
//! # Design decisions
//!
//! - **The store writes the rows**, from the subscriptions it was given at start
//!   ([`crate::store::Store::set_webhooks`]): the confirm, the rejection count and the expiry
//!   sweep each insert them inside their own transaction. Nothing else needs to remember to.
//! - **The body is fixed at insert** ([`Payload`], the Standard Webhooks envelope `{type,
//!   timestamp, data}`), so every retry sends the same bytes; only `data.assertion` of
//!   `challenge.confirmed` is added by the sender, and RS256 is deterministic, so that too is
//!   stable for one key.
//! - **Order per challenge and endpoint**: a row is only claimed when no earlier undelivered
//!   row of the same challenge for the same endpoint remains (rejections before the
//!   confirmation or the expiry that ends the challenge).
//! - **Claims are leases** (`lease_until`): a claimed row is not claimed again until its
//!   lease ends, so a killed instance's claims are retaken after the lease (PostgreSQL also
//!   claims with `FOR UPDATE SKIP LOCKED`, so two instances never claim one row together).
//! - **Rejections** are written where the store writes its rejection counts: the SMTP path
//!   does not wait for them (SPEC §4), so refusals gathered within one flush are reported as
//!   one `challenge.rejected` with the latest reason and the count, and a crash may lose the
//!   last second of them, like the counts (the audit events are the record, I4).
//! - **Expiry** is not a write (status is derived at read time), so a sweep
//!   ([`crate::store::Store::enqueue_expired`]) inserts `challenge.expired` for challenges past
//!   `expires_at` and still pending; a unique index makes it once per challenge and endpoint.

use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};

use super::{Confirmation, Rejection, StoreError};

pub const CONFIRMED: &str = "challenge.confirmed";
pub const REJECTED: &str = "challenge.rejected";
pub const EXPIRED: &str = "challenge.expired";

/// One `[[webhook]]` as the store sees it: its key (the URL) and its events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    pub endpoint: String,
    pub events: Vec<&'static str>,
}

/// Every subscription, shared with the writer.
pub type Subscriptions = Arc<[Subscription]>;

/// A row to insert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewDelivery {
    /// `webhook-id`: `msg_` and 32 hex digits, stable across retries.
    pub id: String,
    pub endpoint: String,
    pub event: &'static str,
    pub challenge_id: String,
    /// The JSON body (see [`Payload`]).
    pub payload: String,
    pub created_at: DateTime<Utc>,
}

/// A claimed row, to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub seq: i64,
    pub id: String,
    pub endpoint: String,
    pub event: String,
    pub challenge_id: String,
    pub payload: String,
    pub created_at: DateTime<Utc>,
    /// Attempts so far, this one included.
    pub attempts: u32,
}

/// What became of one attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// A 2xx: never sent again.
    Delivered,
    /// Try again at this time (the lease is dropped).
    Retry { at: DateTime<Utc>, error: String },
    /// Past `max_age` (or the endpoint is no longer configured): never sent again, reported.
    GivenUp { error: String },
}

/// The bodies of the three events.
pub struct Payload;

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl Payload {
    pub fn confirmed(
        challenge_id: &str,
        address: &str,
        c: &Confirmation,
    ) -> Result<String, StoreError> {
        let evidence =
            serde_json::to_value(&c.evidence).map_err(|e| StoreError::Evidence(Arc::new(e)))?;
        Ok(serde_json::json!({
            "type": CONFIRMED,
            "timestamp": rfc3339(c.confirmed_at),
            "data": {
                "challenge_id": challenge_id,
                "address": address,
                "confirmed_at": rfc3339(c.confirmed_at),
                "evidence": evidence,
            }
        })
        .to_string())
    }

    pub fn rejected(challenge_id: &str, address: &str, r: &Rejection, count: u32) -> String {
        serde_json::json!({
            "type": REJECTED,
            "timestamp": rfc3339(r.at),
            "data": {
                "challenge_id": challenge_id,
                "address": address,
                "reason": r.reason.as_str(),
                "at": rfc3339(r.at),
                "refusals": count,
            }
        })
        .to_string()
    }

    pub fn expired(challenge_id: &str, address: &str, expires_at: DateTime<Utc>) -> String {
        serde_json::json!({
            "type": EXPIRED,
            "timestamp": rfc3339(expires_at),
            "data": {
                "challenge_id": challenge_id,
                "address": address,
                "expires_at": rfc3339(expires_at),
            }
        })
        .to_string()
    }
}

/// A fresh `webhook-id`. The system RNG failing is a store failure (nothing is committed).
pub fn new_id() -> Result<String, StoreError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| StoreError::Corrupt("system random generator failed".into()))?;
    Ok(format!("msg_{}", data_encoding::HEXLOWER.encode(&bytes)))
}

/// The rows for `event` about `challenge_id`, one per subscription that wants it.
pub fn rows(
    subs: &[Subscription],
    event: &'static str,
    challenge_id: &str,
    payload: &str,
    now: DateTime<Utc>,
) -> Result<Vec<NewDelivery>, StoreError> {
    subs.iter()
        .filter(|s| s.events.contains(&event))
        .map(|s| {
            Ok(NewDelivery {
                id: new_id()?,
                endpoint: s.endpoint.clone(),
                event,
                challenge_id: challenge_id.to_owned(),
                payload: payload.to_owned(),
                created_at: now,
            })
        })
        .collect()
}

/// Whether any subscription wants `event` (saves building a body nobody reads).
pub fn wanted(subs: &[Subscription], event: &str) -> bool {
    subs.iter().any(|s| s.events.contains(&event))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn subs() -> Vec<Subscription> {
        vec![
            Subscription {
                endpoint: "http://127.0.0.1:1/a".into(),
                events: vec![CONFIRMED, EXPIRED],
            },
            Subscription {
                endpoint: "http://127.0.0.1:1/b".into(),
                events: vec![REJECTED],
            },
        ]
    }

    #[test]
    fn rows_go_only_to_subscribers() {
        let now = Utc::now();
        let table: &[(&'static str, &[&str])] = &[
            (CONFIRMED, &["http://127.0.0.1:1/a"]),
            (REJECTED, &["http://127.0.0.1:1/b"]),
            (EXPIRED, &["http://127.0.0.1:1/a"]),
        ];
        for (event, endpoints) in table {
            let rows = rows(&subs(), event, "c1", "{}", now).unwrap();
            let got: Vec<&str> = rows.iter().map(|r| r.endpoint.as_str()).collect();
            assert_eq!(&got, endpoints, "{event}");
            assert!(
                rows.iter()
                    .all(|r| r.id.len() == 36 && r.id.starts_with("msg_"))
            );
        }
    }

    #[test]
    fn ids_differ() {
        assert_ne!(new_id().unwrap(), new_id().unwrap());
    }

    #[test]
    fn bodies_are_the_standard_envelope() {
        let at = DateTime::from_timestamp_millis(1_700_000_000_123).unwrap();
        let table = [
            (Payload::expired("c1", "a@b.fr", at), EXPIRED, "expires_at"),
            (
                Payload::rejected(
                    "c1",
                    "a@b.fr",
                    &Rejection {
                        reason: crate::reason::Reason::DkimNone,
                        at,
                    },
                    2,
                ),
                REJECTED,
                "reason",
            ),
        ];
        for (body, event, field) in table {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["type"], event);
            assert_eq!(v["timestamp"], "2023-11-14T22:13:20.123Z");
            assert_eq!(v["data"]["challenge_id"], "c1");
            assert!(v["data"].get(field).is_some(), "{event}");
        }
    }
}
