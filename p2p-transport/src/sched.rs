//! The frame scheduler of one connection: which message's next frame goes out, and how long it
//! is. It knows messages only by their encoded length, so the same code orders the frames of
//! the real multiplexer ([`crate::mux::MuxSender`]) and of the simulator's links.
//!
//! Classes share the link by start-time fair queuing: each class with queued data has a virtual
//! time advanced by `frame bytes / weight`, and the class with the smallest virtual time sends
//! next (ties to the more urgent class). A class that was idle starts at the current virtual
//! time, so a newly queued urgent message goes out right after the frame in flight. Within a
//! class, the first `max_active` messages are served round-robin, frame by frame; the rest wait
//! in queue order. See the [`mux`](crate::mux) module for the frame format the lengths follow.

use std::collections::VecDeque;

use p2p_core::Class;

/// Header length of a frame without the `total` field.
pub const FRAME_HEADER_LEN: usize = 9;
/// Header length of a `FIRST` frame that is not also `LAST` (it carries `total`).
pub const FIRST_FRAME_HEADER_LEN: usize = 13;
/// The smallest payload a frame is cut down to when room is short.
pub(crate) const MIN_CUT: usize = 512;
/// Virtual time advances by `bytes * (WEIGHT_SCALE / weight)`: a multiplication per frame.
const WEIGHT_SCALE: u64 = 1 << 32;

/// One frame the scheduler cut: where it lies in its message, and its header's length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cut {
    /// The message's class.
    pub class: Class,
    /// Offset of the frame's payload in the message's encoding.
    pub start: usize,
    /// Payload length (at least 1).
    pub len: usize,
    /// The message's whole encoded length.
    pub total: usize,
    /// Header length: [`FIRST_FRAME_HEADER_LEN`] or [`FRAME_HEADER_LEN`].
    pub header_len: usize,
}

impl Cut {
    /// Whether this is the message's first frame.
    pub fn first(&self) -> bool {
        self.start == 0
    }

    /// Whether this frame completes the message.
    pub fn last(&self) -> bool {
        self.start + self.len == self.total
    }

    /// Bytes the frame takes on the wire.
    pub fn wire_len(&self) -> usize {
        self.header_len + self.len
    }
}

struct Entry<T> {
    item: T,
    total: usize,
    sent: usize,
}

/// A class's queue. Its first `max_active` messages are active and served round-robin by the
/// cursor `rr`; the rest wait in push order and move up as active messages finish.
struct ClassQueue<T> {
    msgs: VecDeque<Entry<T>>,
    rr: usize,
    queued: usize,
    /// Virtual time of the class's next frame.
    vtime: u128,
}

impl<T> Default for ClassQueue<T> {
    fn default() -> Self {
        ClassQueue {
            msgs: VecDeque::new(),
            rr: 0,
            queued: 0,
            vtime: 0,
        }
    }
}

/// Queues of messages by class, cut into frames in fair-queuing order; `T` is whatever the
/// user needs back to emit a frame (the encoded bytes, or a simulated message).
pub struct Scheduler<T> {
    frame_size: usize,
    step: [u128; Class::COUNT],
    max_active: [usize; Class::COUNT],
    classes: [ClassQueue<T>; Class::COUNT],
    vnow: u128,
    total_queued: usize,
}

impl<T> Scheduler<T> {
    /// A scheduler cutting frames of at most `frame_size` payload bytes, with class `weights`
    /// (each at least 1) and `max_active` messages interleaved per class (each at least 1).
    pub fn new(
        frame_size: usize,
        weights: [u32; Class::COUNT],
        max_active: [usize; Class::COUNT],
    ) -> Self {
        Scheduler {
            frame_size: frame_size.max(1),
            step: weights.map(|w| u128::from(WEIGHT_SCALE / u64::from(w.max(1)))),
            max_active: max_active.map(|a| a.max(1)),
            classes: Default::default(),
            vnow: 0,
            total_queued: 0,
        }
    }

    /// Queues `item`, a message of `total` encoded bytes (at least 1), in `class`.
    pub fn push(&mut self, class: Class, item: T, total: usize) {
        let total = total.max(1);
        let vnow = self.vnow;
        let q = &mut self.classes[class.index()];
        if q.msgs.is_empty() {
            q.vtime = q.vtime.max(vnow);
        }
        q.msgs.push_back(Entry {
            item,
            total,
            sent: 0,
        });
        q.queued += total;
        self.total_queued += total;
    }

