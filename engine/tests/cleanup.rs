//! Files of committed chunks that a crash left on disk are swept by the ledger.

use engine::cleanup::sweep;
use ingest_testkit::{random_name, TestDb};

#[tokio::test]
async fn sweep_removes_files_of_committed_chunks_only() {
    let db = TestDb::new().await.unwrap();
    let client = db.client().await.unwrap();
    let dir = std::env::temp_dir().join(random_name("ingest-sweep-"));
    let upload = uuid::Uuid::new_v4();
    std::fs::create_dir_all(dir.join(upload.to_string())).unwrap();
    client
        .execute(
            "INSERT INTO api_clients (client_id, secret_hash) VALUES ('c', 'x')",
            &[],
        )
        .await
        .unwrap();
    client
        .execute(
            "INSERT INTO uploads (upload_id, client_id) VALUES ($1, 'c')",
            &[&upload],
        )
        .await
        .unwrap();
    // Chunk 0 committed long ago (its removal was interrupted), chunk 1 still waiting to load.
    for (chunk, state) in [(0, "loaded"), (1, "stored")] {
        let path = format!("{upload}/{chunk}.csv");
        std::fs::write(dir.join(&path), "x").unwrap();
        client
            .execute(
                "INSERT INTO chunks (upload_id, chunk_no, stored_path, bytes, sha256, has_header,
                                     partition, state, committed_at)
                 VALUES ($1, $2, $3, 1, '', false, 0, $4, now() - interval '1 minute')",
                &[&upload, &chunk, &path, &state],
            )
            .await
            .unwrap();
    }
    let store = ingest_runtime::chunk_store::ChunkStore::Directory(dir.clone());
    assert_eq!(
        sweep(&client, &store, None, &[1]).await.unwrap(),
        0,
        "not our partition"
    );
    assert_eq!(sweep(&client, &store, None, &[0]).await.unwrap(), 1);
    assert!(!dir.join(format!("{upload}/0.csv")).exists());
    assert!(
        dir.join(format!("{upload}/1.csv")).exists(),
        "a chunk waiting to load keeps its file"
    );
    assert_eq!(
        sweep(&client, &store, None, &[0]).await.unwrap(),
        0,
        "marked removed"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
