//! API clients over the API, for a client with the `admin` scope: `GET /api/clients` lists them,
//! `POST /api/clients` adds one, `DELETE /api/clients/{client_id}` disables one. The same
//! operations as `gateway client ...` ([`crate::clients`]), which stays for bootstrap.

use http::{Request, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;

use ingest_contract::settings::Secret;

use crate::app::{AppState, HttpResponse};
use crate::clients::{generate_secret, scope_names, ClientsError, Scope};
use crate::errors::{json_response, ApiError};
use crate::routes::auth::Caller;
use crate::routes::uploads::read_json;

/// The body of `POST /api/clients`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewClient {
    client_id: String,
    /// Generated (and answered once) when absent.
    client_secret: Option<String>,
    /// Default `["upload"]`.
    scopes: Option<Vec<String>>,
}

/// `GET /api/clients`: every client with its scopes, creation time and whether it is disabled.
pub async fn list(state: &AppState) -> Result<HttpResponse, ApiError> {
    let clients = state.clients.list().await.map_err(clients_error)?;
    let clients: Vec<_> = clients
        .iter()
        .map(|client| {
            json!({"client_id": client.client_id, "scopes": scope_names(&client.scopes),
                   "created_at": client.created_at, "disabled": client.disabled})
        })
        .collect();
    Ok(json_response(StatusCode::OK, &json!({"clients": clients})))
}

/// `POST /api/clients`: 201 with the client, and its secret if it was generated; 409 if the id is
/// taken (a secret is never replaced over the API).
pub async fn add(state: &AppState, request: Request<Incoming>) -> Result<HttpResponse, ApiError> {
    let new: NewClient = read_json(request)
        .await?
        .ok_or_else(|| ApiError::BadRequest("a JSON body with client_id is required".into()))?;
    let scopes = match &new.scopes {
        None => vec![Scope::Upload],
        Some(names) => Scope::parse_all(names.iter().map(String::as_str)).map_err(clients_error)?,
    };
    let generated = new.client_secret.is_none();
    let secret = new
        .client_secret
        .map(Secret::new)
        .unwrap_or_else(generate_secret);
    state
        .clients
        .create(&new.client_id, &secret, &scopes)
        .await
        .map_err(clients_error)?;
    tracing::info!(client_id = %new.client_id, scopes = ?scope_names(&scopes), "API client added over the API");
    let mut body = json!({"client_id": new.client_id, "scopes": scope_names(&scopes)});
    if generated {
        // Shown once: only its hash is stored.
        body["client_secret"] = json!(secret.expose());
    }
    Ok(json_response(StatusCode::CREATED, &body))
}

/// `DELETE /api/clients/{client_id}`: disables the client (its secret stops working at once, its
/// live tokens within seconds). An admin cannot disable itself: that could leave no admin.
pub async fn disable(
    state: &AppState,
    caller: &Caller,
    client_id: &str,
) -> Result<HttpResponse, ApiError> {
    if client_id == caller.client_id {
        return Err(ApiError::Conflict(
            "a client cannot disable itself; use another admin or `gateway client disable`".into(),
        ));
    }
    state
        .clients
        .disable(client_id)
        .await
        .map_err(clients_error)?;
    tracing::info!(client_id, by = %caller.client_id, "API client disabled over the API");
    Ok(json_response(
        StatusCode::OK,
        &json!({"client_id": client_id, "disabled": true}),
    ))
}

fn clients_error(err: ClientsError) -> ApiError {
    match err {
        ClientsError::BadId | ClientsError::WeakSecret | ClientsError::BadScope(_) => {
            ApiError::BadRequest(err.to_string())
        }
        ClientsError::Exists(_) => ApiError::Conflict(err.to_string()),
        ClientsError::Unknown(_) => ApiError::NotFound,
        other => ApiError::Internal(other.into()),
    }
}
