#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ingest_fuzz::dataset_definition(data));
