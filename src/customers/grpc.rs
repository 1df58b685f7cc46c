//! `switchboard.v1.CustomerService`: proto <-> domain conversion and `CustomerError` -> `Status`.

use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::{
    ContactKind, ContactPoint, ContactValue, Customer, CustomerError, Customers, ExternalReference,
    MergeError, NewContactPoint, NewCustomer, Profile, ProfilePatch, SearchQuery, Tier,
};
use crate::audit::Auditor;
use crate::email::Email;
use crate::grpc_status;
use crate::page_token::{PageRequest, SHORT_PAGES};
use crate::phone::PhoneParser;
use crate::proto::v1;
use crate::proto::v1::customer_service_server::CustomerService;
use crate::proto_time::to_timestamp;
use crate::validation::Violations;

const MAX_CONTACT_POINTS: usize = 20;
const MAX_EXTERNAL_REFERENCES: usize = 20;

pub struct CustomerGrpc {
    customers: Customers,
    phones: PhoneParser,
    auditor: Auditor,
}

impl CustomerGrpc {
    pub fn new(customers: Customers, phones: PhoneParser, auditor: Auditor) -> Self {
        Self {
            customers,
            phones,
            auditor,
        }
    }
}

impl From<CustomerError> for Status {
    fn from(error: CustomerError) -> Self {
        match &error {
            CustomerError::Invalid(violations) => grpc_status::invalid_argument(violations),
            CustomerError::NotFound | CustomerError::ContactPointNotFound => {
                Status::not_found(error.to_string())
            }
            CustomerError::StaleVersion { .. } => Status::aborted(error.to_string()),
            CustomerError::AlreadyExists(_) => Status::already_exists(error.to_string()),
            CustomerError::Merge(MergeError::SameCustomer) => grpc_status::invalid_argument(
                &Violations::single("duplicate_id", error.to_string()),
            ),
            CustomerError::Merge(_) => Status::failed_precondition(error.to_string()),
            CustomerError::Unavailable(source) => grpc_status::unavailable(source),
            CustomerError::Database(source) => grpc_status::internal(source),
        }
    }
}

#[tonic::async_trait]
impl CustomerService for CustomerGrpc {
    async fn create_customer(
        &self,
        request: Request<v1::CreateCustomerRequest>,
    ) -> Result<Response<v1::CreateCustomerResponse>, Status> {
        let new =
            new_customer(request.into_inner(), &self.phones).map_err(CustomerError::Invalid)?;
        let customer = self.customers.create(new).await?;
        Ok(Response::new(v1::CreateCustomerResponse {
            customer: Some(to_proto(customer)),
        }))
    }

    async fn merge_customers(
        &self,
        request: Request<v1::MergeCustomersRequest>,
    ) -> Result<Response<v1::MergeCustomersResponse>, Status> {
        let actor = crate::auth::principal(&request)?.subject;
        let r = request.into_inner();
        let mut v = Violations::new();
        let survivor = v.uuid("survivor_id", &r.survivor_id, true);
        let duplicate = v.uuid("duplicate_id", &r.duplicate_id, true);
        let (Some(survivor), Some(duplicate), true) = (survivor, duplicate, v.is_empty()) else {
            return Err(CustomerError::Invalid(v).into());
        };
        let merged = self
            .customers
            .merge(survivor, duplicate, r.dry_run, &actor)
            .await?;
        Ok(Response::new(v1::MergeCustomersResponse {
            merge_id: merged.merge_id.map(|id| id.to_string()).unwrap_or_default(),
            survivor: Some(to_proto(merged.survivor)),
            moved: merged
                .moved
                .into_iter()
                .map(|(table, count)| v1::MovedRows { table, count })
                .collect(),
            dropped_contact_points: merged.dropped_contact_points,
            dropped_memberships: merged.dropped_memberships,
        }))
    }

    async fn unmerge_customer(
        &self,
        request: Request<v1::UnmergeCustomerRequest>,
    ) -> Result<Response<v1::UnmergeCustomerResponse>, Status> {
        let id = Violations::single_uuid("customer_id", &request.get_ref().customer_id)
            .map_err(CustomerError::Invalid)?;
        let (survivor, restored) = self.customers.unmerge(id).await?;
        Ok(Response::new(v1::UnmergeCustomerResponse {
            survivor: Some(to_proto(survivor)),
            restored: Some(to_proto(restored)),
        }))
    }

