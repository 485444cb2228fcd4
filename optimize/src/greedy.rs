//! Merit-order heuristic: repeatedly serve the plant whose cheapest delivered heat is lowest.
//!
//! Delivered cost over a path is found with a multi-source Dijkstra on plants: a plant's own
//! label is its cheapest unit with spare capacity (or 0 for surplus already produced by must-run
//! floors), and crossing link l turns a label c into (c + link cost) / (1 - loss). The path is
//! then augmented by its bottleneck (deficit, unit headroom or link capacity). One Dijkstra
//! serves every deficit plant whose path is still intact, in label order (see the loop), so
//! the order is approximately, not strictly, global merit order.
//! It never reroutes flow already placed, which is why it is a heuristic and not a flow
//! algorithm. On/off units are committed in a first relaxed pass (floor 0, startup cost spread
//! over the rated output), then floors are enforced and a short local search tries switching
//! committed units off.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::model::{Dispatch, Model};

/// Amounts below this are treated as zero when deciding what a round saturated.
const EPS: f64 = 1e-9;
/// Local search over commitments is skipped above this many switchable units (cost grows
/// linearly with it, and the heuristic is meant to be the fast path).
const LOCAL_SEARCH_MAX: usize = 64;

#[derive(Clone, Copy, PartialEq)]
struct Label {
    cost: f64,
    plant: usize,
}

impl Eq for Label {}

impl Ord for Label {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed so BinaryHeap pops the cheapest label first.
        other
            .cost
            .total_cmp(&self.cost)
            .then_with(|| other.plant.cmp(&self.plant))
    }
}

