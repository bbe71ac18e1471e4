//! libFuzzer driver of `rulehost::fuzzing::stream`: accounts with any
//! balances and overdrafts (up to 28 digits), transfers of any amount,
//! replays and hold resolutions, checked against the model there. The rule
//! set is the example folder's `velocity` module, loaded once for its shape;
//! the rules' answers come natively from the transaction.
#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use rulehost::fuzzing::StreamOp;
use rulehost::ruleset::RuleSet;
use rulehost::sandbox::{Sandbox, SandboxConfig};
use rust_decimal::Decimal;

#[derive(Arbitrary, Debug)]
enum Amount {
    Cents(u32),
    Digits(u128, u8),
    Max,
    Zero,
    Negative(u16),
}

impl Amount {
    fn text(&self) -> String {
        match self {
            Amount::Cents(c) => Decimal::new(i64::from(*c), 2).to_string(),
            Amount::Digits(d, scale) => {
                let d = (d % 10u128.pow(28)) as i128;
                Decimal::from_i128_with_scale(d, u32::from(*scale % 29)).to_string()
            }
            Amount::Max => "9999999999999999999999999999".into(),
            Amount::Zero => "0".into(),
            Amount::Negative(c) => format!("-{c}"),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    Transfer { id: u8, source: u8, destination: u8, amount: Amount, score: u16 },
    Resolve { id: u8, approve: bool },
}

#[derive(Arbitrary, Debug)]
struct Input {
    accounts: [(Amount, Amount); 4],
    ops: Vec<Op>,
}

fn ruleset() -> &'static RuleSet {
    static SET: OnceLock<RuleSet> = OnceLock::new();
    SET.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("rulehost-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("modules")).unwrap();
        let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/ruleset/modules");
        std::fs::copy(examples.join("velocity.wasm"), dir.join("modules/velocity.wasm"))
            .expect("build the modules first: scripts/build-rules.sh");
        std::fs::write(dir.join("manifest.toml"), "[[rule]]\nname = \"v\"\nkind = \"risk\"\nmodule = \"modules/velocity.wasm\"\n")
            .unwrap();
        RuleSet::load(&Sandbox::new(&SandboxConfig::default()).unwrap(), &dir).unwrap()
    })
}

libfuzzer_sys::fuzz_target!(|input: Input| {
    let accounts = input.accounts.map(|(o, d)| (o.text(), d.text().trim_start_matches('-').to_owned()));
    let ops: Vec<StreamOp> = input
        .ops
        .into_iter()
        .map(|op| match op {
            Op::Transfer { id, source, destination, amount, score } => {
                StreamOp::Transfer { id, source, destination, amount: amount.text(), score }
            }
            Op::Resolve { id, approve } => StreamOp::Resolve { id, approve },
        })
        .collect();
    rulehost::fuzzing::stream(ruleset(), &accounts, &ops);
});
