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
//! - [`segments`]: RFM segmentation of customers, evaluated in the database.
//! - [`feed`]: the event feed: every change, numbered in commit order, for other systems.
//! - [`privacy`]: export of everything held about a customer, erasure, and retention.
//! - [`diagnostics`]: `Echo`, the benchmark's yardstick.
//! - [`admission`]: load shedding in front of authentication, and the `server-timing` header.
//! - [`drain`]: how long-lived streams end when the server stops.
//! - [`card_data`]: masking of card numbers and security codes in free text.
//! - [`seed`]: deterministic synthetic customers for demos and benchmarks.
//! - [`client`]: the `pop` and `customer` client subcommands.
//! - Shared plumbing: [`db`] (pool, migrations, error classes), [`redis_link`] (a Redis connection
//!   with timeouts and back-off), [`phone`] and [`email`] (parsing at the edge), [`validation`]
//!   (field violations), [`grpc_status`] (status helpers), [`grpc_web`] (gRPC-web and CORS),
//!   [`page_token`], [`single_flight`], [`proto`] (generated code with redacting `Debug`),
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
pub mod calls;
pub mod campaigns;
pub mod card_data;
pub mod cases;
pub mod client;
pub mod config;
pub mod customers;
pub mod db;
pub mod diagnostics;
pub mod drain;
pub mod email;
pub mod feed;
pub mod feedback;
pub mod grpc_status;
pub mod grpc_web;
pub mod import;
pub mod interactions;
pub mod live;
pub mod metrics;
pub mod page_token;
pub mod phone;
pub mod privacy;
pub mod proto;
pub mod proto_time;
pub mod redis_link;
pub mod screenpop;
pub mod seed;
pub mod segments;
pub mod single_flight;
pub mod telemetry;
mod text_enum;
pub mod validation;

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
