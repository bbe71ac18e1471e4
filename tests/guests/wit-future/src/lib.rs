//! A rule built against `rulehost:rules@3.0.0`, which this host does not
//! provide (`tests/all/analyst_errors.rs`).

#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({ path: "wit", world: "rule-world" });

    struct Rule;

    impl exports::rulehost::rules::rule::Guest for Rule {
        fn evaluate(id: String) -> u32 {
            rulehost::rules::host::log(&id);
            0
        }
    }

    export!(Rule);
}
