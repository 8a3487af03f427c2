//! A failed chunk loaded again, retried as it is or replaced by new bytes: the upload's counters
//! lose the failed outcome, the upload opens again, and a load of the earlier attempt that is
//! still running records nothing. Against the real PostgreSQL.

use std::time::Duration;

use crate::common::{new_upload, record, stored_chunk};
use ingest_ledger::loads::{self, ChunkOutcome, Finished};
use ingest_ledger::retries::{self, Retried};
use ingest_ledger::uploads::{self, Recorded};
use ingest_ledger::{completion, files, ChunkState, ErrorPolicy};
use ingest_testkit::TestDb;
use tokio_postgres::Client;
use uuid::Uuid;

/// Records an outcome for `attempt` of chunk `n` in a transaction of its own.
async fn finish(
    client: &mut Client,
    id: Uuid,
    n: i32,
    attempt: i32,
    state: ChunkState,
    rejected: u64,
) -> Finished {
    let tx = client.transaction().await.unwrap();
    if rejected > 0 {
        tx.execute(
            "INSERT INTO rejected_rows (upload_id, chunk_no, line_no, reason, raw_line)
             VALUES ($1, $2, 2, 'bad', 'x')",
            &[&id, &n],
        )
        .await
        .unwrap();
    }
    let outcome = ChunkOutcome {
        state,
        rows_loaded: if state == ChunkState::Loaded { 10 } else { 0 },
        rows_rejected: rejected,
        rows_skipped: 0,
        error: (state == ChunkState::Failed).then_some("line 2: bad"),
        in_pieces: false,
        attempt,
    };
    let finished = loads::finish(&tx, id, n, outcome).await.unwrap();
    if finished == Finished::Recorded {
        tx.commit().await.unwrap();
    }
    finished
}

/// (state, chunks_failed, rows_loaded, rows_rejected, completed)
async fn upload_row(client: &Client, id: Uuid) -> (String, i32, i64, i64, bool) {
    let row = client
        .query_one(
            "SELECT state, chunks_failed, rows_loaded, rows_rejected, completed_at IS NOT NULL
             FROM uploads WHERE upload_id = $1",
            &[&id],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4))
}

#[tokio::test]
async fn a_failed_chunk_is_retried_then_replaced_and_a_stale_load_records_nothing() {
    let db = TestDb::new().await.unwrap();
    let mut client = db.client().await.unwrap();
    let upload = new_upload(&client, ErrorPolicy::RejectChunk, Some(2)).await;
    let id = upload.upload_id;
    assert!(matches!(
        record(&mut client, &upload, 0, stored_chunk("u/a.csv", 'a')).await,
        Recorded::New(_)
    ));
    assert!(matches!(
        record(&mut client, &upload, 1, stored_chunk("u/b.csv", 'b')).await,
        Recorded::New(_)
    ));
    let good = finish(&mut client, id, 0, 0, ChunkState::Loaded, 0).await;
    assert_eq!(good, Finished::Recorded);

    // Chunk 1 is claimed by a load that stalls, and failed by another one.
    let stale = loads::claim(&client, id, 1).await.unwrap().unwrap();
    assert_eq!(stale.attempt, 0);
    let failed = finish(&mut client, id, 1, 0, ChunkState::Failed, 3).await;
    assert_eq!(failed, Finished::Recorded);
    assert_eq!(
        upload_row(&client, id).await,
        ("failed".into(), 1, 10, 3, true)
    );
    let found = uploads::find(&client, "c", id).await.unwrap().unwrap();
    assert!(found.retryable && !found.accepts_chunks());

    // Retried: back to `stored`, the failure taken out of the upload, which opens again.
    let Retried::Queued(message) = retries::retry(&mut client, id, 1).await.unwrap() else {
        panic!("queued");
    };
    assert_eq!((message.chunk_no, message.path.as_str()), (1, "u/b.csv"));
    assert_eq!(
        upload_row(&client, id).await,
        ("processing".into(), 0, 10, 0, false)
    );
    let rejected: i64 = client
        .query_one(
            "SELECT count(*) FROM rejected_rows WHERE upload_id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(rejected, 0, "the failed attempt's rejected rows go with it");
    assert!(matches!(
        retries::retry(&mut client, id, 1).await.unwrap(),
        Retried::NotFailed(ChunkState::Stored)
    ));
    assert!(matches!(
        retries::retry(&mut client, id, 0).await.unwrap(),
        Retried::NotFailed(ChunkState::Loaded)
    ));
    assert!(matches!(
        retries::retry(&mut client, id, 7).await.unwrap(),
        Retried::NoChunk
    ));

    // The stalled load of the first attempt wakes up: it must not record anything.
    let late = finish(&mut client, id, 1, stale.attempt, ChunkState::Loaded, 0).await;
    assert_eq!(late, Finished::Gone);
    let current = loads::claim(&client, id, 1).await.unwrap().unwrap();
    assert_eq!(current.attempt, 1);
    let again = finish(&mut client, id, 1, 1, ChunkState::Failed, 3).await;
    assert_eq!(again, Finished::Recorded);
    assert_eq!(
        upload_row(&client, id).await,
        ("failed".into(), 1, 10, 3, true)
    );

    // The same bytes again are not a replacement (the upload stays ended); new bytes are.
    let found = uploads::find(&client, "c", id).await.unwrap().unwrap();
    assert!(matches!(
        record(&mut client, &found, 1, stored_chunk("u/b2.csv", 'b')).await,
        Recorded::Closed(_)
    ));
    // New bytes are read with the upload's header too: another column order is refused.
    let mut reordered = stored_chunk("u/d.csv", 'd');
    reordered.header.swap(0, 1);
    assert!(matches!(
        record(&mut client, &found, 1, reordered).await,
        Recorded::HeaderDiffers(_)
    ));
    let Recorded::Replaced(replaced) =
        record(&mut client, &found, 1, stored_chunk("u/c.csv", 'c')).await
    else {
        panic!("replaced");
    };
    assert_eq!(replaced.old_path, "u/b.csv");
    assert_eq!(replaced.message.path, "u/c.csv");
    assert_eq!(
        upload_row(&client, id).await,
        ("processing".into(), 0, 10, 0, false)
    );
    let loaded = finish(&mut client, id, 1, 2, ChunkState::Loaded, 0).await;
    assert_eq!(loaded, Finished::Recorded);
    assert_eq!(
        upload_row(&client, id).await,
        ("done".into(), 0, 20, 0, true)
    );
    let counts = client
        .query_one(
            "SELECT attempt, retries, replacements, sha256 FROM chunks
             WHERE upload_id = $1 AND chunk_no = 1",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            counts.get::<_, i32>(0),
            counts.get::<_, i32>(1),
            counts.get::<_, i32>(2)
        ),
        (2, 1, 1)
    );
    assert_eq!(counts.get::<_, String>(3), "c".repeat(64));

    // A done upload takes no replacement and no retry.
    let found = uploads::find(&client, "c", id).await.unwrap().unwrap();
    assert!(matches!(
        record(&mut client, &found, 1, stored_chunk("u/d.csv", 'd')).await,
        Recorded::Closed(_)
    ));
    assert!(matches!(
        retries::retry(&mut client, id, 1).await.unwrap(),
        Retried::Closed(_)
    ));
}

