//! Authentication and authorization.
//!
//! Every RPC except health needs a credential:
//! - a bearer JWT (`authorization: Bearer ...`), verified with the `jsonwebtoken` crate against the
//!   configured algorithm only (HS256 with a shared secret, or RS256/ES256 with keys from a JWKS
//!   file), with `exp`, `iss`, `aud` and `sub` required and `nbf` checked. The `role` claim is one of
//!   agent, supervisor, gateway, service, admin, lookup; gateways carry a `gateway_id` claim,
//!   agents are their `sub`;
//! - or an API key (`x-api-key: ...`, or `authorization: Bearer sbk_...`), stored as a SHA-256
//!   hash (`switchboard apikey create`). The HTTP caller-ID lookups also take it as `?key=`, which
//!   their layer moves into `x-api-key` before anything logs the request
//!   ([`crate::screenpop::http`]).
//!
//! [`layer::AuthLayer`] authenticates, checks the permission table ([`permissions`]) and puts the
//! [`Principal`] in the request's extensions for the handlers' resource checks.

mod api_keys;
pub mod client_cert;
pub mod layer;
pub mod permissions;
mod rate_limit;
mod store;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

pub use self::api_keys::create as create_api_key;
pub use self::rate_limit::{RateLimit, RateLimiter};
use crate::text_enum::text_enum;

text_enum!(Role { Agent => "agent", Supervisor => "supervisor", Gateway => "gateway", Service => "service", Admin => "admin", Lookup => "lookup" });

/// Who is calling, as established by their credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The JWT `sub` or the API key's subject; for agents, the agent id.
    pub subject: String,
    pub role: Role,
    /// For gateways: the only gateway id they may report events for.
    pub gateway_id: Option<String>,
}

impl Principal {
    /// Whether this principal may act for `agent_id` (itself, or as a supervisor or admin).
    pub fn may_act_for_agent(&self, agent_id: &str) -> bool {
        match self.role {
            Role::Agent => self.subject == agent_id,
            Role::Supervisor | Role::Admin => true,
            Role::Gateway | Role::Service | Role::Lookup => false,
        }
    }

