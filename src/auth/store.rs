//! The API keys table (`api_keys`), with queries checked against the schema at compile time.

use sqlx::PgConnection;

use super::{Principal, Role};

pub async fn insert_key(
    conn: &mut PgConnection,
    key_hash: &[u8; 32],
    subject: &str,
    role: Role,
    gateway_id: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO api_keys (key_hash, subject, role, gateway_id) VALUES ($1, $2, $3, $4)",
        key_hash.as_slice(),
        subject,
        role.as_str(),
        gateway_id,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The principal of a key that is not revoked (`None`: unknown, revoked, or of a role this
/// version does not know).
pub async fn live_key(
    conn: &mut PgConnection,
    key_hash: &[u8; 32],
) -> sqlx::Result<Option<Principal>> {
    let row = sqlx::query!(
        "SELECT subject, role, gateway_id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
        key_hash.as_slice(),
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.and_then(|row| {
        Some(Principal {
            subject: row.subject,
            role: Role::parse(&row.role)?,
            gateway_id: row.gateway_id,
        })
    }))
}
