//! The admin listener's connection slots: who holds one, and whom to close when a new
//! connection finds none free.
//!
//! A connection that is not being served a request (it sent nothing yet, half a request,
//! or waits between keep-alive requests) costs the proxy a slot and gives nothing back.
//! Refusing newcomers while such connections hold every slot let 64 idle sockets keep
//! `/healthz` and `/metrics` unreachable, renewably, so a liveness probe restarted a
//! healthy proxy. So a newcomer is refused only when every slot it could take is busy
//! serving a request (bounded by `admin.request_timeout`); otherwise the oldest idle
//! connection makes room. One address holds at most `admin.max_connections_per_ip`, and
//! makes room among its own: a flood from one address churns its own connections, not
//! everyone's. The oldest goes first so that a newcomer has the time to send its request:
//! whoever opens connections after it closes older ones first. Whether an idle
//! connection was answered before does not matter: preferring to keep those would let
//! a flood of connections that each sent one request close every newcomer at once, and
//! a keep-alive client that loses its connection simply opens another.
//!
//! Pure bookkeeping: the accept loop closes what [`Slots::admit`] names.

use std::collections::BTreeMap;
use std::net::IpAddr;

use tokio_util::sync::CancellationToken;

/// A connection's place in the table (also its age: ids grow).
pub type Id = u64;

/// Why a newcomer found no slot to take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// `max_connections` are open, each serving a request.
    All,
    /// Its address holds `max_connections_per_ip`, each serving a request.
    Address,
}

/// A connection closed to make room.
#[derive(Debug)]
pub struct Evicted {
    pub ip: IpAddr,
    /// Which limit the newcomer met.
    pub limit: Full,
}

#[derive(Debug)]
struct Held {
    ip: IpAddr,
    /// A request is being served.
    busy: bool,
    close: CancellationToken,
}

/// Every admin connection open now.
#[derive(Debug)]
pub struct Slots {
    max: usize,
    per_ip: usize,
    next: Id,
    held: BTreeMap<Id, Held>,
}

impl Slots {
    pub fn new(max: usize, per_ip: usize) -> Slots {
        Slots {
            max: max.max(1),
            per_ip: per_ip.max(1),
            next: 0,
            held: BTreeMap::new(),
        }
    }

    /// A slot for a new connection from `ip`, which `close` ends; the connection closed
    /// to make room, if any. `Err` when every slot it could take is busy.
    pub fn admit(
        &mut self,
        ip: IpAddr,
        close: CancellationToken,
    ) -> Result<(Id, Option<Evicted>), Full> {
        let ip = ip.to_canonical();
        let mine = self.held.values().filter(|h| h.ip == ip).count();
        let evicted = if mine >= self.per_ip {
            Some(self.evict(Full::Address, |h| h.ip == ip)?)
        } else if self.held.len() >= self.max {
            Some(self.evict(Full::All, |_| true)?)
        } else {
            None
        };
        let id = self.next;
        self.next += 1;
        self.held.insert(
            id,
            Held {
                ip,
                busy: false,
                close,
            },
        );
        Ok((id, evicted))
    }

    /// Closes the oldest idle connection among `among`.
    fn evict(&mut self, limit: Full, among: impl Fn(&Held) -> bool) -> Result<Evicted, Full> {
        // Ids grow: the first idle one is the oldest.
        let (&id, _) = self
            .held
            .iter()
            .find(|(_, h)| !h.busy && among(h))
            .ok_or(limit)?;
        let held = self.held.remove(&id).expect("just found");
        // The connection's task ends on it.
        held.close.cancel();
        Ok(Evicted { ip: held.ip, limit })
    }

    /// Connection `id` is being served a request (`true`) or has been answered (`false`).
    pub fn set_busy(&mut self, id: Id, busy: bool) {
        if let Some(h) = self.held.get_mut(&id) {
            h.busy = busy;
        }
    }

    /// Connection `id` has ended.
    pub fn release(&mut self, id: Id) {
        self.held.remove(&id);
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn admit(slots: &mut Slots, from: &str) -> Result<(Id, Option<Evicted>), Full> {
        slots.admit(ip(from), CancellationToken::new())
    }

    #[test]
    fn idle_connections_make_room_oldest_first() {
        let mut slots = Slots::new(3, 3);
        let a = CancellationToken::new();
        let (first, none) = slots.admit(ip("10.0.0.1"), a.clone()).unwrap();
        assert!(none.is_none());
        let (second, _) = admit(&mut slots, "10.0.0.2").unwrap();
        let (third, _) = admit(&mut slots, "10.0.0.3").unwrap();
        // Full: the oldest idle one goes, and is told to close.
        let (_, gone) = admit(&mut slots, "10.0.0.4").unwrap();
        let gone = gone.expect("room was made");
        assert_eq!((gone.ip, gone.limit), (ip("10.0.0.1"), Full::All));
        assert!(a.is_cancelled());
        assert_eq!(slots.len(), 3);
        // One being served is never closed; one answered before and idle again is.
        slots.set_busy(second, true);
        slots.set_busy(third, true);
        let (_, gone) = admit(&mut slots, "10.0.0.5").unwrap();
        assert_eq!(gone.unwrap().ip, ip("10.0.0.4"));
        slots.set_busy(second, false);
        let (_, gone) = admit(&mut slots, "10.0.0.6").unwrap();
        assert_eq!(gone.unwrap().ip, ip("10.0.0.2"), "the oldest idle one");
        let (_, gone) = admit(&mut slots, "10.0.0.7").unwrap();
        assert_eq!(gone.unwrap().ip, ip("10.0.0.5"));
        slots.release(first); // long gone: nothing happens
        assert_eq!(slots.len(), 3);
    }

    #[test]
    fn busy_slots_refuse_newcomers() {
        let mut slots = Slots::new(2, 2);
        for from in ["10.0.0.1", "10.0.0.2"] {
            let (id, _) = admit(&mut slots, from).unwrap();
            slots.set_busy(id, true);
        }
        assert_eq!(admit(&mut slots, "10.0.0.3").unwrap_err(), Full::All);
        assert_eq!(slots.len(), 2);
    }

    /// One address makes room among its own connections: another address's stay.
    #[test]
    fn one_address_churns_its_own_connections() {
        let mut slots = Slots::new(10, 2);
        let (other, _) = admit(&mut slots, "10.0.0.9").unwrap();
        for _ in 0..2 {
            admit(&mut slots, "10.0.0.1").unwrap();
        }
        for _ in 0..20 {
            let (_, gone) = admit(&mut slots, "10.0.0.1").unwrap();
            let gone = gone.expect("its own oldest");
            assert_eq!((gone.ip, gone.limit), (ip("10.0.0.1"), Full::Address));
        }
        assert_eq!(slots.len(), 3);
        slots.set_busy(other, true);
        slots.release(other);
        assert_eq!(slots.len(), 2);
        // Its own all busy: refused, though other slots are free.
        let ids: Vec<Id> = slots.held.keys().copied().collect();
        for id in ids {
            slots.set_busy(id, true);
        }
        assert_eq!(admit(&mut slots, "10.0.0.1").unwrap_err(), Full::Address);
        assert!(admit(&mut slots, "::ffff:10.0.0.2").is_ok());
        assert_eq!(
            admit(&mut slots, "::ffff:10.0.0.1").unwrap_err(),
            Full::Address,
            "a v4-mapped address is the same client"
        );
    }
}
