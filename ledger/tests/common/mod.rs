//! What the ledger's tests set up alike: an upload of client `c`, and a stored chunk's facts.
#![allow(dead_code)]

use ingest_ledger::uploads::{self, NewChunk, NewUpload, Recorded, Upload};
use ingest_ledger::{ErrorPolicy, Partition};
use ingest_rows::pieces::Piece;
use tokio_postgres::Client;

/// A new `transactions` upload of client `c` (made if missing).
pub async fn new_upload(
    client: &Client,
    on_error: ErrorPolicy,
    expected_chunks: Option<i32>,
) -> Upload {
    client
        .execute(
            "INSERT INTO api_clients (client_id, secret_hash) VALUES ('c', 'x')
             ON CONFLICT DO NOTHING",
            &[],
        )
        .await
        .unwrap();
    let new = NewUpload {
        client_id: "c",
        dataset: "transactions",
        table: "transactions",
        on_error,
        expected_chunks,
        total_bytes: None,
        idempotency_key: None,
        callback_url: None,
    };
    match uploads::create(client, &new).await.unwrap() {
        uploads::Created::New(upload) => upload,
        other => panic!("a new upload, got {other:?}"),
    }
}

/// A stored chunk of 100 bytes at `path` with the original's header, its SHA-256 `sha` × 64.
pub fn stored_chunk(path: &str, sha: char) -> NewChunk {
    NewChunk {
        path: path.into(),
        bytes: 100,
        sha256: sha.to_string().repeat(64),
        has_header: true,
        header: ["date", "content", "amount", "type"]
            .map(String::from)
            .to_vec(),
        header_expected: true,
    }
}

/// Records chunk `n` of `upload`, on partition 0.
pub async fn record(client: &mut Client, upload: &Upload, n: i32, chunk: NewChunk) -> Recorded {
    uploads::record_chunk(client, upload, Some(n), chunk, |_| Partition(0))
        .await
        .unwrap()
}

/// A 100-byte chunk cut in two pieces of 50 bytes, the second starting on line 3.
pub fn two_pieces() -> [Piece; 2] {
    [
        Piece {
            start: 0,
            end: 50,
            first_line: 1,
        },
        Piece {
            start: 50,
            end: 100,
            first_line: 3,
        },
    ]
}
