//! Compressed bodies, slow clients, graceful shutdown and the client-management commands.

use std::io::Write;
use std::time::Duration;

use crate::support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

#[tokio::test]
async fn gzip_and_zstd_chunks_are_stored_decoded_and_bombs_are_cut_off() {
    let app = TestGateway::start(&["--max-chunk-bytes=1000000"]).await;
    let token = app.token().await;
    let folder = app.create_upload(&token).await;
    let plain = original_rows(0, 100, true);
    let put = |n: i32, encoding: &'static str, body: Vec<u8>| {
        app.http
            .put(format!("{}/api/upload/{folder}/chunks/{n}", app.url))
            .bearer_auth(&token)
            .header("content-encoding", encoding)
            .body(body)
            .send()
    };
    assert_eq!(put(0, "gzip", gzip(&plain)).await.unwrap().status(), 200);
    let zstd_body = zstd::encode_all(&plain[..], 3).unwrap();
    assert_eq!(put(1, "zstd", zstd_body).await.unwrap().status(), 200);
    let messages = app.stream_messages(2, 2).await;
    assert_eq!(messages.len(), 2);
    for message in &messages {
        assert_eq!(
            std::fs::read(app.upload_dir.join(&message.path)).unwrap(),
            plain
        );
    }
    // 50 MB of zeros-like CSV compresses to a few KB: the decoded size cap stops it.
    let bomb = gzip(&vec![b'1'; 50_000_000]);
    assert!(bomb.len() < 1_000_000, "a bomb is small on the wire");
    assert_eq!(put(2, "gzip", bomb).await.unwrap().status(), 413);
    assert_eq!(
        put(3, "gzip", b"not gzip at all".to_vec())
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(put(4, "br", plain.clone()).await.unwrap().status(), 415);
    // A zstd frame asking for a 128 MiB window (ultra levels, long matching) is refused, not
    // given the memory for the length of the body.
    let mut wide = zstd::stream::Encoder::new(Vec::new(), 19).unwrap();
    wide.window_log(27).unwrap();
    wide.long_distance_matching(true).unwrap();
    std::io::Write::write_all(&mut wide, &plain).unwrap();
    let refused = put(5, "zstd", wide.finish().unwrap()).await.unwrap();
    assert_eq!(refused.status(), 400);
    let reason = refused.text().await.unwrap();
    assert!(reason.contains("zstd"), "{reason}");
    assert_eq!(app.ledger_rows().await, 2);
    assert_eq!(app.stored_files().len(), 2);
}

#[tokio::test]
async fn a_stalled_body_times_out_and_leaves_nothing() {
    let app = TestGateway::start(&["--body-frame-timeout-ms=300"]).await;
    let token = app.token().await;
    let folder = app.create_upload(&token).await;
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "PUT /api/upload/{folder}/chunks/0 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Length: 100000\r\n\r\n01/01/2023 00:00:01,a,1,Deposit\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut buffer = vec![0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
        .await
        .expect("the gateway gives up on the stalled body")
        .unwrap();
    let answer = String::from_utf8_lossy(&buffer[..read]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(app.stored_files().is_empty());
    assert_eq!(app.ledger_rows().await, 0);
}

#[tokio::test]
async fn slow_headers_are_cut_off() {
    let app = TestGateway::start(&["--header-timeout-ms=300"]).await;
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buffer = vec![0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
        .await
        .expect("the gateway closes a connection whose headers never end");
    // Closed (0 bytes or a reset), or answered with 408: either way it is not held open.
    if let Ok(n) = read {
        let answer = String::from_utf8_lossy(&buffer[..n]);
        assert!(n == 0 || answer.starts_with("HTTP/1.1 408"), "{answer}");
    }
}

/// A connection that sends nothing, or stops inside the HTTP/2 preface (before the server can
/// tell which HTTP it speaks), is closed after the header timeout too, not held open for good.
#[tokio::test]
async fn silent_connections_are_cut_off() {
    let app = TestGateway::start(&["--header-timeout-ms=300"]).await;
    for sent in [&b""[..], &b"PRI * HTTP/2.0\r\n"[..]] {
        let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
        stream.write_all(sent).await.unwrap();
        let mut buffer = vec![0u8; 1024];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
            .await
            .unwrap_or_else(|_| panic!("held open after sending {sent:?}"));
        if let Ok(n) = read {
            assert_eq!(n, 0, "{:?}", String::from_utf8_lossy(&buffer[..n]));
        }
    }
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_upload_finish() {
    let app = TestGateway::start(&[]).await;
    let token = app.token().await;
    let folder = app.create_upload(&token).await;
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let body = original_rows(0, 50, true);
    let head = format!(
        "PUT /api/upload/{folder}/chunks/0 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Connection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..100]).await.unwrap();
    let db_url = app.db.url.clone();
    let addr = app.addr;
    let stopping = tokio::spawn(app.stop());
    // Once the gateway stops accepting it is draining; the rest of the body still arrives and is
    // answered.
    ingest_testkit::wait_for(
        "the gateway to stop accepting",
        Duration::from_secs(10),
        || async move {
            tokio::net::TcpStream::connect(addr)
                .await
                .is_err()
                .then_some(())
        },
    )
    .await;
    stream.write_all(&body[100..]).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let (db, _, _) = stopping.await.unwrap();
    assert_eq!(db.url, db_url);
    let client = db.client().await.unwrap();
    let rows: i64 = client
        .query_one("SELECT count(*) FROM chunks", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 1);
}

#[tokio::test]
async fn client_commands_add_list_and_disable() {
    let db = ingest_testkit::TestDb::new().await.unwrap();
    let run = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
            .arg(format!("--database-url={}", db.url))
            .args(args)
            .env("RUST_LOG", "error")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    run(&["client", "add", "alice", "--secret", "alice-secret-1"]);
    assert!(run(&["client", "list"]).contains("alice\tenabled"));
    run(&["client", "disable", "alice"]);
    assert!(run(&["client", "list"]).contains("alice\tdisabled\tupload"));
    let admin = ["client", "add", "root", "--secret", "root-secret-1"];
    run(&[&admin[..], &["--scope", "admin", "--scope", "upload"]].concat());
    assert!(run(&["client", "list"]).contains("root\tenabled\tupload,admin"));
    run(&admin);
    assert!(
        run(&["client", "list"]).contains("root\tenabled\tupload,admin"),
        "a new secret keeps the scopes"
    );
    let client = db.client().await.unwrap();
    let hash: String = client
        .query_one(
            "SELECT secret_hash FROM api_clients WHERE client_id = 'alice'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(hash.starts_with("$argon2"), "secrets are stored hashed");
}
