//! The store's background jobs: mark the previous run's sessions ended at start, purge old
//! challenges on a timer, and write the gathered rejection counts at exit.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::store::Store;

/// How long challenges are kept after they expire before [`purge_cutoff`] removes them:
/// long enough for the backend to read a confirmation and for the hourly rate limit.
pub const PURGE_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// The cutoff for [`Store::purge`] at `now`: challenges that expired more than
/// [`PURGE_RETENTION`] ago.
pub fn purge_cutoff(now: DateTime<Utc>) -> DateTime<Utc> {
    now - chrono::Duration::from_std(PURGE_RETENTION).unwrap_or(chrono::Duration::days(7))
}

/// Purge every `interval` (`store.purge_interval`) until the future is dropped.
pub async fn purge_loop<S: Store>(store: Arc<S>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval.max(Duration::from_secs(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match store.purge(purge_cutoff(Utc::now())).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(purged = n, "store: old challenges purged"),
            Err(e) => tracing::warn!(error = %e, "store: purge failed"),
        }
    }
}

/// At start: sessions of an earlier run died with it, so their confirmations count as
/// delivered and a redelivery after a crash gets its 250 again at once (SPEC §4).
pub async fn end_previous_sessions(store: &impl Store) {
    match store.end_open_sessions().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            confirmations = n,
            "sessions of the previous run marked ended"
        ),
        Err(e) => tracing::warn!(error = %e, "could not mark the previous run's sessions ended"),
    }
}
