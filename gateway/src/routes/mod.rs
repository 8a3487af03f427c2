//! The route table: every endpoint, parsed once from method and path into a [`Route`], which
//! names its metric label, its rate-limit class and whether it needs an API client; the
//! handlers live in one module per resource.
//!
//! - [`auth`]: tokens (`/api/auth/token`, nginx's `/api/auth/verify`) and authenticating a
//!   request's bearer token.
//! - [`uploads`]: upload sessions (create, list, status, declare the chunk count, abort or
//!   undo).
//! - [`chunks`]: receiving chunks, raw (`PUT .../chunks/{n}`) or the original's multipart file,
//!   and retrying a failed one (`POST .../chunks/{n}/retry`).
//! - [`rejected`]: an upload's rejected rows as a streamed CSV or JSON-lines download.
//! - [`datasets`]: the datasets an upload may name (`/api/datasets`).
//! - [`clients`]: API clients (`/api/clients`), for a client with the `admin` scope.
//! - [`operations`]: what `/health`, `/ready` and `/metrics` look at (answered by
//!   `ingest_runtime::probes`), never rate limited.
//!
//! Adding an endpoint: a variant here, its line in [`Route::parse`] and its row (label, scope,
//! rate-limit class) in `Route::rules` (the compiler lists every match that misses it), and
//! its handler in the resource's module, called from [`crate::app`]'s dispatch.

pub mod auth;
pub mod chunks;
pub mod clients;
pub mod datasets;
pub mod operations;
pub mod rejected;
pub mod uploads;

use http::Method;

use crate::clients::Scope;
use crate::ratelimit::RouteClass;

/// One endpoint, with the path parameters it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'p> {
    Health,
    Ready,
    Metrics,
    /// The docs page or the OpenAPI document.
    Docs,
    /// The upload console's files (`/console`).
    Console,
    /// `GET /api/auth/verify`: nginx's `auth_request` subrequest.
    VerifyToken,
    /// `POST /api/auth/token`.
    IssueToken,
    /// `/api/auth/token` with another method: 405.
    TokenMethodNotAllowed,
    /// `POST /api/upload` (or `/api/upload/`, as the original's curl script sends it).
    CreateUpload,
    /// `GET /api/uploads`: the caller's uploads, newest first, a page at a time.
    ListUploads,
    /// `POST /api/upload/{folder}`: the original's multipart file.
    SendFile {
        folder: &'p str,
    },
    /// `GET /api/upload/{folder}`.
    Status {
        folder: &'p str,
    },
    /// `DELETE /api/upload/{folder}[?rows=true]`: abort it, or undo its import.
    Withdraw {
        folder: &'p str,
    },
    /// `POST /api/upload/{folder}/complete`.
    Complete {
        folder: &'p str,
    },
    /// `GET /api/upload/{folder}/rejected`: every rejected row, streamed.
    Rejected {
        folder: &'p str,
    },
    /// `PUT /api/upload/{folder}/chunks/{n}`.
    PutChunk {
        folder: &'p str,
        chunk: &'p str,
    },
    /// `POST /api/upload/{folder}/chunks/{n}/retry`: load a failed chunk again.
    RetryChunk {
        folder: &'p str,
        chunk: &'p str,
    },
    /// `GET /api/datasets`.
    ListDatasets,
    /// `GET /api/clients`.
    ListClients,
    /// `POST /api/clients`.
    AddClient,
    /// `DELETE /api/clients/{client_id}`.
    DisableClient {
        client_id: &'p str,
    },
    /// Any other request under `/api/auth`, `/api/upload` or `/api/clients`: 404, but only after its rate limit
    /// and authentication, so probing paths costs what using them does.
    UnknownApi(RouteClass),
    /// Anything else: 404.
    NotFound,
}