    async fn find_duplicate_customers(
        &self,
        request: Request<v1::FindDuplicateCustomersRequest>,
    ) -> Result<Response<v1::FindDuplicateCustomersResponse>, Status> {
        let r = request.into_inner();
        let mut v = Violations::new();
        let id = v.uuid("customer_id", &r.customer_id, true);
        if !(0..=50).contains(&r.limit) {
            v.add("limit", "must be between 1 and 50 (0 means 10)");
        }
        let (Some(id), true) = (id, v.is_empty()) else {
            return Err(CustomerError::Invalid(v).into());
        };
        let limit = if r.limit == 0 { 10 } else { i64::from(r.limit) };
        let found = self.customers.find_duplicates(id, limit).await?;
        self.auditor.read(found.iter().map(|(c, _)| c.id));
        Ok(Response::new(v1::FindDuplicateCustomersResponse {
            candidates: found
                .into_iter()
                .map(|(customer, reasons)| v1::DuplicateCandidate {
                    customer: Some(to_proto(customer)),
                    reasons,
                })
                .collect(),
        }))
    }

    async fn get_customer(
        &self,
        request: Request<v1::GetCustomerRequest>,
    ) -> Result<Response<v1::GetCustomerResponse>, Status> {
        let id =
            Violations::single_uuid("id", &request.get_ref().id).map_err(CustomerError::Invalid)?;
        let customer = self.customers.get(id).await?;
        self.auditor.read([customer.id]);
        Ok(Response::new(v1::GetCustomerResponse {
            customer: Some(to_proto(customer)),
        }))
    }

    async fn update_customer(
        &self,
        request: Request<v1::UpdateCustomerRequest>,
    ) -> Result<Response<v1::UpdateCustomerResponse>, Status> {
        let (id, version, patch) = update(request.into_inner()).map_err(CustomerError::Invalid)?;
        let customer = self.customers.update(id, version, patch).await?;
        Ok(Response::new(v1::UpdateCustomerResponse {
            customer: Some(to_proto(customer)),
        }))
    }

    async fn delete_customer(
        &self,
        request: Request<v1::DeleteCustomerRequest>,
    ) -> Result<Response<v1::DeleteCustomerResponse>, Status> {
        let request = request.into_inner();
        let id = Violations::single_uuid("id", &request.id).map_err(CustomerError::Invalid)?;
        let version = (request.version != 0).then_some(request.version);
        self.customers.delete(id, version).await?;
        Ok(Response::new(v1::DeleteCustomerResponse {}))
    }

