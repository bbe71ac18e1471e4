//! Any bytes as one input line: an error record or a transaction, never a
//! panic; a transaction's fingerprint ignores key order and spelling.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rulehost::input::{parse_transaction, strict};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // The strict parser agrees with serde_json wherever no key repeats.
    if let Ok(ours) = strict::from_str(text) {
        let theirs: serde_json::Value = serde_json::from_str(text).expect("strict JSON is JSON");
        assert_eq!(ours, theirs);
    }
    if let Ok(parsed) = parse_transaction(1, text) {
        // Re-serialised (keys sorted, spacing gone), it is the same content.
        let value: serde_json::Value = serde_json::from_str(text).expect("parsed");
        let again = parse_transaction(2, &value.to_string()).expect("a transaction re-serialised still parses");
        assert_eq!(parsed.fingerprint, again.fingerprint);
        assert_eq!(parsed.tx, again.tx);
    }
});