impl<'p> Route<'p> {
    pub fn parse(method: &Method, path: &'p str) -> Self {
        let segments: Vec<&'p str> = path.split('/').collect();
        let get = method == Method::GET;
        match (method, segments.as_slice()) {
            (&Method::GET, ["", "health"]) => Self::Health,
            (&Method::GET, ["", "ready"]) => Self::Ready,
            (&Method::GET, ["", "metrics"]) => Self::Metrics,
            _ if get && crate::docs::is_docs_path(path) => Self::Docs,
            _ if get && crate::console::is_console_path(path) => Self::Console,
            (&Method::GET, ["", "api", "auth", "verify"]) => Self::VerifyToken,
            (&Method::POST, ["", "api", "auth", "token"]) => Self::IssueToken,
            (_, ["", "api", "auth", "token"]) => Self::TokenMethodNotAllowed,
            (_, ["", "api", "auth", ..]) => Self::UnknownApi(RouteClass::Auth),
            (&Method::GET, ["", "api", "datasets"] | ["", "api", "datasets", ""]) => {
                Self::ListDatasets
            }
            (&Method::GET, ["", "api", "clients"] | ["", "api", "clients", ""]) => {
                Self::ListClients
            }
            (&Method::POST, ["", "api", "clients"] | ["", "api", "clients", ""]) => Self::AddClient,
            (&Method::DELETE, ["", "api", "clients", client_id]) if !client_id.is_empty() => {
                Self::DisableClient { client_id }
            }
            (_, ["", "api", "clients", ..]) => Self::UnknownApi(RouteClass::Auth),
            (&Method::POST, ["", "api", "upload"] | ["", "api", "upload", ""]) => {
                Self::CreateUpload
            }
            (&Method::GET, ["", "api", "uploads"] | ["", "api", "uploads", ""]) => {
                Self::ListUploads
            }
            (&Method::POST, ["", "api", "upload", folder]) => Self::SendFile { folder },
            (&Method::GET, ["", "api", "upload", folder]) => Self::Status { folder },
            (&Method::DELETE, ["", "api", "upload", folder]) => Self::Withdraw { folder },
            (&Method::POST, ["", "api", "upload", folder, "complete"]) => Self::Complete { folder },
            (&Method::GET, ["", "api", "upload", folder, "rejected"]) => Self::Rejected { folder },
            (&Method::PUT, ["", "api", "upload", folder, "chunks", chunk]) => {
                Self::PutChunk { folder, chunk }
            }
            (&Method::POST, ["", "api", "upload", folder, "chunks", chunk, "retry"]) => {
                Self::RetryChunk { folder, chunk }
            }
            // A GET of anything below an upload counts against the status quota, as a real
            // status query would.
            (&Method::GET, ["", "api", "upload", _, ..]) => Self::UnknownApi(RouteClass::Status),
            (_, ["", "api", "upload", ..]) => Self::UnknownApi(RouteClass::Upload),
            _ => Self::NotFound,
        }
    }

    /// A low-cardinality name for metrics (never ids).
    pub fn label(&self) -> &'static str {
        self.rules().label
    }

    /// The scope a caller needs, `None` for what needs no API client (or only to be one).
    pub fn scope(&self) -> Option<Scope> {
        self.rules().scope
    }

    /// The rate-limit class, `None` for what is never limited: probes and scrapers must always
    /// get through, and nginx's verify subrequest guards an upload that is limited when it
    /// arrives (nginx turns any answer but 2xx/401/403 into 500).
    pub fn class(&self) -> Option<RouteClass> {
        self.rules().class
    }

    /// Each route's label, scope and rate-limit class, side by side: one row per route.
    fn rules(&self) -> Rules {
        use RouteClass::{Auth, Status, Upload};
        let (admin, uploader) = (Some(Scope::Admin), Some(Scope::Upload));
        let (label, scope, class) = match self {
            Self::Health => ("health", None, None),
            Self::Ready => ("ready", None, None),
            Self::Metrics => ("metrics", None, None),
            Self::Docs => ("docs", None, None),
            Self::Console => ("console", None, None),
            Self::VerifyToken => ("auth_verify", None, None),
            Self::IssueToken | Self::TokenMethodNotAllowed => ("auth_token", None, Some(Auth)),
            Self::CreateUpload => ("upload_create", uploader, Some(Upload)),
            Self::ListUploads => ("upload_list", uploader, Some(Status)),
            Self::SendFile { .. } => ("upload_multipart", uploader, Some(Upload)),
            Self::Status { .. } => ("upload_status", uploader, Some(Status)),
            Self::Withdraw { .. } => ("upload_delete", uploader, Some(Upload)),
            Self::Rejected { .. } => ("upload_rejected", uploader, Some(Status)),
            Self::Complete { .. } => ("upload_complete", uploader, Some(Upload)),
            Self::PutChunk { .. } => ("upload_chunk", uploader, Some(Upload)),
            Self::RetryChunk { .. } => ("upload_chunk_retry", uploader, Some(Upload)),
            Self::ListDatasets => ("datasets_list", uploader, Some(Status)),
            Self::ListClients => ("clients_list", admin, Some(Status)),
            // Adding a client hashes its secret (argon2, deliberately slow), as a token does.
            Self::AddClient => ("clients_add", admin, Some(Auth)),
            Self::DisableClient { .. } => ("clients_disable", admin, Some(Upload)),
            Self::UnknownApi(class) => ("other", None, Some(*class)),
            Self::NotFound => ("other", None, None),
        };
        Rules {
            label,
            scope,
            class,
        }
    }
}

