//! A small flow network: Dinic's maximum flow and a primal-dual minimum-cost flow.
//!
//! The assignment is a flow problem (see [`super::assign`]); this module knows nothing about
//! partitions or zones. Vertices are dense indices, edges are stored in pairs (an edge at
//! index `e` has its residual reverse at `e ^ 1`), and every loop runs in index order, so the
//! result depends only on the order edges were added: the caller adds them in sorted order,
//! which makes the whole assignment deterministic.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

/// "No path": larger than any real distance, small enough never to overflow when added to.
const INF: i64 = i64::MAX / 4;

/// A directed graph with capacities and costs on its edges.
#[derive(Debug, Clone)]
pub(super) struct FlowGraph {
    /// Edge indices leaving each vertex, in insertion order.
    adj: Vec<Vec<usize>>,
    /// Head of each edge.
    to: Vec<usize>,
    /// Remaining (residual) capacity of each edge.
    cap: Vec<i64>,
    /// Cost per unit of flow; the reverse edge carries the opposite cost.
    cost: Vec<i64>,
}

impl FlowGraph {
    /// An edgeless graph on `n` vertices.
    pub(super) fn new(n: usize) -> Self {
        Self {
            adj: vec![Vec::new(); n],
            to: Vec::new(),
            cap: Vec::new(),
            cost: Vec::new(),
        }
    }

    /// Adds `u → v` and returns its index, to read its flow back with [`Self::flow`].
    pub(super) fn add_edge(&mut self, u: usize, v: usize, cap: i64, cost: i64) -> usize {
        let e = self.to.len();
        self.adj[u].push(e);
        self.to.push(v);
        self.cap.push(cap);
        self.cost.push(cost);
        self.adj[v].push(e + 1);
        self.to.push(u);
        self.cap.push(0);
        self.cost.push(-cost);
        e
    }

    /// Flow currently carried by edge `e` (the residual capacity of its reverse).
    pub(super) fn flow(&self, e: usize) -> i64 {
        self.cap[e ^ 1]
    }

    /// Pushes as much flow as possible from `s` to `t` (Dinic), returns the amount.
    pub(super) fn max_flow(&mut self, s: usize, t: usize) -> i64 {
        let mut total = 0;
        while let Some(level) = self.levels(s, t, |_, _| true) {
            total += self.blocking_flow(s, t, &level, &|_, _| true);
        }
        total
    }

    /// Pushes up to `want` units from `s` to `t` at minimum total cost; returns the flow.
    ///
    /// Successive shortest paths with Johnson potentials (costs must be non-negative when
    /// called on a fresh graph). Each phase runs Dijkstra on reduced costs, then saturates
    /// every shortest path at once with a blocking flow over the zero-reduced-cost edges, so
    /// the number of phases is the number of distinct path costs, not the amount of flow.
    pub(super) fn min_cost_flow(&mut self, s: usize, t: usize, want: i64) -> i64 {
        let mut potential = vec![0i64; self.adj.len()];
        let mut total = 0;
        while total < want {
            let dist = self.dijkstra(s, &potential);
            if dist[t] >= INF {
                break;
            }
            for (p, d) in potential.iter_mut().zip(&dist) {
                if *d < INF {
                    *p += d;
                }
            }
            let tight = |g: &Self, e: usize| {
                let u = g.to[e ^ 1];
                g.cost[e] + potential[u] - potential[g.to[e]] == 0
            };
            while total < want {
                let Some(level) = self.levels(s, t, tight) else {
                    break;
                };
                let limit = want - total;
                total += self.blocking_flow_limited(s, t, &level, &tight, limit);
            }
        }
        total
    }

    /// Shortest reduced-cost distances from `s` over edges with residual capacity.
    fn dijkstra(&self, s: usize, potential: &[i64]) -> Vec<i64> {
        let mut dist = vec![INF; self.adj.len()];
        let mut heap = BinaryHeap::new();
        dist[s] = 0;
        heap.push(Reverse((0i64, s)));
        while let Some(Reverse((d, u))) = heap.pop() {
            if d > dist[u] {
                continue;
            }
            for &e in &self.adj[u] {
                if self.cap[e] <= 0 {
                    continue;
                }
                let v = self.to[e];
                let nd = d + self.cost[e] + potential[u] - potential[v];
                if nd < dist[v] {
                    dist[v] = nd;
                    heap.push(Reverse((nd, v)));
                }
            }
        }
        dist
    }

