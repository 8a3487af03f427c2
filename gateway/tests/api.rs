//! The gateway's HTTP API over real HTTP, against the real PostgreSQL, Redis and RabbitMQ.

use crate::support::*;
use std::time::Duration;

#[tokio::test]
async fn original_flow_stores_chunks_and_publishes_their_messages() {
    let app = TestGateway::start(&[]).await;
    let token = app.token().await;
    let folder = app.create_upload(&token).await;
    for i in 0..3 {
        let body = original_rows(0, (10 + i) as u64, true);
        let response = app
            .multipart(
                &token,
                &folder,
                &format!("part{i}.csv"),
                body.clone(),
                Some(md5_hex(&body)),
            )
            .await;
        assert_eq!(response.status(), 200);
        let json: serde_json::Value = response.json().await.unwrap();
        assert_eq!(json["message"], "File uploaded successfully");
        assert_eq!(json["chunk"], i as i64);
    }
    let messages = app.stream_messages(2, 3).await;
    assert_eq!(messages.len(), 3);
    let mut chunk_nos: Vec<i32> = messages.iter().map(|m| m.chunk_no).collect();
    chunk_nos.sort();
    assert_eq!(chunk_nos, vec![0, 1, 2]);
    for message in &messages {
        assert_eq!(message.upload_id.to_string(), folder);
        assert!(message.has_header);
        let stored = std::fs::read(app.upload_dir.join(&message.path)).unwrap();
        assert_eq!(stored.len() as u64, message.bytes);
        assert!(stored.starts_with(HEADER.as_bytes()));
    }
    let status = app.status(&token, &folder).await;
    assert_eq!(status["chunks_received"], 3);
    assert_eq!(status["state"], "receiving");
    assert!(app
        .stored_files()
        .iter()
        .all(|p| p.extension().unwrap() == "csv"));
}

#[tokio::test]
async fn put_chunk_is_idempotent_and_refuses_different_content() {
    let app = TestGateway::start(&[]).await;
    let token = app.token().await;
    let folder = app.create_upload(&token).await;
    let first = app
        .put_chunk(&token, &folder, 0, b"01/01/2023 00:00:01,a,1.5,Deposit\n")
        .await;
    assert_eq!(first.status(), 200);
    let again = app
        .put_chunk(&token, &folder, 0, b"01/01/2023 00:00:01,a,1.5,Deposit\n")
        .await;
    assert_eq!(again.status(), 200);
    let json: serde_json::Value = again.json().await.unwrap();
    assert_eq!(json["duplicate"], true);
    let other = app
        .put_chunk(&token, &folder, 0, b"01/01/2023 00:00:01,b,2.5,Deposit\n")
        .await;
    assert_eq!(other.status(), 409);
    assert_eq!(app.ledger_rows().await, 1);
    assert_eq!(
        app.stored_files().len(),
        1,
        "one file, nothing stored twice"
    );
    let status = app.status(&token, &folder).await;
    assert_eq!(status["chunks_received"], 1);
    assert_eq!(status["bytes_received"], 34);
}

