//! Fair shares of a limit that several peers draw on.
//!
//! A plain global limit lets the first peers to arrive take all of it: two members that fill the
//! download table, or a few that keep every in-flight slot busy, leave nothing for the honest
//! rest. A [`FairShare`] reserves half of the limit in equal shares, one per party, and lets any
//! party use the other half. A party below its share is always admitted while the total is under
//! the limit; a party at or above its share is admitted only if what is still owed to the parties
//! below theirs stays free. So whatever the others do, a party gets its share back within the
//! time it takes the over-share usage to drain (one request timeout for in-flight limits).

/// Half of a limit is reserved in equal shares.
const RESERVED_DIVISOR: u64 = 2;

/// A limit on a total, with a reserved share per party.
///
/// The caller keeps each party's usage and passes it in; the budget keeps the total and what is
/// owed: `owed = Σ max(0, share - usage)` over the parties, counting absent parties (members not
/// connected) as owed their whole share.
#[derive(Clone, Debug)]
pub(crate) struct FairShare {
    max: u64,
    share: u64,
    used: u64,
    owed: u64,
}

impl FairShare {
    /// A budget of `max` with no parties yet.
    pub(crate) fn new(max: u64) -> Self {
        FairShare {
            max,
            share: 0,
            used: 0,
            owed: 0,
        }
    }

    /// The total in use.
    pub(crate) fn used(&self) -> u64 {
        self.used
    }

    /// The reserved share of each party.
    #[cfg(test)]
    pub(crate) fn share(&self) -> u64 {
        self.share
    }

    fn owed_to(&self, usage: u64) -> u64 {
        self.share.saturating_sub(usage)
    }

    /// Recomputes the shares for `parties` parties (each share at most `cap`, the most one party
    /// may use anyway), given the usage of those present; the others are owed a whole share.
    pub(crate) fn reshare(&mut self, parties: usize, cap: u64, present: impl Iterator<Item = u64>) {
        let parties = parties as u64;
        self.share = (self.max / RESERVED_DIVISOR)
            .checked_div(parties)
            .unwrap_or(0)
            .min(cap);
        let mut seen = 0u64;
        let mut owed = 0u64;
        for usage in present {
            seen += 1;
            owed += self.owed_to(usage);
        }
        self.owed = owed + parties.saturating_sub(seen) * self.share;
    }

    /// Whether a party using `usage` may take `amount` more. Anything is admitted when nothing
    /// is in use, so that an amount larger than the limit (or than the shares leave free) can
    /// still be had alone.
    pub(crate) fn admits(&self, usage: u64, amount: u64) -> bool {
        if self.used == 0 {
            return true;
        }
        if self.used + amount > self.max {
            return false;
        }
        if usage + amount <= self.share {
            return true;
        }
        let owed_after = self
            .owed
            .saturating_sub(self.owed_to(usage) - self.owed_to(usage + amount));
        self.used + amount + owed_after <= self.max
    }

    /// Records that a party using `usage` took `amount`.
    pub(crate) fn take(&mut self, usage: u64, amount: u64) {
        self.owed = self
            .owed
            .saturating_sub(self.owed_to(usage) - self.owed_to(usage + amount));
        self.used += amount;
    }

    /// Records that a party using `usage` gave back `amount`.
    pub(crate) fn give(&mut self, usage: u64, amount: u64) {
        debug_assert!(amount <= usage && amount <= self.used);
        let after = usage.saturating_sub(amount);
        self.owed += self.owed_to(after) - self.owed_to(usage);
        self.used = self.used.saturating_sub(amount);
    }
}

#[cfg(test)]
mod tests {
    use super::FairShare;
    use quickcheck::{QuickCheck, TestResult};

    /// A reference model: the same rule computed from scratch over explicit usages.
    fn admits_model(max: u64, share: u64, uses: &[u64], party: usize, amount: u64) -> bool {
        let used: u64 = uses.iter().sum();
        if used == 0 {
            return true;
        }
        if used + amount > max {
            return false;
        }
        if uses[party] + amount <= share {
            return true;
        }
        let owed_after: u64 = uses
            .iter()
            .enumerate()
            .map(|(i, u)| share.saturating_sub(if i == party { u + amount } else { *u }))
            .sum();
        used + amount + owed_after <= max
    }

    #[test]
    fn agrees_with_a_model_computed_from_scratch() {
        fn prop(max: u16, parties: u8, ops: Vec<(u8, u8, bool)>) -> TestResult {
            let parties = (parties % 8) as usize + 1;
            let max = max as u64;
            let mut b = FairShare::new(max);
            let mut uses = vec![0u64; parties];
            b.reshare(parties, u64::MAX, uses.iter().copied());
            for (p, amount, take) in ops {
                let p = p as usize % parties;
                let amount = amount as u64 % 40 + 1;
                if take {
                    let expect = admits_model(max, b.share(), &uses, p, amount);
                    if b.admits(uses[p], amount) != expect {
                        return TestResult::failed();
                    }
                    if expect {
                        b.take(uses[p], amount);
                        uses[p] += amount;
                    }
                } else if uses[p] >= amount {
                    b.give(uses[p], amount);
                    uses[p] -= amount;
                }
                if b.used() != uses.iter().sum::<u64>() {
                    return TestResult::failed();
                }
            }
            TestResult::passed()
        }
        QuickCheck::new()
            .tests(500)
            .quickcheck(prop as fn(u16, u8, Vec<(u8, u8, bool)>) -> TestResult);
    }

    #[test]
    fn a_party_below_its_share_gets_in_whatever_the_others_took() {
        // Three parties, limit 600: 100 reserved each, 300 shared. Two greedy parties take all
        // they are admitted; the third still gets its whole share.
        let mut b = FairShare::new(600);
        let mut uses = [0u64; 3];
        b.reshare(3, u64::MAX, uses.iter().copied());
        for usage in uses.iter_mut().take(2) {
            while b.admits(*usage, 1) {
                b.take(*usage, 1);
                *usage += 1;
            }
        }
        assert!(
            uses[0] > 100 && uses[1] >= 100,
            "greedy parties use the shared half"
        );
        for _ in 0..100 {
            assert!(b.admits(uses[2], 1));
            b.take(uses[2], 1);
            uses[2] += 1;
        }
        assert!(b.used() <= 600);
    }

    #[test]
    fn oversized_amount_is_admitted_alone() {
        let mut b = FairShare::new(100);
        b.reshare(2, u64::MAX, [0, 0].into_iter());
        assert!(b.admits(0, 500));
        b.take(0, 500);
        assert!(!b.admits(0, 1));
        assert!(!b.admits(0, 500));
    }
}