    /// Encoded bytes queued in `class` and not yet cut.
    pub fn queued_bytes(&self, class: Class) -> usize {
        self.classes[class.index()].queued
    }

    /// Encoded bytes queued in all classes.
    pub fn queued_bytes_total(&self) -> usize {
        self.total_queued
    }

    /// Whether nothing is queued.
    pub fn is_idle(&self) -> bool {
        self.total_queued == 0
    }

    /// Messages queued in `class`.
    pub fn queued_messages(&self, class: Class) -> usize {
        self.classes[class.index()].msgs.len()
    }

    /// The class whose frame goes next, if any.
    fn pick_class(&self) -> Option<usize> {
        let mut best: Option<usize> = None;
        for (i, q) in self.classes.iter().enumerate() {
            if !q.msgs.is_empty() && best.is_none_or(|b| q.vtime < self.classes[b].vtime) {
                best = Some(i);
            }
        }
        best
    }

    /// Cuts the next frame that fits in `room` bytes (header included) and hands it to `emit`
    /// with its message; returns the cut and, if the frame completed its message, the message.
    /// `None` when nothing is queued or nothing fits: a frame is cut short to fit, but not
    /// below 512 payload bytes.
    pub fn next_frame(
        &mut self,
        room: usize,
        emit: impl FnOnce(&Cut, &T),
    ) -> Option<(Cut, Option<T>)> {
        let ci = self.pick_class()?;
        let class = Class::ALL[ci];
        let active = self.max_active[ci];
        let step = self.step[ci];
        let q = &mut self.classes[ci];
        let slot = q.rr;
        let entry = q.msgs.get(slot)?;
        let (total, start) = (entry.total, entry.sent);
        let left = total - start;
        let first = start == 0;
        let mut len = left.min(self.frame_size);
        let mut header_len = if first && len < left {
            FIRST_FRAME_HEADER_LEN
        } else {
            FRAME_HEADER_LEN
        };
        if header_len + len > room {
            // Cut the frame short to fit, unless that leaves a uselessly small frame.
            header_len = if first {
                FIRST_FRAME_HEADER_LEN
            } else {
                FRAME_HEADER_LEN
            };
            let fit = room.saturating_sub(header_len);
            if fit < MIN_CUT {
                return None;
            }
            len = fit;
        }
        let cut = Cut {
            class,
            start,
            len,
            total,
            header_len,
        };
        emit(&cut, &entry.item);

        // Account; drop a finished message (the first waiting one becomes active) or move the
        // cursor on; advance the class's virtual time.
        let done = if cut.last() {
            q.msgs.remove(slot).map(|e| e.item)
        } else {
            q.msgs[slot].sent = start + len;
            q.rr += 1;
            None
        };
        if q.rr >= active.min(q.msgs.len()) {
            q.rr = 0;
        }
        q.queued -= len;
        self.total_queued -= len;
        self.vnow = q.vtime;
        q.vtime += cut.wire_len() as u128 * step;
        if self.total_queued == 0 {
            self.vnow = 0;
            for q in &mut self.classes {
                q.vtime = 0;
            }
        }
        Some((cut, done))
    }

