//! Replays the seed corpus, and whatever `scripts/fuzz` left in `corpus/` and `artifacts/`,
//! through the target bodies: the same checks on a stable toolchain, without libFuzzer.
//! `request_headers` is replayed with `--features gateway`.

use std::path::Path;

type Target = fn(&[u8]);

const TARGETS: &[(&str, Target)] = &[
    ("csv_chunk", ingest_fuzz::csv_chunk),
    ("pgcopy_values", ingest_fuzz::pgcopy_values),
    ("multipart", ingest_fuzz::multipart),
    ("dataset_definition", ingest_fuzz::dataset_definition),
    #[cfg(feature = "gateway")]
    ("request_headers", ingest_fuzz::request_headers),
];

fn inputs(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.path().is_file())
        .map(|e| {
            (
                e.path().display().to_string(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn every_seed_and_saved_input_passes_its_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for &(name, target) in TARGETS {
        let seeds = inputs(&root.join("seeds").join(name));
        assert!(!seeds.is_empty(), "no seeds for {name}");
        let saved = ["corpus", "artifacts"].map(|dir| inputs(&root.join(dir).join(name)));
        for (path, data) in seeds.iter().chain(saved.iter().flatten()) {
            println!("{path}");
            target(data);
        }
    }
}

#[cfg(feature = "gateway")]
#[test]
fn the_token_seed_is_a_valid_token() {
    let seed = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds/request_headers/token_only"),
    )
    .unwrap();
    let token = std::str::from_utf8(&seed[1..]).unwrap();
    let clock: gateway::auth::Clock = std::sync::Arc::new(|| 2_000_000_000);
    let secret = ingest_runtime::settings::Secret::new("fuzz-signing-key-0123456789");
    let tokens = gateway::auth::Tokens::new(&secret, None, 3600, clock);
    assert_eq!(tokens.verify(token).unwrap().sub, "fuzz-client");
}
