//! Who may call what: one entry per RPC, in one place (mirrored in docs/SECURITY.md).
//!
//! The health service needs no credential. An RPC without an entry is denied to everyone, and a
//! test walks the descriptor set so that a new RPC without an entry fails the build's tests.
//! Resource rules (an agent only on its own stream, a gateway only for its own gateway id) are
//! checked by the handlers, which know the resource.

use super::Role::{self, Admin, Agent, Gateway, Lookup, Service, Supervisor};

/// Every role but LOOKUP, which may only look callers up.
const EVERYONE: &[Role] = &[Agent, Supervisor, Gateway, Service, Admin];
/// Everyone, and the dialplans' caller-ID keys: these RPCs show a name and routing hints only.
const CALLER_ID: &[Role] = &[Agent, Supervisor, Gateway, Service, Admin, Lookup];
const STAFF: &[Role] = &[Agent, Supervisor, Admin];
const RECORD_READERS: &[Role] = &[Agent, Supervisor, Service, Admin];
const MANAGERS: &[Role] = &[Supervisor, Admin];
const SYSTEMS: &[Role] = &[Service, Admin];
const GATEWAYS: &[Role] = &[Gateway, Admin];

pub const PERMISSIONS: &[(&str, &[Role])] = &[
    (
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        EVERYONE,
    ),
    (
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        EVERYONE,
    ),
    (
        "/switchboard.v1.CustomerService/CreateCustomer",
        RECORD_READERS,
    ),
    (
        "/switchboard.v1.CustomerService/GetCustomer",
        RECORD_READERS,
    ),
    (
        "/switchboard.v1.CustomerService/UpdateCustomer",
        RECORD_READERS,
    ),
    (
        "/switchboard.v1.CustomerService/DeleteCustomer",
        &[Supervisor, Service, Admin],
    ),
    (
        "/switchboard.v1.CustomerService/SearchCustomers",
        RECORD_READERS,
    ),
    (
        "/switchboard.v1.CustomerService/AddContactPoint",
        RECORD_READERS,
    ),
    (
        "/switchboard.v1.CustomerService/RemoveContactPoint",
        RECORD_READERS,
    ),
    (
        "/switchboard.v1.CustomerService/LinkExternalReference",
        RECORD_READERS,
    ),
    (
        "/switchboard.v1.CustomerService/MergeCustomers",
        &[Supervisor, Service, Admin],
    ),
    (
        "/switchboard.v1.CustomerService/UnmergeCustomer",
        &[Supervisor, Service, Admin],
    ),
    (
        "/switchboard.v1.CustomerService/FindDuplicateCustomers",
        &[Supervisor, Service, Admin],
    ),
    (
        "/switchboard.v1.SegmentationService/SegmentCustomers",
        &[Supervisor, Service, Admin],
    ),
    ("/switchboard.v1.ScorecardService/GetScorecard", MANAGERS),
    (
        "/switchboard.v1.ReconcileService/ReconcileCdrs",
        &[Supervisor, Service, Admin],
    ),
    (
        "/switchboard.v1.AnalyticsService/GetKpis",
        &[Supervisor, Service, Admin],
    ),
    (
        "/switchboard.v1.AnalyticsService/GetLiveQueueStats",
        RECORD_READERS,
    ),
    ("/switchboard.v1.EventFeedService/Subscribe", SYSTEMS),
    ("/switchboard.v1.ScreenPopService/Lookup", RECORD_READERS),
    ("/switchboard.v1.CallerIdService/GetCallerName", CALLER_ID),
    (
        "/switchboard.v1.CallerIdService/GetCallerRouting",
        CALLER_ID,
    ),
    (
        "/switchboard.v1.CallEventService/StreamCallEvents",
        GATEWAYS,
    ),
    ("/switchboard.v1.CallEventService/ReportCallEvent", GATEWAYS),
    ("/switchboard.v1.AgentService/WatchAgent", STAFF),
    ("/switchboard.v1.AgentService/SetAgentState", STAFF),
    ("/switchboard.v1.AgentService/ListAgentStates", STAFF),
    ("/switchboard.v1.AgentService/SetAgentTeam", MANAGERS),
    ("/switchboard.v1.AgentService/SetAgentQueues", MANAGERS),
    (
        "/switchboard.v1.AgentService/UpsertAgent",
        &[Supervisor, Service, Admin],
    ),
    (
        "/switchboard.v1.AgentService/ListAgents",
        &[Supervisor, Service, Admin],
    ),
    (
        "/switchboard.v1.CampaignService/CreateCampaign",
        &[Supervisor, Service, Admin],
    ),
    (
        "/switchboard.v1.CampaignService/UpdateCampaign",
        &[Supervisor, Service, Admin],
    ),
    (
        "/switchboard.v1.CampaignService/ListCampaigns",
        RECORD_READERS,
    ),
    (
        "/switchboard.v1.CampaignService/GetCampaignStats",
        RECORD_READERS,
    ),
    (
        "/switchboard.v1.CampaignService/AddCampaignMembers",
        &[Supervisor, Service, Admin],
    ),
    ("/switchboard.v1.CampaignService/NextOutboundContact", STAFF),
    ("/switchboard.v1.CampaignService/RecordOutcome", STAFF),
    (
        "/switchboard.v1.FeedbackService/SubmitFeedback",
        RECORD_READERS,
    ),
    (
        "/switchboard.v1.FeedbackService/GetFeedback",
        RECORD_READERS,
    ),
    ("/switchboard.v1.FeedbackService/TriageFeedback", STAFF),
    (
        "/switchboard.v1.FeedbackService/UpdateFeedbackStatus",
        STAFF,
    ),
    (
        "/switchboard.v1.FeedbackService/ListFeedback",
        RECORD_READERS,
    ),
    (
        "/switchboard.v1.FeedbackService/GetFeedbackSummary",
        &[Supervisor, Service, Admin],
    ),
    (
        "/switchboard.v1.ImportService/ImportCustomers",
        &[Supervisor, Service, Admin],
    ),
    (
        "/switchboard.v1.InteractionService/LogInteraction",
        RECORD_READERS,
    ),
    ("/switchboard.v1.InteractionService/CompleteWrapUp", STAFF),
    (
        "/switchboard.v1.InteractionService/ListInteractions",
        RECORD_READERS,
    ),
    (
        "/switchboard.v1.InteractionService/ListDispositions",
        RECORD_READERS,
    ),
    (
        "/switchboard.v1.InteractionService/UpsertDisposition",
        MANAGERS,
    ),
    ("/switchboard.v1.CaseService/OpenCase", RECORD_READERS),
    ("/switchboard.v1.CaseService/GetCase", RECORD_READERS),
    ("/switchboard.v1.CaseService/UpdateCase", RECORD_READERS),
    ("/switchboard.v1.CaseService/AssignCase", STAFF),
    ("/switchboard.v1.CaseService/AddCaseComment", RECORD_READERS),
    ("/switchboard.v1.CaseService/ListCases", RECORD_READERS),
    ("/switchboard.v1.CaseService/GetCaseHistory", RECORD_READERS),
    ("/switchboard.v1.ActivityService/RecordOrder", SYSTEMS),
    (
        "/switchboard.v1.ActivityService/RecordServiceEvent",
        SYSTEMS,
    ),
    ("/switchboard.v1.AuditService/ListAuditEvents", &[Admin]),
    ("/switchboard.v1.DiagnosticsService/Echo", EVERYONE),
    (
        "/switchboard.v1.PrivacyService/ExportCustomerData",
        &[Admin],
    ),
    ("/switchboard.v1.PrivacyService/EraseCustomer", &[Admin]),
    ("/switchboard.v1.WebhookService/CreateWebhook", SYSTEMS),
    ("/switchboard.v1.WebhookService/GetWebhook", SYSTEMS),
    ("/switchboard.v1.WebhookService/ListWebhooks", SYSTEMS),
    ("/switchboard.v1.WebhookService/UpdateWebhook", SYSTEMS),
    ("/switchboard.v1.WebhookService/PauseWebhook", SYSTEMS),
    ("/switchboard.v1.WebhookService/DeleteWebhook", SYSTEMS),
    (
        "/switchboard.v1.WebhookService/RotateWebhookSecret",
        SYSTEMS,
    ),
    ("/switchboard.v1.WebhookService/ListDeliveries", SYSTEMS),
    ("/switchboard.v1.WebhookService/ReplayWebhook", SYSTEMS),
];