    /// Removes every queued message for which `keep` is false (a partly sent one included: its
    /// receiver never completes it); returns how many were removed.
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) -> usize {
        let mut removed = 0;
        for q in &mut self.classes {
            let before = q.msgs.len();
            let mut freed = 0;
            q.msgs.retain(|e| {
                let k = keep(&e.item);
                if !k {
                    freed += e.total - e.sent;
                }
                k
            });
            removed += before - q.msgs.len();
            q.queued -= freed;
            self.total_queued -= freed;
            if q.rr >= q.msgs.len() {
                q.rr = 0;
            }
        }
        removed
    }

    /// Removes every queued message that has not started (none of its bytes were cut) and for
    /// which `drop` is true; a started one stays and finishes. Returns how many were removed.
    /// The round-robin cursor keeps pointing at the message it pointed at, if that one stays.
    pub fn remove_unstarted(&mut self, mut drop: impl FnMut(&T) -> bool) -> usize {
        let mut removed = 0;
        for q in &mut self.classes {
            let mut i = 0;
            let mut freed = 0;
            while i < q.msgs.len() {
                let e = &q.msgs[i];
                if e.sent == 0 && drop(&e.item) {
                    freed += e.total;
                    q.msgs.remove(i);
                    removed += 1;
                    if i < q.rr {
                        q.rr -= 1;
                    }
                } else {
                    i += 1;
                }
            }
            q.queued -= freed;
            self.total_queued -= freed;
            if q.rr >= q.msgs.len() {
                q.rr = 0;
            }
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every frame until nothing is left: (message, cut, whether it completed the message).
    fn drain(s: &mut Scheduler<u32>, room: usize) -> Vec<(u32, Cut, bool)> {
        let mut v = Vec::new();
        loop {
            let mut id = 0;
            match s.next_frame(room, |_, t| id = *t) {
                Some((cut, done)) => v.push((id, cut, done.is_some())),
                None => return v,
            }
        }
    }

    fn next(s: &mut Scheduler<u32>) -> Cut {
        s.next_frame(1 << 20, |_, _| {}).unwrap().0
    }

    #[test]
    fn frames_cover_each_message_exactly_and_an_urgent_message_overtakes_bulk() {
        let mut s = Scheduler::new(1000, [16, 8, 4, 1], [1, 4, 4, 4]);
        s.push(Class::Bulk, 1, 10_000);
        let first = next(&mut s);
        assert_eq!((first.start, first.len, first.header_len), (0, 1000, 13));
        s.push(Class::Urgent, 2, 1500);
        let frames = drain(&mut s, 1 << 20);
        let order: Vec<u32> = frames.iter().map(|f| f.0).collect();
        assert_eq!(&order[..2], &[2, 2], "the urgent message goes next");
        let bulk: usize = frames.iter().filter(|f| f.0 == 1).map(|f| f.1.len).sum();
        assert_eq!(bulk, 9000, "the rest of the bulk message, exactly once");
        assert!(s.is_idle());
    }

    #[test]
    fn frames_are_cut_short_to_fit_but_not_below_the_minimum() {
        let mut s = Scheduler::new(16 << 10, [1; 4], [1; 4]);
        s.push(Class::Normal, 7, 5000);
        assert!(
            s.next_frame(FIRST_FRAME_HEADER_LEN + MIN_CUT - 1, |_, _| {})
                .is_none()
        );
        let (cut, done) = s
            .next_frame(FIRST_FRAME_HEADER_LEN + 600, |_, _| {})
            .unwrap();
        assert_eq!((cut.len, done), (600, None));
        let frames = drain(&mut s, 1 << 20);
        assert_eq!(frames.len(), 1);
        assert_eq!((frames[0].1.start, frames[0].1.len), (600, 4400));
        assert!(frames[0].2);
    }

    #[test]
    fn retain_drops_queued_messages_and_their_bytes() {
        let mut s = Scheduler::new(1000, [1; 4], [4; 4]);
        for i in 0..6 {
            s.push(Class::ALL[i % 4], i as u32, 3000);
        }
        let _ = next(&mut s);
        assert_eq!(s.retain(|t| t % 2 == 0), 3);
        let completed: u32 = drain(&mut s, 1 << 20)
            .iter()
            .filter(|f| f.2)
            .map(|f| 1 << f.0)
            .sum();
        assert_eq!(completed, 0b010101);
        assert_eq!(s.queued_bytes_total(), 0);
    }

    #[test]
    fn remove_unstarted_keeps_a_started_message_and_the_round_robin_turn() {
        let mut s = Scheduler::new(1000, [1; 4], [3, 3, 3, 3]);
        for i in 0..4 {
            s.push(Class::Bulk, i, 2500);
        }
        // 0 and 1 start; the cursor points at 2, not yet started.
        let _ = next(&mut s);
        let _ = next(&mut s);
        assert_eq!(s.remove_unstarted(|t| *t == 0 || *t == 3), 1);
        assert_eq!(s.queued_messages(Class::Bulk), 3);
        assert_eq!(s.queued_bytes(Class::Bulk), 1500 + 1500 + 2500);
        // 1 has started: it stays. Removing 2, at the cursor, wraps the cursor to 0.
        assert_eq!(s.remove_unstarted(|t| *t == 1), 0);
        assert_eq!(s.remove_unstarted(|t| *t == 2), 1);
        let frames = drain(&mut s, 1 << 20);
        let order: Vec<u32> = frames.iter().map(|f| f.0).collect();
        assert_eq!(order, vec![0, 1, 0, 1]);
        assert!(s.is_idle());
        assert_eq!(s.queued_bytes_total(), 0);
    }
}