    /// Whether this principal may report events for `gateway_id`.
    pub fn may_report_for_gateway(&self, gateway_id: &str) -> bool {
        match self.role {
            Role::Gateway => self.gateway_id.as_deref() == Some(gateway_id),
            Role::Admin => true,
            _ => false,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_id: Option<String>,
    pub iss: String,
    pub aud: String,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
}

/// Where the JWT verification keys come from.
#[derive(Clone)]
pub enum JwtKeys {
    /// HS256 shared secret.
    Secret(Vec<u8>),
    /// RS256 or ES256 public keys (selected by `kid` when the token names one).
    Jwks(JwkSet),
}

#[derive(Clone)]
pub struct AuthSettings {
    pub algorithm: Algorithm,
    pub keys: JwtKeys,
    pub issuer: String,
    pub audience: String,
}

impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSettings")
            .field("algorithm", &self.algorithm)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl AuthSettings {
    /// HS256 with a fresh random secret: for `serve --dev` and tests.
    pub fn random_hs256(issuer: &str, audience: &str) -> Self {
        let secret: [u8; 32] = rand::random();
        Self {
            algorithm: Algorithm::HS256,
            keys: JwtKeys::Secret(secret.to_vec()),
            issuer: issuer.into(),
            audience: audience.into(),
        }
    }

    /// Signs a token (HS256 settings only): the dev token, and tokens in tests.
    pub fn issue(
        &self,
        subject: &str,
        role: Role,
        gateway_id: Option<&str>,
        valid_for: Duration,
    ) -> Option<String> {
        let JwtKeys::Secret(secret) = &self.keys else {
            return None;
        };
        let claims = Claims {
            sub: subject.into(),
            role: role.as_str().into(),
            gateway_id: gateway_id.map(str::to_owned),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            exp: chrono::Utc::now().timestamp() + valid_for.as_secs() as i64,
            nbf: None,
        };
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .ok()
    }
}

/// The principal the auth layer established for this request.
pub fn principal<T>(request: &tonic::Request<T>) -> Result<Principal, tonic::Status> {
    request
        .extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| tonic::Status::unauthenticated("no authenticated principal"))
}

/// The request's message, once the credential may write as the `actor` it names: an AGENT
/// credential writes as itself only; supervisors, services and admins may name the agent they act
/// for (the audit trail records the credential either way). An empty actor is left to validation
/// (INVALID_ARGUMENT).
pub fn signed<T>(request: tonic::Request<T>, actor: fn(&T) -> &str) -> Result<T, tonic::Status> {
    let principal = principal(&request)?;
    let message = request.into_inner();
    let actor = actor(&message);
    if principal.role == Role::Agent && !actor.is_empty() && principal.subject != actor {
        return Err(tonic::Status::permission_denied(
            "an agent may act only as itself: actor must be the credential's agent id",
        ));
    }
    Ok(message)
}

/// Why a request has no principal.
#[derive(Debug, thiserror::Error)]
pub enum AuthFailure {
    #[error("a credential is required (authorization: Bearer <jwt or API key>, or x-api-key)")]
    Missing,
    #[error("the credential is not valid")]
    Invalid,
    #[error("the credential could not be checked")]
    Unavailable,
}

pub struct Authenticator {
    settings: AuthSettings,
    validation: Validation,
    pool: PgPool,
    /// API keys seen recently: hash -> principal (or None for unknown/revoked), for 30 s.
    api_keys: Mutex<HashMap<[u8; 32], CachedKey>>,
}

const API_KEY_CACHE: Duration = Duration::from_secs(30);

/// What an API key resolved to, and when.
type CachedKey = (Option<Principal>, Instant);

impl Authenticator {
    pub fn new(settings: AuthSettings, pool: PgPool) -> Self {
        let mut validation = Validation::new(settings.algorithm);
        validation.set_issuer(&[&settings.issuer]);
        validation.set_audience(&[&settings.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = 30;
        Self {
            settings,
            validation,
            pool,
            api_keys: Mutex::new(HashMap::new()),
        }
    }

    pub fn settings(&self) -> &AuthSettings {
        &self.settings
    }

    /// The principal of a request: from its header credential (a JWT or an API key) or else from
    /// the gateway its verified client certificate names ([`client_cert`]). When both are present
    /// and the header names a gateway, they must name the same one. The certificate is read only
    /// when it matters (no header credential, or a gateway's), not on every request.
    pub async fn authenticate(
        &self,
        headers: &http::HeaderMap,
        certificate_gateway: impl FnOnce() -> Option<String>,
    ) -> Result<Principal, AuthFailure> {
        let from_header = if let Some(value) = headers.get(http::header::AUTHORIZATION) {
            let token = value
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .ok_or(AuthFailure::Invalid)?
                .trim();
            if token.starts_with(api_keys::PREFIX) {
                Some(self.verify_api_key(token).await?)
            } else {
                Some(self.verify_jwt(token)?)
            }
        } else if let Some(value) = headers.get("x-api-key") {
            Some(
                self.verify_api_key(value.to_str().map_err(|_| AuthFailure::Invalid)?)
                    .await?,
            )
        } else {
            None
        };
        match from_header {
            Some(principal) if principal.role != Role::Gateway => Ok(principal),
            Some(principal) => match certificate_gateway() {
                Some(gateway) if principal.gateway_id.as_deref() != Some(gateway.as_str()) => {
                    Err(AuthFailure::Invalid)
                }
                _ => Ok(principal),
            },
            None => match certificate_gateway() {
                Some(gateway) => Ok(Principal {
                    subject: gateway.clone(),
                    role: Role::Gateway,
                    gateway_id: Some(gateway),
                }),
                None => Err(AuthFailure::Missing),
            },
        }
    }

    fn verify_jwt(&self, token: &str) -> Result<Principal, AuthFailure> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthFailure::Invalid)?;
        let key = match &self.settings.keys {
            JwtKeys::Secret(secret) => DecodingKey::from_secret(secret),
            JwtKeys::Jwks(set) => {
                let jwk = match &header.kid {
                    Some(kid) => set.find(kid),
                    None if set.keys.len() == 1 => set.keys.first(),
                    None => None,
                };
                DecodingKey::from_jwk(jwk.ok_or(AuthFailure::Invalid)?)
                    .map_err(|_| AuthFailure::Invalid)?
            }
        };
        let data = jsonwebtoken::decode::<Claims>(token, &key, &self.validation)
            .map_err(|_| AuthFailure::Invalid)?;
        let role = Role::parse(&data.claims.role).ok_or(AuthFailure::Invalid)?;
        if data.claims.sub.is_empty() || (role == Role::Gateway && data.claims.gateway_id.is_none())
        {
            return Err(AuthFailure::Invalid);
        }
        Ok(Principal {
            subject: data.claims.sub,
            role,
            gateway_id: data.claims.gateway_id,
        })
    }

