//! The probe answers both services give, over real HTTP, against the real PostgreSQL and broker
//! (and a port nothing listens on, for the broker that is down).

use std::sync::Arc;

use ingest_runtime::broker::BrokerAddress;
use ingest_runtime::probes::{self, Probes};
use ingest_testkit::{broker, TestDb};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

struct Service {
    database_url: String,
    broker: BrokerAddress,
    redis: Option<String>,
}

impl Probes for Service {
    async fn database(&self) -> Result<(), String> {
        ingest_runtime::db::answers(&self.database_url).await
    }

    fn broker(&self) -> &BrokerAddress {
        &self.broker
    }

    fn degraded(&self) -> Vec<(&'static str, Option<String>)> {
        vec![("redis", self.redis.clone())]
    }

    fn metrics(&self) -> String {
        "ingest_test_total 7\n".to_owned()
    }
}

/// Serves `service`'s probes on a free port; the answers to `paths` as (status line, body).
async fn ask(service: Service, paths: &[&str]) -> Vec<(String, String)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let server = tokio::spawn(probes::serve(listener, Arc::new(service), stop.clone()));
    let mut answers = Vec::new();
    for path in paths {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        let status = head.lines().next().unwrap().to_owned();
        answers.push((status, body.to_owned()));
    }
    stop.cancel();
    server.await.unwrap();
    answers
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|err| panic!("{err}: {body}"))
}

#[tokio::test]
async fn every_probe_answers_and_ready_names_each_dependency() {
    let db = TestDb::new().await.unwrap();
    let service = Service {
        database_url: db.url.clone(),
        broker: broker(),
        redis: None,
    };
    let answers = ask(service, &["/health", "/ready", "/metrics", "/nowhere"]).await;
    assert!(answers[0].0.contains(" 200 "), "{answers:?}");
    assert_eq!(json(&answers[0].1)["status"], "ok");
    assert!(answers[1].0.contains(" 200 "), "{answers:?}");
    let ready = json(&answers[1].1);
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["postgres"], "ok");
    assert_eq!(ready["rabbitmq"], "ok");
    assert_eq!(ready["redis"], "ok");
    assert!(answers[2].0.contains(" 200 "));
    assert_eq!(answers[2].1, "ingest_test_total 7\n");
    assert!(answers[3].0.contains(" 404 "), "{answers:?}");
}

#[tokio::test]
async fn a_lost_optional_dependency_degrades_and_a_lost_broker_is_503() {
    let db = TestDb::new().await.unwrap();
    let degraded = Service {
        database_url: db.url.clone(),
        broker: broker(),
        redis: Some("degraded: in-process rate limiting".into()),
    };
    let answers = ask(degraded, &["/ready"]).await;
    assert!(answers[0].0.contains(" 200 "), "{answers:?}");
    let ready = json(&answers[0].1);
    assert_eq!(ready["status"], "degraded");
    assert_eq!(ready["redis"], "degraded: in-process rate limiting");

    let mut down = broker();
    down.port = 1; // Nothing listens there.
    let unavailable = Service {
        database_url: db.url.clone(),
        broker: down,
        redis: None,
    };
    let answers = ask(unavailable, &["/ready"]).await;
    assert!(answers[0].0.contains(" 503 "), "{answers:?}");
    let ready = json(&answers[0].1);
    assert_eq!(ready["status"], "unavailable");
    assert_eq!(ready["postgres"], "ok");
    assert!(
        ready["rabbitmq"]
            .as_str()
            .unwrap()
            .starts_with("unreachable"),
        "{ready}"
    );
}
