//! The repo's nginx.conf in front of a real gateway, run by Debian's nginx (installed when missing):
//! the original client flow works through it, a bad token is refused by `auth_request` before the
//! upload handler runs, bodies are streamed rather than spooled, and the gateway sees the client's
//! own address. Only the upstream servers, the listen address and the temp paths of the file are
//! templated.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ingest_testkit::{random_name, wait_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use support::*;

/// Debian's nginx, installed with apt when missing (CI runs as root).
fn nginx_binary() -> PathBuf {
    static FOUND: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    FOUND
        .get_or_init(|| {
            ingest_testkit::browser::debian_package(
                &["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"],
                "nginx",
            )
        })
        .clone()
}

/// nginx running the repo's nginx.conf with its own prefix directory, stopped on drop.
struct Nginx {
    child: Child,
    dir: PathBuf,
    url: String,
}

impl Nginx {
    async fn start(upstream: SocketAddr) -> Self {
        let binary = nginx_binary();
        for _attempt in 0..3 {
            // A free port, released for nginx to take (retried if someone takes it first).
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let dir = std::env::temp_dir().join(random_name("ingest-nginx-"));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(
                dir.join("nginx.conf"),
                templated_config(upstream, port, &dir),
            )
            .unwrap();
            let stderr = std::fs::File::create(dir.join("stderr.log")).unwrap();
            // Single process (no master/workers): killing the child stops everything, and no
            // worker user needs access to the prefix.
            let globals = format!(
                "daemon off; master_process off; pid {};",
                dir.join("nginx.pid").display()
            );
            let child = Command::new(&binary)
                .arg("-p")
                .arg(&dir)
                .arg("-c")
                .arg(dir.join("nginx.conf"))
                .arg("-e")
                .arg(dir.join("error.log"))
                .args(["-g", &globals])
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .expect("nginx should start");
            let mut nginx = Self {
                child,
                dir,
                url: format!("http://127.0.0.1:{port}"),
            };
            if nginx.wait_ready().await {
                return nginx;
            }
            let log = nginx.log();
            assert!(
                log.contains("Address already in use"),
                "nginx failed:\n{log}"
            );
        }
        panic!("nginx found no free port in 3 attempts");
    }

    /// Polls nginx's own health location; false if nginx exited.
    async fn wait_ready(&mut self) -> bool {
        let http = reqwest::Client::new();
        let url = format!("{}/nginx-health", self.url);
        let child = &mut self.child;
        wait_for("nginx to listen", Duration::from_secs(30), || {
            let exited = child.try_wait().ok().flatten().is_some();
            let request = http.get(&url).send();
            async move {
                if exited {
                    return Some(false);
                }
                request
                    .await
                    .ok()
                    .filter(|r| r.status() == 200)
                    .map(|_| true)
            }
        })
        .await
    }

    /// nginx's error log (its stderr: the config logs there).
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The repo's nginx.conf with the test's upstream, listen address and temp paths.
fn templated_config(upstream: SocketAddr, port: u16, dir: &Path) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../nginx.conf");
    let original = std::fs::read_to_string(path).expect("nginx.conf at the repo root");
    let mut out = String::new();
    let (mut servers, mut listens, mut http_blocks) = (0, 0, 0);
    for line in original.lines() {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix("server gateway-") {
            // One gateway stands in for the compose file's several: keep the first line's options.
            servers += 1;
            if servers == 1 {
                let options = rest.split_once(' ').map_or(";", |(_, o)| o);
                out.push_str(&format!("        server {upstream} {options}\n"));
            }
            continue;
        }
        if trimmed == "listen 8080;" {
            listens += 1;
            out.push_str(&format!("        listen 127.0.0.1:{port};\n"));
            continue;
        }
        out.push_str(line);
        out.push('\n');
        if trimmed == "http {" {
            http_blocks += 1;
            for (directive, name) in [
                ("client_body_temp_path", "client_body"),
                ("proxy_temp_path", "proxy"),
                ("fastcgi_temp_path", "fastcgi"),
                ("uwsgi_temp_path", "uwsgi"),
                ("scgi_temp_path", "scgi"),
            ] {
                out.push_str(&format!("    {directive} {};\n", dir.join(name).display()));
            }
        }
    }
    assert!(
        servers >= 1 && listens == 1 && http_blocks == 1,
        "nginx.conf no longer has the lines this test templates \
         (`server gateway-N:8000 ...;`, `listen 8080;`, `http {{`)"
    );
    out
}

