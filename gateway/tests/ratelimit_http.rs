//! Rate limits as clients see them: over real HTTP, before the body is read, keyed by the real
//! client IP, shared by gateways through Redis.

mod support;

use std::time::{Duration, Instant};

use ingest_contract::testkit::random_name;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A route that is rate limited by IP and then refused by auth: cheap, and touches nothing.
fn probe_url(app: &TestGateway) -> String {
    format!("{}/api/upload/{}", app.url, uuid::Uuid::new_v4())
}

#[tokio::test]
async fn a_300_request_burst_admits_201_then_one_per_10ms_with_headers() {
    let app = TestGateway::start(&[]).await;
    let started = Instant::now();
    let requests = (0..300).map(|_| app.http.get(probe_url(&app)).send());
    let responses = futures_util::future::join_all(requests).await;
    let elapsed = started.elapsed();
    let statuses: Vec<u16> = responses
        .iter()
        .map(|r| r.as_ref().unwrap().status().as_u16())
        .collect();
    let passed = statuses.iter().filter(|s| **s == 401).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(passed + limited, 300);
    // 201 at once, plus one per 10 ms the burst took to arrive.
    let refill = (elapsed.as_millis() / 10) as usize;
    assert!(
        (201..=201 + refill).contains(&passed),
        "{passed} passed in {elapsed:?}"
    );
    let refused = responses
        .into_iter()
        .map(Result::unwrap)
        .find(|r| r.status() == 429)
        .unwrap();
    for header in [
        "retry-after",
        "ratelimit-limit",
        "ratelimit-remaining",
        "ratelimit-reset",
    ] {
        assert!(refused.headers().contains_key(header), "missing {header}");
    }
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
}

#[tokio::test]
async fn spoofed_forwarded_for_from_an_untrusted_peer_does_not_change_the_key() {
    // One request per ~1000 s and a burst of 1: exactly two requests pass per key.
    let app = TestGateway::start(&["--rate-limit-per-sec=0.001", "--rate-limit-burst=1"]).await;
    let mut statuses = Vec::new();
    for i in 0..3 {
        let response = app
            .http
            .get(probe_url(&app))
            .header("x-forwarded-for", format!("203.0.113.{i}"))
            .header("x-real-ip", format!("198.51.100.{i}"))
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses, vec![401, 401, 429]);
}

#[tokio::test]
async fn two_gateways_sharing_redis_share_one_budget() {
    let prefix = format!("--ratelimit-prefix={}:", random_name("shared"));
    let flags = [
        "--rate-limit-per-sec=0.001",
        "--rate-limit-burst=1",
        prefix.as_str(),
    ];
    let first = TestGateway::start(&flags).await;
    let second = TestGateway::start(&flags).await;
    let a = first
        .http
        .get(probe_url(&first))
        .send()
        .await
        .unwrap()
        .status();
    let b = second
        .http
        .get(probe_url(&second))
        .send()
        .await
        .unwrap()
        .status();
    let c = first
        .http
        .get(probe_url(&first))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!((a.as_u16(), b.as_u16(), c.as_u16()), (401, 401, 429));
}

#[tokio::test]
async fn a_limited_client_is_refused_before_it_sends_its_body() {
    let app = TestGateway::start(&["--rate-limit-per-sec=0.001", "--rate-limit-burst=0"]).await;
    // Burst 0 admits one request per class: the token (auth class), then one upload request.
    let token = app.token().await;
    assert_eq!(app.create_upload_raw(&token).await, 201);
    // The upload budget is spent: a 100-continue client gets 429, never "100 Continue".
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let request = format!(
        "PUT /api/upload/{}/chunks/0 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Length: 10000000\r\nExpect: 100-continue\r\n\r\n",
        uuid::Uuid::new_v4()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buffer = vec![0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
        .await
        .expect("the gateway answers without waiting for the body")
        .unwrap();
    let head = String::from_utf8_lossy(&buffer[..read]);
    assert!(head.starts_with("HTTP/1.1 429"), "{head}");
}

#[tokio::test]
async fn token_checks_for_nginx_are_not_rate_limited() {
    // nginx turns a 429 from its auth_request subrequest into a 500, and the upload it guards
    // is limited when it arrives anyway.
    let app = TestGateway::start(&["--rate-limit-per-sec=0.001", "--rate-limit-burst=0"]).await;
    let token = app.token().await;
    for _ in 0..5 {
        let response = app
            .http
            .get(format!("{}/api/auth/verify", app.url))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204);
    }
    let bad = app
        .http
        .get(format!("{}/api/auth/verify", app.url))
        .bearer_auth("x")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
}
