//! Tokens: issuing and verifying HS256 JWTs, with a `kid` header so the signing key can rotate
//! (the previous key is still accepted while tokens signed with it live).
//!
//! Expiry is checked against an injected clock rather than by jsonwebtoken itself, so tests can
//! control time.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use ingest_runtime::settings::Secret;

use crate::clients::Scope;

/// Seconds since the Unix epoch; injected so tests control time.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    })
}

/// The claims of our tokens.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub iat: u64,
    pub exp: u64,
    #[serde(default)]
    pub nbf: Option<u64>,
    pub jti: String,
    /// Space-separated scopes (RFC 8693 style); tokens issued before scopes existed have none
    /// and count as `upload`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The client's token generation when it was issued ([`crate::clients::Grant`]): a token
    /// of an older one was revoked. Tokens from before it existed have 0.
    #[serde(default)]
    pub gen: u32,
}

impl Claims {
    /// The scopes the token carries.
    pub fn scopes(&self) -> Vec<Scope> {
        match &self.scope {
            None => vec![Scope::Upload],
            Some(scope) => scope.split(' ').filter_map(Scope::parse).collect(),
        }
    }
}

/// Why a bearer token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("not authenticated")]
    Missing,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("invalid token")]
    Invalid,
}

struct Key {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl Key {
    fn new(secret: &Secret) -> Self {
        let digest = Sha256::digest(secret.expose().as_bytes());
        Self {
            kid: hex::encode(&digest[..8]),
            encoding: EncodingKey::from_secret(secret.expose().as_bytes()),
            decoding: DecodingKey::from_secret(secret.expose().as_bytes()),
        }
    }
}

/// Issues and verifies tokens.
pub struct Tokens {
    current: Key,
    previous: Option<Key>,
    ttl_secs: u64,
    clock: Clock,
}

/// A freshly issued token.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IssuedToken {
    /// A JWT (HS256); send it as `Authorization: Bearer <token>`.
    pub token: String,
    #[schema(value_type = String, example = "Bearer")]
    pub token_type: &'static str,
    /// Seconds it stays valid.
    #[schema(example = 3600)]
    pub expires_in: u64,
    /// The scopes it carries, space-separated (as OAuth 2 token responses say it).
    #[schema(example = "upload")]
    pub scope: String,
}

impl Tokens {
    pub fn new(current: &Secret, previous: Option<&Secret>, ttl_secs: u64, clock: Clock) -> Self {
        Self {
            current: Key::new(current),
            previous: previous.map(Key::new),
            ttl_secs,
            clock,
        }
    }

    /// Signs a token for `client_id`, carrying `scopes`, with the current key.
    pub fn issue(&self, client_id: &str, scopes: &[Scope]) -> IssuedToken {
        self.issue_in(client_id, scopes, 0)
    }

    /// Signs a token for `client_id` of token generation `generation`.
    pub fn issue_in(&self, client_id: &str, scopes: &[Scope], generation: u32) -> IssuedToken {
        let now = (self.clock)();
        let claims = Claims {
            sub: client_id.to_owned(),
            iat: now,
            exp: now + self.ttl_secs,
            nbf: None,
            jti: uuid::Uuid::new_v4().to_string(),
            scope: Some(
                scopes
                    .iter()
                    .map(|scope| scope.as_str())
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            gen: generation,
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.current.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &self.current.encoding)
            .expect("HS256 signing should not fail");
        IssuedToken {
            token,
            token_type: "Bearer",
            expires_in: self.ttl_secs,
            scope: scopes
                .iter()
                .map(|scope| scope.as_str())
                .collect::<Vec<_>>()
                .join(" "),
        }
    }

    /// Verifies a token and returns its claims.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
        if header.alg != Algorithm::HS256 {
            return Err(TokenError::Invalid);
        }
        let key = match header.kid.as_deref() {
            Some(kid) if kid == self.current.kid => &self.current,
            Some(kid) => match &self.previous {
                Some(previous) if previous.kid == kid => previous,
                _ => return Err(TokenError::Invalid),
            },
            None => &self.current,
        };
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_exp = false;
        validation.required_spec_claims = ["exp", "sub"].iter().map(|s| s.to_string()).collect();
        let claims = jsonwebtoken::decode::<Claims>(token, &key.decoding, &validation)
            .map_err(|_| TokenError::Invalid)?
            .claims;
        let now = (self.clock)();
        if claims.exp <= now {
            return Err(TokenError::Expired);
        }
        if claims.nbf.is_some_and(|nbf| nbf > now) || claims.iat > now + 60 {
            return Err(TokenError::NotYetValid);
        }
        Ok(claims)
    }
}