    async fn search_customers(
        &self,
        request: Request<v1::SearchCustomersRequest>,
    ) -> Result<Response<v1::SearchCustomersResponse>, Status> {
        let request = request.into_inner();
        let (query, page) = search(&request, &self.phones).map_err(CustomerError::Invalid)?;
        let page = self.customers.search(query, &page).await?;
        self.auditor.read(page.items.iter().map(|c| c.id));
        Ok(Response::new(v1::SearchCustomersResponse {
            customers: page.items.into_iter().map(to_proto).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }

    async fn add_contact_point(
        &self,
        request: Request<v1::AddContactPointRequest>,
    ) -> Result<Response<v1::AddContactPointResponse>, Status> {
        let request = request.into_inner();
        let mut violations = Violations::new();
        let id = violations.uuid("customer_id", &request.customer_id, true);
        let contact = match &request.contact_point {
            Some(cp) => new_contact_point("contact_point", cp, &self.phones, &mut violations),
            None => {
                violations.add("contact_point", "is required");
                None
            }
        };
        let (Some(id), Some(contact), true) = (id, contact, violations.is_empty()) else {
            return Err(CustomerError::Invalid(violations).into());
        };
        let customer = self.customers.add_contact_point(id, contact).await?;
        Ok(Response::new(v1::AddContactPointResponse {
            customer: Some(to_proto(customer)),
        }))
    }

    async fn remove_contact_point(
        &self,
        request: Request<v1::RemoveContactPointRequest>,
    ) -> Result<Response<v1::RemoveContactPointResponse>, Status> {
        let request = request.into_inner();
        let mut violations = Violations::new();
        let id = violations.uuid("customer_id", &request.customer_id, true);
        let contact_id = violations.uuid("contact_point_id", &request.contact_point_id, true);
        let (Some(id), Some(contact_id)) = (id, contact_id) else {
            return Err(CustomerError::Invalid(violations).into());
        };
        let customer = self.customers.remove_contact_point(id, contact_id).await?;
        Ok(Response::new(v1::RemoveContactPointResponse {
            customer: Some(to_proto(customer)),
        }))
    }

    async fn link_external_reference(
        &self,
        request: Request<v1::LinkExternalReferenceRequest>,
    ) -> Result<Response<v1::LinkExternalReferenceResponse>, Status> {
        let request = request.into_inner();
        let mut violations = Violations::new();
        let id = violations.uuid("customer_id", &request.customer_id, true);
        let reference = match &request.external_reference {
            Some(r) => external_reference("external_reference", r, &mut violations),
            None => {
                violations.add("external_reference", "is required");
                None
            }
        };
        let (Some(id), Some(reference), true) = (id, reference, violations.is_empty()) else {
            return Err(CustomerError::Invalid(violations).into());
        };
        let customer = self
            .customers
            .link_external_reference(id, reference)
            .await?;
        Ok(Response::new(v1::LinkExternalReferenceResponse {
            customer: Some(to_proto(customer)),
        }))
    }
}

fn tier(field: &str, value: i32, violations: &mut Violations) -> Option<Tier> {
    match v1::Tier::try_from(value) {
        Ok(v1::Tier::Unspecified) | Ok(v1::Tier::Standard) => Some(Tier::Standard),
        Ok(v1::Tier::Silver) => Some(Tier::Silver),
        Ok(v1::Tier::Gold) => Some(Tier::Gold),
        Ok(v1::Tier::Platinum) => Some(Tier::Platinum),
        Err(_) => {
            violations.add(field, format!("unknown tier value {value}"));
            None
        }
    }
}

fn language(field: &str, value: &str, violations: &mut Violations) -> String {
    let value = violations.text(field, value, 35, false);
    let well_formed = value.split('-').enumerate().all(|(i, part)| {
        let alpha = part.chars().all(|c| c.is_ascii_alphabetic());
        match i {
            0 => (2..=3).contains(&part.len()) && alpha,
            _ => (1..=8).contains(&part.len()) && part.chars().all(|c| c.is_ascii_alphanumeric()),
        }
    });
    if !value.is_empty() && !well_formed {
        violations.add(field, "must be a BCP 47 language tag such as \"en-US\"");
    }
    value
}

fn time_zone(field: &str, value: &str, violations: &mut Violations) -> String {
    let value = violations.text(field, value, 64, false);
    if !value.is_empty() && value.parse::<chrono_tz::Tz>().is_err() {
        violations.add(
            field,
            "must be an IANA time zone such as \"America/New_York\"",
        );
    }
    value
}

/// Parses the profile fields shared by create and update.
struct ProfileFields<'a> {
    display_name: &'a str,
    company: &'a str,
    preferred_language: &'a str,
    time_zone: &'a str,
    segment: &'a str,
}

fn profile_texts(fields: &ProfileFields<'_>, violations: &mut Violations) -> [String; 5] {
    [
        violations.masked_text("display_name", fields.display_name, 200, true),
        violations.masked_text("company", fields.company, 200, false),
        language("preferred_language", fields.preferred_language, violations),
        time_zone("time_zone", fields.time_zone, violations),
        violations.text("segment", fields.segment, 64, false),
    ]
}

fn new_contact_point(
    field: &str,
    cp: &v1::NewContactPoint,
    phones: &PhoneParser,
    violations: &mut Violations,
) -> Option<NewContactPoint> {
    let label = violations.masked_text(&format!("{field}.label"), &cp.label, 40, false);
    let value_field = format!("{field}.value");
    let value = match v1::ContactKind::try_from(cp.kind) {
        Ok(v1::ContactKind::Phone) => violations
            .check(&value_field, phones.parse(&cp.value, &cp.extension))
            .map(ContactValue::Phone),
        Ok(v1::ContactKind::Email) => {
            if !cp.extension.is_empty() {
                violations.add(format!("{field}.extension"), "only phones have extensions");
            }
            violations
                .check(&value_field, Email::parse(&cp.value))
                .map(ContactValue::Email)
        }
        Ok(v1::ContactKind::Unspecified) | Err(_) => {
            violations.add(
                format!("{field}.kind"),
                "must be CONTACT_KIND_PHONE or CONTACT_KIND_EMAIL",
            );
            None
        }
    }?;
    Some(NewContactPoint {
        value,
        label,
        primary: cp.primary,
    })
}

fn external_reference(
    field: &str,
    r: &v1::ExternalReference,
    violations: &mut Violations,
) -> Option<ExternalReference> {
    let before = violations.iter().count();
    let system = violations.text(&format!("{field}.system"), &r.system, 64, true);
    let external_id = violations.text(&format!("{field}.external_id"), &r.external_id, 128, true);
    (violations.iter().count() == before).then_some(ExternalReference {
        system,
        external_id,
    })
}

fn new_customer(
    request: v1::CreateCustomerRequest,
    phones: &PhoneParser,
) -> Result<NewCustomer, Violations> {
    let mut violations = Violations::new();
    let [
        display_name,
        company,
        preferred_language,
        time_zone,
        segment,
    ] = profile_texts(
        &ProfileFields {
            display_name: &request.display_name,
            company: &request.company,
            preferred_language: &request.preferred_language,
            time_zone: &request.time_zone,
            segment: &request.segment,
        },
        &mut violations,
    );
    let tier = tier("tier", request.tier, &mut violations);
    if request.contact_points.len() > MAX_CONTACT_POINTS {
        violations.add(
            "contact_points",
            format!("at most {MAX_CONTACT_POINTS} contact points"),
        );
    }
    if request.external_references.len() > MAX_EXTERNAL_REFERENCES {
        violations.add(
            "external_references",
            format!("at most {MAX_EXTERNAL_REFERENCES} references"),
        );
    }
    let mut contact_points: Vec<NewContactPoint> = Vec::new();
    for (i, cp) in request.contact_points.iter().enumerate() {
        let field = format!("contact_points[{i}]");
        if let Some(cp) = new_contact_point(&field, cp, phones, &mut violations) {
            if contact_points.iter().any(|seen| seen.value == cp.value) {
                violations.add(
                    format!("{field}.value"),
                    "duplicates an earlier contact point",
                );
            }
            contact_points.push(cp);
        }
    }
    let mut external_references: Vec<ExternalReference> = Vec::new();
    for (i, r) in request.external_references.iter().enumerate() {
        let field = format!("external_references[{i}]");
        if let Some(r) = external_reference(&field, r, &mut violations) {
            if external_references
                .iter()
                .any(|seen| seen.system == r.system && seen.external_id == r.external_id)
            {
                violations.add(field, "duplicates an earlier reference");
            }
            external_references.push(r);
        }
    }
    let request_id = violations.text("request_id", &request.request_id, 100, false);
    let consent = request.consent.unwrap_or_default();
    violations.finish(|| NewCustomer {
        profile: Profile {
            display_name,
            company,
            preferred_language,
            time_zone,
            tier: tier.unwrap_or(Tier::Standard),
            vip: request.vip,
            segment,
            marketing_consent: consent.marketing,
            do_not_call: consent.do_not_call,
        },
        contact_points,
        external_references,
        request_id: (!request_id.is_empty()).then_some(request_id),
    })
}

fn update(request: v1::UpdateCustomerRequest) -> Result<(Uuid, i64, ProfilePatch), Violations> {
    let mut violations = Violations::new();
    let customer = request.customer.unwrap_or_default();
    let id = violations.uuid("customer.id", &customer.id, true);
    if customer.version <= 0 {
        violations.add(
            "customer.version",
            "must be the version you read (at least 1)",
        );
    }
    let paths = request
        .update_mask
        .map(|mask| mask.paths)
        .unwrap_or_default();
    if paths.is_empty() {
        violations.add("update_mask", "name at least one field to change");
    }
    let consent = customer.consent.unwrap_or_default();
    let mut patch = ProfilePatch::default();
    for path in &paths {
        let field = format!("customer.{path}");
        match path.as_str() {
            "display_name" => {
                patch.display_name =
                    Some(violations.masked_text(&field, &customer.display_name, 200, true))
            }
            "company" => {
                patch.company = Some(violations.masked_text(&field, &customer.company, 200, false))
            }
            "preferred_language" => {
                patch.preferred_language = Some(language(
                    &field,
                    &customer.preferred_language,
                    &mut violations,
                ));
            }
            "time_zone" => {
                patch.time_zone = Some(time_zone(&field, &customer.time_zone, &mut violations))
            }
            "tier" => {
                if customer.tier == i32::from(v1::Tier::Unspecified) {
                    violations.add(&field, "must name a tier");
                }
                patch.tier = tier(&field, customer.tier, &mut violations);
            }
            "vip" => patch.vip = Some(customer.vip),
            "segment" => {
                patch.segment = Some(violations.text(&field, &customer.segment, 64, false))
            }
            "consent" => {
                patch.marketing_consent = Some(consent.marketing);
                patch.do_not_call = Some(consent.do_not_call);
            }
            "consent.marketing" => patch.marketing_consent = Some(consent.marketing),
            "consent.do_not_call" => patch.do_not_call = Some(consent.do_not_call),
            "contact_points" | "external_references" => {
                violations.add(
                    "update_mask",
                    format!("{path} is changed with its own RPCs"),
                );
            }
            other => violations.add(
                "update_mask",
                format!("unknown or read-only field {other:?}"),
            ),
        }
    }
    let id = id.unwrap_or_default();
    violations.finish(|| (id, customer.version, patch))
}

fn search(
    request: &v1::SearchCustomersRequest,
    phones: &PhoneParser,
) -> Result<(SearchQuery, PageRequest), Violations> {
    use v1::search_customers_request::Query;
    let mut violations = Violations::new();
    let page = PageRequest::parse(
        &mut violations,
        request.page_size,
        &request.page_token,
        SHORT_PAGES,
    );
    let query = match &request.query {
        Some(Query::Phone(phone)) => violations
            .check("phone", phones.parse(phone, ""))
            .map(SearchQuery::Phone),
        Some(Query::Email(email)) => violations
            .check("email", Email::parse(email))
            .map(SearchQuery::Email),
        Some(Query::NamePrefix(prefix)) => {
            let prefix = violations.text("name_prefix", prefix, 200, true);
            Some(SearchQuery::NamePrefix(prefix))
        }
        Some(Query::ExternalReference(r)) => {
            external_reference("external_reference", r, &mut violations).map(SearchQuery::External)
        }
        None => {
            violations.add(
                "query",
                "set one of phone, email, name_prefix, external_reference",
            );
            None
        }
    };
    match query {
        Some(query) if violations.is_empty() => Ok((query, page)),
        _ => Err(violations),
    }
}

fn contact_to_proto(cp: ContactPoint) -> v1::ContactPoint {
    v1::ContactPoint {
        id: cp.id.to_string(),
        kind: match cp.kind {
            ContactKind::Phone => v1::ContactKind::Phone,
            ContactKind::Email => v1::ContactKind::Email,
        }
        .into(),
        value: cp.value,
        extension: cp.extension,
        label: cp.label,
        primary: cp.primary,
    }
}

pub(crate) fn to_proto(customer: Customer) -> v1::Customer {
    let p = customer.profile;
    v1::Customer {
        id: customer.id.to_string(),
        display_name: p.display_name,
        company: p.company,
        preferred_language: p.preferred_language,
        time_zone: p.time_zone,
        tier: match p.tier {
            Tier::Standard => v1::Tier::Standard,
            Tier::Silver => v1::Tier::Silver,
            Tier::Gold => v1::Tier::Gold,
            Tier::Platinum => v1::Tier::Platinum,
        }
        .into(),
        vip: p.vip,
        segment: p.segment,
        consent: Some(v1::Consent {
            marketing: p.marketing_consent,
            do_not_call: p.do_not_call,
        }),
        contact_points: customer
            .contact_points
            .into_iter()
            .map(contact_to_proto)
            .collect(),
        external_references: customer
            .external_references
            .into_iter()
            .map(|r| v1::ExternalReference {
                system: r.system,
                external_id: r.external_id,
            })
            .collect(),
        create_time: Some(to_timestamp(customer.created_at)),
        update_time: Some(to_timestamp(customer.updated_at)),
        version: customer.version,
    }
}