    async fn verify_api_key(&self, key: &str) -> Result<Principal, AuthFailure> {
        let hash = api_keys::hash(key);
        let cached = self
            .api_keys
            .lock()
            .ok()
            .and_then(|cache| cache.get(&hash).cloned());
        let principal = match cached {
            Some((principal, at)) if at.elapsed() < API_KEY_CACHE => principal,
            _ => {
                let principal = api_keys::lookup(&self.pool, &hash)
                    .await
                    .map_err(|_| AuthFailure::Unavailable)?;
                if let Ok(mut cache) = self.api_keys.lock() {
                    if cache.len() > 10_000 {
                        cache.clear();
                    }
                    cache.insert(hash, (principal.clone(), Instant::now()));
                }
                principal
            }
        };
        principal.ok_or(AuthFailure::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRIVATE_PEM: &str = include_str!("../../tests/fixtures/rs256-test-private.pem");
    const PUBLIC_PEM: &str = include_str!("../../tests/fixtures/rs256-test-public.pem");
    const JWKS: &str = include_str!("../../tests/fixtures/rs256-test-jwks.json");

    fn rs256() -> Authenticator {
        let settings = AuthSettings {
            algorithm: Algorithm::RS256,
            keys: JwtKeys::Jwks(serde_json::from_str(JWKS).expect("jwks")),
            issuer: "idp".into(),
            audience: "switchboard".into(),
        };
        let pool = sqlx::PgPool::connect_lazy("postgres://127.0.0.1:1/unused").expect("lazy pool");
        Authenticator::new(settings, pool)
    }

    fn claims() -> Claims {
        Claims {
            sub: "sup-1".into(),
            role: "supervisor".into(),
            gateway_id: None,
            iss: "idp".into(),
            aud: "switchboard".into(),
            exp: chrono::Utc::now().timestamp() + 600,
            nbf: None,
        }
    }

    #[tokio::test]
    async fn rs256_tokens_verify_against_the_jwks_and_the_public_key_is_no_hmac_secret() {
        let auth = rs256();
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("test-rs256".into());
        let key = EncodingKey::from_rsa_pem(PRIVATE_PEM.as_bytes()).expect("private key");
        let good = jsonwebtoken::encode(&header, &claims(), &key).expect("signs");
        assert_eq!(
            auth.verify_jwt(&good).map(|p| p.role).ok(),
            Some(Role::Supervisor)
        );

        // The classic confusion attack: HS256 "signed" with the server's public key.
        let forged = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims(),
            &EncodingKey::from_secret(PUBLIC_PEM.as_bytes()),
        )
        .expect("signs");
        assert!(matches!(
            auth.verify_jwt(&forged),
            Err(AuthFailure::Invalid)
        ));
    }
}
