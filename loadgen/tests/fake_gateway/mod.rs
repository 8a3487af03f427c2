//! A stand-in for the gateway's upload API, following the contract the real one implements,
//! with switches to misbehave in ways the real gateway cannot be made to on demand (injected
//! 5xx, a key rotation mid-upload, a 409 conflict). Everything else is tested against the real
//! gateway in `e2e.rs`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub const CLIENT_ID: &str = "loadgen-test";
pub const CLIENT_SECRET: &str = "correct horse";

/// How the fake misbehaves.
#[derive(Debug, Default, Clone)]
pub struct Behaviour {
    /// The first PUT of these chunks gets this status.
    pub fail_first_put: HashMap<u64, u16>,
    /// PUTs of this chunk always get 409.
    pub conflict_on: Option<u64>,
    /// After this many authenticated requests every token issued so far is refused (401), as
    /// when the gateway restarts with a new signing key.
    pub rotate_key_after: Option<u32>,
}

/// One upload as the fake holds it.
#[derive(Debug, Default)]
pub struct Upload {
    pub expected: Option<u64>,
    pub chunks: BTreeMap<u64, Bytes>,
    pub completed: Option<u64>,
    polls_after_complete: u32,
}

/// Everything the fake saw, for the tests to inspect.
#[derive(Debug, Default)]
pub struct State {
    pub behaviour: Behaviour,
    pub uploads: HashMap<String, Upload>,
    /// Tokens the gateway accepts.
    tokens: HashSet<String>,
    pub tokens_issued: u32,
    bearer_requests: u32,
    /// Chunk numbers of every PUT, in arrival order.
    pub puts: Vec<u64>,
    failed_once: HashSet<u64>,
}

