//! `sslmode` in DATABASE_URL, against the local PostgreSQL, which serves TLS with Debian's
//! snakeoil certificate (self-signed, `CN=localhost`).

use ingest_runtime::db::{self, DbError};
use ingest_testkit::admin_url;

const SNAKEOIL: &str = "/etc/ssl/certs/ssl-cert-snakeoil.pem";
/// Trusted roots that did not sign the snakeoil certificate.
const OTHER_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

fn with_params(params: &str) -> String {
    let url = admin_url();
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{params}")
}

async fn encrypted(url: &str) -> Result<bool, DbError> {
    let client = db::connect(url).await?;
    Ok(client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await?
        .get(0))
}

#[tokio::test]
async fn sslmode_decides_whether_the_connection_is_encrypted() {
    assert!(encrypted(&with_params("sslmode=require")).await.unwrap());
    assert!(!encrypted(&with_params("sslmode=disable")).await.unwrap());
    // As libpq: `prefer` by default, so TLS when the server offers it.
    assert!(encrypted(&admin_url()).await.unwrap());
}

#[tokio::test]
async fn verify_full_and_verify_ca_with_a_root_that_did_not_sign_the_server_certificate_fail_clearly(
) {
    for mode in ["verify-full", "verify-ca"] {
        let err = encrypted(&with_params(&format!(
            "sslmode={mode}&sslrootcert={OTHER_ROOTS}"
        )))
        .await
        .expect_err("the server's certificate is not signed by those roots");
        let message = err.to_string();
        assert!(
            message.contains("certificate") && message.contains("UnknownIssuer"),
            "{mode}: {message}"
        );
    }
}

#[tokio::test]
async fn verify_modes_need_readable_roots() {
    let Err(err) = db::parse_url(&with_params(
        "sslmode=verify-ca&sslrootcert=/nonexistent/root.crt",
    )) else {
        panic!("no roots to verify against");
    };
    let message = err.to_string();
    assert!(
        message.contains("verify-ca") && message.contains("/nonexistent/root.crt"),
        "{message}"
    );
    assert!(std::path::Path::new(SNAKEOIL).exists());
}

#[tokio::test]
async fn verify_full_and_verify_ca_accept_the_certificate_their_root_signed() {
    // The snakeoil certificate is its own root and names `localhost`.
    let url = admin_url().replace("127.0.0.1", "localhost");
    let separator = if url.contains('?') { '&' } else { '?' };
    for mode in ["verify-full", "verify-ca"] {
        let url = format!("{url}{separator}sslmode={mode}&sslrootcert={SNAKEOIL}");
        assert!(encrypted(&url).await.unwrap(), "{mode}");
    }
    // verify-ca does not check the name: 127.0.0.1 is not `localhost`, verify-full refuses it.
    let by_address = with_params(&format!("sslmode=verify-ca&sslrootcert={SNAKEOIL}"));
    assert!(encrypted(&by_address).await.unwrap());
    let by_address = with_params(&format!("sslmode=verify-full&sslrootcert={SNAKEOIL}"));
    let err = encrypted(&by_address).await.unwrap_err().to_string();
    assert!(err.contains("not valid for name"), "{err}");
}
