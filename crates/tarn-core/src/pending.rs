//! A bounded queue of writes that wait to be made together, off the requests' path (the
//! audit log's events, the trace info searches keep): a store that does not take them (down,
//! full) costs the oldest waiting ones, never unbounded memory.

/// Items waiting to be written, at most `max`: beyond it the oldest go (a tenth of `max` at a
/// time, not one shift per item), counted until the writer says so.
pub(crate) struct Pending<T> {
    items: Vec<T>,
    max: usize,
    /// Dropped and not yet said.
    pub dropped: u64,
}

impl<T> Pending<T> {
    pub fn new(max: usize) -> Self {
        Pending {
            items: vec![],
            max,
            dropped: 0,
        }
    }

    pub fn push(&mut self, item: T) {
        if self.items.len() >= self.max {
            let n = (self.max / 10).max(1);
            self.items.drain(..n);
            self.dropped += n as u64;
        }
        self.items.push(item);
    }

    /// Everything waiting, to be written.
    pub fn take(&mut self) -> Vec<T> {
        std::mem::take(&mut self.items)
    }

    /// A batch that could not be written goes back ahead of what came since, the oldest
    /// dropped beyond `max`.
    pub fn put_back(&mut self, mut batch: Vec<T>) {
        batch.append(&mut self.items);
        let over = batch.len().saturating_sub(self.max);
        batch.drain(..over);
        self.dropped += over as u64;
        self.items = batch;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn waiting_items_are_bounded_and_the_oldest_go_first() {
        let mut q = super::Pending::new(100);
        for i in 0..105 {
            q.push(i);
        }
        // At 100, the oldest tenth went to make room; nothing else did.
        assert_eq!(q.dropped, 10);
        assert_eq!(q.items.len(), 95);
        assert_eq!(q.items.first(), Some(&10));
        assert_eq!(q.items.last(), Some(&104));
        // A batch that could not be written goes back ahead of the newer events, and what is
        // over the bound is dropped from its oldest end.
        let batch = q.take();
        assert!(q.items.is_empty());
        for i in 1000..1020 {
            q.push(i);
        }
        q.put_back(batch);
        assert_eq!(q.items.len(), 100);
        assert_eq!(q.dropped, 10 + 15);
        assert_eq!(q.items.first(), Some(&25), "the oldest waiting went");
        assert_eq!(q.items.last(), Some(&1019), "the newest stayed");
        // Many times the bound never holds more than it.
        for i in 0..10_000 {
            q.push(i);
            assert!(q.items.len() <= 100);
        }
    }
}
