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
    let mut conn = crate::db::acquire(pool).await?;
    super::store::insert_key(&mut conn, &hash(&key), subject, role, gateway_id).await?;
    Ok(key)
}

/// The principal of a live (not revoked) key.
pub async fn lookup(pool: &PgPool, key_hash: &[u8; 32]) -> sqlx::Result<Option<Principal>> {
    let mut conn = crate::db::acquire(pool).await?;
    super::store::live_key(&mut conn, key_hash).await
}
