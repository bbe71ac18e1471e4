//! Any text as a cases file: an error naming the case and field, or cases
//! whose budget is in the manifest's ranges — never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rulehost::cases::CaseFile;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(file) = CaseFile::parse("cases.toml", text) else { return };
    assert!(file.budget.check().is_ok());
});
