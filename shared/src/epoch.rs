//! The order in which one epoch visits a split: shard files shuffled, row groups shuffled
//! within each file, rows streamed through a bounded shuffle buffer. The order is a pure
//! function of (seed, epoch) and the row-group sizes in the manifest, so it is computed
//! without reading a single pixel, and a resumed run can start at any sample offset by
//! indexing into it instead of replaying the data before it.

use crate::rng::KeyedRng;

/// Where one image lives inside a split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SampleAddress {
    /// Index into the split's `files` in the manifest.
    pub file: u32,
    /// Row group inside that file.
    pub row_group: u32,
    /// Row inside that row group.
    pub row: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochOrder {
    addresses: Vec<SampleAddress>,
}

const ORDER_STREAM: u64 = 0x4550_4f43; // "EPOC"

impl EpochOrder {
    /// `row_groups[file][group]` is that row group's row count. `shuffle_buffer` is the
    /// number of images held back for mixing (0 or 1: no mixing beyond files and groups).
    pub fn new(row_groups: &[Vec<usize>], seed: u64, epoch: u64, shuffle_buffer: usize) -> Self {
        let mut rng = KeyedRng::new(&[seed, epoch, ORDER_STREAM]);
        let mut files: Vec<usize> = (0..row_groups.len()).collect();
        rng.shuffle(&mut files);
        let total: usize = row_groups.iter().flatten().sum();
        let mut addresses = Vec::with_capacity(total);
        let mut buffer: Vec<SampleAddress> = Vec::with_capacity(shuffle_buffer);
        for file in files {
            let mut groups: Vec<usize> = (0..row_groups[file].len()).collect();
            rng.shuffle(&mut groups);
            for group in groups {
                for row in 0..row_groups[file][group] {
                    let incoming = SampleAddress { file: file as u32, row_group: group as u32, row: row as u32 };
                    if buffer.len() < shuffle_buffer {
                        buffer.push(incoming);
                    } else if shuffle_buffer == 0 {
                        addresses.push(incoming);
                    } else {
                        // Emit a random held image and hold the incoming one in its place.
                        let slot = rng.below(shuffle_buffer as u64) as usize;
                        addresses.push(std::mem::replace(&mut buffer[slot], incoming));
                    }
                }
            }
        }
        rng.shuffle(&mut buffer);
        addresses.extend(buffer);
        Self { addresses }
    }

    pub fn len(&self) -> usize {
        self.addresses.len()
    }

    pub fn is_empty(&self) -> bool {
        self.addresses.is_empty()
    }

    pub fn get(&self, position: usize) -> Option<SampleAddress> {
        self.addresses.get(position).copied()
    }

    /// The rest of the epoch from sample `offset` on: what a resumed run consumes.
    pub fn from_offset(&self, offset: usize) -> &[SampleAddress] {
        &self.addresses[offset.min(self.addresses.len())..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Vec<Vec<usize>> {
        vec![vec![100, 100, 37], vec![100, 12], vec![5]]
    }

    #[test]
    fn every_sample_appears_exactly_once() {
        let order = EpochOrder::new(&layout(), 1, 0, 64);
        let mut seen: Vec<SampleAddress> = order.from_offset(0).to_vec();
        seen.sort();
        let mut expected = Vec::new();
        for (file, groups) in layout().iter().enumerate() {
            for (group, &rows) in groups.iter().enumerate() {
                for row in 0..rows {
                    expected.push(SampleAddress { file: file as u32, row_group: group as u32, row: row as u32 });
                }
            }
        }
        assert_eq!(seen, expected);
    }

    #[test]
    fn the_order_is_a_function_of_seed_and_epoch() {
        assert_eq!(EpochOrder::new(&layout(), 1, 4, 64), EpochOrder::new(&layout(), 1, 4, 64));
        assert_ne!(EpochOrder::new(&layout(), 1, 4, 64), EpochOrder::new(&layout(), 1, 5, 64));
        assert_ne!(EpochOrder::new(&layout(), 1, 4, 64), EpochOrder::new(&layout(), 2, 4, 64));
    }

    #[test]
    fn no_image_is_emitted_more_than_the_buffer_ahead_of_where_it_was_read() {
        // One file of one row group: the stream reads rows in order, so row r is read r-th.
        // The buffer is the only memory, so row r can leave no earlier than position r - buffer.
        let buffer = 16;
        let order = EpochOrder::new(&[vec![200]], 9, 0, buffer);
        for (position, address) in order.from_offset(0).iter().enumerate() {
            assert!(position + buffer >= address.row as usize, "row {} left at {position}", address.row);
        }
        // And the buffer really mixes: the order is not the plain stream.
        assert!(order.from_offset(0).iter().enumerate().any(|(position, address)| address.row as usize != position));
    }

    #[test]
    fn resuming_at_an_offset_continues_the_same_order() {
        let full = EpochOrder::new(&layout(), 3, 2, 32);
        let resumed = EpochOrder::new(&layout(), 3, 2, 32);
        assert_eq!(resumed.from_offset(150), &full.from_offset(0)[150..]);
        assert!(resumed.from_offset(10_000).is_empty());
    }
}
