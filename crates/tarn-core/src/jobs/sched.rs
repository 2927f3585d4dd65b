//! The scheduler and the autoscaler, as one pure decision function: the pools' nodes and the
//! waiting jobs in, actions out. No IO, no clock reads — the controller applies the actions and
//! the tests below are tables.
//!
//! Rules, per pool:
//! - Jobs wait in one queue: higher `priority` first, then first in, first out (`seq`).
//! - A job of `instance_count: N` starts on N nodes at once (gang scheduling). When the head of
//!   the queue cannot start yet, nothing behind it starts in that pool (no starvation of wide
//!   jobs), but nodes are still added for it up to `max_nodes`.
//! - Nodes are added while jobs wait (up to `max_nodes`) and kept at `min_nodes` at least.
//! - An idle node is removed once it has been idle for `idle_ms` and the pool is above
//!   `min_nodes` and nobody waits.

use std::collections::BTreeMap;

/// The limits of a pool (a compute cluster, the serverless pool, or `local`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolSpec {
    pub min_nodes: u32,
    pub max_nodes: u32,
    /// How long a node may sit idle before it is removed.
    pub idle_ms: i64,
}

/// A job's identity: workspace id and job name.
pub type JobId = (String, String);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeState {
    Idle { since: i64 },
    Busy { job: JobId },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub id: String,
    pub state: NodeState,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pool {
    pub spec: PoolSpec,
    pub nodes: Vec<Node>,
}

/// A queued job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiting {
    pub id: JobId,
    pub pool: String,
    pub priority: i64,
    pub seq: i64,
    pub nodes: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Add `count` idle nodes to the pool.
    AddNodes {
        pool: String,
        count: u32,
    },
    RemoveNode {
        pool: String,
        node: String,
    },
    /// Start a job on these nodes (idle ones, or ones added by an `AddNodes` before it).
    Start {
        job: JobId,
        pool: String,
        nodes: Vec<String>,
    },
}

/// The name the `index`-th node of a pool gets (`cpu-cluster-node-3`; a pool key's workspace
/// prefix is left out). Pools number their nodes without reuse.
pub fn node_name(pool: &str, index: u64) -> String {
    let short = pool.rsplit('/').next().unwrap_or(pool);
    format!("{short}-node-{index}")
}

/// Decides what to do now. `next_index` is, per pool, the number the next added node gets
/// (so `Start` can name nodes that `AddNodes` creates).
pub fn decide(
    pools: &BTreeMap<String, Pool>,
    next_index: &BTreeMap<String, u64>,
    waiting: &[Waiting],
    now: i64,
) -> Vec<Action> {
    let mut actions = vec![];
    for (name, pool) in pools {
        let mut queue: Vec<&Waiting> = waiting.iter().filter(|w| &w.pool == name).collect();
        queue.sort_by_key(|w| (-w.priority, w.seq));
        let mut idle: Vec<&Node> = pool
            .nodes
            .iter()
            .filter(|n| matches!(n.state, NodeState::Idle { .. }))
            .collect();
        // Longest-idle first, so recently used nodes are the ones left to expire.
        idle.sort_by_key(|n| match n.state {
            NodeState::Idle { since } => since,
            NodeState::Busy { .. } => i64::MAX,
        });
        let mut total = pool.nodes.len() as u32;
        let mut index = next_index.get(name).copied().unwrap_or(0);
        let mut added = 0u32;
        let mut blocked = false;
        for job in &queue {
            let free = idle.len() as u32;
            let room = pool.spec.max_nodes.saturating_sub(total);
            if job.nodes > pool.spec.max_nodes {
                continue; // can never run here; refused at submission, skipped defensively
            }
            if free >= job.nodes {
                let nodes = idle
                    .drain(..job.nodes as usize)
                    .map(|n| n.id.clone())
                    .collect();
                actions.push(Action::Start {
                    job: job.id.clone(),
                    pool: name.clone(),
                    nodes,
                });
            } else if free + room >= job.nodes {
                let extra = job.nodes - free;
                added += extra;
                total += extra;
                let mut nodes: Vec<String> = idle.drain(..).map(|n| n.id.clone()).collect();
                for _ in 0..extra {
                    nodes.push(node_name(name, index));
                    index += 1;
                }
                actions.push(Action::Start {
                    job: job.id.clone(),
                    pool: name.clone(),
                    nodes,
                });
            } else {
                // The head waits for busy nodes; grow toward what it needs, start nothing else.
                let grow = room.min(job.nodes - free);
                added += grow;
                total += grow;
                blocked = true;
                break;
            }
        }
        let below_min = pool.spec.min_nodes.saturating_sub(total);
        added += below_min;
        if added > 0 {
            // Added nodes come first: the Start actions above may name them.
            let at = actions
                .iter()
                .position(|a| matches!(a, Action::Start { pool, .. } if pool == name))
                .unwrap_or(actions.len());
            actions.insert(
                at,
                Action::AddNodes {
                    pool: name.clone(),
                    count: added,
                },
            );
        }
        if !blocked && queue.len() <= actions_started(&actions, name) {
            let mut count = pool.nodes.len() as u32;
            for node in idle {
                let NodeState::Idle { since } = node.state else {
                    continue;
                };
                if count > pool.spec.min_nodes && now - since >= pool.spec.idle_ms {
                    actions.push(Action::RemoveNode {
                        pool: name.clone(),
                        node: node.id.clone(),
                    });
                    count -= 1;
                }
            }
        }
    }
    actions
}

