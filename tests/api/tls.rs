//! TLS and mutual TLS on the gRPC listener (certificates made by rcgen for the test).

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, SanType};
use switchboard::auth::Role;
use switchboard::client::BearerToken;
use switchboard::config::TlsSettings;
use switchboard::proto::v1;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use tonic::service::interceptor::InterceptedService;

use crate::helpers::{Authed, TestOptions, TestTls, admin, spawn_app_with, token};

struct Pki {
    ca: String,
    server: (String, String),
    client: (String, String),
    /// A client certificate naming gateway pbx-1 (URI SAN `urn:switchboard:gateway:pbx-1`).
    gateway: (String, String),
}

fn pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("ca");
    let leaf = |sans: Vec<SanType>| {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.subject_alt_names = sans;
        let cert = params.signed_by(&key, &ca).expect("signed");
        (cert.pem(), key.serialize_pem())
    };
    let dns = |name: &str| SanType::DnsName(name.try_into().expect("ia5"));
    Pki {
        ca: ca.pem(),
        server: leaf(vec![dns("localhost")]),
        client: leaf(vec![dns("pbx-1")]),
        gateway: leaf(vec![SanType::URI(
            "urn:switchboard:gateway:pbx-1".try_into().expect("ia5"),
        )]),
    }
}

fn client_config(pki: &Pki, with_identity: bool) -> ClientTlsConfig {
    let config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca))
        .domain_name("localhost");
    if with_identity {
        config.identity(Identity::from_pem(&pki.client.0, &pki.client.1))
    } else {
        config
    }
}

fn gateway_config(pki: &Pki) -> ClientTlsConfig {
    ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca))
        .domain_name("localhost")
        .identity(Identity::from_pem(&pki.gateway.0, &pki.gateway.1))
}

fn mutual_tls(pki: &Pki) -> TlsSettings {
    TlsSettings {
        cert_pem: pki.server.0.clone(),
        key_pem: pki.server.1.clone(),
        client_ca_pem: Some(pki.ca.clone()),
    }
}

/// `channel` with no header credential at all, or with `token`.
fn with_token(channel: Channel, token: Option<&str>) -> Authed {
    InterceptedService::new(channel, BearerToken::new(token).expect("header"))
}

async fn report(channel: Authed, gateway_id: &str) -> Result<v1::CallEventAck, tonic::Status> {
    let event = v1::CallEvent {
        gateway_id: gateway_id.into(),
        event_id: format!("{gateway_id}-e1"),
        call_id: "c1".into(),
        r#type: v1::CallEventType::Offered.into(),
        occurred_at: Some(prost_types::Timestamp {
            seconds: 1_800_000_000,
            nanos: 0,
        }),
        caller_number: "+14155550100".into(),
        ..Default::default()
    };
    v1::call_event_service_client::CallEventServiceClient::new(channel)
        .report_call_event(v1::ReportCallEventRequest { event: Some(event) })
        .await
        .map(|r| r.into_inner().ack.expect("ack"))
}

async fn lookup(channel: Channel) -> Result<v1::LookupResponse, tonic::Status> {
    let mut pops = v1::screen_pop_service_client::ScreenPopServiceClient::new(admin(channel));
    pops.lookup(v1::LookupRequest {
        caller_number: "+14155550100".into(),
        ..Default::default()
    })
    .await
    .map(|r| r.into_inner())
}

#[tokio::test]
async fn the_server_speaks_tls_and_refuses_plaintext() {
    let pki = pki();
    let server = TlsSettings {
        cert_pem: pki.server.0.clone(),
        key_pem: pki.server.1.clone(),
        client_ca_pem: None,
    };
    let app = spawn_app_with(TestOptions {
        tls: Some(TestTls {
            server,
            client: client_config(&pki, false),
        }),
        ..Default::default()
    })
    .await;
    app.create_customer("Ada Lovelace", &["+14155550100"]).await;
    let pop = lookup(app.raw_channel.clone())
        .await
        .expect("a pop over TLS");
    assert_eq!(
        pop.pop.and_then(|p| p.card).expect("card").display_name,
        "Ada Lovelace"
    );

    let plaintext = Channel::from_shared(app.address.clone())
        .expect("uri")
        .connect()
        .await;
    let refused = match plaintext {
        Err(_) => true,
        Ok(channel) => lookup(channel).await.is_err(),
    };
    assert!(refused, "a plaintext client gets nothing");
}

#[tokio::test]
async fn mutual_tls_requires_a_client_certificate_from_the_ca() {
    let pki = pki();
    let server = TlsSettings {
        cert_pem: pki.server.0.clone(),
        key_pem: pki.server.1.clone(),
        client_ca_pem: Some(pki.ca.clone()),
    };
    let app = spawn_app_with(TestOptions {
        tls: Some(TestTls {
            server,
            client: client_config(&pki, true),
        }),
        ..Default::default()
    })
    .await;
    lookup(app.raw_channel.clone())
        .await
        .expect("a client with a certificate from the CA");

    let https = app.address.replace("http://", "https://");
    let without_certificate = Channel::from_shared(https)
        .expect("uri")
        .tls_config(client_config(&pki, false))
        .expect("tls");
    let refused = match without_certificate.connect().await {
        Err(_) => true,
        Ok(channel) => lookup(channel).await.is_err(),
    };
    assert!(refused, "no client certificate, no service");
}

#[tokio::test]
async fn a_gateway_certificate_is_a_credential_for_that_gateway_only() {
    let pki = pki();
    let app = spawn_app_with(TestOptions {
        tls: Some(TestTls {
            server: mutual_tls(&pki),
            client: gateway_config(&pki),
        }),
        ..Default::default()
    })
    .await;
    let certificate_only = || with_token(app.raw_channel.clone(), None);

    let ack = report(certificate_only(), "pbx-1")
        .await
        .expect("the certificate authenticates pbx-1");
    assert_eq!(ack.outcome(), v1::AckOutcome::Accepted);
    let other = report(certificate_only(), "pbx-2")
        .await
        .expect_err("not its gateway");
    assert_eq!(other.code(), tonic::Code::PermissionDenied);
    let pii = v1::screen_pop_service_client::ScreenPopServiceClient::new(certificate_only())
        .lookup(v1::LookupRequest {
            caller_number: "+14155550100".into(),
            ..Default::default()
        })
        .await
        .expect_err("a gateway reads no customer data");
    assert_eq!(pii.code(), tonic::Code::PermissionDenied);

    // A header credential for another gateway on this connection contradicts the certificate.
    let pbx2 = token(Role::Gateway, "pbx-2", Some("pbx-2"));
    let contradicted = report(with_token(app.raw_channel.clone(), Some(&pbx2)), "pbx-2")
        .await
        .expect_err("certificate and token disagree");
    assert_eq!(contradicted.code(), tonic::Code::Unauthenticated);
}

#[tokio::test]
async fn a_client_certificate_that_names_no_gateway_is_not_a_credential() {
    let pki = pki();
    let app = spawn_app_with(TestOptions {
        tls: Some(TestTls {
            server: mutual_tls(&pki),
            client: client_config(&pki, true),
        }),
        ..Default::default()
    })
    .await;
    let anonymous = report(with_token(app.raw_channel.clone(), None), "pbx-1")
        .await
        .expect_err("a DNS name is not a gateway identity");
    assert_eq!(anonymous.code(), tonic::Code::Unauthenticated);
}
