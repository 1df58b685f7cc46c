//! A real SIP path on loopback: Kamailio with the shipped configuration
//! (`integrations/kamailio/kamailio.cfg`), `switchboard-gateway` reading its evapi stream, and SIPp
//! as the caller and as the agent's phone (`integrations/kamailio/sipp/`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use switchboard::auth::Role;
use switchboard::proto::v1;
use tokio::process::{Child, Command};

use crate::helpers::{TestApp, free_port, log_in_and_watch, spawn_app, token};

const GATEWAY: &str = "kam-1";
const DID: &str = "8005550199";
const ADA: &str = "+14155550100";

fn kamailio_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("integrations/kamailio")
}

/// Kamailio, the adapter, and where the agents' phones register.
struct SipLab {
    sip_port: u16,
    dir: tempfile::TempDir,
    _kamailio: Child,
    _gateway: Child,
}

impl SipLab {
    async fn start(app: &TestApp, lookup_key: &str) -> Self {
        let dir = tempfile::tempdir().expect("lab dir");
        let sip_port = free_port();
        let evapi_port = free_port();
        let kamailio = Command::new("kamailio")
            .args(["-DD", "-E", "-m", "64", "-M", "8", "-f"])
            .arg(kamailio_dir().join("kamailio.cfg"))
            .arg("-Y")
            .arg(dir.path())
            .args([
                "-A".to_owned(),
                format!("SIP_LISTEN=udp:127.0.0.1:{sip_port}"),
                "-A".to_owned(),
                format!("EVAPI_BIND=\"127.0.0.1:{evapi_port}\""),
                "-A".to_owned(),
                format!("CID_URL=\"{}/v1/cid/\"", app.address),
                "-A".to_owned(),
                format!("CID_KEY=\"{lookup_key}\""),
                "-A".to_owned(),
                format!("HUNT_DID=\"{DID}\""),
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("kamailio.log")).expect("log"))
            .kill_on_drop(true)
            .spawn()
            .expect("kamailio runs (scripts/test.sh installs it)");
        // The adapter connects to evapi once Kamailio listens; it retries until then.
        let mapping = dir.path().join("mapping.json");
        std::fs::write(
            &mapping,
            serde_json::json!({
                "agents": {"1001": "agent-ana", "1002": "agent-ben"},
                "queues": {DID: "support"},
            })
            .to_string(),
        )
        .expect("mapping");
        let gateway = Command::new(env!("CARGO_BIN_EXE_switchboard-gateway"))
            .arg("--evapi")
            .arg(format!("127.0.0.1:{evapi_port}"))
            .arg("--server")
            .arg(&app.address)
            .arg("--gateway-id")
            .arg(GATEWAY)
            .arg("--mapping")
            .arg(&mapping)
            .arg("--spool")
            .arg(dir.path().join("spool"))
            .env(
                "SWITCHBOARD_TOKEN",
                token(Role::Gateway, GATEWAY, Some(GATEWAY)),
            )
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("gateway.log")).expect("log"))
            .kill_on_drop(true)
            .spawn()
            .expect("the adapter runs");
        let lab = Self {
            sip_port,
            dir,
            _kamailio: kamailio,
            _gateway: gateway,
        };
        lab.wait_for_evapi(evapi_port).await;
        lab
    }

    async fn wait_for_evapi(&self, port: u16) {
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                // Give the adapter its own reconnect turn before the first call.
                tokio::time::sleep(Duration::from_millis(600)).await;
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "Kamailio never listened on evapi: {}",
            self.log("kamailio.log")
        );
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    fn kamailio(&self) -> String {
        format!("127.0.0.1:{}", self.sip_port)
    }

    fn sipp(&self, scenario: &str) -> Command {
        let mut command = Command::new("sipp");
        command
            .arg("-sf")
            .arg(kamailio_dir().join("sipp").join(scenario))
            .args(["-m", "1", "-nostdin", "-timeout", "30s"])
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        command
    }

    /// Registers `sip_user`'s phone under the hunt group, and starts it: it answers after
    /// `ring_ms`. Returns the phone and the file its received messages go to.
    async fn phone(&self, sip_user: &str, ring_ms: u64) -> (Child, PathBuf) {
        let phone_port = free_port();
        let status = self
            .sipp("register.xml")
            .args(["-key", "aor", "support", "-key", "agent", sip_user])
            .args(["-key", "phone_port", &phone_port.to_string()])
            .args(["-p", &free_port().to_string()])
            .arg(self.kamailio())
            .status()
            .await
            .expect("sipp registers");
        assert!(status.success(), "the phone registered");
        let messages = self.dir.path().join(format!("phone-{sip_user}.msg"));
        let phone = self
            .sipp("phone.xml")
            .args(["-key", "agent", sip_user, "-d", &ring_ms.to_string()])
            .args(["-p", &phone_port.to_string(), "-trace_msg", "-message_file"])
            .arg(&messages)
            .spawn()
            .expect("the phone waits for calls");
        tokio::time::sleep(Duration::from_millis(300)).await;
        (phone, messages)
    }

    /// A caller dialing the hunt group, talking `talk_ms` once answered.
    fn call(&self, caller: &str, talk_ms: u64) -> Command {
        let mut command = self.sipp("caller.xml");
        command
            .args([
                "-key",
                "caller",
                caller,
                "-d",
                &talk_ms.to_string(),
                "-s",
                DID,
            ])
            .args(["-p", &free_port().to_string()])
            .arg(self.kamailio());
        command
    }
}

