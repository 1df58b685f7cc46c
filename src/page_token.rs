//! Pages of every list: [`PageRequest`] parses a request's `page_size` and `page_token` the same
//! way for all of them, and the tokens are opaque keysets (the sort key and id of the last row
//! served) tied to the query that produced them, so that a token cannot be replayed against a
//! different query.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::validation::Violations;

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

/// The bounds of a list's `page_size`.
#[derive(Debug, Clone, Copy)]
pub struct PageSizes {
    /// What `page_size = 0` (unset) gives.
    pub default: u32,
    pub max: u32,
}

/// Lists a person reads a page of: cases, customers, interactions, feedback, campaigns.
pub const SHORT_PAGES: PageSizes = PageSizes {
    default: 20,
    max: 100,
};

/// Lists a system reads through: agents, audit events.
pub const LONG_PAGES: PageSizes = PageSizes {
    default: 100,
    max: 500,
};

/// A list request's page, parsed once at the edge by every list: its size, and the token of
/// where it starts, decoded against the query it belongs to by the context that runs the query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    size: u32,
    token: String,
}

/// What a keyset page is ordered by, as it travels in a [`PageToken`].
pub trait PageKey: Sized {
    fn to_token(&self) -> PageToken;
    /// `None` when the token's key is not one of these (a token forged or from another list).
    fn from_token(token: PageToken) -> Option<Self>;
}

impl PageRequest {
    /// `page_size`: 0 means the default, 1 to the maximum is taken as it is, anything else is a
    /// field violation (and the default is used, so other fields are still checked).
    pub fn parse(v: &mut Violations, page_size: i32, page_token: &str, sizes: PageSizes) -> Self {
        let size = match u32::try_from(page_size) {
            Ok(0) => sizes.default,
            Ok(size) if size <= sizes.max => size,
            _ => {
                v.add(
                    "page_size",
                    format!(
                        "must be between 1 and {} (0 means {})",
                        sizes.max, sizes.default
                    ),
                );
                sizes.default
            }
        };
        Self {
            size,
            token: page_token.to_owned(),
        }
    }

    /// The first page of `size` items.
    pub fn first(size: u32) -> Self {
        Self {
            size,
            token: String::new(),
        }
    }

    pub fn size(&self) -> usize {
        self.size as usize
    }

    /// What a store fetches: one more than the page, to know whether another page follows.
    pub fn fetch_limit(&self) -> i64 {
        i64::from(self.size) + 1
    }

    /// Where this page starts in the query `fingerprint` names: `None` for the first page.
    pub fn after<K: PageKey>(&self, fingerprint: &str) -> Result<Option<K>, PageTokenError> {
        if self.token.is_empty() {
            return Ok(None);
        }
        let token = PageToken::decode(&self.token, fingerprint)?;
        K::from_token(token)
            .map(Some)
            .ok_or(PageTokenError::Malformed)
    }

    /// Keeps this page's items of a [`Self::fetch_limit`] fetch, with the token of the next page
    /// (pointing after the last item kept) when there is one.
    pub fn page<T, K: PageKey>(
        &self,
        fingerprint: &str,
        mut items: Vec<T>,
        key: impl Fn(&T) -> K,
    ) -> (Vec<T>, Option<String>) {
        let more = items.len() > self.size();
        items.truncate(self.size());
        let next = match (more, items.last()) {
            (true, Some(last)) => Some(key(last).to_token().encode(fingerprint)),
            _ => None,
        };
        (items, next)
    }
}

/// A time, then an id (newest or oldest first: the store decides).
impl PageKey for (DateTime<Utc>, Uuid) {
    fn to_token(&self) -> PageToken {
        PageToken {
            key: self.0.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            id: self.1,
        }
    }

    fn from_token(token: PageToken) -> Option<Self> {
        let at = DateTime::parse_from_rfc3339(&token.key).ok()?;
        Some((at.with_timezone(&Utc), token.id))
    }
}

/// A text sort key, then an id.
impl PageKey for (String, Uuid) {
    fn to_token(&self) -> PageToken {
        PageToken {
            key: self.0.clone(),
            id: self.1,
        }
    }

    fn from_token(token: PageToken) -> Option<Self> {
        Some((token.key, token.id))
    }
}

/// A unique text key (an agent id).
impl PageKey for String {
    fn to_token(&self) -> PageToken {
        PageToken {
            key: self.clone(),
            id: Uuid::nil(),
        }
    }

    fn from_token(token: PageToken) -> Option<Self> {
        Some(token.key)
    }
}

/// A unique sequence number (an audit event's).
impl PageKey for i64 {
    fn to_token(&self) -> PageToken {
        PageToken {
            key: self.to_string(),
            id: Uuid::nil(),
        }
    }

    fn from_token(token: PageToken) -> Option<Self> {
        token.key.parse().ok()
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

    #[test]
    fn page_sizes_default_at_zero_and_name_their_bounds() {
        let mut v = Violations::new();
        assert_eq!(PageRequest::parse(&mut v, 0, "", SHORT_PAGES).size(), 20);
        assert_eq!(PageRequest::parse(&mut v, 100, "", SHORT_PAGES).size(), 100);
        assert!(v.is_empty());
        assert_eq!(PageRequest::parse(&mut v, 101, "", SHORT_PAGES).size(), 20);
        assert_eq!(PageRequest::parse(&mut v, -1, "", SHORT_PAGES).size(), 20);
        let messages: Vec<String> = v
            .iter()
            .map(|f| format!("{}: {}", f.field, f.description))
            .collect();
        assert_eq!(
            messages,
            ["page_size: must be between 1 and 100 (0 means 20)"; 2]
        );
    }

    #[test]
    fn a_page_hands_out_the_token_of_the_next_and_that_token_starts_it() {
        let at = |s: i64| DateTime::from_timestamp(s, 0).expect("time");
        let rows: Vec<(DateTime<Utc>, Uuid)> = (0..3).map(|s| (at(s), Uuid::new_v4())).collect();
        let first = PageRequest::first(2);
        let (kept, next) = first.page("q", rows.clone(), |r| *r);
        assert_eq!(kept, rows[..2]);
        let next = next.expect("a third row follows");
        let mut v = Violations::new();
        let second = PageRequest::parse(&mut v, 2, &next, SHORT_PAGES);
        assert_eq!(
            second.after::<(DateTime<Utc>, Uuid)>("q"),
            Ok(Some(rows[1]))
        );
        assert_eq!(
            second.after::<(DateTime<Utc>, Uuid)>("other"),
            Err(PageTokenError::OtherQuery)
        );
        // A token whose key is not this list's kind of key is malformed, not a panic.
        assert_eq!(second.after::<i64>("q"), Err(PageTokenError::Malformed));
        let (last, none) = second.page("q", rows[2..].to_vec(), |r| *r);
        assert_eq!((last.len(), none), (1, None));
    }
}