/// Claims the upload's failed chunks whose file is due for removal with an hour's retention.
async fn kept(client: &Client, id: Uuid) -> usize {
    files::claim_failed_past_retention(client, Duration::from_secs(3600), 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|file| file.upload_id == id)
        .count()
}

#[tokio::test]
async fn a_failed_chunks_file_is_kept_until_retention_or_the_end_of_its_upload() {
    let db = TestDb::new().await.unwrap();
    let mut client = db.client().await.unwrap();
    let upload = new_upload(&client, ErrorPolicy::RejectChunk, None).await;
    let id = upload.upload_id;
    record(&mut client, &upload, 0, stored_chunk("u/a.csv", 'a')).await;
    finish(&mut client, id, 0, 0, ChunkState::Failed, 1).await;
    assert_eq!(kept(&client, id).await, 0, "kept for a retry");
    client
        .execute(
            "UPDATE chunks SET committed_at = now() - interval '2 hours' WHERE upload_id = $1",
            &[&id],
        )
        .await
        .unwrap();
    // A retry that comes first keeps the file: the chunk is `stored` again, not claimable.
    let Retried::Queued(_) = retries::retry(&mut client, id, 0).await.unwrap() else {
        panic!("queued");
    };
    assert_eq!(kept(&client, id).await, 0, "a queued chunk keeps its file");
    finish(&mut client, id, 0, 1, ChunkState::Failed, 1).await;
    client
        .execute(
            "UPDATE chunks SET committed_at = now() - interval '2 hours' WHERE upload_id = $1",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(kept(&client, id).await, 1, "past its retention");
    assert_eq!(kept(&client, id).await, 0, "claimed once");
    // A retry after the claim finds the file gone.
    assert!(matches!(
        retries::retry(&mut client, id, 0).await.unwrap(),
        Retried::FileGone
    ));
    client
        .execute(
            "UPDATE chunks SET committed_at = now() - interval '1 minute', file_removed = false
             WHERE upload_id = $1",
            &[&id],
        )
        .await
        .unwrap();
    // Aborted: no retry will come, the file goes now, and the retry is refused.
    let withdrawn = completion::withdraw(&mut client, id, false).await.unwrap();
    match withdrawn {
        completion::Withdrawal::Ended { chunks, .. } => {
            assert_eq!(chunks.len(), 1, "the kept file is removed with the abort")
        }
        other => panic!("aborted, got {other:?}"),
    }
    assert_eq!(kept(&client, id).await, 1);
    assert!(matches!(
        retries::retry(&mut client, id, 0).await.unwrap(),
        Retried::Closed(_)
    ));
}
