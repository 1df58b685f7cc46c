//! Identities more than one context names, owned here so that none imports another for them.
//! A leaf: it depends on no context.

/// A customer's id in another system (an ERP's customer number, a billing account): the customer
/// record keeps them, and orders and service events from that system name the customer by one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ExternalReference {
    pub system: String,
    pub external_id: String,
}