/// Sum of a counter's samples whose labels include all of `labels`.
fn counter(metrics: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metrics
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let rest = series.strip_prefix(name)?;
            if !(rest.is_empty() || rest.starts_with('{')) {
                return None;
            }
            let matches = labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            matches.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

async fn scrape(gateway: &Running) -> String {
    reqwest::get(format!("http://{}/metrics", gateway.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn multipart(body: Vec<u8>) -> reqwest::multipart::Form {
    let part = reqwest::multipart::Part::bytes(body).file_name("part-0.csv");
    reqwest::multipart::Form::new().part("file", part)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_original_flow_works_through_nginx_and_bad_tokens_stop_at_auth_request() {
    let env = TestEnv::new(2).await;
    let gateway = start_gateway(&env, &["--trusted-proxies=127.0.0.1"]).await;
    let nginx = Nginx::start(gateway.addr).await;
    let http = reqwest::Client::new();
    let base = &nginx.url;

    // The original's client: token with Basic, a folder, a multipart file with its MD5.
    let response = http
        .post(format!("{base}/api/auth/token"))
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let token = response.json::<serde_json::Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let response = http
        .post(format!("{base}/api/upload"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let folder = response.json::<serde_json::Value>().await.unwrap()["folder"]
        .as_str()
        .unwrap()
        .to_owned();
    // Larger than nginx's in-memory body buffer: buffering would spool it to a temp file.
    let file = original_rows(0, 5000, true);
    let response = http
        .post(format!("{base}/api/upload/{folder}"))
        .bearer_auth(&token)
        .header("X-MD5-Hash", md5_hex(&file))
        .multipart(multipart(file))
        .send()
        .await
        .unwrap();
    let status = response.status();
    assert_eq!(
        status,
        200,
        "{}\n{}",
        response.text().await.unwrap(),
        nginx.log()
    );
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["message"], "File uploaded successfully");
    // The clients API reaches the gateway, which refuses a token without the admin scope.
    let response = http
        .get(format!("{base}/api/clients"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403, "{}", nginx.log());
    let response = http
        .get(format!("{base}/api/datasets"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", nginx.log());
    // The console and the docs pages with their assets pass through too.
    for (path, kind) in [
        ("/console", "text/html"),
        ("/console/console.js", "text/javascript"),
        ("/api/upload/docs", "text/html"),
        (
            "/api/upload/docs/swagger-ui-5.32.0/swagger-ui-bundle.js",
            "text/javascript",
        ),
        ("/api/upload/openapi.json", "application/json"),
    ] {
        let response = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}\n{}", nginx.log());
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(content_type.starts_with(kind), "{path}: {content_type}");
    }
    // A raw chunk of a second upload, streamed.
    let response = http
        .post(format!("{base}/api/upload"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let second = response.json::<serde_json::Value>().await.unwrap()["folder"]
        .as_str()
        .unwrap()
        .to_owned();
    let chunk = original_rows(0, 20_000, true);
    let response = http
        .put(format!("{base}/api/upload/{second}/chunks/0"))
        .bearer_auth(&token)
        .header("content-type", "text/csv")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunk
                .chunks(64 * 1024)
                .map(|piece| Ok::<_, std::io::Error>(piece.to_vec()))
                .collect::<Vec<_>>(),
        )))
        .send()
        .await
        .unwrap();
    let status = response.status();
    assert_eq!(
        status,
        200,
        "{}\n{}",
        response.text().await.unwrap(),
        nginx.log()
    );
    let response = http
        .get(format!("{base}/api/upload/{folder}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(count(&env.db, "chunks").await, 2);
    assert_eq!(read_streams(&env.prefix, 2, 2).await.len(), 2);
    let log = nginx.log();
    assert!(
        !log.contains("buffered to a temporary file"),
        "nginx spooled a body instead of streaming it:\n{log}"
    );

    // The docs pages stay public.
    for path in [
        "/api/upload/docs",
        "/api/upload/openapi.json",
        "/api/auth/docs",
    ] {
        let status = http
            .get(format!("{base}{path}"))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200, "{path}");
    }

    // Bad and missing tokens: refused by auth_request; the upload handlers never run.
    let before = scrape(&gateway).await;
    let (files, ledger) = (env.files_left().len(), count(&env.db, "chunks").await);
    let file = original_rows(0, 10, true);
    let refused = [
        http.post(format!("{base}/api/upload/{folder}"))
            .bearer_auth("not-a-token")
            .header("X-MD5-Hash", md5_hex(&file))
            .multipart(multipart(file.clone())),
        http.put(format!("{base}/api/upload/{second}/chunks/1"))
            .bearer_auth("eyJhbGciOiJIUzI1NiJ9.e30.forged")
            .body(file.clone()),
        http.post(format!("{base}/api/upload/{folder}"))
            .multipart(multipart(file.clone())),
    ];
    for request in refused {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401);
        assert!(response.headers().contains_key("www-authenticate"));
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    let after = scrape(&gateway).await;
    for route in ["upload_multipart", "upload_chunk"] {
        let labels = [("route", route)];
        assert_eq!(
            counter(&after, "ingest_http_requests_total", &labels),
            counter(&before, "ingest_http_requests_total", &labels),
            "{route} ran for a refused request"
        );
    }
    let verify_401 = [("route", "auth_verify"), ("status", "401")];
    assert!(
        counter(&after, "ingest_http_requests_total", &verify_401)
            >= counter(&before, "ingest_http_requests_total", &verify_401) + 3.0,
        "the refusals should come from the gateway's /api/auth/verify"
    );
    assert_eq!(env.files_left().len(), files);
    assert_eq!(count(&env.db, "chunks").await, ledger);

    // The body limit is the gateway's chunk limit, refused from the headers alone.
    let status = status_of_headers_only(
        &nginx.url,
        &format!("PUT /api/upload/{second}/chunks/1"),
        &token,
        64 * 1024 * 1024 + 1,
    )
    .await;
    assert_eq!(status, 413);
    drop(nginx);
    gateway.stop().await;
}

/// Sends only a request's headers (declaring `length` body bytes) and returns the status.
async fn status_of_headers_only(base: &str, request_line: &str, token: &str, length: u64) -> u16 {
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{request_line} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: text/csv\r\nContent-Length: {length}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(Duration::from_secs(10), async {
        while !response.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "connection closed before a response");
            response.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("a response to the headers");
    let text = String::from_utf8_lossy(&response);
    text.split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"))
}

/// Token requests from `source` through nginx; the gateway allows one per client address.
async fn token_status(base: &str, source: IpAddr, forged: Option<&str>) -> (u16, bool) {
    let http = reqwest::Client::builder()
        .local_address(source)
        .build()
        .unwrap();
    let mut request = http
        .post(format!("{base}/api/auth/token"))
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET));
    if let Some(forged) = forged {
        request = request
            .header("X-Forwarded-For", forged)
            .header("X-Real-IP", forged);
    }
    let response = request.send().await.unwrap();
    // The gateway's refusals carry its RateLimit headers; nginx's own do not.
    let from_gateway = response.headers().contains_key("ratelimit-limit");
    (response.status().as_u16(), from_gateway)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_sees_the_address_nginx_saw() {
    // One request per client address per ~17 minutes: the second request of a key is refused.
    const TINY: [&str; 2] = ["--rate-limit-per-sec=0.001", "--rate-limit-burst=0"];
    let a: IpAddr = "127.0.0.2".parse().unwrap();
    let b: IpAddr = "127.0.0.3".parse().unwrap();

    let trusting = async {
        let env = TestEnv::new(2).await;
        let trusted = [&TINY[..], &["--trusted-proxies=127.0.0.1"]].concat();
        let gateway = start_gateway(&env, &trusted).await;
        let nginx = Nginx::start(gateway.addr).await;
        assert_eq!(token_status(&nginx.url, a, None).await, (200, false));
        assert_eq!(token_status(&nginx.url, a, None).await, (429, true));
        // Another client has its own budget: the gateway keyed on the address nginx saw.
        assert_eq!(token_status(&nginx.url, b, None).await, (200, false));
        // Addresses a client claims are overwritten by nginx, not believed.
        let forged = Some("127.0.0.9");
        assert_eq!(token_status(&nginx.url, a, forged).await, (429, true));
        drop(nginx);
        gateway.stop().await;
    };
    // The same traffic to a gateway that does not trust nginx: everyone shares nginx's budget.
    let distrusting = async {
        let env = TestEnv::new(2).await;
        let gateway = start_gateway(&env, &TINY).await;
        let nginx = Nginx::start(gateway.addr).await;
        assert_eq!(token_status(&nginx.url, a, None).await, (200, false));
        assert_eq!(token_status(&nginx.url, b, None).await, (429, true));
        drop(nginx);
        gateway.stop().await;
    };
    tokio::join!(trusting, distrusting);
}
