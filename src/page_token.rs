//! Opaque keyset page tokens: the sort key and id of the last row served, tied to the query that
//! produced them so that a token cannot be replayed against a different query.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageToken {
    pub key: String,
    pub id: Uuid,
}

#[derive(Serialize, Deserialize)]
struct Wire {
    k: String,
    i: Uuid,
    q: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageTokenError {
    #[error("is not a page token from this service")]
    Malformed,
    #[error("belongs to a different query")]
    OtherQuery,
}

impl PageToken {
    pub fn encode(&self, query_fingerprint: &str) -> String {
        let wire = Wire {
            k: self.key.clone(),
            i: self.id,
            q: fnv1a(query_fingerprint),
        };
        // Serializing a struct of strings and integers cannot fail.
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&wire).unwrap_or_default())
    }

    pub fn decode(token: &str, query_fingerprint: &str) -> Result<Self, PageTokenError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| PageTokenError::Malformed)?;
        let wire: Wire = serde_json::from_slice(&bytes).map_err(|_| PageTokenError::Malformed)?;
        if wire.q != fnv1a(query_fingerprint) {
            return Err(PageTokenError::OtherQuery);
        }
        Ok(Self {
            key: wire.k,
            id: wire.i,
        })
    }
}

/// Keyset pages ordered by a time, then an id (newest first, or oldest first: the store decides).
pub struct TimePages<'a> {
    pub fingerprint: &'a str,
}

impl TimePages<'_> {
    /// Where the page after `token` starts: `None` for the first page.
    pub fn after(&self, token: &str) -> Result<Option<(DateTime<Utc>, Uuid)>, PageTokenError> {
        if token.is_empty() {
            return Ok(None);
        }
        let token = PageToken::decode(token, self.fingerprint)?;
        let at = DateTime::parse_from_rfc3339(&token.key).map_err(|_| PageTokenError::Malformed)?;
        Ok(Some((at.with_timezone(&Utc), token.id)))
    }

    /// Keeps `limit` items of a `limit + 1` fetch; the token of the next page, if there is one,
    /// points after the last item kept.
    pub fn page<T>(
        &self,
        mut items: Vec<T>,
        limit: usize,
        key: impl Fn(&T) -> (DateTime<Utc>, Uuid),
    ) -> (Vec<T>, Option<String>) {
        let more = items.len() > limit;
        items.truncate(limit);
        let next = match (more, items.last()) {
            (true, Some(last)) => {
                let (at, id) = key(last);
                let key = at.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
                Some(PageToken { key, id }.encode(self.fingerprint))
            }
            _ => None,
        };
        (items, next)
    }
}

/// FNV-1a: stable across builds and instances, unlike `DefaultHasher`.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_for_the_same_query_only() {
        let token = PageToken {
            key: "ada lovelace".into(),
            id: Uuid::new_v4(),
        };
        let encoded = token.encode("name:ada");
        assert_eq!(PageToken::decode(&encoded, "name:ada"), Ok(token));
        assert_eq!(
            PageToken::decode(&encoded, "name:bob"),
            Err(PageTokenError::OtherQuery)
        );
        assert_eq!(
            PageToken::decode("not a token", "name:ada"),
            Err(PageTokenError::Malformed)
        );
    }
}
