//! Learning back, after an unclean stop, the op ids this node led.
//!
//! A leader records each op id it applies in the same WAL record as the
//! shard updates (`op_window`). In `periodic` mode a power loss can take
//! that record, while the other replicas already hold the states the op
//! raised and, with them, a led-op record of the id (the leader sends one
//! with every state it replicates). Were the restarted leader to apply a
//! retry of that op again, it would count twice. So after an unclean stop
//! the store refuses op ids made before the restart (plus the clock skew
//! allowed) that it does not hold, and this task asks every other member
//! for the ids it holds as led by this node, adds them to the window, and
//! lifts the refusal once every member answered, or once every id it could
//! refuse has expired anyway (the op window), whichever comes first.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tally_client::{Request, Response};

use crate::context::NodeContext;

/// Deadline of one member's answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);
/// Wait before asking the members that did not answer again.
const RETRY_EVERY: Duration = Duration::from_millis(500);

/// Learns this node's op ids back from every other member (see the module
/// docs); `before_ms` is the time [`crate::CounterStore::start_relearning`]
/// was given, `window` the op window.
pub async fn relearn_op_ids(ctx: Arc<NodeContext>, before_ms: i64, window: Duration) {
    let store = ctx.store.clone();
    let me = ctx.self_id;
    let give_up_ms = before_ms.saturating_add(window.as_millis() as i64);
    let mut told = HashSet::from([me]);
    let mut learned = 0usize;
    loop {
        let map = ctx.map();
        // Until the map names this node, it does not know its members yet
        // (a node of a Raft-agreed cluster loads the map after it starts).
        let known = map.member(me).is_some();
        let waiting: Vec<_> = map
            .members()
            .map(|m| m.host_id)
            .filter(|h| !told.contains(h))
            .collect();
        if known && waiting.is_empty() {
            tracing::info!(
                learned,
                members = told.len() - 1,
                "learned back the op ids this node led before its unclean stop"
            );
            break;
        }
        if store.clock().now_ms() > give_up_ms {
            tracing::warn!(
                learned,
                not_answered = ?waiting,
                "every op id made before the unclean stop has expired; leading them again"
            );
            break;
        }
        for host in waiting {
            let request = Request::LedOpIds { leader: me.0 };
            let ids = match ctx.peers.call(host, &request, ASK_TIMEOUT).await {
                Ok(Response::OpIds(ids)) => ids,
                _ => continue,
            };
            match store.learn_op_ids(&ids) {
                Ok(n) => {
                    learned += n;
                    told.insert(host);
                }
                Err(e) => {
                    tracing::warn!(host = host.0, error = %e.message, "could not record learned op ids")
                }
            }
        }
        tokio::time::sleep(RETRY_EVERY).await;
    }
    store.finish_relearning();
}
