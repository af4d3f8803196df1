//! Both limiters on a private 3-master Redis Cluster: keys of different limiter keys land on
//! different slots (and nodes), every script touches one slot (no CROSSSLOT even with chained
//! quotas and the cooldown key), and NOSCRIPT after `SCRIPT FLUSH` on every node is survived.

mod support;

use std::time::Duration;

use ratewise_core::Key;
use ratewise_redis::{
    DecisionSource, Quota, RateLimiter, RedisConnection, RedisGcra, RedisSlidingWindow,
};
use support::RedisCluster;
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_limiters_work_on_a_cluster_with_keys_on_different_slots() {
    let Some(cluster) = RedisCluster::start("cluster").await else {
        return;
    };
    let client = redis::cluster::ClusterClient::new(cluster.urls()).expect("cluster client");
    let connection = RedisConnection::cluster(&client)
        .await
        .expect("cluster connection");
    // A generous timeout: this test checks routing, not the failure policy.
    let gcra = RedisGcra::builder(connection.clone())
        .timeout(Duration::from_secs(2))
        .build()
        .expect("settings");
    let window = RedisSlidingWindow::builder(connection.clone())
        .prefix("log")
        .timeout(Duration::from_secs(2))
        .build()
        .expect("settings");
    // Slow refills, so that a loaded machine taking seconds between the calls of one key
    // cannot refill a unit and change the counts.
    let chained = [
        Quota::per_hour(60).and_then(|q| q.burst(3)).expect("quota"),
        Quota::per_hour(1_000)
            .and_then(|q| q.burst(5))
            .expect("quota"),
    ];
    let strict = [Quota::new(2, Duration::from_secs(3_600)).expect("quota")];

    for round in 0..2 {
        if round == 1 {
            for node in &cluster.nodes {
                let reply = node.command(b"SCRIPT FLUSH\r\n").await.expect("flush");
                assert!(reply.starts_with("+OK"), "{reply}");
            }
        }
        for k in 0..30 {
            let key = Key::new(format!("tenant-{round}-{k}"));
            let mut allowed = 0;
            for _ in 0..4 {
                let decision = gcra
                    .check(&key, &chained, 1)
                    .await
                    .expect("gcra on the cluster");
                assert_eq!(decision.source(), DecisionSource::Shared);
                allowed += usize::from(decision.is_allowed());
            }
            assert_eq!(allowed, 3, "burst 3 of the first quota, all or nothing");

            let mut allowed = 0;
            for _ in 0..3 {
                let decision = window
                    .check(&key, &strict, 1)
                    .await
                    .expect("log on the cluster");
                assert_eq!(decision.source(), DecisionSource::Shared);
                allowed += usize::from(decision.is_allowed());
            }
            assert_eq!(allowed, 2);
        }
    }
    assert!(
        connection.script_reloads() >= 2,
        "NOSCRIPT was met and survived"
    );

    // A shared cooldown on the cluster.
    let key = Key::new("tenant-cooled");
    gcra.drain(&key, &chained, Instant::now() + Duration::from_secs(5))
        .await
        .expect("drain on the cluster");
    let decision = gcra.check(&key, &chained, 1).await.expect("acquire");
    assert!(decision.is_cooldown());

    // The keys spread over every master: different slots, one script each.
    for node in &cluster.nodes {
        let reply = node.command(b"DBSIZE\r\n").await.expect("DBSIZE");
        let keys: u64 = reply
            .trim()
            .trim_start_matches(':')
            .parse()
            .expect("integer reply");
        assert!(keys > 0, "node {} holds no limiter key", node.port());
    }
}
