//! The node-wide budget of bytes reserved for messages under reassembly, shared by every
//! connection's [`MuxReceiver`](crate::mux::MuxReceiver).
//!
//! Each receiver bounds its own reservations with `max_buffered_bytes`; without a shared bound,
//! n connections could hold n times that. A [`ReassemblyBudget`] caps the node's total at
//! `cap` with the rule of the core's fair shares: half of the cap is reserved in equal shares,
//! one per live connection (`share = cap / 2 / live`), and the other half is used by whoever
//! needs it.
//!
//! - A connection whose reservations stay within its share is admitted whenever the total stays
//!   within the cap.
//! - A connection going past its share is admitted only while the total plus what is still owed
//!   to the connections below their shares (`Σ max(0, share - usage)`) stays within the cap.
//!
//! So the total never exceeds `cap`, and over-share growth always leaves every share free:
//! while the set of connections is unchanged, a connection within its share is never refused,
//! whatever the others hold. When a connection joins, the shares shrink and the newcomer's may
//! be taken by over-share reservations made before; it is free again once those messages
//! complete or stall out (no frame for the receiver's `partial_timeout`). A sender that
//! trickles a frame per message just under that timeout keeps its reservations for as long as
//! it trickles: this budget, not the timeout, bounds what it holds (its share plus what the
//! over-share rule admits, never the other connections' shares).
//!
//! A refusal ends the connection ([`MuxError::NodeBudget`](crate::mux::MuxError::NodeBudget)).
//! It is not counted as misbehaviour: whether it happens depends on what the other
//! connections hold, not only on what this peer did.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Half of the cap is reserved in equal shares.
const RESERVED_DIVISOR: usize = 2;

/// The node-wide bound on reassembly reservations; cheap to clone (clones share the budget).
#[derive(Clone, Debug)]
pub struct ReassemblyBudget {
    inner: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct State {
    cap: usize,
    used: usize,
    peak: usize,
    share: usize,
    owed: usize,
    /// Usage per registered receiver; `None` for a free slot.
    slots: Vec<Option<usize>>,
    free: Vec<usize>,
    live: usize,
}

impl State {
    fn owed_to(&self, usage: usize) -> usize {
        self.share.saturating_sub(usage)
    }

    fn reshare(&mut self) {
        self.share = (self.cap / RESERVED_DIVISOR)
            .checked_div(self.live)
            .unwrap_or(0);
        let share = self.share;
        self.owed = self
            .slots
            .iter()
            .flatten()
            .map(|u| share.saturating_sub(*u))
            .sum();
    }
}

/// Why a reservation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// The node's total reserved before the request.
    pub used: usize,
    /// The connection's own reservations before the request.
    pub usage: usize,
    /// The connection's reserved share.
    pub share: usize,
    /// The node-wide cap.
    pub cap: usize,
}

impl ReassemblyBudget {
    /// A budget of `cap` bytes for the whole node, with no connection yet.
    pub fn new(cap: usize) -> Self {
        ReassemblyBudget {
            inner: Arc::new(Mutex::new(State {
                cap,
                used: 0,
                peak: 0,
                share: 0,
                owed: 0,
                slots: Vec::new(),
                free: Vec::new(),
                live: 0,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The node-wide cap.
    pub fn cap(&self) -> usize {
        self.lock().cap
    }

    /// Bytes reserved now, over all connections (at most [`cap`](Self::cap)).
    pub fn used(&self) -> usize {
        self.lock().used
    }

    /// The most bytes ever reserved at once.
    pub fn peak(&self) -> usize {
        self.lock().peak
    }

    /// Connections drawing on the budget.
    pub fn live(&self) -> usize {
        self.lock().live
    }

    /// The share reserved for each live connection now.
    pub fn share(&self) -> usize {
        self.lock().share
    }

    /// Registers one more connection; its [`BudgetSlot`] gives everything back when dropped.
    pub fn register(&self) -> BudgetSlot {
        let mut s = self.lock();
        let slot = match s.free.pop() {
            Some(i) => {
                s.slots[i] = Some(0);
                i
            }
            None => {
                s.slots.push(Some(0));
                s.slots.len() - 1
            }
        };
        s.live += 1;
        s.reshare();
        drop(s);
        BudgetSlot {
            budget: self.clone(),
            slot,
            usage: 0,
        }
    }
}

/// One connection's account in a [`ReassemblyBudget`].
#[derive(Debug)]
pub struct BudgetSlot {
    budget: ReassemblyBudget,
    slot: usize,
    usage: usize,
}

impl BudgetSlot {
    /// This connection's reservations.
    pub fn usage(&self) -> usize {
        self.usage
    }

    /// The budget this slot draws on.
    pub fn budget(&self) -> &ReassemblyBudget {
        &self.budget
    }

    /// Reserves `amount` more bytes if the rule admits it (see the module docs).
    pub fn try_take(&mut self, amount: usize) -> Result<(), Refused> {
        let mut s = self.budget.lock();
        let usage = self.usage;
        let refused = Refused {
            used: s.used,
            usage,
            share: s.share,
            cap: s.cap,
        };
        let total = s.used.saturating_add(amount);
        if total > s.cap {
            return Err(refused);
        }
        let after = usage.saturating_add(amount);
        let owed_after = s.owed - (s.owed_to(usage) - s.owed_to(after));
        if after > s.share && total.saturating_add(owed_after) > s.cap {
            return Err(refused);
        }
        s.owed = owed_after;
        s.used = total;
        s.peak = s.peak.max(total);
        s.slots[self.slot] = Some(after);
        self.usage = after;
        Ok(())
    }

    /// Gives back `amount` reserved bytes (at most what this slot holds).
    pub fn give(&mut self, amount: usize) {
        let amount = amount.min(self.usage);
        if amount == 0 {
            return;
        }
        let mut s = self.budget.lock();
        let after = self.usage - amount;
        s.owed += s.owed_to(after) - s.owed_to(self.usage);
        s.used -= amount;
        s.slots[self.slot] = Some(after);
        self.usage = after;
    }
}

impl Drop for BudgetSlot {
    fn drop(&mut self) {
        let mut s = self.budget.lock();
        s.used -= self.usage;
        s.slots[self.slot] = None;
        s.free.push(self.slot);
        s.live -= 1;
        s.reshare();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_within_its_share_gets_in_whatever_the_others_took() {
        // Cap 600, three connections: 100 reserved each, 300 for anyone.
        let b = ReassemblyBudget::new(600);
        let mut slots: Vec<BudgetSlot> = (0..3).map(|_| b.register()).collect();
        assert_eq!(b.share(), 100);
        for s in slots.iter_mut().take(2) {
            while s.try_take(10).is_ok() {}
        }
        assert_eq!(
            b.used(),
            500,
            "the greedy two take the free half and their shares"
        );
        for _ in 0..10 {
            slots[2].try_take(10).unwrap();
        }
        assert!(slots[2].try_take(10).is_err(), "at the cap");
        assert_eq!(b.used(), 600);
        drop(slots.remove(0));
        assert_eq!(b.live(), 2);
        assert_eq!(b.share(), 150);
        assert!(b.used() <= 600);
    }

    #[test]
    fn dropping_a_slot_gives_everything_back() {
        let b = ReassemblyBudget::new(100);
        let mut s = b.register();
        s.try_take(80).unwrap();
        s.give(30);
        assert_eq!(b.used(), 50);
        drop(s);
        assert_eq!((b.used(), b.live(), b.peak()), (0, 0, 80));
    }
}