async fn lookup_key(app: &TestApp) -> String {
    switchboard::auth::create_api_key(&app.db, "kamailio", Role::Lookup, None)
        .await
        .expect("lookup key")
}

/// The answered call: the agent's stream rings with the caller's card, the agent's phone shows
/// the customer's name from the HTTP lookup, and the call record has every time.
#[tokio::test]
async fn a_sip_call_rings_the_agent_with_the_card_and_its_record_is_complete() {
    let app = spawn_app().await;
    app.create_customer("Ada Lovelace", &[ADA]).await;
    let lab = SipLab::start(&app, &lookup_key(&app).await).await;
    let mut watch = log_in_and_watch(app.channel.clone(), "agent-ana").await;
    let (mut phone, received) = lab.phone("1001", 300).await;

    let mut caller = lab.call(ADA, 500).spawn().expect("sipp calls");
    let ringing = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(message) = watch.message().await.expect("stream") {
            if message.kind() == v1::AgentCallEventKind::Ringing {
                return message;
            }
        }
        panic!("the stream ended without RINGING");
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "no RINGING within 10 s; adapter: {}\nkamailio: {}",
            lab.log("gateway.log"),
            lab.log("kamailio.log")
        )
    });
    let card = ringing.pop.and_then(|p| p.card).expect("the card");
    assert_eq!(card.display_name, "Ada Lovelace");
    assert!(
        caller.wait().await.expect("caller").success(),
        "the call went through"
    );
    assert!(
        phone.wait().await.expect("phone").success(),
        "the phone answered and hung up"
    );
    let invite = std::fs::read_to_string(&received).expect("the phone's messages");
    assert!(
        invite.contains("From: \"Ada Lovelace\" <sip:+14155550100@"),
        "the INVITE carries the name from the lookup: {invite}"
    );

    let call_id = ringing.call.expect("call").call_id;
    let complete = crate::helpers::eventually(Duration::from_secs(10), || {
        let db = app.db.clone();
        let call_id = call_id.clone();
        async move {
            let row: Option<(String, String, Option<String>, bool, bool, bool)> = sqlx::query_as(
                "SELECT state, outcome, handled_by[1], offered_at IS NOT NULL, \
                        answered_at IS NOT NULL, ended_at IS NOT NULL \
                 FROM calls WHERE gateway_id = $1 AND call_id = $2",
            )
            .bind(GATEWAY)
            .bind(&call_id)
            .fetch_optional(&db)
            .await
            .expect("call");
            row.is_some_and(|(state, outcome, agent, offered, answered, ended)| {
                state == "ended"
                    && outcome == "completed"
                    && agent.as_deref() == Some("agent-ana")
                    && offered
                    && answered
                    && ended
            })
        }
    })
    .await;
    assert!(
        complete,
        "the call record is ended, completed by agent-ana, with every time; adapter: {}",
        lab.log("gateway.log")
    );
}

/// Switchboard is never on the call's critical path: with the lookup unreachable, the call still
/// connects, without a name.
#[tokio::test]
async fn a_sip_call_connects_without_a_name_when_the_lookup_is_refused() {
    let app = spawn_app().await;
    app.create_customer("Ada Lovelace", &[ADA]).await;
    let lab = SipLab::start(&app, "sbk_not_a_key").await;
    let (mut phone, received) = lab.phone("1001", 100).await;
    assert!(lab.call(ADA, 200).status().await.expect("caller").success());
    assert!(phone.wait().await.expect("phone").success());
    let invite = std::fs::read_to_string(&received).expect("the phone's messages");
    assert!(
        invite.contains("From: <sip:+14155550100@"),
        "no name: {invite}"
    );
}
