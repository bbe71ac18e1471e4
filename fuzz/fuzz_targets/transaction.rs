//! libFuzzer driver of `rulehost::fuzzing::transaction` (the properties are there,
//! shared with the test suite's replay of the corpora).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rulehost::fuzzing::transaction(data));
