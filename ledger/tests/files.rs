//! What the ledger says of a stored file, for the gateways' bucket sweep. Against the real
//! PostgreSQL.

use ingest_contract::testkit::TestDb;
use ingest_ledger::files::{self, FileUse};
use ingest_ledger::uploads::{self, NewChunk, NewUpload, Recorded};
use ingest_ledger::{ErrorPolicy, Partition};
use uuid::Uuid;

#[tokio::test]
async fn a_file_is_wanted_while_a_live_chunk_row_names_it() {
    let db = TestDb::new().await.unwrap();
    let mut client = db.client().await.unwrap();
    client
        .execute(
            "INSERT INTO api_clients (client_id, secret_hash) VALUES ('c', 'x')",
            &[],
        )
        .await
        .unwrap();
    let new = NewUpload {
        client_id: "c",
        dataset: "transactions",
        table: "transactions",
        on_error: ErrorPolicy::RejectRows,
        expected_chunks: None,
        total_bytes: None,
        idempotency_key: None,
        callback_url: None,
    };
    let uploads::Created::New(upload) = uploads::create(&client, &new).await.unwrap() else {
        panic!("a new upload");
    };
    let id = upload.upload_id;
    let path = format!("{id}/a.csv");
    let stored = NewChunk {
        path: path.clone(),
        bytes: 100,
        sha256: "00".repeat(32),
        has_header: true,
        header: ["date", "content", "amount", "type"]
            .map(String::from)
            .to_vec(),
        header_expected: true,
    };
    let recorded = uploads::record_chunk(&mut client, &upload, Some(0), stored, |_| Partition(0))
        .await
        .unwrap();
    assert!(matches!(recorded, Recorded::New(_)));

    let other = format!("{id}/b.csv");
    assert_eq!(
        files::file_use(&client, id, &path).await.unwrap(),
        FileUse::Wanted
    );
    assert_eq!(
        files::file_use(&client, id, &other).await.unwrap(),
        FileUse::UploadExists,
        "an upload's file no row names (yet)"
    );
    files::mark_removed(&client, id, 0).await.unwrap();
    assert_eq!(
        files::file_use(&client, id, &path).await.unwrap(),
        FileUse::UploadExists,
        "a file the ledger let go of"
    );
    let stranger = Uuid::new_v4();
    assert_eq!(
        files::file_use(&client, stranger, &format!("{stranger}/a.csv"))
            .await
            .unwrap(),
        FileUse::Unknown
    );
}
