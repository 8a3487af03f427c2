//! What the ledger says of a stored file, for the gateways' orphan sweeps. Against the real
//! PostgreSQL.

use crate::common::{new_upload, record, stored_chunk};
use ingest_ledger::files::{self, FileUse};
use ingest_ledger::uploads::Recorded;
use ingest_ledger::ErrorPolicy;
use ingest_testkit::TestDb;
use uuid::Uuid;

#[tokio::test]
async fn a_file_is_wanted_while_a_live_chunk_row_names_it() {
    let db = TestDb::new().await.unwrap();
    let mut client = db.client().await.unwrap();
    let upload = new_upload(&client, ErrorPolicy::RejectRows, None).await;
    let id = upload.upload_id;
    let path = format!("{id}/a.csv");
    let recorded = record(&mut client, &upload, 0, stored_chunk(&path, '0')).await;
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
