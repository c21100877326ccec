//! What sipdesk accepts from the network, as one value the sockets and the proxy share: who may
//! send (the PBX and the trusted networks), what untrusted sources get, how large a message may
//! be, how many transactions and TCP connections there may be, and how long a connection may
//! stay idle or take to send a message. A reload replaces the whole value at once
//! ([`SharedPolicy::store`]), so the UDP path, the TCP listeners and the proxy never apply
//! different halves of a configuration.

use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ipnet::IpNet;

use super::wire::Limits;

/// The checked network settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// The PBX's address: always trusted.
    pub pbx: IpAddr,
    /// Other addresses that may send requests.
    pub trusted: Vec<IpNet>,
    /// Untrusted requests get 403 (`true`) or silence.
    pub reject_untrusted: bool,
    /// At most this many 403s a second.
    pub untrusted_rate: u32,
    pub limits: Limits,
    /// Most transactions alive at once; beyond, new requests get 503.
    pub max_transactions: usize,
    /// Most TCP connections open at once; beyond, the one idle the longest is closed.
    pub max_connections: usize,
    /// A TCP connection with no traffic for this long is closed.
    pub tcp_idle_timeout: Duration,
    /// Once a message has started on a TCP connection, the rest must come within this.
    pub tcp_message_timeout: Duration,
}

impl Policy {
    /// Whether requests from `ip` are taken: the PBX and the trusted networks.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        ip == self.pbx || self.trusted.iter().any(|net| net.contains(&ip))
    }
}

/// The policy in force, shared by the sockets and the proxy.
#[derive(Clone, Debug)]
pub struct SharedPolicy(Arc<RwLock<Arc<Policy>>>);

impl SharedPolicy {
    pub fn new(policy: Policy) -> SharedPolicy {
        SharedPolicy(Arc::new(RwLock::new(Arc::new(policy))))
    }

    /// The policy now.
    pub fn load(&self) -> Arc<Policy> {
        match self.0.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the policy for every reader at once.
    pub fn store(&self, policy: Policy) {
        let policy = Arc::new(policy);
        match self.0.write() {
            Ok(mut guard) => *guard = policy,
            Err(poisoned) => *poisoned.into_inner() = policy,
        }
    }
}
