//! Row mapping: a `challenges` row as SQLite returns it, and its checked conversion into a
//! [`ChallengeRecord`].

use std::sync::Arc;

use chrono::{DateTime, Utc};
use rusqlite::Row;

use crate::backend::Evidence;
use crate::store::{ChallengeRecord, Confirmation, Rejection, StoreError, TokenHash};

/// The columns [`RawRow::from_row`] reads, in its order.
pub(super) const COLUMNS: &str = "id, address, token_hash, session_code, message_id_tail, status, created_at, expires_at,
    rejections, confirmed_at, evidence, confirm_message_id, confirm_from, confirm_session, confirm_session_ended, last_rejection";

/// A row as SQLite returns it, converted outside the rusqlite closure so that corrupt data
/// becomes a [`StoreError`] rather than a panic.
pub(super) struct RawRow {
    id: String,
    address: String,
    token_hash: Vec<u8>,
    session_code: String,
    message_id_tail: String,
    status: String,
    created_at: i64,
    expires_at: i64,
    rejections: i64,
    confirmed_at: Option<i64>,
    evidence: Option<String>,
    confirm_message_id: Option<String>,
    confirm_from: Option<String>,
    confirm_session: Option<String>,
    confirm_session_ended: i64,
    last_rejection: Option<String>,
}

impl RawRow {
    pub(super) fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: r.get(0)?,
            address: r.get(1)?,
            token_hash: r.get(2)?,
            session_code: r.get(3)?,
            message_id_tail: r.get(4)?,
            status: r.get(5)?,
            created_at: r.get(6)?,
            expires_at: r.get(7)?,
            rejections: r.get(8)?,
            confirmed_at: r.get(9)?,
            evidence: r.get(10)?,
            confirm_message_id: r.get(11)?,
            confirm_from: r.get(12)?,
            confirm_session: r.get(13)?,
            confirm_session_ended: r.get(14)?,
            last_rejection: r.get(15)?,
        })
    }

    pub(super) fn into_record(self) -> Result<ChallengeRecord, StoreError> {
        let token_hash = TokenHash::from_stored(&self.token_hash)
            .ok_or_else(|| StoreError::Corrupt("token_hash length".into()))?;
        let confirmation = match self.status.as_str() {
            "pending" => None,
            "confirmed" => {
                // A confirmation writes every one of these columns (sql::confirm): a
                // confirmed row without one is corrupt, not a row with an empty value.
                let evidence: Evidence = serde_json::from_str(
                    self.evidence
                        .as_deref()
                        .ok_or_else(|| missing("evidence"))?,
                )
                .map_err(|e| StoreError::Evidence(Arc::new(e)))?;
                Some(Confirmation {
                    confirmed_at: millis(
                        self.confirmed_at.ok_or_else(|| missing("confirmed_at"))?,
                    )?,
                    evidence,
                    message_id: self.confirm_message_id,
                    from: self.confirm_from.ok_or_else(|| missing("confirm_from"))?,
                    session_id: self
                        .confirm_session
                        .ok_or_else(|| missing("confirm_session"))?,
                    session_ended: self.confirm_session_ended != 0,
                })
            }
            other => return Err(StoreError::Corrupt(format!("status {other}"))),
        };
        Ok(ChallengeRecord {
            id: self.id,
            address: self.address,
            token_hash,
            session_code: self.session_code,
            message_id_tail: self.message_id_tail,
            created_at: millis(self.created_at)?,
            expires_at: millis(self.expires_at)?,
            rejections: u32::try_from(self.rejections).unwrap_or(u32::MAX),
            last_rejection: self
                .last_rejection
                .as_deref()
                .map(Rejection::from_stored)
                .transpose()?,
            confirmation,
        })
    }
}

/// A confirmed row without `column`.
fn missing(column: &str) -> StoreError {
    StoreError::Corrupt(format!("confirmed without {column}"))
}

pub(super) fn millis(ms: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| StoreError::Corrupt(format!("timestamp {ms}")))
}
