//! A CLIENT span per SQL statement, made from sqlx's statement log.
//!
//! sqlx has no spans of its own; after each statement it logs an event (target `sqlx::query`)
//! with the SQL (placeholders, never values), the rows and the time taken. This layer turns
//! each such event into a span that ends now and started `elapsed` ago, under the span that ran
//! the statement. A statement outside any traced span (background work) makes no span, so
//! pollers do not flood the backend with one-span traces.

use std::time::{Duration, SystemTime};

use opentelemetry::KeyValue;
use opentelemetry::trace::{Span as _, SpanKind, TraceContextExt as _, Tracer as _};
use opentelemetry_sdk::trace::SdkTracer;
use tracing::field::{Field, Visit};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;

pub struct StatementSpans {
    tracer: SdkTracer,
}

impl StatementSpans {
    pub fn new(tracer: SdkTracer) -> Self {
        Self { tracer }
    }
}

#[derive(Default)]
struct Statement {
    summary: String,
    text: String,
    rows_affected: Option<i64>,
    rows_returned: Option<i64>,
    elapsed_secs: f64,
}

impl Visit for Statement {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "summary" => self.summary = value.to_owned(),
            "db.statement" => self.text = value.to_owned(),
            _ => {}
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.record_i64(field, i64::try_from(value).unwrap_or(i64::MAX));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        match field.name() {
            "rows_affected" => self.rows_affected = Some(value),
            "rows_returned" => self.rows_returned = Some(value),
            _ => {}
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if field.name() == "elapsed_secs" {
            self.elapsed_secs = value;
        }
    }

    fn record_debug(&mut self, _field: &Field, _value: &dyn std::fmt::Debug) {}
}

impl<S: tracing::Subscriber> Layer<S> for StatementSpans {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target() != "sqlx::query" {
            return;
        }
        let parent = opentelemetry::Context::current();
        if !parent.span().span_context().is_valid() {
            return;
        }
        let mut statement = Statement::default();
        event.record(&mut statement);
        let end = SystemTime::now();
        let start = end
            .checked_sub(Duration::from_secs_f64(statement.elapsed_secs.max(0.0)))
            .unwrap_or(end);
        let name = match statement.summary.is_empty() {
            true => "postgresql".to_owned(),
            false => statement.summary,
        };
        let mut attributes = vec![
            KeyValue::new("db.system", "postgresql"),
            KeyValue::new("db.statement", statement.text),
        ];
        if let Some(rows) = statement.rows_affected {
            attributes.push(KeyValue::new("db.rows_affected", rows));
        }
        if let Some(rows) = statement.rows_returned {
            attributes.push(KeyValue::new("db.rows_returned", rows));
        }
        let mut span = self
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Client)
            .with_start_time(start)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &parent);
        span.end_with_timestamp(end);
    }
}