#[tokio::test]
async fn refusals_leave_nothing_on_disk_in_the_ledger_or_the_stream() {
    let app = TestGateway::start(&["--max-chunk-bytes=1000"]).await;
    let token = app.token().await;
    let folder = app.create_upload(&token).await;
    let url = |rest: &str| format!("{}/api/upload/{folder}{rest}", app.url);

    // Bad checksum.
    let body = original_rows(0, 3, true);
    let bad_md5 = app
        .multipart(&token, &folder, "a.csv", body.clone(), Some("0".repeat(32)))
        .await;
    assert_eq!(bad_md5.status(), 400);
    // Too large by Content-Length, refused before the body is read.
    let big = app.put_chunk(&token, &folder, 0, &[b'a'; 2000]).await;
    assert_eq!(big.status(), 413);
    // Binary content.
    let png = app
        .http
        .put(url("/chunks/0"))
        .bearer_auth(&token)
        .body(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(png.status(), 415);
    // A .xlsx that is no workbook is refused as such; other extensions are bad requests.
    assert_eq!(
        app.multipart(&token, &folder, "a.xlsx", body.clone(), None)
            .await
            .status(),
        415
    );
    assert_eq!(
        app.multipart(&token, &folder, "a.exe", body.clone(), None)
            .await
            .status(),
        400
    );
    // A multipart file must start with the header, as the original's files do.
    assert_eq!(
        app.multipart(&token, &folder, "a.csv", b"1,2,3,4\r\n".to_vec(), None)
            .await
            .status(),
        400
    );
    // Multipart without a `file` field.
    let form = reqwest::multipart::Form::new().text("other", "x");
    let no_file = app
        .http
        .post(url(""))
        .bearer_auth(&token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(no_file.status(), 422);
    // Two files.
    let form = reqwest::multipart::Form::new()
        .part(
            "file",
            reqwest::multipart::Part::bytes(body.clone()).file_name("a.csv"),
        )
        .part(
            "file",
            reqwest::multipart::Part::bytes(body.clone()).file_name("b.csv"),
        );
    let two = app
        .http
        .post(url(""))
        .bearer_auth(&token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(two.status(), 400);
    // Unsupported content type and encoding.
    let json_type = app
        .http
        .put(url("/chunks/0"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(json_type.status(), 415);
    let sha_mismatch = app
        .http
        .put(url("/chunks/0"))
        .bearer_auth(&token)
        .header("x-checksum-sha256", "00".repeat(32))
        .body("01/01/2023 00:00:01,a,1,Deposit\n")
        .send()
        .await
        .unwrap();
    assert_eq!(sha_mismatch.status(), 400);
    let error: serde_json::Value = sha_mismatch.json().await.unwrap();
    assert_eq!(error["error"]["code"], "bad_request");

    assert!(
        app.stored_files().is_empty(),
        "left behind: {:?}",
        app.stored_files()
    );
    assert_eq!(app.ledger_rows().await, 0);
    // The stream holds exactly the one chunk that is accepted now, nothing before it.
    assert_eq!(
        app.multipart(&token, &folder, "ok.csv", body, None)
            .await
            .status(),
        200
    );
    let messages = app.stream_messages(2, 2).await;
    assert_eq!(messages.len(), 1);
}

#[tokio::test]
async fn authentication_refusals() {
    let app = TestGateway::start(&[]).await;
    let token_url = format!("{}/api/auth/token", app.url);
    let wrong = app
        .http
        .post(&token_url)
        .basic_auth(CLIENT_ID, Some("nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().contains_key("www-authenticate"));
    let missing = app.http.post(&token_url).send().await.unwrap();
    assert_eq!(missing.status(), 401);
    let token = app.token().await;
    let ok: serde_json::Value = app
        .http
        .post(&token_url)
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ok["token_type"], "Bearer");
    assert_eq!(ok["expires_in"], 3600);

    let upload = format!("{}/api/upload", app.url);
    let no_bearer = app.http.post(&upload).send().await.unwrap();
    assert_eq!(no_bearer.status(), 401);
    let garbage = app
        .http
        .post(&upload)
        .bearer_auth("garbage")
        .send()
        .await
        .unwrap();
    assert_eq!(garbage.status(), 401);
    // A token signed with another key, and an expired one signed with ours.
    let clock = gateway::auth::system_clock();
    let foreign = gateway::auth::Tokens::new(
        &ingest_runtime::settings::Secret::new("some-other-key-0123456"),
        None,
        60,
        clock,
    )
    .issue(CLIENT_ID, &[gateway::clients::Scope::Upload]);
    let refused = app
        .http
        .post(&upload)
        .bearer_auth(&foreign.token)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let past: gateway::auth::Clock = std::sync::Arc::new(|| 1_000_000);
    let expired = gateway::auth::Tokens::new(
        &ingest_runtime::settings::Secret::new("test-signing-key-0123456789"),
        None,
        3600,
        past,
    )
    .issue(CLIENT_ID, &[gateway::clients::Scope::Upload]);
    let response = app
        .http
        .post(&upload)
        .bearer_auth(&expired.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["message"], "token expired");

    // Another client's folder is not found.
    let folder = app.create_upload(&token).await;
    let pool = gateway::server::database_pool(&app.db.url).await.unwrap();
    gateway::clients::ApiClients::new(pool)
        .upsert(
            "someone-else",
            &ingest_runtime::settings::Secret::new("someone-else-secret"),
        )
        .await
        .unwrap();
    let other = signed_token("someone-else");
    let peek = app.status_raw(&other.token, &folder).await;
    assert_eq!(peek, 404);
    assert_eq!(app.status_raw(&token, "../../etc/passwd").await, 404);
    assert_eq!(app.status_raw(&token, "not-a-uuid").await, 404);
}

#[tokio::test]
async fn complete_declares_the_count_and_status_reports_it() {
    let app = TestGateway::start(&[]).await;
    let token = app.token().await;
    let folder = app.create_upload(&token).await;
    assert_eq!(
        app.put_chunk(&token, &folder, 0, b"01/01/2023 00:00:01,a,1,Deposit\n")
            .await
            .status(),
        200
    );
    let complete = |folder: &str, n: i32| {
        app.http
            .post(format!("{}/api/upload/{folder}/complete", app.url))
            .bearer_auth(&token)
            .json(&serde_json::json!({"chunks": n}))
            .send()
    };
    assert_eq!(complete(&folder, 2).await.unwrap().status(), 200);
    assert_eq!(complete(&folder, 3).await.unwrap().status(), 409);
    // `receiving` until every declared chunk is here (and expiry applies until then).
    let status = app.status(&token, &folder).await;
    assert_eq!(status["state"], "receiving");
    assert!(status["expires_at"].is_string(), "{status}");
    assert_eq!(status["expected_chunks"], 2);
    assert_eq!(status["received_chunks"], serde_json::json!([0]));
    // Beyond the declared count.
    assert_eq!(
        app.put_chunk(&token, &folder, 2, b"x\n").await.status(),
        400
    );

    // Fewer than were received: refused, with the reason. Then a file numbered in arrival
    // order past the declared count is refused too (it would never be waited for).
    let other = app.create_upload(&token).await;
    let rows: [&'static [u8]; 2] = [
        b"01/01/2023 00:00:00,a,1,Deposit\n",
        b"01/01/2023 00:00:01,a,1,Deposit\n",
    ];
    for (n, row) in (0..).zip(rows) {
        assert_eq!(app.put_chunk(&token, &other, n, row).await.status(), 200);
    }
    let fewer = complete(&other, 1).await.unwrap();
    assert_eq!(fewer.status(), 409);
    let reason = fewer.text().await.unwrap();
    assert!(reason.contains("chunk 1 was received already"), "{reason}");
    assert_eq!(complete(&other, 2).await.unwrap().status(), 200);
    let extra = app
        .multipart(&token, &other, "c.csv", original_rows(0, 3, true), None)
        .await;
    assert_eq!(extra.status(), 409);
    let status = app.status(&token, &other).await;
    assert_eq!(status["received_chunks"], serde_json::json!([0, 1]));
}

#[tokio::test]
async fn docs_health_ready_and_metrics() {
    let app = TestGateway::start(&[]).await;
    for path in ["/api/upload/docs", "/api/auth/docs"] {
        let page = app
            .http
            .get(format!("{}{path}", app.url))
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200);
        assert!(page.text().await.unwrap().contains("swagger-ui-bundle.js"));
    }
    let spec: serde_json::Value = app
        .http
        .get(format!("{}/api/upload/openapi.json", app.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(spec["paths"]["/api/upload/{folder}/chunks/{n}"]["put"].is_object());
    let ready: serde_json::Value = app
        .http
        .get(format!("{}/ready", app.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["postgres"], "ok");
    assert_eq!(ready["rabbitmq"], "ok");
    let metrics = app
        .http
        .get(format!("{}/metrics", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("ingest_http_requests_total"), "{metrics}");
}

#[tokio::test]
async fn broker_down_answers_503_and_keeps_nothing() {
    let app = TestGateway::start(&[
        "--rabbitmq-stream-url=rabbitmq-stream://guest:guest@127.0.0.1:1/%2f",
        "--publish-timeout-ms=500",
    ])
    .await;
    let token = app.token().await;
    let folder = app.create_upload(&token).await;
    let response = app
        .put_chunk(&token, &folder, 0, b"01/01/2023 00:00:01,a,1,Deposit\n")
        .await;
    assert_eq!(response.status(), 503);
    assert!(app.stored_files().is_empty());
    assert_eq!(app.ledger_rows().await, 0);
    let ready = app
        .http
        .get(format!("{}/ready", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
}

#[tokio::test]
async fn a_restarted_gateway_publishes_its_next_chunk() {
    // rabbitmq-stream-client 0.4.4 resumes a named producer at the last stored publishing id:
    // without our epoch ids the first message after a restart would be dropped as a duplicate.
    let app = TestGateway::start(&["--gateway-id=restart-test"]).await;
    let token = app.token().await;
    let folder = app.create_upload(&token).await;
    assert_eq!(
        app.put_chunk(&token, &folder, 0, b"01/01/2023 00:00:01,a,1,Deposit\n")
            .await
            .status(),
        200
    );
    let (db, dir, streams) = app.stop().await;
    let app = TestGateway::start_on(db, dir, streams, &["--gateway-id=restart-test"]).await;
    assert_eq!(
        app.put_chunk(&token, &folder, 1, b"01/01/2023 00:00:02,a,1,Deposit\n")
            .await
            .status(),
        200
    );
    assert_eq!(
        app.put_chunk(&token, &folder, 2, b"01/01/2023 00:00:03,a,1,Deposit\n")
            .await
            .status(),
        200
    );
    let messages = app.stream_messages(2, 3).await;
    let mut chunk_nos: Vec<i32> = messages.iter().map(|m| m.chunk_no).collect();
    chunk_nos.sort();
    assert_eq!(chunk_nos, vec![0, 1, 2]);
}

/// A token for `client_id` signed with the test gateway's key, whatever the database says.
fn signed_token(client_id: &str) -> gateway::auth::IssuedToken {
    gateway::auth::Tokens::new(
        &ingest_runtime::settings::Secret::new("test-signing-key-0123456789"),
        None,
        3600,
        gateway::auth::system_clock(),
    )
    .issue(client_id, &[gateway::clients::Scope::Upload])
}

#[tokio::test]
async fn a_disabled_or_unknown_clients_valid_tokens_are_refused() {
    let app = TestGateway::start(&[]).await;
    let pool = gateway::server::database_pool(&app.db.url).await.unwrap();
    let clients = gateway::clients::ApiClients::new(pool);
    let secret = ingest_runtime::settings::Secret::new("revoked-secret-123");
    clients.upsert("soon-revoked", &secret).await.unwrap();
    let token = app.token_for("soon-revoked", secret.expose()).await;
    let folder = app.create_upload(&token).await;
    assert_eq!(app.status_raw(&token, &folder).await, 200);

    // `gateway client disable` does this; the live token stops working within the cache period.
    clients.disable("soon-revoked").await.unwrap();
    let disabled_at = std::time::Instant::now();
    ingest_testkit::wait_for(
        "the disabled client's token to be refused",
        gateway::clients::ENABLED_CACHE_TTL + Duration::from_secs(3),
        || async { (app.status_raw(&token, &folder).await == 401).then_some(()) },
    )
    .await;
    println!("refused {:?} after disable", disabled_at.elapsed());
    // And stays refused everywhere: creating, uploading, nginx's verify.
    let create = app
        .http
        .post(format!("{}/api/upload", app.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(create.status(), 401);
    let body: serde_json::Value = create.json().await.unwrap();
    assert_eq!(body["error"]["message"], "client is disabled or unknown");
    let verify = app
        .http
        .get(format!("{}/api/auth/verify", app.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(verify.status(), 401);

    // A validly signed token naming no client at all: 401, not a foreign-key 500.
    let ghost = signed_token("never-existed");
    let uploads_before = app.count("uploads").await;
    let response = app
        .http
        .post(format!("{}/api/upload", app.url))
        .bearer_auth(&ghost.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(app.count("uploads").await, uploads_before);

    // Replacing the secret (`gateway client add`) enables the client again, but the tokens it
    // was issued before stay revoked; they used to work again until they expired.
    let renewed = ingest_runtime::settings::Secret::new("renewed-secret-456");
    clients.upsert("soon-revoked", &renewed).await.unwrap();
    let fresh = app.token_for("soon-revoked", renewed.expose()).await;
    ingest_testkit::wait_for(
        "a token of the renewed secret to be accepted",
        gateway::clients::ENABLED_CACHE_TTL + Duration::from_secs(3),
        || async { (app.status_raw(&fresh, &folder).await == 200).then_some(()) },
    )
    .await;
    assert_eq!(
        app.status_raw(&token, &folder).await,
        401,
        "the old token is back"
    );
    assert_eq!(app.status_raw(&fresh, &folder).await, 200);
}

/// A gateway's start creates `INGEST_BOOTSTRAP_CLIENT` only if it is missing: it used to enable
/// it again (and reset its secret) on every start, undoing an operator's disable.
#[tokio::test]
async fn a_disabled_bootstrap_client_stays_disabled_through_a_restart() {
    let app = TestGateway::start(&[]).await;
    let token = app.token().await;
    let folder = app.create_upload(&token).await;
    let pool = gateway::server::database_pool(&app.db.url).await.unwrap();
    gateway::clients::ApiClients::new(pool)
        .disable(CLIENT_ID)
        .await
        .unwrap();
    let (db, dir, streams) = app.stop().await;
    let app = TestGateway::start_on(db, dir, streams, &[]).await;
    let asked = app
        .http
        .post(format!("{}/api/auth/token", app.url))
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .send()
        .await
        .unwrap();
    assert_eq!(
        asked.status(),
        401,
        "the bootstrap client was enabled again"
    );
    assert_eq!(app.status_raw(&token, &folder).await, 401);
}

#[tokio::test]
async fn an_http11_request_without_host_is_refused_with_400() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestGateway::start(&[]).await;
    let token = app.token().await;
    let ask = |request: String| {
        let addr = app.addr;
        async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer).await.unwrap();
            String::from_utf8_lossy(&answer).into_owned()
        }
    };
    let without_host = ask(format!(
        "POST /api/upload HTTP/1.1\r\nAuthorization: Bearer {token}\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    ))
    .await;
    assert!(without_host.starts_with("HTTP/1.1 400"), "{without_host}");
    let two_hosts = ask(format!(
        "POST /api/upload HTTP/1.1\r\nHost: a\r\nHost: b\r\nAuthorization: Bearer {token}\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    ))
    .await;
    assert!(two_hosts.starts_with("HTTP/1.1 400"), "{two_hosts}");
    assert_eq!(
        app.count("uploads").await,
        0,
        "a refused request creates nothing"
    );
    // With a Host, and HTTP/1.0 without one (Host is an HTTP/1.1 requirement), it is served.
    let with_host = ask(format!(
        "POST /api/upload HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {token}\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    ))
    .await;
    assert!(with_host.starts_with("HTTP/1.1 200"), "{with_host}");
    let http10 = ask(format!(
        "POST /api/upload HTTP/1.0\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\n\r\n"
    ))
    .await;
    assert!(
        http10.starts_with("HTTP/1.0 200") || http10.starts_with("HTTP/1.1 200"),
        "{http10}"
    );
}

#[tokio::test]
async fn metrics_list_every_counter_at_zero_from_the_first_scrape() {
    // A gateway process of its own: in-process gateways share this test binary's recorder.
    let db = ingest_testkit::TestDb::new().await.unwrap();
    let streams = ingest_testkit::TestStreams::new("metrics-", 2);
    let upload_dir = tempfile_dir();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args([
            format!("--database-url={}", db.url),
            format!("--addr=127.0.0.1:{port}"),
            format!("--upload-dir={}", upload_dir.display()),
            format!("--stream-prefix={}", streams.prefix),
            "--partitions=2".into(),
            "--jwt-secret=test-signing-key-0123456789".into(),
            format!("--ratelimit-prefix={}:", ingest_testkit::random_name("rl")),
        ])
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/metrics");
    let metrics = ingest_testkit::wait_for(
        "the gateway's first scrape",
        Duration::from_secs(30),
        || async {
            let response = http.get(&url).send().await.ok()?;
            response.text().await.ok()
        },
    )
    .await;
    let _ = child.kill();
    let _ = child.wait();
    for series in [
        "ingest_rate_limited_total{class=\"status\",kind=\"ip\"} 0",
        "ingest_rate_limited_total{class=\"upload\",kind=\"client\"} 0",
        "ingest_ratelimit_fallback_total 0",
        "ingest_auth_failures_total{reason=\"client_disabled\"} 0",
        "ingest_auth_failures_total{reason=\"bad_credentials\"} 0",
        "ingest_bytes_received_total 0",
        "ingest_uploads_expired_total 0",
        "ingest_uploads_settled_total 0",
        "ingest_chunk_store_seconds_count 0",
        "ingest_http_request_duration_seconds_count{route=\"upload_chunk\"} 0",
    ] {
        assert!(metrics.contains(series), "{series} missing from\n{metrics}");
    }
    let _ = std::fs::remove_dir_all(upload_dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(ingest_testkit::random_name("ingest-metrics-"))
}

#[tokio::test]
async fn uploads_are_listed_newest_first_a_page_at_a_time_and_only_to_their_owner() {
    let app = TestGateway::start(&[]).await;
    let token = app.token().await;
    let mut folders = Vec::new();
    for _ in 0..5 {
        folders.push(app.create_upload(&token).await);
    }
    // One ends at once: it declares zero chunks.
    let declared = app
        .http
        .post(format!("{}/api/upload/{}/complete", app.url, folders[1]))
        .bearer_auth(&token)
        .json(&serde_json::json!({"chunks": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(declared.status(), 200);
    // Another client's upload is never listed.
    let other = app
        .token_of_new_client("other-client", "other-secret-123")
        .await;
    let others = app.create_upload(&other).await;

    let list = |query: String| {
        let request = app
            .http
            .get(format!("{}/api/uploads{query}", app.url))
            .bearer_auth(&token);
        async move { request.send().await.unwrap() }
    };
    let (mut listed, mut pages, mut after) = (Vec::new(), 0, None::<String>);
    loop {
        let query = match &after {
            Some(cursor) => format!("?limit=2&after={cursor}"),
            None => "?limit=2".to_owned(),
        };
        let response = list(query).await;
        assert_eq!(response.status(), 200);
        let page: serde_json::Value = response.json().await.unwrap();
        pages += 1;
        for upload in page["uploads"].as_array().unwrap() {
            let folder = upload["folder"].as_str().unwrap().to_owned();
            let open = upload["state"] == "receiving";
            assert_eq!(upload["expires_at"].is_string(), open, "{upload}");
            listed.push(folder);
        }
        match page["next"].as_str() {
            Some(cursor) => after = Some(cursor.to_owned()),
            None => break,
        }
    }
    let newest_first: Vec<String> = folders.iter().rev().cloned().collect();
    assert_eq!(listed, newest_first);
    assert_eq!(pages, 3);
    assert!(!listed.contains(&others));

    let done: serde_json::Value = list("?state=done".into()).await.json().await.unwrap();
    let done: Vec<&str> = done["uploads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["folder"].as_str().unwrap())
        .collect();
    assert_eq!(done, [folders[1].as_str()]);

    let forged = base64_url("2026-12-06 18:40:01.123456+00|not-a-uuid");
    let forged_time = base64_url(&format!("'; DROP TABLE uploads; --|{}", folders[0]));
    for bad in [
        "?limit=0".to_owned(),
        "?limit=501".to_owned(),
        "?state=cancelled".to_owned(),
        "?after=garbage!".to_owned(),
        format!("?after={forged}"),
        format!("?after={forged_time}"),
        "?sort=oldest".to_owned(),
    ] {
        assert_eq!(list(bad.clone()).await.status(), 400, "{bad}");
    }
    let anonymous = app
        .http
        .get(format!("{}/api/uploads", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}

fn base64_url(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

#[tokio::test]
async fn an_idempotency_key_names_one_upload_per_client_even_under_concurrent_retries() {
    let app = TestGateway::start(&[]).await;
    let token = app.token().await;
    let create = |token: &str, key: &str, body: serde_json::Value| {
        let request = app
            .http
            .post(format!("{}/api/upload", app.url))
            .bearer_auth(token)
            .header("idempotency-key", key)
            .json(&body);
        async move { request.send().await.unwrap() }
    };
    let body = serde_json::json!({"expected_chunks": 3});
    let tries = (0..10).map(|_| create(&token, "import-2026-12-06", body.clone()));
    let answers = futures_util::future::join_all(tries).await;
    let mut folders = Vec::new();
    let mut replayed = 0;
    for answer in answers {
        assert_eq!(answer.status(), 200);
        replayed += usize::from(answer.headers().contains_key("idempotent-replayed"));
        let json: serde_json::Value = answer.json().await.unwrap();
        folders.push(json["folder"].as_str().unwrap().to_owned());
    }
    folders.dedup();
    assert_eq!(
        folders.len(),
        1,
        "one upload for ten concurrent tries: {folders:?}"
    );
    assert_eq!(replayed, 9);
    assert_eq!(app.count("uploads").await, 1);

    // The same key with another request is refused; another client's key is its own.
    let other_body = serde_json::json!({"expected_chunks": 4});
    let reused = create(&token, "import-2026-12-06", other_body).await;
    assert_eq!(reused.status(), 409);
    let other = app
        .token_of_new_client("other-client", "other-secret-123")
        .await;
    let theirs = create(&other, "import-2026-12-06", body.clone()).await;
    let theirs: serde_json::Value = theirs.json().await.unwrap();
    assert_ne!(theirs["folder"].as_str().unwrap(), folders[0]);

    let long = "k".repeat(256);
    for bad in ["two words", long.as_str()] {
        assert_eq!(
            create(&token, bad, body.clone()).await.status(),
            400,
            "{bad}"
        );
    }
    assert_eq!(app.count("uploads").await, 2);
}

/// A completion-hook receiver: records every request, answers 500 to the first `failures`.
struct HookReceiver {
    addr: std::net::SocketAddr,
    got: std::sync::Arc<std::sync::Mutex<Vec<(http::HeaderMap, bytes::Bytes)>>>,
    _task: tokio::task::JoinHandle<()>,
}

impl HookReceiver {
    async fn start_on(addr: &str, failures: usize) -> Self {
        use http_body_util::BodyExt;
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = got.clone();
        let task = tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let seen = seen.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |request: http::Request<hyper::body::Incoming>| {
                            let seen = seen.clone();
                            async move {
                                let headers = request.headers().clone();
                                let body = request.into_body().collect().await.unwrap().to_bytes();
                                let count = {
                                    let mut seen = seen.lock().unwrap();
                                    seen.push((headers, body));
                                    seen.len()
                                };
                                let status = if count <= failures { 500 } else { 200 };
                                let response = http::Response::builder()
                                    .status(status)
                                    .body(http_body_util::Full::new(bytes::Bytes::new()))
                                    .unwrap();
                                Ok::<_, std::convert::Infallible>(response)
                            }
                        },
                    );
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                });
            }
        });
        Self {
            addr,
            got,
            _task: task,
        }
    }

    async fn wait_for(&self, requests: usize) -> Vec<(http::HeaderMap, bytes::Bytes)> {
        let got = self.got.clone();
        ingest_testkit::wait_for("hook requests", Duration::from_secs(30), || {
            let got = got.clone();
            async move {
                let got = got.lock().unwrap();
                (got.len() >= requests).then(|| got.clone())
            }
        })
        .await
    }
}

const HOOK_SECRET: &str = "hook-secret-0123456";

/// Checks a hook's signature with an HMAC of our own, and returns its JSON.
fn verified(headers: &http::HeaderMap, body: &[u8]) -> serde_json::Value {
    use hmac::Mac;
    let signature = headers["x-ingest-signature"].to_str().unwrap();
    let (t, v1) = signature
        .strip_prefix("t=")
        .and_then(|rest| rest.split_once(",v1="))
        .unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(HOOK_SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    assert_eq!(hex::encode(mac.finalize().into_bytes()), v1, "signature");
    serde_json::from_slice(body).unwrap()
}

/// An upload with no declared count does not settle while a chunk body is still arriving: a
/// body slower than the settle period used to let the upload end `done` (and its hook fire)
/// without that chunk's rows, then open again when the chunk was recorded.
#[tokio::test]
async fn an_upload_does_not_settle_while_a_chunk_body_is_arriving() {
    use tokio::io::AsyncWriteExt;
    // Marked every 2/3 s, so a busy machine may delay a mark by over a second without a false
    // settle; the body takes three settle periods.
    let app = TestGateway::start(&["--upload-settle-secs=2"]).await;
    let token = app.token().await;
    let folder = app.create_upload(&token).await;
    let row = b"01/01/2023 00:00:01,a,1,Deposit\n";
    assert_eq!(app.put_chunk(&token, &folder, 0, row).await.status(), 200);
    // Chunk 1 starts, and is seen arriving, before chunk 0 is loaded: from then on the upload
    // has nothing left to load but a body on its way.
    let body = [row.as_slice(); 6].concat();
    let mut slow = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "PUT /api/upload/{folder}/chunks/1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: text/csv\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    let mut db = app.db.client().await.unwrap();
    let id = uuid::Uuid::parse_str(&folder).unwrap();
    ingest_testkit::wait_for(
        "chunk 1 to be seen arriving",
        Duration::from_secs(10),
        || async {
            let sql = "SELECT body_seen_at IS NOT NULL FROM uploads WHERE upload_id = $1";
            db.query_one(sql, &[&id])
                .await
                .unwrap()
                .get::<_, bool>(0)
                .then_some(())
        },
    )
    .await;
    // As an engine does: chunk 0 loaded.
    let tx = db.transaction().await.unwrap();
    let outcome = ingest_ledger::loads::ChunkOutcome {
        state: ingest_ledger::ChunkState::Loaded,
        rows_loaded: 1,
        rows_rejected: 0,
        rows_skipped: 0,
        error: None,
        in_pieces: false,
        attempt: 0,
    };
    let finished = ingest_ledger::loads::finish(&tx, id, 0, outcome).await;
    assert_eq!(finished.unwrap(), ingest_ledger::loads::Finished::Recorded);
    tx.commit().await.unwrap();

    // Its rows trickle in over 6 s.
    for line in body.chunks(row.len()) {
        slow.write_all(line).await.unwrap();
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let state = app.status(&token, &folder).await["state"].clone();
            assert_eq!(state, "receiving", "settled while chunk 1 was arriving");
        }
    }
    let mut answer = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut slow, &mut answer)
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let status = app.status(&token, &folder).await;
    assert_eq!(
        status["received_chunks"],
        serde_json::json!([0, 1]),
        "{status}"
    );
}

#[tokio::test]
async fn completion_hooks_are_signed_retried_and_outlive_a_gateway_restart() {
    let hook_args = [
        "--webhook-secret=hook-secret-0123456",
        "--webhook-allow-private",
        "--webhook-retry-ms=100",
    ];
    let app = TestGateway::start(&hook_args).await;
    let token = app.token().await;
    let end_now = |callback: String| {
        let http = app.http.clone();
        let (url, token) = (app.url.clone(), token.clone());
        async move {
            let created: serde_json::Value = http
                .post(format!("{url}/api/upload"))
                .bearer_auth(&token)
                .json(&serde_json::json!({"callback_url": callback}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let folder = created["folder"].as_str().unwrap().to_owned();
            let declared = http
                .post(format!("{url}/api/upload/{folder}/complete"))
                .bearer_auth(&token)
                .json(&serde_json::json!({"chunks": 0}))
                .send()
                .await
                .unwrap();
            assert_eq!(declared.status(), 200);
            folder
        }
    };

    // The receiver fails the first attempt; the retry is acknowledged, and that is the last.
    let receiver = HookReceiver::start_on("127.0.0.1:0", 1).await;
    let folder = end_now(format!("http://{}/hooks", receiver.addr)).await;
    let got = receiver.wait_for(2).await;
    let (headers, body) = &got[1];
    let event = verified(headers, body);
    assert_eq!(event["folder"], folder.as_str());
    assert_eq!(event["state"], "done");
    assert_eq!(event["event"], "upload.ended");
    let completed_at = event["completed_at"].as_str().unwrap();
    let delivery = format!("{folder}:done:{completed_at}");
    assert_eq!(headers["x-ingest-delivery"], delivery.as_str());
    // Every attempt of one end carries the same delivery id.
    assert_eq!(got[0].0["x-ingest-delivery"], delivery.as_str());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        receiver.got.lock().unwrap().len(),
        2,
        "delivered once acknowledged"
    );

    // A receiver that is down: the hook waits in the ledger through a gateway restart.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let later = end_now(format!("http://127.0.0.1:{port}/hooks")).await;
    // The gateway has tried and failed before it stops.
    let client = app.db.client().await.unwrap();
    let later_id = uuid::Uuid::parse_str(&later).unwrap();
    ingest_testkit::wait_for("a failed attempt", Duration::from_secs(10), || {
        let client = &client;
        async move {
            let row = client
                .query_one(
                    "SELECT notify_attempts FROM uploads WHERE upload_id = $1",
                    &[&later_id],
                )
                .await
                .ok()?;
            (row.get::<_, i32>(0) > 0).then_some(())
        }
    })
    .await;
    drop(client);
    let (db, upload_dir, streams) = app.stop().await;
    let receiver = HookReceiver::start_on(&format!("127.0.0.1:{port}"), 0).await;
    let app = TestGateway::start_on(db, upload_dir, streams, &hook_args).await;
    let got = receiver.wait_for(1).await;
    let event = verified(&got[0].0, &got[0].1);
    assert_eq!(event["folder"], later.as_str());
    let (db, upload_dir, streams) = app.stop().await;

    // Without INGEST_WEBHOOK_ALLOW_PRIVATE a client's callback may not reach inside the network.
    let strict = TestGateway::start_on(db, upload_dir, streams, &hook_args[..1]).await;
    let token = strict.token().await;
    let created: serde_json::Value = strict
        .http
        .post(format!("{}/api/upload", strict.url))
        .bearer_auth(&token)
        .json(&serde_json::json!({"callback_url": format!("http://{}/hooks", receiver.addr)}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let inside = created["folder"].as_str().unwrap().to_owned();
    let aborted = strict
        .http
        .delete(format!("{}/api/upload/{inside}", strict.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(aborted.status(), 200);
    let client = strict.db.client().await.unwrap();
    let id = uuid::Uuid::parse_str(&inside).unwrap();
    let error: String =
        ingest_testkit::wait_for("the refused hook's error", Duration::from_secs(10), || {
            let client = &client;
            async move {
                client
                    .query_one(
                        "SELECT notify_error FROM uploads WHERE upload_id = $1",
                        &[&id],
                    )
                    .await
                    .ok()?
                    .get::<_, Option<String>>(0)
            }
        })
        .await;
    assert!(error.contains("private"), "{error}");
    assert_eq!(
        receiver.got.lock().unwrap().len(),
        1,
        "nothing reached the receiver"
    );
    let bad = strict
        .http
        .post(format!("{}/api/upload", strict.url))
        .bearer_auth(&token)
        .json(&serde_json::json!({"callback_url": "file:///etc/passwd"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}

/// An admin-scoped client adds, lists and disables clients over the API; a token without the
/// admin scope gets 403 there, an admin-only token 403 on uploads, and a demoted admin's live
/// token loses the scope within the cache period.
#[tokio::test]
async fn admins_manage_clients_over_the_api_and_scopes_are_enforced() {
    use gateway::clients::{ApiClients, Scope, ENABLED_CACHE_TTL};
    use ingest_runtime::settings::Secret;
    let app = TestGateway::start(&[]).await;
    let pool = gateway::server::database_pool(&app.db.url).await.unwrap();
    let clients = ApiClients::new(pool);
    let clients_url = format!("{}/api/clients", app.url);
    let uploader = app.token().await;
    let listed = app
        .http
        .get(&clients_url)
        .bearer_auth(&uploader)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 403);
    let body: serde_json::Value = listed.json().await.unwrap();
    assert_eq!(body["error"]["code"], "forbidden", "{body}");

    // The bootstrap path: an operator makes the first admin with `gateway client add --scope`.
    clients
        .upsert("root", &Secret::new("root-secret-1"))
        .await
        .unwrap();
    clients.set_scopes("root", &[Scope::Admin]).await.unwrap();
    let issued: serde_json::Value = app
        .http
        .post(format!("{}/api/auth/token", app.url))
        .basic_auth("root", Some("root-secret-1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(issued["scope"], "admin", "{issued}");
    let admin = issued["token"].as_str().unwrap().to_owned();
    let post = |body: serde_json::Value| {
        let request = app.http.post(&clients_url).bearer_auth(&admin).json(&body);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<serde_json::Value>().await.unwrap())
        }
    };
    let (status, added) = post(serde_json::json!({"client_id": "ops-1"})).await;
    assert_eq!(status, 201, "{added}");
    assert_eq!(added["scopes"], serde_json::json!(["upload"]));
    let secret = added["client_secret"].as_str().unwrap().to_owned();
    assert_eq!(secret.len(), 64, "a generated secret, shown once");
    let ops = app.token_for("ops-1", &secret).await;
    app.create_upload(&ops).await;
    for (body, expected) in [
        (serde_json::json!({"client_id": "ops-1"}), 409),
        (serde_json::json!({"client_id": "no spaces"}), 400),
        (
            serde_json::json!({"client_id": "x", "client_secret": "short"}),
            400,
        ),
        (
            serde_json::json!({"client_id": "x", "scopes": ["root"]}),
            400,
        ),
        (serde_json::json!({"client_id": "x", "scopes": []}), 400),
        (serde_json::json!({"client_id": "x", "role": "admin"}), 400),
    ] {
        let (status, answer) = post(body.clone()).await;
        assert_eq!(status, expected, "{body} → {answer}");
    }
    let (status, _) = post(
        serde_json::json!({"client_id": "ops-2", "client_secret": "ops-2-secret",
                                              "scopes": ["admin", "upload"]}),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(
        app.create_upload_raw(&admin).await,
        403,
        "an admin-only token does not upload"
    );

    let listed: serde_json::Value = app
        .http
        .get(&clients_url)
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let find = |id: &str| {
        listed["clients"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["client_id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} not listed: {listed}"))
    };
    assert_eq!(
        find("ops-2")["scopes"],
        serde_json::json!(["upload", "admin"])
    );
    assert_eq!(find("ops-1")["disabled"], false);

    let delete = |id: &str, token: &str| {
        let request = app
            .http
            .delete(format!("{clients_url}/{id}"))
            .bearer_auth(token);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(delete("ops-1", &uploader).await, 403);
    assert_eq!(delete("ops-1", &admin).await, 200);
    assert_eq!(delete("nobody", &admin).await, 404);
    assert_eq!(delete("root", &admin).await, 409, "not itself");
    let folder = app.create_upload(&app.token().await).await;
    ingest_testkit::wait_for(
        "the disabled client's token to be refused",
        ENABLED_CACHE_TTL + Duration::from_secs(3),
        || async { (app.create_upload_raw(&ops).await == 401).then_some(()) },
    )
    .await;
    let refused = app
        .http
        .post(format!("{}/api/auth/token", app.url))
        .basic_auth("ops-1", Some(&secret))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);

    // Demoted: the live admin token keeps its signature but not the scope.
    clients.set_scopes("root", &[Scope::Upload]).await.unwrap();
    ingest_testkit::wait_for(
        "the demoted admin's token to lose the scope",
        ENABLED_CACHE_TTL + Duration::from_secs(3),
        || async {
            let status = app
                .http
                .get(&clients_url)
                .bearer_auth(&admin)
                .send()
                .await
                .unwrap()
                .status();
            (status == 403).then_some(())
        },
    )
    .await;
    assert_eq!(
        app.status_raw(&admin, &folder).await,
        403,
        "nor gains upload: its token never carried it"
    );
}

#[tokio::test]
async fn datasets_are_listed_with_their_columns() {
    let app = TestGateway::start(&[]).await;
    let token = app.token().await;
    let listed: serde_json::Value = app
        .http
        .get(format!("{}/api/datasets", app.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let transactions = &listed["datasets"][0];
    assert_eq!(transactions["name"], "transactions", "{listed}");
    assert_eq!(transactions["header"], "date,content,amount,type");
    assert_eq!(transactions["partitioned_by"], "date");
    let types: Vec<&str> = transactions["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["timestamp", "text", "numeric", "enum"]);
    assert_eq!(
        transactions["columns"][3]["values"],
        serde_json::json!(["Deposit", "Withdrawal"])
    );
    let anonymous = app
        .http
        .get(format!("{}/api/datasets", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}

/// A chunk file no live ledger row names is removed by the periodic sweep once old: one never
/// recorded (a gateway killed between storing and recording it), and one whose row says it was
/// removed (a removal that failed after the ledger let go of the file). A recorded one of the
/// same age stays.
#[tokio::test]
async fn the_orphan_sweep_removes_old_chunk_files_no_live_row_names() {
    // Sweeps every 200 ms; a chunk file counts as left behind after 10 frame deadlines (2 s).
    let app = TestGateway::start(&["--body-frame-timeout-ms=200"]).await;
    let token = app.token().await;
    let folder = app.create_upload(&token).await;
    let api = app.api(&token);
    assert_eq!(
        api.put_raw(&folder, 0, original_rows(0, 5, true))
            .await
            .status(),
        200
    );
    let kept = app.stored_files();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(
        api.put_raw(&folder, 1, original_rows(5, 5, false))
            .await
            .status(),
        200
    );
    let let_go: Vec<_> = app
        .stored_files()
        .into_iter()
        .filter(|p| !kept.contains(p))
        .collect();
    assert_eq!(let_go.len(), 1, "{let_go:?}");
    let upload_id = uuid::Uuid::parse_str(&folder).unwrap();
    let db = app.db.client().await.unwrap();
    ingest_ledger::files::mark_removed(&db, upload_id, 1)
        .await
        .unwrap();

    let strays = [
        app.upload_dir.join(&folder).join("stray.csv"),
        app.upload_dir
            .join(uuid::Uuid::new_v4().to_string())
            .join("unknown-upload.csv"),
        let_go[0].clone(),
    ];
    let an_hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    for path in strays.iter().chain(&kept) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        if !path.exists() {
            std::fs::write(path, HEADER).unwrap();
        }
        let file = std::fs::File::options().append(true).open(path).unwrap();
        file.set_modified(an_hour_ago).unwrap();
    }
    ingest_testkit::wait_for("the sweep", Duration::from_secs(15), || async {
        strays.iter().all(|p| !p.exists()).then_some(())
    })
    .await;
    assert_eq!(app.stored_files(), kept, "the recorded chunk stays");
}

/// A request that fails inside (here the ledger's table is gone) answers 500 with the generic
/// `internal` body: nothing of the cause (SQL, table names) reaches the client; it is logged.
#[tokio::test]
async fn internal_errors_answer_a_generic_500_that_leaks_nothing() {
    let app = TestGateway::start(&[]).await;
    let token = app.token().await;
    let folder = app.create_upload(&token).await;
    let db = app.db.client().await.expect("connect");
    db.batch_execute("ALTER TABLE uploads RENAME TO uploads_gone")
        .await
        .expect("rename the table");

    let created = app.api(&token).create_raw(serde_json::Value::Null).await;
    let status = app
        .api(&token)
        .get_raw(&format!("/api/upload/{folder}"))
        .await;
    for response in [created, status] {
        assert_eq!(response.status(), 500);
        let body: serde_json::Value = response.json().await.expect("a JSON error body");
        assert_eq!(
            body,
            serde_json::json!({"error": {"code": "internal", "message": "internal error"}})
        );
    }
}
