//! The scheduler: stages as vertices of a DAG, each started as soon as the stages it uses are
//! done, at most `--jobs` at once.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::{BuildError, StageResult};
use crate::plan::Plan;

/// Runs every stage of `plan.order` through `run`, each as soon as the stages it depends on are
/// done, at most `jobs` at once (a slow stage holds back only the stages that need it). A stage's
/// result is dropped once every stage that uses it is done (the target's is kept), so a long
/// chain of stages holds only its frontier in memory. After the first error no stage starts;
/// those running finish, and the error is returned.
pub(crate) fn schedule(
    plan: &Plan,
    jobs: usize,
    results: &Mutex<BTreeMap<usize, StageResult>>,
    run: impl Fn(usize) -> Result<StageResult, BuildError> + Sync,
) -> Result<(), BuildError> {
    // Position in `plan.order`: ready stages start in that order (the build's output never
    // depends on it; progress reads better).
    let pos: BTreeMap<usize, usize> = plan
        .order
        .iter()
        .enumerate()
        .map(|(i, &s)| (s, i))
        .collect();
    let mut users: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    let mut deps_of: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for &s in &plan.order {
        let mut deps = plan.stages[s].deps.clone();
        deps.sort_unstable();
        deps.dedup();
        for &d in &deps {
            users.entry(d).or_default().push(s);
        }
        deps_of.insert(s, deps);
    }
    let waiting: BTreeMap<usize, usize> = deps_of.iter().map(|(s, d)| (*s, d.len())).collect();
    struct State {
        /// Ready stages by their position in `plan.order`.
        ready: std::collections::BTreeSet<usize>,
        waiting: BTreeMap<usize, usize>,
        /// Per stage: how many of its users have not finished (its result is dropped at 0).
        uses_left: BTreeMap<usize, usize>,
        running: usize,
        left: usize,
        error: Option<BuildError>,
    }
    let state = Mutex::new(State {
        ready: plan
            .order
            .iter()
            .filter(|s| waiting[s] == 0)
            .map(|s| pos[s])
            .collect(),
        uses_left: plan
            .order
            .iter()
            .map(|s| (*s, users.get(s).map_or(0, Vec::len)))
            .collect(),
        waiting,
        running: 0,
        left: plan.order.len(),
        error: None,
    });
    let wake = std::sync::Condvar::new();
    let worker = || loop {
        let s = {
            let mut st = state.lock().unwrap();
            loop {
                if st.error.is_some() || st.left == 0 {
                    return;
                }
                if let Some(p) = st.ready.pop_first() {
                    st.running += 1;
                    break plan.order[p];
                }
                // Nothing ready and nothing running with stages left would be a cycle: the
                // planner lets a stage use only stages defined before it.
                assert!(st.running > 0, "stage dependencies form a cycle");
                st = wake.wait(st).unwrap();
            }
        };
        let r = run(s);
        let mut st = state.lock().unwrap();
        st.running -= 1;
        st.left -= 1;
        match r {
            Ok(r) => {
                results.lock().unwrap().insert(s, r);
                for &u in users.get(&s).into_iter().flatten() {
                    let w = st.waiting.get_mut(&u).expect("a stage of the plan");
                    *w -= 1;
                    if *w == 0 {
                        st.ready.insert(pos[&u]);
                    }
                }
                for &d in &deps_of[&s] {
                    let n = st.uses_left.get_mut(&d).expect("a stage of the plan");
                    *n -= 1;
                    if *n == 0 && d != plan.target {
                        results.lock().unwrap().remove(&d);
                    }
                }
            }
            Err(e) => {
                if st.error.is_none() {
                    st.error = Some(e);
                }
            }
        }
        wake.notify_all();
    };
    std::thread::scope(|sc| {
        for _ in 0..jobs.clamp(1, plan.order.len().max(1)) {
            sc.spawn(worker);
        }
    });
    match state.into_inner().unwrap().error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
