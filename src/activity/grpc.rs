//! `switchboard.v1.ActivityService`: proto <-> domain and `ActivityError` -> `Status`.

use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::{
    Activity, ActivityError, CustomerRef, Money, NewOrder, NewServiceEvent, Order, OrderStatus,
    ServiceEvent, ServiceEventKind,
};
use crate::grpc_status;
use crate::ids::ExternalReference;
use crate::proto::v1;
use crate::proto::v1::activity_service_server::ActivityService;
use crate::proto_time::to_timestamp;
use crate::validation::Violations;

pub struct ActivityGrpc {
    activity: Activity,
}

impl ActivityGrpc {
    pub fn new(activity: Activity) -> Self {
        Self { activity }
    }
}

impl From<ActivityError> for Status {
    fn from(error: ActivityError) -> Self {
        match &error {
            ActivityError::Invalid(violations) => grpc_status::invalid_argument(violations),
            ActivityError::CustomerNotFound => Status::not_found(error.to_string()),
            ActivityError::Unavailable(source) => grpc_status::unavailable(source),
            ActivityError::Database(source) => grpc_status::internal(source),
        }
    }
}

fn customer_ref(v: &mut Violations, customer: Option<v1::CustomerRef>) -> Option<CustomerRef> {
    use v1::customer_ref::Ref;
    match customer.and_then(|c| c.r#ref) {
        Some(Ref::CustomerId(id)) => v
            .check(
                "customer.customer_id",
                Uuid::parse_str(&id).map_err(|_| "must be a UUID"),
            )
            .map(CustomerRef::Id),
        Some(Ref::ExternalReference(r)) => {
            let before = v.iter().count();
            let system = v.text("customer.external_reference.system", &r.system, 64, true);
            let external_id = v.text(
                "customer.external_reference.external_id",
                &r.external_id,
                128,
                true,
            );
            (v.iter().count() == before).then_some(CustomerRef::External(ExternalReference {
                system,
                external_id,
            }))
        }
        None => {
            v.add("customer", "set customer_id or external_reference");
            None
        }
    }
}

fn order_status(status: OrderStatus) -> v1::OrderStatus {
    match status {
        OrderStatus::Placed => v1::OrderStatus::Placed,
        OrderStatus::Paid => v1::OrderStatus::Paid,
        OrderStatus::Shipped => v1::OrderStatus::Shipped,
        OrderStatus::Delivered => v1::OrderStatus::Delivered,
        OrderStatus::Cancelled => v1::OrderStatus::Cancelled,
        OrderStatus::Returned => v1::OrderStatus::Returned,
    }
}

fn money_to_proto(m: Money) -> v1::Money {
    v1::Money {
        currency: m.currency,
        amount_minor: m.amount_minor,
    }
}

pub(crate) fn order_to_proto(o: Order) -> v1::Order {
    v1::Order {
        system: o.system,
        order_id: o.order_id,
        customer_id: o.customer_id.to_string(),
        amount: Some(money_to_proto(o.amount)),
        status: order_status(o.status).into(),
        ordered_at: Some(to_timestamp(o.ordered_at)),
    }
}

fn new_order(r: v1::RecordOrderRequest) -> Result<NewOrder, Violations> {
    let mut v = Violations::new();
    let system = v.text("system", &r.system, 64, true);
    let order_id = v.text("order_id", &r.order_id, 128, true);
    let customer = customer_ref(&mut v, r.customer);
    let amount = match r.amount {
        Some(m) => {
            if m.currency.len() != 3 || !m.currency.bytes().all(|b| b.is_ascii_uppercase()) {
                v.add(
                    "amount.currency",
                    "must be an ISO 4217 code such as \"USD\"",
                );
            }
            if m.amount_minor < 0 {
                v.add("amount.amount_minor", "must not be negative");
            }
            Some(Money {
                currency: m.currency,
                amount_minor: m.amount_minor,
            })
        }
        None => {
            v.add("amount", "is required");
            None
        }
    };
    let status = match v1::OrderStatus::try_from(r.status) {
        Ok(v1::OrderStatus::Placed) => Some(OrderStatus::Placed),
        Ok(v1::OrderStatus::Paid) => Some(OrderStatus::Paid),
        Ok(v1::OrderStatus::Shipped) => Some(OrderStatus::Shipped),
        Ok(v1::OrderStatus::Delivered) => Some(OrderStatus::Delivered),
        Ok(v1::OrderStatus::Cancelled) => Some(OrderStatus::Cancelled),
        Ok(v1::OrderStatus::Returned) => Some(OrderStatus::Returned),
        _ => {
            v.add("status", format!("unknown order status {}", r.status));
            None
        }
    };
    let ordered_at = v.time("ordered_at", r.ordered_at.as_ref(), true);
    match (customer, amount, status, ordered_at) {
        (Some(customer), Some(amount), Some(status), Some(ordered_at)) if v.is_empty() => {
            Ok(NewOrder {
                system,
                order_id,
                customer,
                amount,
                status,
                ordered_at,
            })
        }
        _ => Err(v),
    }
}

