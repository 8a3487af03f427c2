//! A chunk loaded in pieces and failed midway (here by expiry) keeps none of its rows, and no
//! piece commits after it failed. Against the real PostgreSQL.

use std::time::Duration;

use crate::common::{new_upload, record, stored_chunk, two_pieces};
use ingest_ledger::uploads::Recorded;
use ingest_ledger::{completion, pieces, ErrorPolicy};
use ingest_testkit::TestDb;
use tokio_postgres::Client;
use uuid::Uuid;

async fn count(client: &Client, sql: &str, upload_id: Uuid) -> i64 {
    client.query_one(sql, &[&upload_id]).await.unwrap().get(0)
}

#[tokio::test]
async fn expiry_undoes_the_pieces_a_failed_chunk_had_loaded_and_stops_the_rest() {
    let db = TestDb::new().await.unwrap();
    let mut client = db.client().await.unwrap();
    let upload = new_upload(&client, ErrorPolicy::RejectRows, None).await;
    let recorded = record(&mut client, &upload, 0, stored_chunk("u/c.csv", '0')).await;
    assert!(matches!(recorded, Recorded::New(_)));
    let id = upload.upload_id;
    let cut = two_pieces();
    let plan = pieces::write_plan(&mut client, id, 0, 0, &cut)
        .await
        .unwrap();
    assert_eq!(plan.len(), 2);

    // Piece 0 commits its rows and a rejected row.
    let tx = client.transaction().await.unwrap();
    tx.execute(
        "INSERT INTO transactions (date, content, amount, type, upload_id, chunk_no, line_no)
         VALUES ('2023-01-01', 'a', 1, 'Deposit', $1, 0, 2)",
        &[&id],
    )
    .await
    .unwrap();
    tx.execute(
        "INSERT INTO rejected_rows (upload_id, chunk_no, line_no, reason, raw_line)
         VALUES ($1, 0, 1, 'bad', 'x')",
        &[&id],
    )
    .await
    .unwrap();
    assert!(pieces::finish_piece(&tx, id, 0, 0, 0, 1, 1).await.unwrap());
    tx.commit().await.unwrap();

    // Nothing happens for two days: the upload expires with its chunk half loaded.
    client
        .execute(
            "UPDATE uploads SET created_at = now() - interval '2 days' WHERE upload_id = $1",
            &[&id],
        )
        .await
        .unwrap();
    client
        .execute(
            "UPDATE chunks SET received_at = now() - interval '2 days' WHERE upload_id = $1",
            &[&id],
        )
        .await
        .unwrap();
    let expired = completion::expire(&mut client, Duration::from_secs(86_400), 10)
        .await
        .unwrap();
    assert_eq!(expired.uploads, [id]);
    assert_eq!(expired.chunks.len(), 1);

    let rows = "SELECT count(*) FROM transactions WHERE upload_id = $1";
    assert_eq!(
        count(&client, rows, id).await,
        0,
        "the loaded piece's rows are undone"
    );
    let rejected = "SELECT count(*) FROM rejected_rows WHERE upload_id = $1";
    assert_eq!(count(&client, rejected, id).await, 0);
    let plan = "SELECT count(*) FROM chunk_pieces WHERE upload_id = $1";
    assert_eq!(count(&client, plan, id).await, 0);

    // A piece still in flight finds the chunk failed and does not commit.
    let tx = client.transaction().await.unwrap();
    assert!(!pieces::finish_piece(&tx, id, 0, 0, 1, 1, 0).await.unwrap());
}
