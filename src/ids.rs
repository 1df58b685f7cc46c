//! Identities more than one context names, owned here so that none imports another for them.
//! A leaf: it depends on no context.

/// A customer's id in another system (an ERP's customer number, a billing account): the customer
/// record keeps them, and orders and service events from that system name the customer by one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ExternalReference {
    pub system: String,
    pub external_id: String,
}

/// A customer record's id. Contexts pass it to one another as this type, never as a bare `Uuid`,
/// so a case id or a campaign id cannot stand in for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CustomerId(uuid::Uuid);

impl CustomerId {
    pub const fn new(id: uuid::Uuid) -> Self {
        Self(id)
    }

    pub const fn as_uuid(self) -> uuid::Uuid {
        self.0
    }
}

impl From<uuid::Uuid> for CustomerId {
    fn from(id: uuid::Uuid) -> Self {
        Self(id)
    }
}

impl std::fmt::Display for CustomerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Text ids given by other systems (an agent's id in the contact center, a gateway's name): a
/// newtype each, so that an agent id and a gateway id cannot be swapped in a call.
macro_rules! text_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Wraps an id already validated at the edge.
            pub fn new(id: impl Into<String>) -> Self {
                Self(id.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<String> for $name {
            fn from(id: String) -> Self {
                Self(id)
            }
        }

        impl From<&str> for $name {
            fn from(id: &str) -> Self {
                Self(id.to_owned())
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

text_id!(
    /// An agent's id, as the contact center names its agents (validated by
    /// `call_model::parse_agent_id`).
    AgentId
);
text_id!(
    /// A telephony gateway's id (a PBX or SIP server), unique per deployment; with a call id it
    /// names one call.
    GatewayId
);
