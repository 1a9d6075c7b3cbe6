//! A node's health: its database's (`walmdb::Db::health`) and its replication's: whether
//! it knows a leader and hears from it, how far its applies lag, and on the leader, how far
//! behind and how long silent each member is.

use std::time::Duration;

use serde::Serialize;
use walmdb::HealthStatus;

use crate::node::Node;

/// A member silent this many election timeouts (the longest) is reported.
const SILENT_TIMEOUTS: u64 = 1;
/// Applies or replication this many entries behind are reported.
const ENTRIES_BEHIND: u64 = 10_000;

/// A node's verdict and its reasons, worst first.
#[derive(Debug, Clone, Serialize)]
pub struct NodeHealth {
    /// `healthy`, `degraded` or `unhealthy`.
    pub status: &'static str,
    /// Each limit crossed: `(level, reason)`.
    pub reasons: Vec<(&'static str, String)>,
}

fn level(status: HealthStatus) -> &'static str {
    match status {
        HealthStatus::Healthy => "healthy",
        HealthStatus::Degraded => "degraded",
        _ => "unhealthy",
    }
}

impl Node {
    /// The node's health: Unhealthy when its database is, or it knows no leader;
    /// Degraded when its database is, it has not heard from its leader for an election
    /// timeout, its applies lag 10,000 entries, or (on the leader) a member is that far
    /// behind or has not answered for an election timeout.
    pub async fn health(&self) -> NodeHealth {
        let mut reasons: Vec<(HealthStatus, String)> = self.db().health().reasons;
        let m = self.metrics().await;
        let silent =
            Duration::from_millis(self.raft().config().election_timeout_max * SILENT_TIMEOUTS);
        let silent_ms = silent.as_millis() as u64;
        match (m.current_leader, m.leader_contact_ms) {
            (None, _) | (_, None) => reasons.push((
                HealthStatus::Unhealthy,
                "no established leader is known".into(),
            )),
            (Some(leader), Some(ms)) if ms > silent_ms && leader != m.id => reasons.push((
                HealthStatus::Degraded,
                format!("last heard from leader {leader} {ms} ms ago"),
            )),
            (Some(_), Some(ms)) if ms > silent_ms => reasons.push((
                HealthStatus::Degraded,
                format!("no quorum acknowledged this leader for {ms} ms"),
            )),
            _ => {}
        }
        if m.apply_lag >= ENTRIES_BEHIND {
            reasons.push((
                HealthStatus::Degraded,
                format!("{} committed entries not applied yet", m.apply_lag),
            ));
        }
        for (id, lag) in &m.replication {
            if lag.entries_behind >= ENTRIES_BEHIND {
                reasons.push((
                    HealthStatus::Degraded,
                    format!("node {id} is {} entries behind", lag.entries_behind),
                ));
            }
            if lag.last_ack_ms.is_none_or(|ms| ms > silent_ms) {
                reasons.push((
                    HealthStatus::Degraded,
                    format!("node {id} has not answered for over {silent_ms} ms"),
                ));
            }
        }
        reasons.sort_by_key(|(status, _)| std::cmp::Reverse(*status));
        let worst = reasons.first().map_or(HealthStatus::Healthy, |(s, _)| *s);
        NodeHealth {
            status: level(worst),
            reasons: reasons
                .into_iter()
                .map(|(s, why)| (level(s), why))
                .collect(),
        }
    }
}
