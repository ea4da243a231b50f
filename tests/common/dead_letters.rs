//! Reading a dead-letter topic back: each letter's key, value and headers.

use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};

use crate::{kafka_config, unique};

pub struct DeadLetter {
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

impl DeadLetter {
    pub fn header(&self, key: &str) -> Option<String> {
        self.headers.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
    }
}

/// The first `count` letters of `topic`, failing the test if they do not arrive within `wait`.
pub async fn read_dead_letters(topic: &str, count: usize, wait: Duration) -> Vec<DeadLetter> {
    let consumer: StreamConsumer = kafka_config()
        .set("group.id", unique("dlq_reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("a dead-letter reader");
    consumer.subscribe(&[topic]).expect("subscribe to the dead-letter topic");
    let mut letters = Vec::new();
    while letters.len() < count {
        let message = tokio::time::timeout(wait, consumer.recv()).await.expect("dead letters arrive").expect("a record");
        let headers = message
            .headers()
            .map(|h| h.iter().map(|h| (h.key.to_owned(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned())).collect())
            .unwrap_or_default();
        letters.push(DeadLetter { key: message.key().map(<[u8]>::to_vec), value: message.payload().unwrap_or_default().to_vec(), headers });
    }
    letters
}
