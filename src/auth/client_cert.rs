//! Gateways may authenticate with their mutual-TLS client certificate instead of a header.
//!
//! The TLS handshake has already checked the certificate against `--tls-client-ca`; what is left is
//! to read which gateway it names. A certificate names a gateway with a URI subject alternative
//! name `urn:switchboard:gateway:<gateway-id>` (a URI, not a DNS name or the common name, so that a
//! server certificate for some host can never pass for a gateway). A certificate without one is a
//! transport credential only, and the request needs a header credential as before.

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

const GATEWAY_URI_PREFIX: &str = "urn:switchboard:gateway:";

/// The gateway id a DER certificate names, if it names exactly one valid id.
pub fn gateway_id(der: &[u8]) -> Option<String> {
    let (_, certificate) = X509Certificate::from_der(der).ok()?;
    let names = certificate.subject_alternative_name().ok()??;
    let mut ids = names
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) => uri.strip_prefix(GATEWAY_URI_PREFIX),
            _ => None,
        });
    let id = ids.next()?;
    let valid = (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    (valid && ids.next().is_none()).then(|| id.to_owned())
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, KeyPair, SanType};

    use super::*;

    fn certificate(sans: Vec<SanType>) -> Vec<u8> {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.subject_alt_names = sans;
        let key = KeyPair::generate().expect("key");
        params.self_signed(&key).expect("cert").der().to_vec()
    }

    fn uri(value: &str) -> SanType {
        SanType::URI(value.try_into().expect("ia5"))
    }

    #[test]
    fn a_gateway_uri_names_the_gateway() {
        let der = certificate(vec![
            SanType::DnsName("pbx1.example.com".try_into().expect("ia5")),
            uri("urn:switchboard:gateway:pbx-1"),
        ]);
        assert_eq!(gateway_id(&der).as_deref(), Some("pbx-1"));
    }

    #[test]
    fn other_names_and_ambiguous_or_bad_ids_name_no_gateway() {
        let dns_only = certificate(vec![SanType::DnsName("pbx-1".try_into().expect("ia5"))]);
        assert_eq!(gateway_id(&dns_only), None);
        let two = certificate(vec![
            uri("urn:switchboard:gateway:pbx-1"),
            uri("urn:switchboard:gateway:pbx-2"),
        ]);
        assert_eq!(gateway_id(&two), None);
        let bad = certificate(vec![uri("urn:switchboard:gateway:pbx 1/../x")]);
        assert_eq!(gateway_id(&bad), None);
        let empty = certificate(vec![uri("urn:switchboard:gateway:")]);
        assert_eq!(gateway_id(&empty), None);
        assert_eq!(gateway_id(b"not a certificate"), None);
    }
}
