//! TLS and mutual TLS on the gRPC listener (certificates made by rcgen for the test).

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use switchboard::config::TlsSettings;
use switchboard::proto::v1;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::helpers::{TestOptions, TestTls, admin, spawn_app_with};

struct Pki {
    ca: String,
    server: (String, String),
    client: (String, String),
}

fn pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("ca");
    let leaf = |name: &str| {
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(vec![name.to_owned()])
            .expect("params")
            .signed_by(&key, &ca)
            .expect("signed");
        (cert.pem(), key.serialize_pem())
    };
    Pki {
        ca: ca.pem(),
        server: leaf("localhost"),
        client: leaf("pbx-1"),
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
