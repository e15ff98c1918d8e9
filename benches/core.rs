//! Criterion benchmarks of the guideline core: `recommend` and `check` on every shared vignette,
//! and the whole protobuf path (decode → validate → recommend → encode) as the server runs it.
//!
//! Run: `cargo bench --bench core` (vignettes from `../shared/vignettes-2026.2`, or `VLMS_RT_VIGNETTES`).

use std::path::PathBuf;

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use prost::Message;
use vlms_rt::core::{self, Case, Proposal};
use vlms_rt::{convert, guideline, pb};

fn vignette_dir() -> PathBuf {
    std::env::var("VLMS_RT_VIGNETTES")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/vignettes-2026.2")
        })
}

type Named<T> = Vec<(String, T)>;

fn load() -> (Named<pb::Case>, Named<pb::CheckPrescriptionRequest>) {
    let mut cases = Vec::new();
    let mut checks = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(vignette_dir())
        .expect("vignettes")
        .map(|entry| entry.expect("entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path
            .file_stem()
            .and_then(|stem| stem.to_str())
            .unwrap_or_default()
            .to_string();
        if name.starts_with("bad-") || path.extension().is_none_or(|ext| ext != "json") {
            continue;
        }
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
        if let Some(case) = json.get("case") {
            cases.push((name, serde_json::from_value(case.clone()).expect("case")));
        } else if let Some(request) = json.get("request") {
            checks.push((
                name,
                serde_json::from_value(request.clone()).expect("request"),
            ));
        }
    }
    (cases, checks)
}

fn benches(criterion: &mut Criterion) {
    let profile = guideline::embedded().expect("profile");
    let (cases, checks) = load();

    let mut group = criterion.benchmark_group("recommend");
    for (name, case) in &cases {
        let case = Case::validate(&convert::raw_case(case), "case").expect("valid");
        group.bench_with_input(BenchmarkId::from_parameter(name), &case, |bencher, case| {
            bencher.iter(|| core::recommend(black_box(&profile), black_box(case)));
        });
    }
    group.finish();

    let mut group = criterion.benchmark_group("check");
    for (name, request) in &checks {
        let proposal = Proposal::validate(&convert::raw_proposal(request)).expect("valid");
        group.bench_with_input(
            BenchmarkId::from_parameter(name),
            &proposal,
            |bencher, proposal| {
                bencher.iter(|| core::check(black_box(&profile), black_box(proposal)));
            },
        );
    }
    group.finish();

    let mut group = criterion.benchmark_group("wire_path");
    for (name, case) in &cases {
        let bytes = pb::RecommendRequest {
            case: Some(case.clone()),
        }
        .encode_to_vec();
        group.bench_with_input(
            BenchmarkId::from_parameter(name),
            &bytes,
            |bencher, bytes| {
                bencher.iter(|| {
                    let request =
                        pb::RecommendRequest::decode(black_box(bytes.as_slice())).expect("decodes");
                    let case = convert::case_from_request(&request).expect("valid");
                    let plan = core::recommend(&profile, &case);
                    convert::plan_out(&plan, String::from("00000000-0000-4000-8000-000000000000"))
                        .encode_to_vec()
                });
            },
        );
    }
    group.finish();

    // The form the SQLite audit store keeps a plan in, made on the thread answering the call: a
    // zstd frame against the profile's dictionary of sample plans.
    let dictionary = vlms_rt::audit::dictionary::plan_dictionary(&profile);
    let compression = vlms_rt::audit::compress::Compression::new(&dictionary)
        .expect("loads")
        .expect("not empty");
    let mut group = criterion.benchmark_group("audit_stored_form");
    for (name, case) in cases
        .iter()
        .filter(|(name, _)| name.as_str() == "ivc-middle-postop-r1")
    {
        let request = pb::RecommendRequest {
            case: Some(case.clone()),
        };
        let case = convert::case_from_request(&request).expect("valid");
        let plan = vlms_rt::wire::encode_plan(
            &core::recommend(&profile, &case),
            "01KB0000000000000000000000",
        );
        let stored = compression.compress(&plan).expect("compresses");
        println!(
            "{name} zstd: {} bytes stored for {}",
            stored.len(),
            plan.len()
        );
        group.bench_with_input(BenchmarkId::new("zstd", name), &plan, |bencher, plan| {
            bencher.iter(|| compression.compress(black_box(plan)));
        });
    }
    group.finish();
}

criterion_group!(core_benches, benches);
criterion_main!(core_benches);
