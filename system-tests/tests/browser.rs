//! The docs pages in a real browser: Debian's headless Chromium (installed when missing) loads
//! `/api/upload/docs` and `/api/auth/docs` from a real gateway, with every host but the gateway's
//! unresolvable (no internet), and the rendered DOM must list every operation of the served
//! OpenAPI document. A screenshot is checked too; `INGEST_UPDATE_SCREENSHOTS=1` (or a missing file)
//! writes it to `docs/api-docs.png`. And a user's session on the page, driven by Playwright
//! (`browser/docs.mjs`): authorize, issue a real token from the page, list uploads with it.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use ingest_testkit::random_name;

use crate::support::*;

const WINDOW: (u32, u32) = (1200, 1600);

/// Runs headless Chromium on `url` with a profile of its own; returns its stdout.
async fn chromium(url: &str, action: &[String]) -> String {
    let profile = std::env::temp_dir().join(random_name("ingest-chromium-"));
    let mut command = tokio::process::Command::new(ingest_testkit::browser::chromium());
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            // Only the gateway resolves: the page must not need the internet.
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            // Let the page's fetch of openapi.json and its rendering finish before the dump.
            "--virtual-time-budget=10000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(action)
        .arg(url)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    // A few seconds normally; the deadline only guards against a hang on a loaded machine.
    let output = tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .expect("chromium should finish within 120 s")
        .expect("chromium should run");
    let _ = std::fs::remove_dir_all(&profile);
    assert!(output.status.success(), "chromium failed on {url}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The operation ids of the operations Swagger UI rendered (`id="operations-<tag>-<id>"`).
fn rendered_operations(dom: &str) -> BTreeSet<String> {
    dom.split("id=\"operations-")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .filter(|id| !id.starts_with("tag-")) // the tag sections' own ids
        .filter_map(|tag_and_id| tag_and_id.split_once('-').map(|(_, id)| id.to_owned()))
        .collect()
}

fn png_size(png: &[u8]) -> (u32, u32) {
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert_eq!(&png[12..16], b"IHDR");
    let be = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
    (be(16), be(20))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docs_pages_render_every_operation_in_chromium() {
    let env = TestEnv::new(2).await;
    let gateway = start_gateway(&env, &[]).await;
    let url = format!("http://{}", gateway.addr);
    let spec: serde_json::Value = reqwest::get(format!("{url}/api/upload/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let expected: BTreeSet<String> = spec["paths"]
        .as_object()
        .expect("paths")
        .values()
        .flat_map(|item| item.as_object().into_iter().flat_map(|ops| ops.values()))
        .filter_map(|op| op["operationId"].as_str().map(str::to_owned))
        .collect();
    for required in [
        "issueToken",
        "createUpload",
        "uploadFile",
        "putChunk",
        "uploadStatus",
    ] {
        assert!(expected.contains(required), "openapi.json lacks {required}");
    }

    let shot_dir = std::env::temp_dir().join(random_name("ingest-shot-"));
    std::fs::create_dir_all(&shot_dir).unwrap();
    let shot = shot_dir.join("api-docs.png");
    let upload_url = format!("{url}/api/upload/docs");
    let auth_url = format!("{url}/api/auth/docs");
    let screenshot_args = [
        format!("--screenshot={}", shot.display()),
        format!("--window-size={},{}", WINDOW.0, WINDOW.1),
    ];
    let dump = ["--dump-dom".to_owned()];
    let (upload_dom, auth_dom, _) = tokio::join!(
        chromium(&upload_url, &dump),
        chromium(&auth_url, &dump),
        chromium(&upload_url, &screenshot_args),
    );

    for (url, dom) in [(&upload_url, &upload_dom), (&auth_url, &auth_dom)] {
        assert_eq!(
            rendered_operations(dom),
            expected,
            "operations shown on {url}"
        );
        for shown in [&spec["info"]["title"], &spec["info"]["version"]] {
            let shown = shown.as_str().unwrap();
            assert!(dom.contains(shown), "{url} should show {shown:?}");
        }
        assert!(!dom.contains("Loading…"), "{url} never finished rendering");
    }

    let png = std::fs::read(&shot).expect("chromium should write the screenshot");
    assert_eq!(png_size(&png), WINDOW);
    // A blank page of this size compresses to a few KiB; the rendered list is far larger.
    assert!(
        png.len() > 30_000,
        "screenshot looks blank ({} bytes)",
        png.len()
    );
    let kept = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/api-docs.png");
    if std::env::var_os("INGEST_UPDATE_SCREENSHOTS").is_some() || !kept.exists() {
        std::fs::copy(&shot, &kept).expect("docs/ should be writable");
    }
    let _ = std::fs::remove_dir_all(&shot_dir);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docs_page_issues_a_real_token_and_uses_it() {
    let test_env = TestEnv::new(2).await;
    let gateway = start_gateway(&test_env, &[]).await;
    let url = format!("http://{}", gateway.addr);
    let folder = connect(&gateway)
        .await
        .create(serde_json::Value::Null)
        .await;
    let env = [
        ("DOCS_URL", format!("{url}/api/upload/docs")),
        ("CLIENT_ID", CLIENT_ID.to_owned()),
        ("CLIENT_SECRET", CLIENT_SECRET.to_owned()),
    ];
    let shown =
        ingest_testkit::browser::run_driver("docs.mjs", &env, Duration::from_secs(180)).await;
    assert_eq!(shown["token_status"], 200, "{shown}");
    assert_eq!(shown["token_type"], "Bearer", "{shown}");
    assert_eq!(shown["token_scope"], "upload", "{shown}");
    assert_eq!(shown["list_status"], 200, "{shown}");
    assert_eq!(
        shown["uploads_listed"], 1,
        "the page's token lists the client's upload {folder}: {shown}"
    );
    assert_eq!(shown["blocked"], serde_json::json!([]), "no other host");
    gateway.stop().await;
}
