//! Cycles in the module graph: strongly connected components (Tarjan), one shortest cycle
//! reported for each.

use std::collections::{BTreeMap, BTreeSet};

use super::Graph;

/// Every cycle of the graph, each once, as a list of modules that starts and ends with the
/// same one (`a → b → a`).
pub(super) fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    // Strongly connected components (Tarjan); one cycle reported per component.
    struct State<'g> {
        graph: &'g Graph,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        components: Vec<Vec<&'g str>>,
    }
    fn visit<'g>(s: &mut State<'g>, v: &'g str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.graph.get(v).into_iter().flat_map(|m| m.keys()) {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w);
                if w == v {
                    break;
                }
            }
            s.components.push(component);
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        components: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    let mut out = Vec::new();
    for component in s.components.into_iter().filter(|c| c.len() > 1) {
        let members: BTreeSet<&str> = component.iter().copied().collect();
        let start = *members.first().expect("not empty");
        out.push(cycle_through(graph, start, &members));
    }
    out
}

/// A shortest cycle from `start` back to it within `members` (breadth-first).
fn cycle_through(graph: &Graph, start: &str, members: &BTreeSet<&str>) -> Vec<String> {
    let mut parent: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for w in graph.get(v).into_iter().flat_map(|m| m.keys()) {
            let w = w.as_str();
            if w == start {
                // start → ... → v, then back to start.
                let mut chain = vec![v];
                let mut at = v;
                while at != start {
                    at = parent[at];
                    chain.push(at);
                }
                chain.reverse();
                let mut out: Vec<String> = chain.iter().map(|s| s.to_string()).collect();
                out.push(start.to_string());
                return out;
            }
            if members.contains(w) && !parent.contains_key(w) {
                parent.insert(w, v);
                queue.push_back(w);
            }
        }
    }
    vec![start.to_string(), start.to_string()]
}