/// A running fake gateway on a random local port.
pub struct FakeGateway {
    pub url: String,
    state: Arc<Mutex<State>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeGateway {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeGateway {
    pub async fn start(behaviour: Behaviour) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a local port");
        let url = format!("http://{}", listener.local_addr().expect("local addr"));
        let state = Arc::new(Mutex::new(State {
            behaviour,
            ..State::default()
        }));
        let shared = Arc::clone(&state);
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = Arc::clone(&shared);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let state = Arc::clone(&state);
                        async move { Ok::<_, Infallible>(handle(&state, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { url, state, server }
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("fake state lock")
    }
}

type Reply = Response<Full<Bytes>>;

fn reply(status: StatusCode, body: Value) -> Reply {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
}

fn error(status: StatusCode, code: &str, message: &str) -> Reply {
    reply(status, json!({"error": {"code": code, "message": message}}))
}

async fn handle(state: &Mutex<State>, req: Request<Incoming>) -> Reply {
    let (parts, body) = req.into_parts();
    let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
        return error(StatusCode::BAD_REQUEST, "body", "unreadable body");
    };
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let mut state = state.lock().expect("fake state lock");
    let path: Vec<&str> = parts.uri.path().trim_matches('/').split('/').collect();
    if parts.method == Method::POST && path == ["api", "auth", "token"] {
        let expected = base64::engine::general_purpose::STANDARD
            .encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"));
        if header("authorization") != format!("Basic {expected}") {
            return error(StatusCode::UNAUTHORIZED, "unauthorized", "bad credentials");
        }
        state.tokens_issued += 1;
        let token = format!("token-{}", state.tokens_issued);
        state.tokens.insert(token.clone());
        return reply(
            StatusCode::OK,
            json!({"token": token, "token_type": "Bearer", "expires_in": 3600}),
        );
    }
    let bearer = header("authorization");
    let token = bearer.strip_prefix("Bearer ").unwrap_or("");
    state.bearer_requests += 1;
    if state.behaviour.rotate_key_after == Some(state.bearer_requests) {
        state.tokens.clear();
    }
    if !state.tokens.contains(token) {
        return error(StatusCode::UNAUTHORIZED, "unauthorized", "Invalid token");
    }
    match (&parts.method, path.as_slice()) {
        (&Method::POST, ["api", "upload"]) => {
            let Ok(request) = serde_json::from_slice::<Value>(&body) else {
                return error(StatusCode::BAD_REQUEST, "json", "bad JSON");
            };
            let folder = uuid::Uuid::new_v4().to_string();
            let upload = Upload {
                expected: request["expected_chunks"].as_u64(),
                ..Upload::default()
            };
            state.uploads.insert(folder.clone(), upload);
            reply(StatusCode::OK, json!({"folder": folder}))
        }
        (&Method::PUT, ["api", "upload", folder, "chunks", n]) => {
            let Ok(n) = n.parse::<u64>() else {
                return error(StatusCode::BAD_REQUEST, "chunk", "bad chunk number");
            };
            let sha256 = hex::encode(Sha256::digest(&body));
            if header("x-checksum-sha256") != sha256 || header("content-type") != "text/csv" {
                return error(
                    StatusCode::BAD_REQUEST,
                    "checksum",
                    "X-Checksum-SHA256 mismatch",
                );
            }
            state.puts.push(n);
            if state.behaviour.conflict_on == Some(n) {
                return error(StatusCode::CONFLICT, "chunk_conflict", "chunk differs");
            }
            if let Some(&status) = state.behaviour.fail_first_put.get(&n) {
                if state.failed_once.insert(n) {
                    return error(
                        StatusCode::from_u16(status).expect("valid status"),
                        "injected",
                        "injected failure",
                    );
                }
            }
            let Some(upload) = state.uploads.get_mut(*folder) else {
                return error(StatusCode::NOT_FOUND, "not_found", "no such upload");
            };
            match upload.chunks.get(&n) {
                Some(held) if *held != body => {
                    error(StatusCode::CONFLICT, "chunk_conflict", "chunk differs")
                }
                Some(_) => reply(StatusCode::OK, json!({"chunk": n, "duplicate": true})),
                None => {
                    upload.chunks.insert(n, body);
                    reply(StatusCode::CREATED, json!({"chunk": n}))
                }
            }
        }
        (&Method::POST, ["api", "upload", folder, "complete"]) => {
            let chunks = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v["chunks"].as_u64());
            let Some(upload) = state.uploads.get_mut(*folder) else {
                return error(StatusCode::NOT_FOUND, "not_found", "no such upload");
            };
            match chunks {
                Some(n) if n == upload.chunks.len() as u64 => {
                    upload.completed = Some(n);
                    reply(
                        StatusCode::OK,
                        json!({"folder": folder, "state": "processing"}),
                    )
                }
                _ => error(StatusCode::CONFLICT, "incomplete", "chunks missing"),
            }
        }
        (&Method::GET, ["api", "upload", folder]) => {
            let Some(upload) = state.uploads.get_mut(*folder) else {
                return error(StatusCode::NOT_FOUND, "not_found", "no such upload");
            };
            reply(StatusCode::OK, status_of(folder, upload))
        }
        _ => error(StatusCode::NOT_FOUND, "not_found", "no such route"),
    }
}

/// Receiving until complete, then processing for one poll, then done.
fn status_of(folder: &str, upload: &mut Upload) -> Value {
    let state = match upload.completed {
        None => "receiving",
        Some(_) => {
            upload.polls_after_complete += 1;
            if upload.polls_after_complete == 1 {
                "processing"
            } else {
                "done"
            }
        }
    };
    let settled = state == "done";
    // Rows: lines of each chunk, less a header line at the start of a chunk.
    let rows: u64 = upload
        .chunks
        .values()
        .map(|c| {
            let lines = c.iter().filter(|&&b| b == b'\n').count() as u64;
            lines - u64::from(c.starts_with(b"date,content,amount,type"))
        })
        .sum();
    json!({
        "folder": folder,
        "state": state,
        "chunks_received": upload.chunks.len(),
        "chunks_loaded": if settled { upload.chunks.len() } else { 0 },
        "chunks_failed": 0,
        "expected_chunks": upload.expected,
        "rows_loaded": if settled { rows } else { 0 },
        "rows_rejected": 0,
        "bytes_received": upload.chunks.values().map(|c| c.len()).sum::<usize>(),
        "received_chunks": upload.chunks.keys().collect::<Vec<_>>(),
        "rejected_rows": [],
        "error": null,
    })
}