impl PartialOrd for Label {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Run the heuristic; always returns a dispatch that respects unit bounds, commitment and
/// link capacities, with any remaining imbalance in the slack vectors.
pub(crate) fn greedy(m: &Model) -> Dispatch {
    let base: Vec<bool> = m.units.iter().map(|_| true).collect();
    if !m.has_binaries() {
        return dispatch_fixed(m, &base, true);
    }
    // Pass 1: switchable units may run anywhere in [0, hi]; what they end up using decides
    // the commitment.
    let relaxed = dispatch_fixed(m, &base, false);
    let used: Vec<bool> = m
        .units
        .iter()
        .enumerate()
        .map(|(k, u)| !u.switchable || relaxed.q[k] > EPS)
        .collect();
    let mut best = dispatch_fixed(m, &used, true);
    let mut best_z = best.objective(m);
    let mut commit = used;
    let candidates = [
        m.units.iter().map(|_| true).collect::<Vec<bool>>(),
        m.units.iter().map(|u| !u.switchable).collect::<Vec<bool>>(),
    ];
    for c in candidates {
        let x = dispatch_fixed(m, &c, true);
        let z = x.objective(m);
        if z < best_z - EPS {
            best = x;
            best_z = z;
            commit = c;
        }
    }
    let switchable: Vec<usize> = (0..m.units.len())
        .filter(|&k| m.units[k].switchable)
        .collect();
    if switchable.len() <= LOCAL_SEARCH_MAX {
        for &k in &switchable {
            let mut c = commit.clone();
            c[k] = !c[k];
            let x = dispatch_fixed(m, &c, true);
            let z = x.objective(m);
            if z < best_z - EPS {
                best = x;
                best_z = z;
                commit = c;
            }
        }
    }
    best
}

/// Merit-order dispatch for a given commitment. With `floors == false`, switchable units are
/// treated as continuous from 0 (the relaxed pass) and priced with their startup cost spread
/// over rated output.
fn dispatch_fixed(m: &Model, commit: &[bool], floors: bool) -> Dispatch {
    let np = m.plants.len();
    let mut x = Dispatch::zero(m);
    let mut hi = vec![0.0; m.units.len()];
    let mut price = vec![0.0; m.units.len()];
    for (k, u) in m.units.iter().enumerate() {
        let on = commit[k];
        x.on[k] = on;
        if !on {
            continue;
        }
        hi[k] = u.hi;
        let lo = if u.switchable && !floors { 0.0 } else { u.lo };
        x.q[k] = lo;
        let spread = if u.switchable && !floors && u.hi > EPS {
            u.startup / u.hi
        } else {
            0.0
        };
        // Negative-cost heat is treated as free so labels stay monotone along lossy links.
        price[k] = (u.cost.total_eur_mwh + spread).max(0.0);
    }
    if !floors {
        // Relaxed pass: the on flag must reflect use, not the candidate commitment.
        for (k, u) in m.units.iter().enumerate() {
            if u.switchable {
                x.on[k] = false;
            }
        }
    }
    // Units per plant, cheapest first; `next[p]` skips units already at their limit.
    let mut order: Vec<Vec<usize>> = m.units_at.clone();
    for list in &mut order {
        list.retain(|&k| hi[k] > EPS);
        list.sort_by(|&a, &b| price[a].total_cmp(&price[b]).then(a.cmp(&b)));
    }
    let mut next = vec![0usize; np];
    let mut deficit = vec![0.0; np];
    let mut surplus = vec![0.0; np];
    for p in 0..np {
        let r = -x.surplus(m, p);
        if r > 0.0 {
            deficit[p] = r;
        } else {
            surplus[p] = -r;
        }
    }
    let mut dist = vec![f64::INFINITY; np];
    let mut pred: Vec<Option<usize>> = vec![None; np];
    // Source each label was built from: `None` = surplus, `Some(k)` = unit k.
    let mut source: Vec<Option<usize>> = vec![None; np];
    let mut done = vec![false; np];
    let mut heap = BinaryHeap::new();
    let mut served_to_m = vec![false; np];
    // Each batch is one full Dijkstra followed by augmentations in label order; every
    // productive batch saturates something, so this bound is never the binding one in practice.
    let batches_max = 2 * (np + m.units.len() + m.links.len()) + 8;
    for _ in 0..batches_max {
        if (0..np).all(|p| deficit[p] <= EPS || served_to_m[p]) {
            break;
        }
        heap.clear();
        for p in 0..np {
            while next[p] < order[p].len() && hi[order[p][next[p]]] - x.q[order[p][next[p]]] <= EPS
            {
                next[p] += 1;
            }
            (dist[p], source[p]) = if surplus[p] > EPS {
                (0.0, None)
            } else if next[p] < order[p].len() {
                let k = order[p][next[p]];
                (price[k], Some(k))
            } else {
                (f64::INFINITY, None)
            };
            pred[p] = None;
            done[p] = false;
            if dist[p].is_finite() {
                heap.push(Label {
                    cost: dist[p],
                    plant: p,
                });
            }
        }
        let mut targets = Vec::new();
        while let Some(Label { cost, plant }) = heap.pop() {
            if done[plant] || cost > dist[plant] {
                continue;
            }
            done[plant] = true;
            if deficit[plant] > EPS && !served_to_m[plant] {
                targets.push(plant);
            }
            for &l in &m.links_out[plant] {
                let link = &m.links[l];
                if link.cap - x.f[l] <= EPS || done[link.to] {
                    continue;
                }
                let c = (cost + link.cost) / link.eta;
                if c < dist[link.to] {
                    dist[link.to] = c;
                    pred[link.to] = Some(l);
                    heap.push(Label {
                        cost: c,
                        plant: link.to,
                    });
                }
            }
        }
        // Labels only rise as capacity is used, so a path that still has every resource it
        // was priced with still costs what it was priced at. Serving all targets of a batch in
        // label order saves a Dijkstra per augmentation (1000 plants: 3 ms instead of 90-150
        // ms); the price is that a plant cut short by a bottleneck waits for the next batch
        // even if its next-best path is cheaper than later targets, so the order is only
        // approximately global merit order (measured effect on cost: a fraction of a percent
        // either way, see docs/optimize.md).
        let mut progressed = false;
        let mut path = Vec::new();
        for &t in &targets {
            if m.elastic && dist[t] >= m.m {
                // Delivered heat dearer than the unserved penalty: leave it unserved.
                served_to_m[t] = true;
                progressed = true;
                continue;
            }
            path.clear();
            let mut p = t;
            while let Some(l) = pred[p] {
                path.push(l);
                p = m.links[l].from;
                if path.len() > np {
                    break;
                }
            }
            let origin = p;
            let avail = match source[origin] {
                None => surplus[origin],
                Some(k) => hi[k] - x.q[k],
            };
            let mut amount = deficit[t];
            let mut gain = 1.0;
            for &l in &path {
                gain *= m.links[l].eta;
                amount = amount.min((m.links[l].cap - x.f[l]) * gain);
            }
            amount = amount.min(avail * gain);
            if amount <= EPS {
                continue;
            }
            let mut g = 1.0;
            for &l in &path {
                // Heat sent into link l so that `amount` arrives at t.
                g *= m.links[l].eta;
                x.f[l] = (x.f[l] + amount / g).min(m.links[l].cap);
            }
            let drawn = amount / gain;
            match source[origin] {
                None => surplus[origin] = (surplus[origin] - drawn).max(0.0),
                Some(k) => {
                    x.q[k] = (x.q[k] + drawn).min(hi[k]);
                    if m.units[k].switchable {
                        x.on[k] = true;
                    }
                }
            }
            deficit[t] = (deficit[t] - amount).max(0.0);
            progressed = true;
        }
        if !progressed {
            break;
        }
    }
    if !floors {
        for (k, u) in m.units.iter().enumerate() {
            if u.switchable {
                x.on[k] = x.q[k] > EPS;
            }
        }
    }
    x.close_slack(m);
    x
}