fn actions_started(actions: &[Action], pool_name: &str) -> usize {
    actions
        .iter()
        .filter(|a| matches!(a, Action::Start { pool, .. } if pool == pool_name))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idle(id: &str, since: i64) -> Node {
        Node {
            id: id.into(),
            state: NodeState::Idle { since },
        }
    }
    fn busy(id: &str, job: &str) -> Node {
        Node {
            id: id.into(),
            state: NodeState::Busy {
                job: ("w".into(), job.into()),
            },
        }
    }
    fn wait(job: &str, priority: i64, seq: i64, nodes: u32) -> Waiting {
        Waiting {
            id: ("w".into(), job.into()),
            pool: "c".into(),
            priority,
            seq,
            nodes,
        }
    }
    fn start(job: &str, nodes: &[&str]) -> Action {
        Action::Start {
            job: ("w".into(), job.into()),
            pool: "c".into(),
            nodes: nodes.iter().map(|n| n.to_string()).collect(),
        }
    }
    fn add(count: u32) -> Action {
        Action::AddNodes {
            pool: "c".into(),
            count,
        }
    }
    fn remove(node: &str) -> Action {
        Action::RemoveNode {
            pool: "c".into(),
            node: node.into(),
        }
    }

    struct Case {
        what: &'static str,
        spec: (u32, u32, i64),
        nodes: Vec<Node>,
        next: u64,
        waiting: Vec<Waiting>,
        now: i64,
        want: Vec<Action>,
    }

    #[test]
    fn decisions() {
        let cases = vec![
            Case {
                what: "an empty pool grows for a waiting job and starts it on the new node",
                spec: (0, 2, 1000),
                nodes: vec![],
                next: 0,
                waiting: vec![wait("a", 0, 1, 1)],
                now: 0,
                want: vec![add(1), start("a", &["c-node-0"])],
            },
            Case {
                what: "never more than max nodes: the third job waits",
                spec: (0, 2, 1000),
                nodes: vec![],
                next: 0,
                waiting: vec![wait("a", 0, 1, 1), wait("b", 0, 2, 1), wait("c", 0, 3, 1)],
                now: 0,
                want: vec![add(2), start("a", &["c-node-0"]), start("b", &["c-node-1"])],
            },
            Case {
                what: "an idle node is reused before a new one is added",
                spec: (0, 4, 1000),
                nodes: vec![idle("c-node-0", 0), busy("c-node-1", "x")],
                next: 2,
                waiting: vec![wait("a", 0, 1, 1)],
                now: 10,
                want: vec![start("a", &["c-node-0"])],
            },
            Case {
                what: "priority first, then first in first out",
                spec: (0, 1, 1000),
                nodes: vec![idle("c-node-0", 0)],
                next: 1,
                waiting: vec![
                    wait("old", 0, 1, 1),
                    wait("urgent", 2, 9, 1),
                    wait("mid", 1, 5, 1),
                ],
                now: 10,
                want: vec![start("urgent", &["c-node-0"])],
            },
            Case {
                what: "a gang job gets all its nodes at once, idle ones plus new ones",
                spec: (0, 3, 1000),
                nodes: vec![idle("c-node-0", 0)],
                next: 1,
                waiting: vec![wait("dist", 0, 1, 3)],
                now: 10,
                want: vec![add(2), start("dist", &["c-node-0", "c-node-1", "c-node-2"])],
            },
            Case {
                what: "a wide head waits for busy nodes and blocks the jobs behind it",
                spec: (0, 2, 1000),
                nodes: vec![busy("c-node-0", "x"), idle("c-node-1", 0)],
                next: 2,
                waiting: vec![wait("wide", 0, 1, 2), wait("small", 0, 2, 1)],
                now: 5000,
                want: vec![],
            },
            Case {
                what: "idle past the threshold: removed, down to min",
                spec: (1, 4, 1000),
                nodes: vec![
                    idle("c-node-0", 0),
                    idle("c-node-1", 100),
                    busy("c-node-2", "x"),
                ],
                next: 3,
                waiting: vec![],
                now: 2000,
                want: vec![remove("c-node-0"), remove("c-node-1")],
            },
            Case {
                what: "never below min: the last idle node stays",
                spec: (1, 4, 1000),
                nodes: vec![idle("c-node-0", 0)],
                next: 1,
                waiting: vec![],
                now: 99_000,
                want: vec![],
            },
            Case {
                what: "not idle long enough: kept",
                spec: (0, 4, 1000),
                nodes: vec![idle("c-node-0", 500)],
                next: 1,
                waiting: vec![],
                now: 1000,
                want: vec![],
            },
            Case {
                what: "min nodes are made even with nothing to run",
                spec: (2, 4, 1000),
                nodes: vec![],
                next: 0,
                waiting: vec![],
                now: 0,
                want: vec![add(2)],
            },
            Case {
                what: "a shrunk max (live resize) adds nothing while over it",
                spec: (0, 1, 1000),
                nodes: vec![busy("c-node-0", "x"), busy("c-node-1", "y")],
                next: 2,
                waiting: vec![wait("a", 0, 1, 1)],
                now: 0,
                want: vec![],
            },
        ];
        for case in cases {
            let pool = Pool {
                spec: PoolSpec {
                    min_nodes: case.spec.0,
                    max_nodes: case.spec.1,
                    idle_ms: case.spec.2,
                },
                nodes: case.nodes,
            };
            let pools = BTreeMap::from([("c".to_string(), pool)]);
            let next = BTreeMap::from([("c".to_string(), case.next)]);
            assert_eq!(
                decide(&pools, &next, &case.waiting, case.now),
                case.want,
                "{}",
                case.what
            );
        }
    }
}