/// [`PERMISSIONS`] by path, built once: every request looks its path up (the auth layer, and
/// the RPC layer for its metrics label).
static BY_PATH: std::sync::LazyLock<std::collections::HashMap<&'static str, &'static [Role]>> =
    std::sync::LazyLock::new(|| PERMISSIONS.iter().copied().collect());

/// The roles that may call `path` (`/package.Service/Method`); `None` when it has no entry.
pub fn allowed_roles(path: &str) -> Option<&'static [Role]> {
    BY_PATH.get(path).copied()
}

/// Paths that need no credential at all.
pub fn is_public(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every RPC the server serves has an entry, and every entry names a served RPC.
    #[test]
    fn every_rpc_has_a_permission_entry() {
        let served: Vec<String> = crate::proto::rpc_methods()
            .into_iter()
            .map(|method| method.path)
            .collect();
        assert!(!served.is_empty(), "the descriptor set decodes");
        for rpc in &served {
            assert!(
                allowed_roles(rpc).is_some(),
                "{rpc} has no permission entry"
            );
        }
        for (rpc, _) in PERMISSIONS
            .iter()
            .filter(|(rpc, _)| rpc.starts_with("/switchboard."))
        {
            assert!(served.iter().any(|s| s == rpc), "{rpc} is not an RPC");
        }
    }

    /// A lookup key reaches the two caller-ID RPCs and nothing else, reflection included.
    #[test]
    fn a_lookup_credential_can_only_look_callers_up() {
        let reachable: Vec<&str> = PERMISSIONS
            .iter()
            .filter(|(_, roles)| roles.contains(&Lookup))
            .map(|(rpc, _)| *rpc)
            .collect();
        assert_eq!(
            reachable,
            [
                "/switchboard.v1.CallerIdService/GetCallerName",
                "/switchboard.v1.CallerIdService/GetCallerRouting",
            ]
        );
    }
}
