//! Where a message comes from or goes to.

use std::fmt;
use std::net::SocketAddr;

/// A SIP transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    /// Whether the transport delivers reliably, so nothing is retransmitted (RFC 3261 §17).
    pub fn reliable(self) -> bool {
        matches!(self, Transport::Tcp)
    }

    /// As written in a Via header.
    pub fn via_name(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
        }
    }
}

/// The other end of a message: transport, address, and for TCP the connection it arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Peer {
    pub transport: Transport,
    pub addr: SocketAddr,
    /// The TCP connection to answer on; `None` to use (or open) any connection to `addr`.
    pub connection: Option<u64>,
}

impl Peer {
    pub fn udp(addr: SocketAddr) -> Peer {
        Peer {
            transport: Transport::Udp,
            addr,
            connection: None,
        }
    }

    pub fn tcp(addr: SocketAddr, connection: Option<u64>) -> Peer {
        Peer {
            transport: Transport::Tcp,
            addr,
            connection,
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}",
            self.transport.via_name().to_ascii_lowercase(),
            self.addr
        )
    }
}
