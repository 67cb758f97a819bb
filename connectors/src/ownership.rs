//! Which worker reads which partition: a rule of the partition's topic and
//! number alone, so that every worker's source — its discovery thread and
//! the worker itself — in every process of a cluster agrees on it without
//! asking the others.

/// The worker that owns `partition` of `topic` among `peers` workers:
/// `(hash(topic) + partition) % peers`, so the owner of a partition never
/// changes when partitions or topics are added.
pub fn owner(topic: &str, partition: i32, peers: usize) -> usize {
    let topic_hash = xxhash_rust::xxh3::xxh3_64(topic.as_bytes());
    (topic_hash.wrapping_add(partition as u64) % peers as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership_is_stable_and_spreads_partitions() {
        for peers in 1..5 {
            for partition in 0..16 {
                assert!(owner("invoices", partition, peers) < peers);
                assert_eq!(
                    owner("invoices", partition, peers),
                    owner("invoices", partition, peers)
                );
            }
            // Consecutive partitions of a topic go to consecutive workers.
            let owners: std::collections::BTreeSet<usize> = (0..peers as i32)
                .map(|p| owner("invoices", p, peers))
                .collect();
            assert_eq!(owners.len(), peers);
        }
    }
}
