//! Where the gateway places an organization: the partition Java's default partitioner picks for
//! its key, so a Java producer, a librdkafka one with `partitioner=murmur2_random` and the
//! gateway send one organization to one partition. Checked against a reference written from
//! Kafka's source, not against librdkafka.

use std::collections::{BTreeMap, BTreeSet};

use rdkafka::Message;
use uuid::Uuid;

use super::harness::*;

/// Kafka's `Utils.murmur2` (clients/src/main/java/org/apache/kafka/common/utils/Utils.java):
/// 32-bit MurmurHash2 with seed 0x9747b28c, read as Java's `int`.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h = SEED ^ data.len() as u32;
    let mut words = data.chunks_exact(4);
    for word in &mut words {
        let mut k = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = words.remainder();
    if !tail.is_empty() {
        for (i, byte) in tail.iter().enumerate() {
            h ^= u32::from(*byte) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition of a keyed record under Java's default partitioner
/// (`BuiltInPartitioner.partitionForKey`): `toPositive(murmur2(key)) % partitions`, where
/// `toPositive` clears the sign bit.
pub fn java_partition(key: &[u8], partitions: i32) -> i32 {
    (murmur2(key) & 0x7fff_ffff) % partitions
}

#[tokio::test]
async fn organizations_land_where_javas_default_partitioner_puts_them() {
    const PARTITIONS: i32 = 6;
    let setup = Setup::new(PARTITIONS).await;
    let organizations: Vec<(Uuid, String)> = (0..120)
        .map(|_| {
            let organization_id = Uuid::new_v4();
            (organization_id, setup.keys.create(organization_id).key)
        })
        .collect();
    let gateway = TestGateway::start_ready(setup.config(&[])).await;
    let reader = TopicReader::new(&setup.topic, PARTITIONS);
    for (_, key) in &organizations {
        gateway.post("/v1/events", key, &event_json("placed-1")).await.assert_accepted(1);
    }

    let placed: BTreeMap<String, i32> = reader
        .read(organizations.len())
        .await
        .iter()
        .map(|r| (String::from_utf8(r.key().expect("a key").to_vec()).expect("UTF-8"), r.partition()))
        .collect();
    let expected: BTreeMap<String, i32> = organizations
        .iter()
        .map(|(organization_id, _)| {
            let key = organization_id.hyphenated().to_string();
            let partition = java_partition(key.as_bytes(), PARTITIONS);
            (key, partition)
        })
        .collect();
    let misplaced: Vec<String> = expected
        .iter()
        .filter(|(key, java)| placed.get(*key) != Some(java))
        .map(|(key, java)| format!("{key} in {:?}, Java {java}", placed.get(key)))
        .collect();
    let some = &misplaced[..misplaced.len().min(3)];
    assert!(misplaced.is_empty(), "{} of {} organizations are not where Java puts them, e.g. {some:?}", misplaced.len(), expected.len());
    assert_eq!(placed.values().collect::<BTreeSet<_>>().len(), PARTITIONS as usize, "120 organizations reach every partition");
    gateway.stop().await.unwrap();
}

#[test]
fn murmur2_gives_kafkas_own_test_vectors() {
    // `testMurmur2` of Kafka's clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java.
    for (data, hash) in [
        ("21", -973_932_308),
        ("foobar", -790_332_482),
        ("a-little-bit-long-string", -985_981_536),
        ("a-little-bit-longer-string", -1_486_304_829),
        ("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58_897_971),
        ("abc", 479_470_107),
    ] {
        assert_eq!(murmur2(data.as_bytes()), hash, "{data:?}");
    }
}

#[test]
fn organization_keys_get_the_partitions_of_the_java_client() {
    // `Utils.murmur2` and `BuiltInPartitioner.partitionForKey(key, 6)` of kafka-clients 4.3.1 on
    // these keys' UTF-8 bytes (what Java's StringSerializer sends).
    for (key, hash, partition) in [
        ("00000000-0000-0000-0000-000000000000", 713_427_837, 3),
        ("0b9a7c1e-5d2f-4e8a-9b3c-6f1d2e4a5b7c", 1_297_087_872, 0),
        ("123e4567-e89b-12d3-a456-426614174000", 210_376_136, 2),
        ("6f9619ff-8b86-d011-b42d-00c04fc964ff", 1_923_431_403, 3),
        ("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", -139_716_617, 3),
        ("ffffffff-ffff-ffff-ffff-ffffffffffff", -359_870_222, 0),
        ("f47ac10b-58cc-4372-a567-0e02b2c3d479", 1_964_707_646, 2),
        ("9b2d8a4e-1c3f-4b5a-8e7d-2f6a1b9c0d3e", -2_076_612_322, 4),
    ] {
        assert_eq!((murmur2(key.as_bytes()), java_partition(key.as_bytes(), 6)), (hash, partition), "{key}");
    }
}
