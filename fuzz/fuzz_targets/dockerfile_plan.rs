//! The planner over fuzzed Dockerfiles (`ARG`/`ENV` expansion across instructions, stages,
//! `COPY --from`, targets): never a panic, every error renders, and the limits of
//! `plan::limits` and `frontend::expand` bound what a Dockerfile can make it do (issue 18:
//! doubling ARGs, 20,000-deep nesting, thousands of stages). Bases other than `scratch` fail
//! to resolve (no context, no registry): the planner's own work is what is fuzzed.
#![no_main]
use libfuzzer_sys::fuzz_target;
use strata_engine::image::Platform;
use strata_engine::plan::{self, PlanRequest};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data).into_owned();
    let req = PlanRequest {
        dockerfile_name: "Dockerfile".into(),
        source: text,
        context_dir: "/nonexistent-strata-fuzz-context".into(),
        build_args: [("B".to_string(), "x y".to_string())].into_iter().collect(),
        target: None,
        platform: Platform::host(),
        images: None,
    };
    match plan::plan(&req) {
        Ok(p) => {
            assert!(p.stages.len() <= plan::limits::MAX_STAGES);
            let _ = format!("{:?}", p.order);
        }
        Err(diag) => {
            let _ = diag.to_string();
        }
    }
});