/// The token of an `Authorization: Bearer` header.
pub fn bearer(headers: &http::HeaderMap) -> Result<&str, TokenError> {
    let value = headers
        .get(http::header::AUTHORIZATION)
        .ok_or(TokenError::Missing)?
        .to_str()
        .map_err(|_| TokenError::Invalid)?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(TokenError::Invalid),
    }
}

/// The `client_id:client_secret` of an `Authorization: Basic` header.
pub fn basic_credentials(headers: &http::HeaderMap) -> Option<(String, String)> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") || encoded.len() > 1024 {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    fn clock_at(now: Arc<AtomicU64>) -> Clock {
        Arc::new(move || now.load(Ordering::SeqCst))
    }

    #[test]
    fn tokens_carry_their_scopes_and_old_tokens_count_as_upload() {
        let tokens = Tokens::new(&Secret::new("0123456789abcdef"), None, 60, system_clock());
        let admin = tokens.issue("root", &[Scope::Upload, Scope::Admin]);
        assert_eq!(admin.scope, "upload admin");
        let claims = tokens.verify(&admin.token).unwrap();
        assert_eq!(claims.scopes(), vec![Scope::Upload, Scope::Admin]);
        let mut old = claims;
        old.scope = None;
        assert_eq!(old.scopes(), vec![Scope::Upload]);
        old.scope = Some("admin nonsense".into());
        assert_eq!(old.scopes(), vec![Scope::Admin]);
    }

    #[test]
    fn tokens_expire_by_the_injected_clock() {
        let now = Arc::new(AtomicU64::new(1_000_000));
        let tokens = Tokens::new(
            &Secret::new("0123456789abcdef"),
            None,
            3600,
            clock_at(now.clone()),
        );
        let issued = tokens.issue("alice", &[Scope::Upload]);
        assert_eq!(tokens.verify(&issued.token).unwrap().sub, "alice");
        now.store(1_000_000 + 3599, Ordering::SeqCst);
        assert!(tokens.verify(&issued.token).is_ok());
        now.store(1_000_000 + 3600, Ordering::SeqCst);
        assert_eq!(
            tokens.verify(&issued.token).unwrap_err(),
            TokenError::Expired
        );
    }

    #[test]
    fn rotation_accepts_the_previous_key_only() {
        let clock = system_clock();
        let old = Secret::new("old-secret-0123456789");
        let new = Secret::new("new-secret-0123456789");
        let before = Tokens::new(&old, None, 60, clock.clone()).issue("bob", &[Scope::Upload]);
        let rotated = Tokens::new(&new, Some(&old), 60, clock.clone());
        assert!(rotated.verify(&before.token).is_ok());
        let dropped = Tokens::new(&new, None, 60, clock);
        assert_eq!(
            dropped.verify(&before.token).unwrap_err(),
            TokenError::Invalid
        );
    }

    #[test]
    fn refuses_alg_none_tampering_and_garbage() {
        let tokens = Tokens::new(&Secret::new("0123456789abcdef"), None, 60, system_clock());
        let good = tokens.issue("carol", &[Scope::Upload]).token;
        let parts: Vec<&str> = good.split('.').collect();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let none_header = b64.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let forged = format!("{none_header}.{}.", parts[1]);
        assert_eq!(tokens.verify(&forged).unwrap_err(), TokenError::Invalid);
        let tampered_payload =
            b64.encode(br#"{"sub":"mallory","iat":1,"exp":99999999999,"jti":"x"}"#);
        let tampered = format!("{}.{tampered_payload}.{}", parts[0], parts[2]);
        assert_eq!(tokens.verify(&tampered).unwrap_err(), TokenError::Invalid);
        assert_eq!(tokens.verify("garbage").unwrap_err(), TokenError::Invalid);
        let other = Tokens::new(
            &Secret::new("another-key-0123456"),
            None,
            60,
            system_clock(),
        );
        assert_eq!(other.verify(&good).unwrap_err(), TokenError::Invalid);
    }
}
