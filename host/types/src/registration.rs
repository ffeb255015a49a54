//! Registered devices: the registrar keeps them, the store persists them, scripts and
//! flips look them up.

use std::net::SocketAddr;

use serde::Serialize;
use wasmpbx_sip::transaction::{Peer, Transport};

/// One registered device of a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Binding {
    pub user_id: String,
    /// Unique per user: from the User-Agent.
    pub device: String,
    /// The Contact URI the device registered.
    pub contact: String,
    /// `+sip.instance`, which identifies a device across contact changes.
    pub instance: Option<String>,
    pub user_agent: Option<String>,
    #[serde(serialize_with = "serialize_transport")]
    pub transport: Transport,
    /// Where the REGISTER really came from: requests to the device go here (NAT).
    pub source: SocketAddr,
    /// Unix seconds.
    pub expires_at: i64,
    pub call_id: String,
    pub cseq: u32,
}

fn serialize_transport<S: serde::Serializer>(t: &Transport, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(t.as_str())
}

impl Binding {
    pub fn peer(&self) -> Peer {
        Peer {
            transport: self.transport,
            addr: self.source,
        }
    }
}

/// A change of registrations for the store to persist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindingChange {
    Upsert(Binding),
    Remove { user_id: String, contact: String },
}
