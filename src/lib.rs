//! # Switchboard
//!
//! A call-center integration service: one integrated, real-time customer record that the call
//! center, sales, service and marketing share, exposed over gRPC, with screen pops answered from
//! Redis in well under a millisecond when hot. PostgreSQL is the system of record.
//!
//! # Layout
//!
//! - [`app`]: start-up and shutdown: the composition root that builds every service
//!   (`app/wiring.rs`), the background tasks behind one stop handle (`app/background.rs`), and the
//!   server with its layers (`app/server.rs`); `run_until_stopped` drains on shutdown.
//! - [`audit`]: the audit trail (writes in their own transaction, reads and denials batched).
//! - [`auth`]: JWT and API-key authentication, the permission table, the auth tower layer.
//! - [`config`]: the command line and environment settings.
//! - [`telemetry`]: the tracing subscriber (human or JSON logs, never PII).
//! - [`metrics`]: Prometheus metrics on the metrics port (`GET /metrics`).
//! - [`customers`]: the customer record context (domain and service logic, `store`, `grpc`).
//! - [`screenpop`]: the screen-pop context: lookup, Redis cache, invalidation, call pins.
//! - [`call_model`]: the live-call vocabulary calls, agents, live and push share (a leaf).
//! - [`push`]: the fan-out of call changes to the agents watching them, across instances.
//! - [`calls`]: call events from gateways: idempotent, order-independent ingestion and call records.
//! - [`interactions`]: every contact on any channel, dispositions and wrap-up; masked notes.
//! - [`campaigns`]: marketing campaigns, outbound lists with leased contacts, attempt outcomes.
//! - [`feedback`]: feedback from anyone, tracked to a resolution; negative feedback opens a case.
//! - [`import`]: legacy customer import: normalize, match, create/update/skip, dry runs.
//! - [`cases`]: service cases with SLA due times, legal status changes and a change history.
//! - [`activity`]: orders and service events from other systems; lifetime value.
//! - [`agents`]: agent states and the live call stream pushed to softphones across instances.
//! - [`live`]: live queue statistics from a versioned hot copy in Redis, rebuilt from PostgreSQL.
//! - [`analytics`]: KPIs over calls, interactions and feedback, against a baseline period.
//! - [`scorecard`]: the roll-out scorecard: adoption, efficiency against the baseline with a
//!   verdict, the feedback loop and team coordination.
//! - [`reconcile`]: parallel running: the old system's CDRs against Switchboard's calls, day by
//!   day, and the file readers behind `switchboard reconcile`.
//! - [`segments`]: RFM segmentation of customers, evaluated in the database.
//! - [`feed`]: the event feed: every change, numbered in commit order, for other systems.
//! - [`webhooks`]: the feed pushed out: signed webhook subscriptions and the NATS JetStream sink,
//!   each with its own cursor, delivered under leases shared by every instance.
//! - [`history`]: partitioned history: the months of the tables that only grow, made ahead and
//!   dropped by retention.
//! - [`privacy`]: export of everything held about a customer, erasure, and retention.
//! - [`diagnostics`]: `Echo`, the benchmark's yardstick.
//! - [`admission`]: load shedding in front of authentication, and the `server-timing` header.
//! - [`drain`]: how long-lived streams end when the server stops.
//! - [`ids`]: identities several contexts name (typed customer, agent and gateway ids, external
//!   references), a leaf.
//! - [`customer_rows`]: the port through which a merge moves rows other contexts own (a leaf).
//! - [`ingest_backlog`]: call events waiting for their commit, counted by `calls` and read by
//!   `webhooks` to give way to ingest (a leaf).
//! - [`mapping_file`]: `field = Column` mapping files for the CSV-reading commands (a leaf).
//! - [`card_data`]: masking of card numbers and security codes in free text.
//! - [`seed`]: deterministic synthetic customers for demos and benchmarks.
//! - [`client`]: the `pop`, `customer`, `kpis`, `queues`, `segment` and `scorecard` client
//!   subcommands.
//! - [`import_file`]: `switchboard import customers FILE.csv`: a legacy file streamed to
//!   `ImportService` with a progress bar and a per-row CSV report.
//! - [`simulate`]: `switchboard simulate`, demo traffic through the public API.
//! - [`web_ui`]: the web app (agent desktop, wallboard) embedded from `web/dist` and served at `/`.
//! - [`read_replicas`]: which PostgreSQL server a read goes to: a streaming replica within the
//!   lag bound, or the primary (a leaf).
//! - Shared plumbing: [`db`] (pool, migrations, error classes), [`redis_link`] (a Redis connection
//!   with timeouts and back-off), [`phone`] and [`email`] (parsing at the edge), [`validation`]
//!   (field violations), [`grpc_status`] (status helpers), [`grpc_web`] (gRPC-web and CORS),
//!   [`page_token`], [`single_flight`], [`failure_streak`] (one warning per streak of a
//!   background loop's failures), [`proto`] (generated code with redacting `Debug`),
//!   [`proto_time`] (timestamps), `text_enum` (enums stored as text).

// The call-event stream's future (tonic stream, group commit, metrics and trace layers) nests
// deeper than the default limit when the release build computes its layout.
#![recursion_limit = "256"]