/// A route's row in [`Route::rules`].
struct Rules {
    label: &'static str,
    scope: Option<Scope>,
    class: Option<RouteClass>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(method: Method, path: &str) -> (Route<'_>, &'static str, Option<RouteClass>) {
        let route = Route::parse(&method, path);
        (route, route.label(), route.class())
    }

    #[test]
    fn each_endpoint_has_its_label_and_class() {
        use RouteClass::{Auth, Status, Upload};
        let folder = "7f1c";
        let chunk = "3";
        let cases = [
            (Method::GET, "/health", Route::Health, "health", None),
            (
                Method::GET,
                "/api/auth/verify",
                Route::VerifyToken,
                "auth_verify",
                None,
            ),
            (
                Method::POST,
                "/api/auth/token",
                Route::IssueToken,
                "auth_token",
                Some(Auth),
            ),
            (
                Method::GET,
                "/api/auth/token",
                Route::TokenMethodNotAllowed,
                "auth_token",
                Some(Auth),
            ),
            (
                Method::POST,
                "/api/upload",
                Route::CreateUpload,
                "upload_create",
                Some(Upload),
            ),
            (
                Method::POST,
                "/api/upload/",
                Route::CreateUpload,
                "upload_create",
                Some(Upload),
            ),
            (
                Method::POST,
                "/api/upload/7f1c",
                Route::SendFile { folder },
                "upload_multipart",
                Some(Upload),
            ),
            (
                Method::GET,
                "/api/upload/7f1c",
                Route::Status { folder },
                "upload_status",
                Some(Status),
            ),
            (
                Method::PUT,
                "/api/upload/7f1c/chunks/3",
                Route::PutChunk { folder, chunk },
                "upload_chunk",
                Some(Upload),
            ),
            (
                Method::POST,
                "/api/upload/7f1c/chunks/3/retry",
                Route::RetryChunk { folder, chunk },
                "upload_chunk_retry",
                Some(Upload),
            ),
            (
                Method::GET,
                "/api/uploads",
                Route::ListUploads,
                "upload_list",
                Some(Status),
            ),
            (
                Method::GET,
                "/api/clients",
                Route::ListClients,
                "clients_list",
                Some(Status),
            ),
            (
                Method::POST,
                "/api/clients",
                Route::AddClient,
                "clients_add",
                Some(Auth),
            ),
            (
                Method::DELETE,
                "/api/clients/ops",
                Route::DisableClient { client_id: "ops" },
                "clients_disable",
                Some(Upload),
            ),
        ];
        for (method, path, expected, label, class) in cases {
            assert_eq!(route(method, path), (expected, label, class), "{path}");
        }
        assert_eq!(route(Method::POST, "/api/uploads").0, Route::NotFound);
        assert_eq!(
            route(Method::DELETE, "/api/clients/").0,
            Route::UnknownApi(Auth)
        );
        assert_eq!(route(Method::GET, "/api/upload/docs").0, Route::Docs);
        assert_eq!(
            route(Method::POST, "/api/upload/docs").0,
            Route::SendFile { folder: "docs" }
        );
    }

    #[test]
    fn every_label_is_registered_at_start() {
        let samples = [
            (Method::GET, "/health"),
            (Method::GET, "/ready"),
            (Method::GET, "/metrics"),
            (Method::GET, "/api/upload/docs"),
            (Method::GET, "/console"),
            (Method::GET, "/api/auth/verify"),
            (Method::POST, "/api/auth/token"),
            (Method::POST, "/api/upload"),
            (Method::GET, "/api/uploads"),
            (Method::POST, "/api/upload/f"),
            (Method::GET, "/api/upload/f"),
            (Method::GET, "/api/upload/f/rejected"),
            (Method::DELETE, "/api/upload/f"),
            (Method::POST, "/api/upload/f/complete"),
            (Method::PUT, "/api/upload/f/chunks/0"),
            (Method::POST, "/api/upload/f/chunks/0/retry"),
            (Method::GET, "/api/clients"),
            (Method::POST, "/api/clients"),
            (Method::DELETE, "/api/clients/c"),
            (Method::GET, "/nowhere"),
        ];
        for (method, path) in samples {
            let label = Route::parse(&method, path).label();
            assert!(
                crate::metrics::ROUTES.contains(&label),
                "{label} is not in ROUTES"
            );
        }
    }

