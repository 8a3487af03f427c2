//! Completion hooks across ends: an upload that ends again (undone after `done`, or reopened by
//! a new chunk) gets the new end's hook with attempts of its own, whatever became of the
//! earlier end's. Against the real PostgreSQL.

use std::time::Duration;

use crate::common::{new_upload, record, stored_chunk};
use ingest_ledger::completion::{self, Withdrawal};
use ingest_ledger::{hooks, ErrorPolicy, UploadState};
use ingest_testkit::TestDb;
use tokio_postgres::Client;
use uuid::Uuid;

const LEASE: Duration = Duration::from_secs(60);
const MAX_ATTEMPTS: i32 = 30;

/// Ends upload `id` `done` by the settle rule, its hook failed `attempts` times so far.
async fn settled_done(client: &Client, id: Uuid, attempts: i32) {
    client
        .execute(
            "UPDATE uploads SET callback_url = 'http://hooks.test/', state = 'done',
                    completed_at = now(), notify_attempts = $2, notify_error = 'down'
             WHERE upload_id = $1",
            &[&id, &attempts],
        )
        .await
        .unwrap();
}

async fn attempts(client: &Client, id: Uuid) -> i32 {
    let sql = "SELECT notify_attempts FROM uploads WHERE upload_id = $1";
    client.query_one(sql, &[&id]).await.unwrap().get(0)
}

#[tokio::test]
async fn an_undo_after_done_is_announced_though_the_done_hook_was_failing() {
    let db = TestDb::new().await.unwrap();
    let mut client = db.client().await.unwrap();
    let id = new_upload(&client, ErrorPolicy::RejectRows, None)
        .await
        .upload_id;
    settled_done(&client, id, MAX_ATTEMPTS - 1).await;
    // A gateway claims the `done` end's last attempt (leased: not due again for a minute).
    let due = hooks::claim_due(&client, LEASE, MAX_ATTEMPTS, 10)
        .await
        .unwrap();
    let done = due.into_iter().next().expect("the done end is due").event;
    assert_eq!(done.state, UploadState::Done);

    let undone = completion::withdraw(&mut client, id, true).await.unwrap();
    assert!(matches!(
        undone,
        Withdrawal::Ended {
            state: UploadState::Undone,
            ..
        }
    ));
    // The `done` delivery then fails: that is no attempt of the undo's.
    hooks::attempt_failed(&client, &done, Duration::from_secs(3600), "down")
        .await
        .unwrap();
    assert_eq!(attempts(&client, id).await, 0);
    let due = hooks::claim_due(&client, LEASE, MAX_ATTEMPTS, 10)
        .await
        .unwrap();
    let states: Vec<_> = due
        .iter()
        .map(|hook| (hook.event.state, hook.attempts))
        .collect();
    assert_eq!(
        states,
        [(UploadState::Undone, 0)],
        "the undo is due at once"
    );
}

#[tokio::test]
async fn a_settled_upload_reopened_by_a_chunk_starts_its_hook_afresh() {
    let db = TestDb::new().await.unwrap();
    let mut client = db.client().await.unwrap();
    let upload = new_upload(&client, ErrorPolicy::RejectRows, None).await;
    let id = upload.upload_id;
    settled_done(&client, id, MAX_ATTEMPTS).await;
    assert!(
        hooks::claim_due(&client, LEASE, MAX_ATTEMPTS, 10)
            .await
            .unwrap()
            .is_empty(),
        "the done end's hook was given up"
    );
    // The original's flow sends another file: the upload opens again, and its next end is due
    // with attempts of its own (it used to be given up with the first).
    record(&mut client, &upload, 1, stored_chunk("u/1.csv", '1')).await;
    let row = client
        .query_one(
            "SELECT state, notify_attempts, notify_after IS NULL, notify_error IS NULL
             FROM uploads WHERE upload_id = $1",
            &[&id],
        )
        .await
        .unwrap();
    let reopened: (String, i32, bool, bool) = (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!(reopened, ("receiving".into(), 0, true, true));
}
