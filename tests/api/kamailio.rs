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
    evapi_port: u16,
    server: String,
    dir: tempfile::TempDir,
    _kamailio: Kamailio,
    gateway: Child,
    /// The adapter's extra arguments, kept across restarts.
    gateway_args: Vec<String>,
}

/// Kamailio in a process group of its own: its workers are forked children, which a kill of the
/// main process alone left running (holding their sockets) after the suite ended.
struct Kamailio(Child);

impl Drop for Kamailio {
    fn drop(&mut self) {
        if let Some(pid) = self.0.id() {
            std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status()
                .ok();
        }
    }
}

/// The adapter, with its spool and mapping in `dir`, its log appended to `dir/gateway.log`.
fn start_gateway(dir: &Path, evapi_port: u16, server: &str, extra: &[String]) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("gateway.log"))
        .expect("log");
    Command::new(env!("CARGO_BIN_EXE_switchboard-gateway"))
        .arg("--evapi")
        .arg(format!("127.0.0.1:{evapi_port}"))
        .arg("--server")
        .arg(server)
        .arg("--gateway-id")
        .arg(GATEWAY)
        .arg("--mapping")
        .arg(dir.join("mapping.json"))
        .arg("--spool")
        .arg(dir.join("spool"))
        .args(extra)
        .env(
            "SWITCHBOARD_TOKEN",
            token(Role::Gateway, GATEWAY, Some(GATEWAY)),
        )
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("the adapter runs")
}

impl SipLab {
    async fn start(app: &TestApp, lookup_key: &str) -> Self {
        Self::start_with(app, lookup_key, Vec::new()).await
    }