    /// One request for every API endpoint.
    const API_SAMPLES: &[(&str, &str)] = &[
        ("POST", "/api/auth/token"),
        ("GET", "/api/auth/verify"),
        ("POST", "/api/upload"),
        ("GET", "/api/uploads"),
        ("POST", "/api/upload/7f1c"),
        ("GET", "/api/upload/7f1c"),
        ("DELETE", "/api/upload/7f1c"),
        ("POST", "/api/upload/7f1c/complete"),
        ("GET", "/api/upload/7f1c/rejected"),
        ("PUT", "/api/upload/7f1c/chunks/3"),
        ("POST", "/api/upload/7f1c/chunks/3/retry"),
        ("GET", "/api/datasets"),
        ("GET", "/api/clients"),
        ("POST", "/api/clients"),
        ("DELETE", "/api/clients/ops"),
    ];

    /// Whether concrete `path` fits OpenAPI template `template` (`{name}` matches a segment).
    fn fits(template: &str, path: &str) -> bool {
        let (template, path): (Vec<_>, Vec<_>) =
            (template.split('/').collect(), path.split('/').collect());
        template.len() == path.len()
            && template
                .iter()
                .zip(&path)
                .all(|(t, p)| t == p || (t.starts_with('{') && !p.is_empty()))
    }

    #[test]
    fn every_route_has_a_described_operation_in_the_generated_openapi() {
        let spec: serde_json::Value = serde_json::from_str(crate::openapi::json()).unwrap();
        let mut operations = Vec::new();
        for (template, item) in spec["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                operations.push((method.to_uppercase(), template.clone(), operation.clone()));
            }
        }
        for (method, path) in API_SAMPLES {
            let parsed = Route::parse(&Method::from_bytes(method.as_bytes()).unwrap(), path);
            assert!(
                !matches!(parsed, Route::UnknownApi(_) | Route::NotFound),
                "{method} {path} is not a route"
            );
            let found = operations
                .iter()
                .filter(|(m, template, _)| m == method && fits(template, path))
                .collect::<Vec<_>>();
            assert_eq!(
                found.len(),
                1,
                "{method} {path}: one operation in the OpenAPI"
            );
            let operation = &found[0].2;
            for field in ["operationId", "summary", "description"] {
                let text = operation[field].as_str().unwrap_or_default();
                assert!(!text.trim().is_empty(), "{method} {path} lacks its {field}");
            }
        }
        // And the document holds nothing the route table does not serve.
        for (method, template, _) in &operations {
            let path = template
                .replace("{folder}", "7f1c")
                .replace("{n}", "3")
                .replace("{client_id}", "ops");
            let parsed = Route::parse(&Method::from_bytes(method.as_bytes()).unwrap(), &path);
            assert!(
                !matches!(parsed, Route::UnknownApi(_) | Route::NotFound | Route::Docs),
                "the OpenAPI documents {method} {template}, which no route serves"
            );
        }
        assert_eq!(operations.len(), API_SAMPLES.len());
        // A new endpoint's label goes in `metrics::ROUTES`: this list must then name it too.
        let sampled: std::collections::BTreeSet<&str> = API_SAMPLES
            .iter()
            .map(|(method, path)| {
                Route::parse(&Method::from_bytes(method.as_bytes()).unwrap(), path).label()
            })
            .collect();
        let registered: std::collections::BTreeSet<&str> = crate::metrics::ROUTES
            .iter()
            .copied()
            .filter(|label| {
                !["health", "ready", "metrics", "docs", "console", "other"].contains(label)
            })
            .collect();
        assert_eq!(sampled, registered, "every API label has a sample here");
    }

    #[test]
    fn client_routes_need_admin_and_upload_routes_need_upload() {
        assert_eq!(
            Route::parse(&Method::GET, "/api/clients").scope(),
            Some(Scope::Admin)
        );
        assert_eq!(
            Route::parse(&Method::DELETE, "/api/clients/x").scope(),
            Some(Scope::Admin)
        );
        assert_eq!(
            Route::parse(&Method::PUT, "/api/upload/f/chunks/1").scope(),
            Some(Scope::Upload)
        );
        assert_eq!(Route::parse(&Method::POST, "/api/auth/token").scope(), None);
    }

    #[test]
    fn unknown_paths_under_the_api_are_limited_like_their_neighbours() {
        assert_eq!(
            route(Method::GET, "/api/upload/7f1c/chunks"),
            (
                Route::UnknownApi(RouteClass::Status),
                "other",
                Some(RouteClass::Status)
            )
        );
        assert_eq!(
            route(Method::DELETE, "/api/upload/7f1c/chunks/1").0,
            Route::UnknownApi(RouteClass::Upload)
        );
        assert_eq!(
            route(Method::POST, "/api/auth/verify").0,
            Route::UnknownApi(RouteClass::Auth)
        );
        assert_eq!(
            route(Method::POST, "/health"),
            (Route::NotFound, "other", None)
        );
        assert_eq!(route(Method::GET, "/"), (Route::NotFound, "other", None));
    }
}
