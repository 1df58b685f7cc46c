//! API keys for gateways and services: shown once at creation, stored only as a SHA-256 hash.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use super::{Principal, Role};

/// Every key starts with this, so `authorization: Bearer` can carry a key as well as a JWT (a JWT
/// starts with its base64url header, `eyJ`).
pub const PREFIX: &str = "sbk_";

pub fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Creates a key and returns it; only its hash is stored.
pub async fn create(
    pool: &PgPool,
    subject: &str,
    role: Role,
    gateway_id: Option<&str>,
) -> sqlx::Result<String> {
    let secret: [u8; 32] = rand::random();
    let key = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(secret));
    sqlx::query(
        "INSERT INTO api_keys (key_hash, subject, role, gateway_id) VALUES ($1, $2, $3, $4)",
    )
    .bind(hash(&key).as_slice())
    .bind(subject)
    .bind(role.as_str())
    .bind(gateway_id)
    .execute(&mut *crate::db::acquire(pool).await?)
    .await?;
    Ok(key)
}

/// The principal of a live (not revoked) key.
pub async fn lookup(pool: &PgPool, key_hash: &[u8; 32]) -> sqlx::Result<Option<Principal>> {
    let row: Option<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT subject, role, gateway_id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
    )
    .bind(key_hash.as_slice())
    .fetch_optional(&mut *crate::db::acquire(pool).await?)
    .await?;
    Ok(row.and_then(|(subject, role, gateway_id)| {
        Some(Principal {
            subject,
            role: Role::parse(&role)?,
            gateway_id,
        })
    }))
}
