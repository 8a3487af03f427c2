//! Tokens: issuing one for client credentials, checking one for nginx's `auth_request`, and
//! authenticating a request's bearer token.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::json;

use crate::app::{AppState, HttpResponse};
use crate::auth;
use crate::clients::Scope;
use crate::errors::{json_response, ApiError, ErrorBody};
use crate::metrics as names;

/// Issue a bearer token for client credentials.
///
/// HTTP Basic with `client_id:client_secret`. The token is valid for an hour
/// (`INGEST_TOKEN_TTL_SECS`) and carries the client's scopes (`upload`, `admin`); a disabled
/// client's tokens stop working within seconds.
#[utoipa::path(post, path = "/api/auth/token", tag = "auth", operation_id = "issueToken",
    security(("basic" = [])),
    responses(
        (status = 200, description = "A token", body = crate::auth::IssuedToken),
        (status = 401, description = "Missing or invalid client credentials", body = ErrorBody),
        (status = 429, description = "Rate limited (see Retry-After)", body = ErrorBody)))]
pub async fn issue_token(
    state: &AppState,
    request: &Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    let Some((id, secret)) = auth::basic_credentials(request.headers()) else {
        metrics::counter!(names::AUTH_FAILURES, "reason" => "no_credentials").increment(1);
        return Err(ApiError::Unauthorized(
            "client credentials required (HTTP Basic)",
        ));
    };
    let grant = state
        .clients
        .verify(&id, &secret)
        .await
        .map_err(|err| ApiError::Internal(err.into()))?;
    let Some(grant) = grant else {
        metrics::counter!(names::AUTH_FAILURES, "reason" => "bad_credentials").increment(1);
        return Err(ApiError::Unauthorized("invalid client credentials"));
    };
    Ok(json_response(
        StatusCode::OK,
        &json!(state.tokens.issue_in(&id, &grant.scopes, grant.generation)),
    ))
}

/// Check a bearer token (nginx's `auth_request`).
///
/// 204 for a valid token of an enabled client, 401 otherwise. Never rate limited.
#[utoipa::path(get, path = "/api/auth/verify", tag = "auth", operation_id = "verifyToken",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Valid"),
        (status = 401, description = "Missing, invalid or expired token, or a disabled client", body = ErrorBody)))]
pub async fn verify(
    state: &AppState,
    request: &Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    authenticate(state, request).await?;
    Ok(Response::builder()
        .status(StatusCode::NO_CONTENT)
        .body(Full::new(Bytes::new()))
        .expect("a static response should build"))
}

/// Who sent a request, and what it may do.
#[derive(Debug, Clone)]
pub struct Caller {
    pub client_id: String,
    /// What both the token carries and the client holds now.
    pub scopes: Vec<Scope>,
}

impl Caller {
    /// 403 unless the caller holds `scope`.
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.scopes.contains(&scope) {
            return Ok(());
        }
        metrics::counter!(names::AUTH_FAILURES, "reason" => "scope").increment(1);
        Err(ApiError::Forbidden(match scope {
            Scope::Upload => "this token lacks the upload scope",
            Scope::Admin => "this token lacks the admin scope",
        }))
    }
}

/// The API client a request's bearer token names, if the token is valid and the client enabled.
pub async fn authenticate(
    state: &AppState,
    request: &Request<Incoming>,
) -> Result<Caller, ApiError> {
    let verified = auth::bearer(request.headers()).and_then(|token| state.tokens.verify(token));
    match verified {
        Ok(claims) => {
            // A valid signature is not enough: the client must still exist and be enabled, must
            // not have revoked the token since, and it keeps only the scopes it still holds.
            let now = state.clients.scopes_now(&claims.sub, claims.gen).await;
            let now = now.map_err(|err| {
                tracing::warn!(error = %err, "cannot check whether a client is enabled");
                ApiError::Unavailable("cannot check the client now; retry later".into())
            })?;
            let Some(now) = now else {
                metrics::counter!(names::AUTH_FAILURES, "reason" => "client_disabled").increment(1);
                return Err(ApiError::Unauthorized("client is disabled or unknown"));
            };
            let scopes = claims
                .scopes()
                .into_iter()
                .filter(|scope| now.contains(scope))
                .collect();
            Ok(Caller {
                client_id: claims.sub,
                scopes,
            })
        }
        Err(err) => {
            let reason = match err {
                auth::TokenError::Missing => "missing",
                auth::TokenError::Expired => "expired",
                auth::TokenError::NotYetValid => "not_yet_valid",
                auth::TokenError::Invalid => "invalid",
            };
            metrics::counter!(names::AUTH_FAILURES, "reason" => reason).increment(1);
            Err(ApiError::Unauthorized(match err {
                auth::TokenError::Missing => "not authenticated",
                auth::TokenError::Expired => "token expired",
                auth::TokenError::NotYetValid => "token not yet valid",
                auth::TokenError::Invalid => "invalid token",
            }))
        }
    }
}