pub mod activity;
pub mod admission;
pub mod agents;
pub mod analytics;
pub mod app;
pub mod audit;
pub mod auth;
pub mod call_model;
pub mod calls;
pub mod campaigns;
pub mod card_data;
pub mod cases;
pub mod client;
pub mod config;
pub mod customer_rows;
pub mod customers;
pub mod db;
pub mod diagnostics;
pub mod drain;
pub mod email;
pub mod failure_streak;
pub mod feed;
pub mod feedback;
pub mod grpc_status;
pub mod grpc_web;
pub mod history;
pub mod ids;
pub mod import;
pub mod import_file;
pub mod ingest_backlog;
pub mod interactions;
pub mod live;
pub mod mapping_file;
pub mod metrics;
pub mod page_token;
pub mod phone;
pub mod privacy;
pub mod proto;
pub mod proto_time;
pub mod push;
pub mod read_replicas;
pub mod reconcile;
pub mod redis_link;
pub mod scorecard;
pub mod screenpop;
pub mod seed;
pub mod segments;
pub mod simulate;
pub mod single_flight;
pub mod telemetry;
mod text_enum;
pub mod validation;
pub mod web_ui;
pub mod webhooks;

#[cfg(test)]
mod layout_tests {
    /// Every module declared above is named in the layout list at the top of this file.
    #[test]
    fn the_layout_list_names_every_module() {
        let source = include_str!("lib.rs");
        let (docs, declarations) = source.split_once("#![recursion_limit").unwrap_or_default();
        let modules: Vec<&str> = declarations
            .lines()
            .filter_map(|line| {
                let line = line.trim_start_matches("pub ");
                line.strip_prefix("mod ")?.strip_suffix(';')
            })
            .collect();
        assert!(modules.len() > 30, "{modules:?}");
        for module in modules {
            assert!(
                docs.contains(&format!("[`{module}`]")) || docs.contains(&format!("`{module}`")),
                "the layout list in lib.rs does not name `{module}`"
            );
        }
    }
}

#[cfg(test)]
mod module_graph_tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::{Path, PathBuf};

    /// The top-level modules of `src/` (a folder or a file), each with its files.
    fn modules() -> BTreeMap<String, Vec<PathBuf>> {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut modules = BTreeMap::new();
        for entry in std::fs::read_dir(&src).expect("src/").flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if matches!(name.as_str(), "bin" | "lib.rs" | "main.rs") {
                continue;
            }
            let module = name.trim_end_matches(".rs").to_owned();
            let mut files = Vec::new();
            let mut pending = vec![path];
            while let Some(path) = pending.pop() {
                if path.is_dir() {
                    pending.extend(
                        std::fs::read_dir(&path)
                            .expect("dir")
                            .flatten()
                            .map(|e| e.path()),
                    );
                } else if path.extension().is_some_and(|e| e == "rs") {
                    files.push(path);
                }
            }
            modules.insert(module, files);
        }
        modules
    }

    /// The modules a file's code (before its first test module, comments left out) names as
    /// `crate::x` or in `crate::{x, y::z}`.
    fn references(source: &str) -> BTreeSet<String> {
        let code = source.split("#[cfg(test)]").next().unwrap_or_default();
        let mut found = BTreeSet::new();
        for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
            let mut rest = line;
            while let Some(at) = rest.find("crate::") {
                rest = &rest[at + "crate::".len()..];
                if let Some(group) = rest.strip_prefix('{') {
                    let group = group.split('}').next().unwrap_or_default();
                    for item in group.split(',') {
                        let name: String = item
                            .trim()
                            .chars()
                            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                            .collect();
                        found.insert(name);
                    }
                } else {
                    let name: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    found.insert(name);
                }
            }
        }
        found
    }

    /// No two contexts import each other, directly or through others: shared concepts live in
    /// leaf modules (`call_model`, `ids`) and dependencies that would point back go through a
    /// narrow interface the other side implements (`screenpop::DialedOffers`,
    /// `agents::ActiveCalls`).
    #[test]
    fn the_module_graph_has_no_cycles() {
        let modules = modules();
        let mut graph: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for (module, files) in &modules {
            let edges = graph.entry(module.as_str()).or_default();
            for file in files {
                let source = std::fs::read_to_string(file).expect("readable source");
                for target in references(&source) {
                    if let Some((name, _)) = modules.get_key_value(&target)
                        && name != module
                    {
                        edges.insert(name.as_str());
                    }
                }
            }
        }
        assert!(graph.len() > 30, "{:?}", graph.keys());
        // Depth-first search; a node met again while on the path closes a cycle.
        fn visit<'a>(
            node: &'a str,
            graph: &BTreeMap<&'a str, BTreeSet<&'a str>>,
            path: &mut Vec<&'a str>,
            done: &mut BTreeSet<&'a str>,
        ) -> Option<Vec<&'a str>> {
            if let Some(at) = path.iter().position(|n| *n == node) {
                let mut cycle = path[at..].to_vec();
                cycle.push(node);
                return Some(cycle);
            }
            if !done.insert(node) {
                return None;
            }
            path.push(node);
            for next in graph.get(node).into_iter().flatten() {
                if let Some(cycle) = visit(next, graph, path, done) {
                    return Some(cycle);
                }
            }
            path.pop();
            None
        }
        let mut done = BTreeSet::new();
        for node in graph.keys() {
            if let Some(cycle) = visit(node, &graph, &mut Vec::new(), &mut done) {
                panic!(
                    "the modules import each other in a cycle: {}",
                    cycle.join(" -> ")
                );
            }
        }
    }

    #[test]
    fn grouped_and_plain_paths_are_both_references() {
        let found = references(
            "use crate::{db, proto::v1};\nlet x = crate::phone::parse();\n// crate::live\n",
        );
        assert_eq!(
            found,
            ["db", "phone", "proto"]
                .into_iter()
                .map(String::from)
                .collect()
        );
    }
}
