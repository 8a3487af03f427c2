//! The tests' one client of the gateway's HTTP API: a token and the calls tests make, each
//! panicking on what a test would not expect (transport errors), returning statuses where tests
//! check them.

use std::time::Duration;

use crate::wait_for;

/// A client of the gateway at `url`, holding a token.
pub struct Api {
    pub url: String,
    pub http: reqwest::Client,
    pub token: String,
}

/// The hex MD5 of `data`, as the original's client sends it in `X-MD5-Hash`.
pub fn md5_hex(data: &[u8]) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(data))
}

/// `POST /api/auth/token` as `client_id`; the token.
pub async fn token(http: &reqwest::Client, url: &str, client_id: &str, secret: &str) -> String {
    let response = http
        .post(format!("{url}/api/auth/token"))
        .basic_auth(client_id, Some(secret))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "token for {client_id}");
    let body: serde_json::Value = response.json().await.unwrap();
    body["token"].as_str().unwrap().to_owned()
}

impl Api {
    /// A client of the gateway at `url` (e.g. `http://127.0.0.1:8000`), with a token of
    /// `client_id`.
    pub async fn at(url: String, client_id: &str, secret: &str) -> Self {
        let http = reqwest::Client::new();
        let token = token(&http, &url, client_id, secret).await;
        Self { url, http, token }
    }

    /// A client using `token` (one a test already has, or a bad one).
    pub fn with_token(url: &str, http: &reqwest::Client, token: &str) -> Self {
        Self {
            url: url.to_owned(),
            http: http.clone(),
            token: token.to_owned(),
        }
    }

    /// `POST /api/upload` with `body` (`null`: no body, as the original's client sends it); the
    /// response.
    pub async fn create_raw(&self, body: serde_json::Value) -> reqwest::Response {
        let request = self
            .http
            .post(format!("{}/api/upload", self.url))
            .bearer_auth(&self.token);
        let request = if body.is_null() {
            request
        } else {
            request.json(&body)
        };
        request.send().await.unwrap()
    }

    /// `POST /api/upload`, expecting 200; the upload's folder.
    pub async fn create(&self, body: serde_json::Value) -> String {
        let response = self.create_raw(body).await;
        assert_eq!(response.status(), 200);
        let json: serde_json::Value = response.json().await.unwrap();
        json["folder"].as_str().unwrap().to_owned()
    }

    /// `PUT /api/upload/{folder}/chunks/{n}` of a CSV body; the response.
    pub async fn put_raw(&self, folder: &str, n: i32, body: Vec<u8>) -> reqwest::Response {
        self.http
            .put(format!("{}/api/upload/{folder}/chunks/{n}", self.url))
            .bearer_auth(&self.token)
            .header("content-type", "text/csv")
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// [`Self::put_raw`]; the status.
    pub async fn put(&self, folder: &str, n: i32, body: Vec<u8>) -> u16 {
        self.put_raw(folder, n, body).await.status().as_u16()
    }

    /// The original's `POST /api/upload/{folder}`: one multipart file part, with its MD5 when
    /// given.
    pub async fn multipart(
        &self,
        folder: &str,
        name: &str,
        body: Vec<u8>,
        md5: Option<String>,
    ) -> reqwest::Response {
        let part = reqwest::multipart::Part::bytes(body).file_name(name.to_owned());
        let form = reqwest::multipart::Form::new().part("file", part);
        let mut request = self
            .http
            .post(format!("{}/api/upload/{folder}", self.url))
            .bearer_auth(&self.token)
            .multipart(form);
        if let Some(md5) = md5 {
            request = request.header("X-MD5-Hash", md5);
        }
        request.send().await.unwrap()
    }

    /// Declares the upload's chunk count, expecting 200.
    pub async fn complete(&self, folder: &str, chunks: i32) {
        let response = self
            .http
            .post(format!("{}/api/upload/{folder}/complete", self.url))
            .bearer_auth(&self.token)
            .json(&serde_json::json!({"chunks": chunks}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }

    /// `GET path` with the token; the response.
    pub async fn get_raw(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
    }

    /// `GET path` with the token, as JSON.
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        self.get_raw(path).await.json().await.unwrap()
    }

    /// The upload's status (`GET /api/upload/{folder}`).
    pub async fn status(&self, folder: &str) -> serde_json::Value {
        self.get_json(&format!("/api/upload/{folder}")).await
    }

    /// Polls the status until the upload is done or failed.
    pub async fn wait_finished(&self, folder: &str, timeout: Duration) -> serde_json::Value {
        wait_for("upload to finish", timeout, || async {
            let status = self.status(folder).await;
            let state = status["state"].as_str().unwrap_or_default().to_owned();
            (state == "done" || state == "failed").then_some(status)
        })
        .await
    }
}