    /// The lab with `gateway_args` added to the adapter's command line.
    async fn start_with(app: &TestApp, lookup_key: &str, gateway_args: Vec<String>) -> Self {
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
            .process_group(0)
            .spawn()
            .expect("kamailio runs (scripts/test.sh installs it)");
        let kamailio = Kamailio(kamailio);
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
        let gateway = start_gateway(dir.path(), evapi_port, &app.address, &gateway_args);
        let lab = Self {
            sip_port,
            evapi_port,
            server: app.address.clone(),
            dir,
            _kamailio: kamailio,
            gateway,
            gateway_args,
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

    /// SIGKILLs the adapter and starts it again on the same spool.
    async fn kill_and_restart_gateway(&mut self) {
        self.kill_gateway().await;
        self.restart_gateway();
    }

    async fn kill_gateway(&mut self) {
        self.gateway.start_kill().expect("SIGKILL");
        self.gateway.wait().await.expect("killed");
    }

    fn restart_gateway(&mut self) {
        self.gateway = start_gateway(
            self.dir.path(),
            self.evapi_port,
            &self.server,
            &self.gateway_args,
        );
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    /// What SIPp reported as errors (its `*_errors.log` files in the lab's directory), for a
    /// failed scenario's message.
    fn sipp_errors(&self) -> String {
        let mut errors = format!("stderr:\n{}\n", self.log("sipp.stderr"));
        for entry in std::fs::read_dir(self.dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with("_errors.log") {
                errors += &format!("{name}:\n{}\n", self.log(&name));
            }
        }
        errors
    }

    fn kamailio(&self) -> String {
        format!("127.0.0.1:{}", self.sip_port)
    }

    fn sipp(&self, scenario: &str) -> Command {
        let mut command = Command::new("sipp");
        command
            .arg("-sf")
            .arg(kamailio_dir().join("sipp").join(scenario))
            .args(["-m", "1", "-nostdin", "-timeout", "30s", "-trace_err"])
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.dir.path().join("sipp.stderr"))
                    .expect("SIPp's stderr"),
            )
            .kill_on_drop(true);
        command
    }

    /// Registers `sip_user`'s phone under the hunt group, and starts it: it answers after
    /// `ring_ms`. Returns the phone and the file its received messages go to.
    async fn phone(&self, sip_user: &str, ring_ms: u64) -> (Child, PathBuf) {
        self.phone_with("phone.xml", sip_user, ring_ms).await
    }

    async fn phone_with(&self, scenario: &str, sip_user: &str, ring_ms: u64) -> (Child, PathBuf) {
        self.phone_at("support", scenario, sip_user, ring_ms, &[])
            .await
    }

    /// A phone registered under `aor`, running `scenario` with extra `-key`s.
    async fn phone_at(
        &self,
        aor: &str,
        scenario: &str,
        sip_user: &str,
        ring_ms: u64,
        keys: &[(&str, &str)],
    ) -> (Child, PathBuf) {
        let phone_port = free_port();
        let status = self
            .sipp("register.xml")
            .args(["-key", "aor", aor, "-key", "agent", sip_user])
            .args(["-key", "phone_port", &phone_port.to_string()])
            .args(["-p", &free_port().to_string()])
            .arg(self.kamailio())
            .status()
            .await
            .expect("sipp registers");
        assert!(
            status.success(),
            "the phone registered ({status}); SIPp: {}\nkamailio: {}",
            self.sipp_errors(),
            self.log("kamailio.log")
        );
        let messages = self.dir.path().join(format!("phone-{sip_user}.msg"));
        let mut phone = self.sipp(scenario);
        for (key, value) in keys {
            phone.args(["-key", key, value]);
        }
        let phone = phone
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
        self.call_with("caller.xml", DID, caller, talk_ms)
    }

    /// `scenario` as the caller, dialing `dialed`.
    fn call_with(&self, scenario: &str, dialed: &str, caller: &str, talk_ms: u64) -> Command {
        let mut command = self.sipp(scenario);
        command
            .args([
                "-key",
                "caller",
                caller,
                "-d",
                &talk_ms.to_string(),
                "-s",
                dialed,
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

/// The call record of `call_id` once it reaches `state`, and how many times each of its events
/// was stored (by event id): `None` if it never gets there within 15 s.
async fn settled(app_db: &sqlx::PgPool, call_id: &str, state: &str) -> Option<(String, Vec<i64>)> {
    for _ in 0..150 {
        let row: Option<(String, String)> = sqlx::query_as(
            "SELECT state, outcome FROM calls WHERE gateway_id = $1 AND call_id = $2",
        )
        .bind(GATEWAY)
        .bind(call_id)
        .fetch_optional(app_db)
        .await
        .expect("call");
        if let Some((found, outcome)) = row
            && found == state
        {
            let copies: Vec<i64> = sqlx::query_scalar(
                "SELECT count(*) FROM call_events WHERE gateway_id = $1 AND call_id = $2 \
                 GROUP BY event_id ORDER BY event_id",
            )
            .bind(GATEWAY)
            .bind(call_id)
            .fetch_all(app_db)
            .await
            .expect("events");
            return Some((outcome, copies));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Waits for the call to end, completed, with `events` events each stored exactly once.
async fn completed_once(db: &sqlx::PgPool, lab: &SipLab, call_id: &str, events: usize) {
    let (outcome, copies) = settled(db, call_id, "ended")
        .await
        .unwrap_or_else(|| panic!("the call never ended; adapter: {}", lab.log("gateway.log")));
    assert_eq!(outcome, "completed");
    assert_eq!(copies, vec![1; events], "{events} events, once each");
}

/// The SIP Call-ID SIPp used for its first call ("1-<pid>@127.0.0.1"): the newest call of the
/// gateway.
async fn latest_call(db: &sqlx::PgPool) -> String {
    for _ in 0..100 {
        if let Some(id) = sqlx::query_scalar(
            "SELECT call_id FROM calls WHERE gateway_id = $1 ORDER BY offered_at DESC LIMIT 1",
        )
        .bind(GATEWAY)
        .fetch_optional(db)
        .await
        .expect("calls")
        {
            return id;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no call was recorded");
}

/// The caller hangs up while the phone rings: CANCEL is ABANDONED.
#[tokio::test]
async fn a_caller_who_hangs_up_while_it_rings_is_an_abandon() {
    let app = spawn_app().await;
    let lab = SipLab::start(&app, &lookup_key(&app).await).await;
    let (mut phone, _) = lab.phone_with("phone-unanswered.xml", "1001", 0).await;
    let status = lab
        .call_with("caller-cancel.xml", DID, ADA, 500)
        .status()
        .await
        .expect("caller");
    assert!(status.success(), "CANCEL, 200, 487, ACK");
    assert!(
        phone.wait().await.expect("phone").success(),
        "the phone was cancelled"
    );
    let call_id = latest_call(&app.db).await;
    let (outcome, copies) = settled(&app.db, &call_id, "abandoned")
        .await
        .unwrap_or_else(|| panic!("not abandoned; adapter: {}", lab.log("gateway.log")));
    assert_eq!(outcome, "abandoned");
    assert_eq!(
        copies,
        [1, 1, 1, 1],
        "OFFERED, QUEUED, RINGING, ABANDONED, once each"
    );
}

/// The adapter SIGKILLed while the phone rings and started again on its spool: the rest of the
/// call arrives, and every event is stored exactly once.
#[tokio::test]
async fn the_adapter_killed_mid_call_loses_and_repeats_nothing() {
    let app = spawn_app().await;
    app.create_customer("Ada Lovelace", &[ADA]).await;
    let mut lab = SipLab::start(&app, &lookup_key(&app).await).await;
    let (mut phone, _) = lab.phone("1001", 3000).await;
    let mut caller = lab.call(ADA, 500).spawn().expect("sipp calls");
    let call_id = latest_call(&app.db).await;
    lab.kill_and_restart_gateway().await;
    assert!(caller.wait().await.expect("caller").success());
    assert!(phone.wait().await.expect("phone").success());
    completed_once(&app.db, &lab, &call_id, 5).await;
}

/// No adapter for a whole call (it is down, being upgraded): Kamailio holds the call's events
/// and relays them once the adapter is back, so every one arrives, exactly once.
#[tokio::test]
async fn a_call_made_while_the_adapter_is_down_arrives_once_it_is_back() {
    let app = spawn_app().await;
    app.create_customer("Ada Lovelace", &[ADA]).await;
    let mut lab = SipLab::start(&app, &lookup_key(&app).await).await;
    lab.kill_gateway().await;
    let (mut phone, _) = lab.phone("1001", 100).await;
    assert!(lab.call(ADA, 200).status().await.expect("caller").success());
    assert!(phone.wait().await.expect("phone").success());
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM call_events")
        .fetch_one(&app.db)
        .await
        .expect("count");
    assert_eq!(stored, 0, "no adapter, nothing stored yet");

    lab.restart_gateway();
    let call_id = latest_call(&app.db).await;
    completed_once(&app.db, &lab, &call_id, 5).await;
}

/// Switchboard stopped while the phone rings and started again: the call connects meanwhile (the
/// phone system never waits for Switchboard), the adapter spools what happened, and every event
/// arrives once Switchboard is back, exactly once.
#[tokio::test]
async fn a_call_goes_on_while_switchboard_restarts_and_its_events_arrive_after() {
    let mut app = spawn_app().await;
    app.create_customer("Ada Lovelace", &[ADA]).await;
    let lab = SipLab::start(&app, &lookup_key(&app).await).await;
    let (mut phone, _) = lab.phone("1001", 1500).await;
    let mut caller = lab.call(ADA, 500).spawn().expect("sipp calls");
    let call_id = latest_call(&app.db).await;
    let stopped = app.stop_for_restart().await;
    // The phone answers and the caller hangs up while Switchboard is away.
    assert!(caller.wait().await.expect("caller").success());
    assert!(phone.wait().await.expect("phone").success());
    let back = stopped.start_again().await;
    completed_once(&back.db, &lab, &call_id, 5).await;
}

/// The caller puts the call on hold and takes it back (re-INVITEs with a=sendonly, then
/// a=sendrecv): HELD and RESUMED, and the call record counts the time on hold.
#[tokio::test]
async fn a_hold_and_resume_on_the_wire_are_held_and_resumed() {
    let app = spawn_app().await;
    let lab = SipLab::start(&app, &lookup_key(&app).await).await;
    let (mut phone, _) = lab.phone_with("phone-hold.xml", "1001", 200).await;
    let status = lab
        .call_with("caller-hold.xml", DID, ADA, 300)
        .status()
        .await
        .expect("caller");
    assert!(
        status.success(),
        "hold, resume, hang up; SIPp said: {}; Kamailio: {}",
        lab.sipp_errors(),
        lab.log("kamailio.log")
    );
    assert!(phone.wait().await.expect("phone").success());
    let call_id = latest_call(&app.db).await;
    // OFFERED, QUEUED, RINGING, ANSWERED, HELD, RESUMED, ENDED.
    completed_once(&app.db, &lab, &call_id, 7).await;
    let (kinds, hold_ms): (Vec<String>, i64) = sqlx::query_as(
        "SELECT array_agg(e.type ORDER BY e.occurred_at, e.sequence), min(c.hold_ms) \
         FROM call_events e JOIN calls c USING (gateway_id, call_id) \
         WHERE e.gateway_id = $1 AND e.call_id = $2 AND e.outcome = 'accepted'",
    )
    .bind(GATEWAY)
    .bind(&call_id)
    .fetch_one(&app.db)
    .await
    .expect("events");
    assert_eq!(
        kinds,
        [
            "offered", "queued", "ringing", "answered", "held", "resumed", "ended"
        ]
    );
    assert!(hold_ms >= 200, "about 300 ms on hold, counted: {hold_ms}");
}

/// A blind transfer: the first agent's phone REFERs the caller to the second agent's phone and
/// hangs up; the caller's new INVITE rings it. Switchboard sees one call: the second agent's
/// stream rings with the same card, and the record has both agents and one transfer.
#[tokio::test]
async fn a_blind_transfer_rings_the_second_agent_with_the_same_card_as_one_call() {
    let app = spawn_app().await;
    app.create_customer("Ada Lovelace", &[ADA]).await;
    let lab = SipLab::start(&app, &lookup_key(&app).await).await;
    let mut ben = log_in_and_watch(app.channel.clone(), "agent-ben").await;
    let (mut ana_phone, _) = lab
        .phone_at(
            "support",
            "phone-transfer.xml",
            "1001",
            200,
            &[("refer_target", "1002")],
        )
        .await;
    let (mut ben_phone, _) = lab.phone_at("1002", "phone.xml", "1002", 200, &[]).await;

    let status = lab
        .call_with("caller-transferred.xml", DID, ADA, 300)
        .status()
        .await
        .expect("caller");
    assert!(
        status.success(),
        "answered, REFER accepted, the first agent hung up"
    );
    assert!(ana_phone.wait().await.expect("phone").success());
    let call_id = latest_call(&app.db).await;
    let ringing = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(message) = ben.message().await.expect("stream") {
            if message.kind() == v1::AgentCallEventKind::Ringing {
                return message;
            }
        }
        panic!("the stream ended without RINGING");
    })
    .await
    .unwrap_or_else(|_| panic!("agent-ben never rang; adapter: {}", lab.log("gateway.log")));
    assert_eq!(
        ringing.call.as_ref().map(|c| c.call_id.as_str()),
        Some(call_id.as_str())
    );
    assert_eq!(
        ringing.pop.and_then(|p| p.card).map(|c| c.display_name),
        Some("Ada Lovelace".to_owned()),
        "the same card"
    );

    // The caller's new INVITE to the Refer-To target.
    let status = lab
        .call_with("caller.xml", "1002", ADA, 300)
        .status()
        .await
        .expect("caller");
    assert!(status.success());
    assert!(ben_phone.wait().await.expect("phone").success());
    let (outcome, _) = settled(&app.db, &call_id, "ended")
        .await
        .unwrap_or_else(|| panic!("the call never ended; adapter: {}", lab.log("gateway.log")));
    assert_eq!(outcome, "completed", "the transferee's BYE ended it");
    let (handled_by, transfers, calls): (Vec<String>, i32, i64) = sqlx::query_as(
        "SELECT handled_by, transfers, (SELECT count(*) FROM calls WHERE gateway_id = $1) \
         FROM calls WHERE gateway_id = $1 AND call_id = $2",
    )
    .bind(GATEWAY)
    .bind(&call_id)
    .fetch_one(&app.db)
    .await
    .expect("call");
    assert_eq!(handled_by, ["agent-ana", "agent-ben"]);
    assert_eq!((transfers, calls), (1, 1), "one transfer, one call");
}

/// Switchboard down before the call even starts: the call connects without a name (the lookup
/// fails fast), the adapter spools its events, and they all arrive once Switchboard is back.
#[tokio::test]
async fn with_switchboard_unreachable_calls_connect_without_names_and_their_events_arrive_later() {
    let mut app = spawn_app().await;
    app.create_customer("Ada Lovelace", &[ADA]).await;
    let lab = SipLab::start(&app, &lookup_key(&app).await).await;
    let db = app.db.clone();
    let stopped = app.stop_for_restart().await;

    let (mut phone, received) = lab.phone("1001", 100).await;
    assert!(lab.call(ADA, 200).status().await.expect("caller").success());
    assert!(phone.wait().await.expect("phone").success());
    let invite = std::fs::read_to_string(&received).expect("the phone's messages");
    assert!(
        invite.contains("From: <sip:+14155550100@"),
        "no name: {invite}"
    );
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM call_events")
        .fetch_one(&db)
        .await
        .expect("count");
    assert_eq!(stored, 0, "nothing could reach Switchboard yet");

    let _back = stopped.start_again().await;
    let call_id = latest_call(&db).await;
    completed_once(&db, &lab, &call_id, 5).await;
}

/// The adapter's metrics (`--metrics-listen`), as name (with labels) to value.
async fn gateway_metrics(port: u16) -> std::collections::HashMap<String, f64> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("the adapter's metrics listen");
    socket
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: adapter\r\n\r\n")
        .await
        .expect("request");
    let mut response = String::new();
    socket
        .read_to_string(&mut response)
        .await
        .expect("response");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
        .lines()
        .filter(|line| line.starts_with("switchboard_gateway_"))
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// Waits until the adapter's metric `name` reads `value`.
async fn metric_reaches(lab: &SipLab, port: u16, name: &str, value: f64) {
    let mut last = None;
    for _ in 0..100 {
        last = gateway_metrics(port).await.get(name).copied();
        if last == Some(value) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{name} stayed {last:?}, not {value}; adapter: {}",
        lab.log("gateway.log")
    );
}

/// Switchboard down and the spool at its capacity: the adapter stops taking Kamailio's events
/// (they wait in the stream), its metrics say the spool is full, and once Switchboard is back
/// every event of both calls arrives, exactly once, and the gauges come back down.
#[tokio::test]
async fn a_full_spool_holds_kamailio_back_says_so_and_loses_nothing() {
    let mut app = spawn_app().await;
    let metrics_port = free_port();
    let lab = SipLab::start_with(
        &app,
        &lookup_key(&app).await,
        vec![
            "--spool-capacity".into(),
            "3".into(),
            "--metrics-listen".into(),
            format!("127.0.0.1:{metrics_port}"),
        ],
    )
    .await;
    let db = app.db.clone();
    metric_reaches(
        &lab,
        metrics_port,
        "switchboard_gateway_uplink_connected",
        1.0,
    )
    .await;
    let stopped = app.stop_for_restart().await;
    metric_reaches(
        &lab,
        metrics_port,
        "switchboard_gateway_uplink_connected",
        0.0,
    )
    .await;

    for caller in [ADA, "+14155550111"] {
        let (mut phone, _) = lab.phone("1001", 100).await;
        assert!(
            lab.call(caller, 200)
                .status()
                .await
                .expect("caller")
                .success()
        );
        assert!(phone.wait().await.expect("phone").success());
    }
    metric_reaches(&lab, metrics_port, "switchboard_gateway_spool_full", 1.0).await;
    let held = gateway_metrics(metrics_port).await;
    assert_eq!(
        held.get("switchboard_gateway_spool_pending"),
        Some(&3.0),
        "the spool stops at its capacity: {held:?}"
    );

    let _back = stopped.start_again().await;
    let calls: Vec<String> = {
        let mut calls = Vec::new();
        for _ in 0..150 {
            calls = sqlx::query_scalar(
                "SELECT call_id FROM calls WHERE gateway_id = $1 ORDER BY offered_at",
            )
            .bind(GATEWAY)
            .fetch_all(&db)
            .await
            .expect("calls");
            if calls.len() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        calls
    };
    assert_eq!(
        calls.len(),
        2,
        "both calls arrive: {}",
        lab.log("gateway.log")
    );
    for call_id in &calls {
        completed_once(&db, &lab, call_id, 5).await;
    }
    metric_reaches(&lab, metrics_port, "switchboard_gateway_spool_pending", 0.0).await;
    let after = gateway_metrics(metrics_port).await;
    assert_eq!(after.get("switchboard_gateway_spool_full"), Some(&0.0));
    assert_eq!(
        after.get("switchboard_gateway_events_total{outcome=\"accepted\"}"),
        Some(&10.0),
        "{after:?}"
    );
}