fn new_service_event(r: v1::RecordServiceEventRequest) -> Result<NewServiceEvent, Violations> {
    let mut v = Violations::new();
    let system = v.text("system", &r.system, 64, true);
    let event_id = v.text("event_id", &r.event_id, 128, true);
    let customer = customer_ref(&mut v, r.customer);
    let kind = match v1::ServiceEventKind::try_from(r.kind) {
        Ok(v1::ServiceEventKind::Installation) => Some(ServiceEventKind::Installation),
        Ok(v1::ServiceEventKind::Delivery) => Some(ServiceEventKind::Delivery),
        Ok(v1::ServiceEventKind::Outage) => Some(ServiceEventKind::Outage),
        Ok(v1::ServiceEventKind::Maintenance) => Some(ServiceEventKind::Maintenance),
        Ok(v1::ServiceEventKind::Other) => Some(ServiceEventKind::Other),
        _ => {
            v.add("kind", format!("unknown service event kind {}", r.kind));
            None
        }
    };
    let status = v.text("status", &r.status, 40, false);
    v.free_text("description", &r.description, 2000);
    let occurred_at = v.time("occurred_at", r.occurred_at.as_ref(), true);
    match (customer, kind, occurred_at) {
        (Some(customer), Some(kind), Some(occurred_at)) if v.is_empty() => Ok(NewServiceEvent {
            system,
            event_id,
            customer,
            kind,
            status,
            description: r.description,
            occurred_at,
        }),
        _ => Err(v),
    }
}

#[tonic::async_trait]
impl ActivityService for ActivityGrpc {
    async fn record_order(
        &self,
        request: Request<v1::RecordOrderRequest>,
    ) -> Result<Response<v1::RecordOrderResponse>, Status> {
        let new = new_order(request.into_inner()).map_err(ActivityError::Invalid)?;
        let (order, value) = self.activity.record_order(new).await?;
        Ok(Response::new(v1::RecordOrderResponse {
            order: Some(order_to_proto(order)),
            lifetime_value: value.into_iter().map(money_to_proto).collect(),
        }))
    }

    async fn record_service_event(
        &self,
        request: Request<v1::RecordServiceEventRequest>,
    ) -> Result<Response<v1::RecordServiceEventResponse>, Status> {
        let new = new_service_event(request.into_inner()).map_err(ActivityError::Invalid)?;
        let event = self.activity.record_service_event(new).await?;
        Ok(Response::new(v1::RecordServiceEventResponse {
            event: Some(service_event_to_proto(event)),
        }))
    }
}

pub(crate) fn service_event_to_proto(event: ServiceEvent) -> v1::ServiceEvent {
    let kind = match event.kind {
        ServiceEventKind::Installation => v1::ServiceEventKind::Installation,
        ServiceEventKind::Delivery => v1::ServiceEventKind::Delivery,
        ServiceEventKind::Outage => v1::ServiceEventKind::Outage,
        ServiceEventKind::Maintenance => v1::ServiceEventKind::Maintenance,
        ServiceEventKind::Other => v1::ServiceEventKind::Other,
    };
    v1::ServiceEvent {
        system: event.system,
        event_id: event.event_id,
        customer_id: event.customer_id.to_string(),
        kind: kind.into(),
        status: event.status,
        description: event.description,
        occurred_at: Some(to_timestamp(event.occurred_at)),
    }
}
