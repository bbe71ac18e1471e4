//! A component without the `rulehost:rules/rule` export
//! (`tests/all/analyst_errors.rs`).

#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({ path: "wit", world: "plain" });

    struct Plain;

    impl Guest for Plain {
        fn ping() -> u32 {
            1
        }
    }

    export!(Plain);
}
