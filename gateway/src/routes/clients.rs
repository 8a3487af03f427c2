//! API clients over the API, for a client with the `admin` scope: `GET /api/clients` lists them,
//! `POST /api/clients` adds one, `DELETE /api/clients/{client_id}` disables one. The same
//! operations as `gateway client ...` ([`crate::clients`]), which stays for bootstrap.

use http::{Request, StatusCode};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use ingest_runtime::settings::Secret;

use crate::app::{AppState, HttpResponse};
use crate::clients::{generate_secret, scope_names, ClientsError, Scope};
use crate::errors::{json_response, ApiError, ErrorBody};
use crate::routes::auth::Caller;
use crate::routes::uploads::read_json;

/// The body of `POST /api/clients`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewClient {
    /// 1-64 characters of A-Z a-z 0-9 . _ -
    #[schema(example = "acme-etl")]
    pub client_id: String,
    /// At least 8 characters; generated (and answered once) when absent.
    pub client_secret: Option<String>,
    /// `upload`, `admin`; default `["upload"]`.
    pub scopes: Option<Vec<String>>,
}

/// One API client.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClientEntry {
    pub client_id: String,
    #[schema(value_type = Vec<String>, example = json!(["upload"]))]
    pub scopes: Vec<&'static str>,
    pub created_at: String,
    pub disabled: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ClientList {
    pub clients: Vec<ClientEntry>,
}

/// A client just added.
#[derive(Debug, Serialize, ToSchema)]
pub struct AddedClient {
    pub client_id: String,
    #[schema(value_type = Vec<String>)]
    pub scopes: Vec<&'static str>,
    /// Only when it was generated: shown this once, only its hash is stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DisabledClient {
    pub client_id: String,
    pub disabled: bool,
}

/// List API clients (admin).
///
/// Every client with its scopes, creation time and whether it is disabled.
#[utoipa::path(get, path = "/api/clients", tag = "admin", operation_id = "listClients",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every client", body = ClientList),
        (status = 403, description = "The token lacks the admin scope", body = ErrorBody)))]
pub async fn list(state: &AppState) -> Result<HttpResponse, ApiError> {
    let clients = state.clients.list().await.map_err(clients_error)?;
    let clients = clients
        .into_iter()
        .map(|client| ClientEntry {
            scopes: scope_names(&client.scopes),
            client_id: client.client_id,
            created_at: client.created_at,
            disabled: client.disabled,
        })
        .collect();
    Ok(json_response(StatusCode::OK, &ClientList { clients }))
}

/// Add an API client (admin).
///
/// 201 with the client, and its secret if it was generated; 409 if the id is taken (a secret
/// is never replaced over the API: `gateway client add` does that).
#[utoipa::path(post, path = "/api/clients", tag = "admin", operation_id = "addClient",
    security(("bearer" = [])),
    request_body = NewClient,
    responses(
        (status = 201, description = "Added", body = AddedClient),
        (status = 400, description = "Bad id, short secret or unknown scope", body = ErrorBody),
        (status = 403, description = "The token lacks the admin scope", body = ErrorBody),
        (status = 409, description = "The id exists", body = ErrorBody)))]
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
    let added = AddedClient {
        client_id: new.client_id,
        scopes: scope_names(&scopes),
        // Shown once: only its hash is stored.
        client_secret: generated.then(|| secret.expose().to_owned()),
    };
    Ok(json_response(StatusCode::CREATED, &added))
}

/// Disable an API client (admin).
///
/// Its secret stops working at once, its live tokens within seconds. An admin cannot disable
/// itself: that could leave no admin.
#[utoipa::path(delete, path = "/api/clients/{client_id}", tag = "admin", operation_id = "disableClient",
    security(("bearer" = [])),
    params(("client_id" = String, Path, description = "The client to disable")),
    responses(
        (status = 200, description = "Disabled", body = DisabledClient),
        (status = 403, description = "The token lacks the admin scope", body = ErrorBody),
        (status = 404, description = "No such client", body = ErrorBody),
        (status = 409, description = "A client cannot disable itself", body = ErrorBody)))]
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
    let disabled = DisabledClient {
        client_id: client_id.to_owned(),
        disabled: true,
    };
    Ok(json_response(StatusCode::OK, &disabled))
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
