//! Completion hooks as the ledger keeps them: an ended upload whose end its callback URL has not
//! acknowledged yet is due. Gateways claim due ones for a short lease (so several share the
//! sweep and a killed one's claims come back), and record each delivery or failed attempt.

use std::time::Duration;

use serde::Serialize;
use tokio_postgres::Client;
use uuid::Uuid;

use crate::states::UploadState;
use crate::LedgerError;

/// The hook's delivery state of an end afresh: set wherever an upload opens again or ends
/// anew, so a later end gets its own attempts and is not held back by an earlier end's backoff
/// (or given up because the earlier end was).
pub(crate) const HOOK_AFRESH: &str =
    "notify_attempts = 0, notify_after = NULL, notify_error = NULL";

/// The upload ($1) is still in the end ($2 its state, $3 its completion time as text) a hook
/// announced: what a delivery or a failed attempt is recorded against, so that a later end
/// (reopened and ended again, or undone) is still due on its own.
const IN_THAT_END: &str =
    "upload_id = $1 AND state = $2 AND completed_at::text IS NOT DISTINCT FROM $3";

/// What the hook says: the upload's end and its counters.
#[derive(Debug, Clone, Serialize)]
pub struct UploadEnded {
    pub event: &'static str,
    pub folder: Uuid,
    pub state: UploadState,
    pub dataset: String,
    pub chunks_received: i32,
    pub chunks_loaded: i32,
    pub chunks_failed: i32,
    pub rows_loaded: i64,
    pub rows_rejected: i64,
    pub rows_undone: i64,
    pub error: Option<String>,
    pub completed_at: Option<String>,
}

/// A hook to deliver.
#[derive(Debug, Clone)]
pub struct Due {
    pub url: String,
    /// Failed attempts so far.
    pub attempts: i32,
    pub event: UploadEnded,
}

/// Claims up to `limit` due hooks for `lease` (none that failed `max_attempts` times).
pub async fn claim_due(
    client: &Client,
    lease: Duration,
    max_attempts: i32,
    limit: i64,
) -> Result<Vec<Due>, LedgerError> {
    let rows = client
        .query(
            "UPDATE uploads u SET notify_after = now() + make_interval(secs => $1)
             FROM (SELECT upload_id FROM uploads
                   WHERE callback_url IS NOT NULL
                     AND state IN ('done', 'failed', 'aborted', 'undone')
                     AND notified_state IS DISTINCT FROM state
                     AND coalesce(notify_after, '-infinity') <= now()
                     AND notify_attempts < $2
                   ORDER BY notify_after NULLS FIRST
                   LIMIT $3
                   FOR UPDATE SKIP LOCKED) due
             WHERE u.upload_id = due.upload_id
             RETURNING u.callback_url, u.notify_attempts, u.upload_id, u.state, u.dataset,
                       u.chunks_received, u.chunks_loaded, u.chunks_failed, u.rows_loaded,
                       u.rows_rejected, u.rows_undone, u.error, u.completed_at::text",
            &[&lease.as_secs_f64(), &max_attempts, &limit],
        )
        .await?;
    rows.iter()
        .map(|row| {
            Ok(Due {
                url: row.get(0),
                attempts: row.get(1),
                event: UploadEnded {
                    event: "upload.ended",
                    folder: row.get(2),
                    state: UploadState::parse(row.get(3))?,
                    dataset: row.get(4),
                    chunks_received: row.get(5),
                    chunks_loaded: row.get(6),
                    chunks_failed: row.get(7),
                    rows_loaded: row.get(8),
                    rows_rejected: row.get(9),
                    rows_undone: row.get(10),
                    error: row.get(11),
                    completed_at: row.get(12),
                },
            })
        })
        .collect()
}

/// The callback acknowledged `event`. Recorded only while the upload is still in that end (same
/// state, same completion time): if it was reopened and ended again meanwhile, that later end
/// is still due. A later end (an undo after `done`) is due again too.
pub async fn delivered(client: &Client, event: &UploadEnded) -> Result<(), LedgerError> {
    client
        .execute(
            &format!("UPDATE uploads SET notified_state = $2, {HOOK_AFRESH} WHERE {IN_THAT_END}"),
            &[&event.folder, &event.state.as_str(), &event.completed_at],
        )
        .await?;
    Ok(())
}

/// An attempt to deliver `event` failed: the next one is due after `retry_after`. Recorded,
/// like [`delivered`], only while the upload is still in that end: a later end's attempts are
/// its own.
pub async fn attempt_failed(
    client: &Client,
    event: &UploadEnded,
    retry_after: Duration,
    error: &str,
) -> Result<(), LedgerError> {
    client
        .execute(
            &format!(
                "UPDATE uploads SET notify_attempts = notify_attempts + 1, notify_error = $5,
                        notify_after = now() + make_interval(secs => $4)
                 WHERE {IN_THAT_END}"
            ),
            &[
                &event.folder,
                &event.state.as_str(),
                &event.completed_at,
                &retry_after.as_secs_f64(),
                &error,
            ],
        )
        .await?;
    Ok(())
}
