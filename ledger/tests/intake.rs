//! What the gateway records as chunks arrive, decided under the upload's lock so that requests
//! racing each other (or the upload's completion) cannot get past a rule the gateway checked
//! on an earlier read. Against the real PostgreSQL.

use crate::common::{new_upload, record, stored_chunk, two_pieces};
use ingest_contract::chunk::ChunkMessage;
use ingest_ledger::uploads::{self, Declared, Recorded};
use ingest_ledger::{files, pieces, ErrorPolicy, Partition, UploadState};
use ingest_testkit::TestDb;
use tokio_postgres::Client;
use uuid::Uuid;

/// Records the next chunk in arrival order (as multipart files are numbered).
async fn record_next(
    client: &mut Client,
    upload: &uploads::Upload,
    path: &str,
    sha: char,
) -> Recorded {
    uploads::record_chunk(client, upload, None, stored_chunk(path, sha), |_| {
        Partition(0)
    })
    .await
    .unwrap()
}

async fn chunk_numbers(client: &Client, id: Uuid) -> Vec<i32> {
    client
        .query(
            "SELECT chunk_no FROM chunks WHERE upload_id = $1 ORDER BY chunk_no",
            &[&id],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

fn new_message(recorded: Recorded) -> ChunkMessage {
    match recorded {
        Recorded::New(message) => message,
        other => panic!("a new chunk, got {other:?}"),
    }
}

#[tokio::test]
async fn a_chunk_past_the_declared_count_is_refused_though_the_gateway_read_none() {
    let db = TestDb::new().await.unwrap();
    let mut client = db.client().await.unwrap();
    // What the gateway read when the request came in: no count declared yet.
    let upload = new_upload(&client, ErrorPolicy::RejectRows, None).await;
    let id = upload.upload_id;
    new_message(record(&mut client, &upload, 0, stored_chunk("u/0.csv", '0')).await);
    let declared = uploads::declare_chunks(&mut client, id, 2).await.unwrap();
    assert_eq!(
        declared,
        Declared::Now(UploadState::Receiving),
        "chunk 1 is still to come"
    );

    let late = record(&mut client, &upload, 2, stored_chunk("u/2.csv", '2')).await;
    assert!(matches!(late, Recorded::Beyond(2)), "got {late:?}");
    new_message(record(&mut client, &upload, 1, stored_chunk("u/1.csv", '1')).await);
    assert_eq!(chunk_numbers(&client, id).await, vec![0, 1]);
}

#[tokio::test]
async fn files_numbered_in_arrival_order_stop_at_the_declared_count() {
    let db = TestDb::new().await.unwrap();
    let mut client = db.client().await.unwrap();
    let upload = new_upload(&client, ErrorPolicy::RejectRows, Some(2)).await;
    let id = upload.upload_id;
    new_message(record_next(&mut client, &upload, "u/a.csv", 'a').await);
    new_message(record_next(&mut client, &upload, "u/b.csv", 'b').await);
    let third = record_next(&mut client, &upload, "u/c.csv", 'c').await;
    assert!(matches!(third, Recorded::Beyond(2)), "got {third:?}");
    assert_eq!(chunk_numbers(&client, id).await, vec![0, 1]);
    let next: i32 = client
        .query_one(
            "SELECT next_chunk_no FROM uploads WHERE upload_id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(next, 2, "a refused file takes no number");
}

#[tokio::test]
async fn declaring_fewer_chunks_than_were_received_is_refused() {
    let db = TestDb::new().await.unwrap();
    let mut client = db.client().await.unwrap();
    let upload = new_upload(&client, ErrorPolicy::RejectRows, None).await;
    let id = upload.upload_id;
    for (n, sha) in [(0, '0'), (1, '1'), (2, '2')] {
        let path = format!("u/{n}.csv");
        new_message(record(&mut client, &upload, n, stored_chunk(&path, sha)).await);
    }
    assert_eq!(
        uploads::declare_chunks(&mut client, id, 2).await.unwrap(),
        Declared::Fewer { highest: 2 }
    );
    assert_eq!(
        uploads::declare_chunks(&mut client, id, 3).await.unwrap(),
        Declared::Now(UploadState::Processing)
    );
    assert_eq!(
        uploads::declare_chunks(&mut client, id, 4).await.unwrap(),
        Declared::Refused,
        "another count was declared"
    );
}

#[tokio::test]
async fn a_chunk_whose_publish_failed_is_kept_if_it_may_have_been_published() {
    let db = TestDb::new().await.unwrap();
    let mut client = db.client().await.unwrap();
    let upload = new_upload(&client, ErrorPolicy::RejectRows, None).await;
    let id = upload.upload_id;

    // Another request sent the same chunk and had it confirmed.
    let confirmed =
        new_message(record(&mut client, &upload, 0, stored_chunk("u/0.csv", '0')).await);
    assert!(files::mark_announced(&client, id, 0).await.unwrap());
    assert!(!uploads::forget_chunk(&mut client, &confirmed)
        .await
        .unwrap());

    // The broker delivered it though the confirm never came: a piece is loaded already.
    let delivered =
        new_message(record(&mut client, &upload, 1, stored_chunk("u/1.csv", '1')).await);
    let cut = two_pieces();
    pieces::write_plan(&mut client, id, 1, 0, &cut)
        .await
        .unwrap();
    let tx = client.transaction().await.unwrap();
    assert!(pieces::finish_piece(&tx, id, 1, 0, 0, 1, 0).await.unwrap());
    tx.commit().await.unwrap();
    assert!(!uploads::forget_chunk(&mut client, &delivered)
        .await
        .unwrap());

    // Neither: taken back; a request that published the same chunk meanwhile learns it.
    let lost = new_message(record(&mut client, &upload, 2, stored_chunk("u/2.csv", '2')).await);
    assert!(uploads::forget_chunk(&mut client, &lost).await.unwrap());
    assert!(!files::mark_announced(&client, id, 2).await.unwrap());
    assert_eq!(chunk_numbers(&client, id).await, vec![0, 1]);
}

#[tokio::test]
async fn a_chunk_that_waited_for_the_header_is_published_again_though_a_late_confirm_marked_it() {
    let db = TestDb::new().await.unwrap();
    let mut client = db.client().await.unwrap();
    let upload = new_upload(&client, ErrorPolicy::RejectRows, None).await;
    let id = upload.upload_id;
    // Chunk 3 of a split file comes first, without a header: it waits (the engine parks it).
    let headerless = uploads::NewChunk {
        has_header: false,
        ..stored_chunk("u/3.csv", '3')
    };
    new_message(record(&mut client, &upload, 3, headerless).await);
    // Chunk 0 sets the header; then chunk 3's first confirm lands and marks it announced.
    new_message(record(&mut client, &upload, 0, stored_chunk("u/0.csv", '0')).await);
    assert!(files::mark_announced(&client, id, 3).await.unwrap());

    let chunk_nos =
        |messages: Vec<ChunkMessage>| -> Vec<i32> { messages.iter().map(|m| m.chunk_no).collect() };
    let again = files::may_have_waited(&client, id, 0).await.unwrap();
    assert_eq!(chunk_nos(again), vec![3]);
    // A chunk with a header of its own never waited.
    new_message(record(&mut client, &upload, 1, stored_chunk("u/1.csv", '1')).await);
    let again = files::may_have_waited(&client, id, 0).await.unwrap();
    assert_eq!(chunk_nos(again), vec![3]);

    // Published again but not confirmed: the announce sweep sees it (chunks 0 and 1 were).
    for n in [0, 1] {
        assert!(files::mark_announced(&client, id, n).await.unwrap());
    }
    files::announce_later(&client, id, &[3]).await.unwrap();
    let swept = files::unannounced(&client, std::time::Duration::ZERO, 10)
        .await
        .unwrap();
    assert_eq!(chunk_nos(swept), vec![3]);
}
