//! Standard Webhooks signatures (<https://www.standardwebhooks.com/>, "Symmetric signatures").
//!
//! A secret is `whsec_` and the base64 of its key bytes. The signed content is
//! `{webhook-id}.{webhook-timestamp}.{body}`; the signature is `v1,` and the base64 of its
//! HMAC-SHA256 under the key. `webhook-signature` holds one or more signatures, space-separated:
//! during a secret rotation's overlap, one per valid secret.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac as _};
use rand::RngCore as _;
use sha2::Sha256;

const PREFIX: &str = "whsec_";
/// Key lengths a given secret may have (the specification asks for 24 to 64 bytes).
const KEY_BYTES: std::ops::RangeInclusive<usize> = 24..=64;

/// A signing secret, checked. Its `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    text: String,
    key: Vec<u8>,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// A new random secret (32 key bytes).
    pub fn generate() -> Self {
        let mut key = vec![0_u8; 32];
        rand::rng().fill_bytes(&mut key);
        Self {
            text: format!("{PREFIX}{}", STANDARD.encode(&key)),
            key,
        }
    }

    /// Parses `whsec_<base64>`; `None` when it is not one, or its key is too short or long.
    pub fn parse(text: &str) -> Option<Self> {
        let key = STANDARD.decode(text.strip_prefix(PREFIX)?).ok()?;
        KEY_BYTES.contains(&key.len()).then(|| Self {
            text: text.to_owned(),
            key,
        })
    }

    /// The secret as given to the receiver (`whsec_...`).
    pub fn expose(&self) -> &str {
        &self.text
    }

    /// `v1,<base64 HMAC-SHA256(id.timestamp.body)>`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        #[allow(clippy::expect_used)]
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

/// The `webhook-signature` header: a signature per valid secret, space-separated.
pub fn signature_header(secrets: &[&Secret], id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets
        .iter()
        .map(|secret| secret.sign(id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The specification's own example (standard-webhooks, spec/standard-webhooks.md).
    #[test]
    fn the_specifications_example_signs_the_same() {
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("a secret");
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn secrets_are_checked_and_never_shown_by_debug() {
        assert!(Secret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_none());
        assert!(Secret::parse("whsec_not base64!").is_none());
        assert!(
            Secret::parse("whsec_c2hvcnQ=").is_none(),
            "5 bytes is too short"
        );
        let made = Secret::generate();
        assert_eq!(Secret::parse(made.expose()), Some(made.clone()));
        assert_eq!(format!("{made:?}"), "Secret(..)");
        let other = Secret::generate();
        let both = signature_header(&[&made, &other], "sb_1", 1, b"{}");
        assert_eq!(both.split(' ').count(), 2);
        assert!(both.starts_with(&made.sign("sb_1", 1, b"{}")));
    }
}