    /// BFS levels from `s` over residual edges accepted by `usable`; `None` if `t` is cut off.
    fn levels(
        &self,
        s: usize,
        t: usize,
        usable: impl Fn(&Self, usize) -> bool,
    ) -> Option<Vec<u32>> {
        let mut level = vec![u32::MAX; self.adj.len()];
        let mut queue = VecDeque::new();
        level[s] = 0;
        queue.push_back(s);
        while let Some(u) = queue.pop_front() {
            for &e in &self.adj[u] {
                let v = self.to[e];
                if self.cap[e] > 0 && level[v] == u32::MAX && usable(self, e) {
                    level[v] = level[u] + 1;
                    queue.push_back(v);
                }
            }
        }
        (level[t] != u32::MAX).then_some(level)
    }

    /// Saturates every level-increasing path (one Dinic phase) without a limit.
    fn blocking_flow(
        &mut self,
        s: usize,
        t: usize,
        level: &[u32],
        usable: &impl Fn(&Self, usize) -> bool,
    ) -> i64 {
        self.blocking_flow_limited(s, t, level, usable, INF)
    }

    /// One Dinic phase pushing at most `limit` units.
    fn blocking_flow_limited(
        &mut self,
        s: usize,
        t: usize,
        level: &[u32],
        usable: &impl Fn(&Self, usize) -> bool,
        limit: i64,
    ) -> i64 {
        let mut next = vec![0usize; self.adj.len()];
        let mut total = 0;
        while total < limit {
            let pushed = self.augment(s, t, limit - total, level, usable, &mut next);
            if pushed == 0 {
                break;
            }
            total += pushed;
        }
        total
    }

    /// Depth-first search for one augmenting path along increasing levels. Paths are short
    /// (six edges in the assignment network), so recursion depth is bounded.
    fn augment(
        &mut self,
        u: usize,
        t: usize,
        limit: i64,
        level: &[u32],
        usable: &impl Fn(&Self, usize) -> bool,
        next: &mut [usize],
    ) -> i64 {
        if u == t {
            return limit;
        }
        while next[u] < self.adj[u].len() {
            let e = self.adj[u][next[u]];
            let v = self.to[e];
            if self.cap[e] > 0 && level[v] == level[u].wrapping_add(1) && usable(self, e) {
                let pushed = self.augment(v, t, limit.min(self.cap[e]), level, usable, next);
                if pushed > 0 {
                    self.cap[e] -= pushed;
                    self.cap[e ^ 1] += pushed;
                    return pushed;
                }
            }
            next[u] += 1;
        }
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_flow_of_a_diamond() {
        let mut g = FlowGraph::new(4);
        g.add_edge(0, 1, 3, 0);
        g.add_edge(0, 2, 2, 0);
        g.add_edge(1, 2, 5, 0);
        g.add_edge(1, 3, 2, 0);
        g.add_edge(2, 3, 3, 0);
        assert_eq!(g.max_flow(0, 3), 5);
    }

    #[test]
    fn min_cost_flow_prefers_cheap_paths() {
        // Two units must go 0 → 3; the cheap path (cost 1) carries one, the other pays 5.
        let mut g = FlowGraph::new(4);
        let cheap = g.add_edge(0, 1, 1, 1);
        let dear = g.add_edge(0, 2, 5, 5);
        g.add_edge(1, 3, 5, 0);
        g.add_edge(2, 3, 5, 0);
        assert_eq!(g.min_cost_flow(0, 3, 2), 2);
        assert_eq!((g.flow(cheap), g.flow(dear)), (1, 1));
    }

    #[test]
    fn min_cost_flow_reroutes_through_reverse_edges() {
        // The greedy first path 0→1→2→3 (cost 0) must be undone to carry two units at cost 4.
        let mut g = FlowGraph::new(4);
        g.add_edge(0, 1, 1, 0);
        g.add_edge(0, 2, 1, 2);
        let middle = g.add_edge(1, 2, 1, 0);
        g.add_edge(1, 3, 1, 2);
        g.add_edge(2, 3, 1, 0);
        assert_eq!(g.min_cost_flow(0, 3, 2), 2);
        assert_eq!(g.flow(middle), 0);
    }
}
