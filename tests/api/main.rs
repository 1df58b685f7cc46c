//! Integration tests: the real server, PostgreSQL and Redis, driven through gRPC.
// The tests' own pool (fixtures, blockers) is not the service's: its waiters are not counted.
#![allow(clippy::disallowed_methods)]

mod activity;
mod analytics;
mod audit;
mod auth;
mod call_history;
mod caller_id;
mod calls;
mod campaigns;
mod cases;
mod customers;
mod every_field;
mod fault_proxy;
mod faults;
mod feed;
mod feedback;
mod grpc_web;
mod health;
mod helpers;
mod history;
mod import;
mod interactions;
mod kamailio;
mod kpi_rollups;
mod limits;
mod live;
mod merges;
mod metrics;
mod nats;
mod privacy;
mod reconcile;
mod redis_cluster;
mod redis_slots;
mod replicas;
mod scale_out;
mod scorecard;
mod screenpop;
mod segments;
mod stored_cards;
mod tls;
mod traces;
mod web_ui;
mod webhooks;
