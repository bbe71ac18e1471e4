//! Several hosts on one PostgreSQL ledger, each owning a partition of the
//! source accounts: split three ways, they decide what one host decides
//! alone; a paused host whose lease was taken over cannot commit.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rulehost::ledger::{LedgerReader, PgReader};
use serde_json::Value;

use crate::ledger_cli::{rulehost, s, text};
use crate::ledger_postgres::run_onto;
use crate::postgres::PgServer;
use crate::support::TempRuleSet;

/// Records of an output file: decided ones by id (without per-run
/// fields), and how many lines each error code answered.
fn records(output: &str) -> (HashMap<String, Value>, HashMap<String, usize>) {
    let (mut decided, mut errors) = (HashMap::new(), HashMap::<String, usize>::new());
    for line in output.lines() {
        let mut v: Value = serde_json::from_str(line).unwrap();
        if v["outcome"] == "error" {
            *errors.entry(v["error"]["code"].as_str().unwrap_or("?").to_owned()).or_default() += 1;
            continue;
        }
        let o = v.as_object_mut().unwrap();
        o.remove("line");
        decided.insert(o["id"].as_str().unwrap().to_owned(), v);
    }
    (decided, errors)
}

/// Generated accounts made rich (so no funds check depends on when a credit
/// from another partition's host lands) and their transactions.
fn rich_traffic(data: &Path, transactions: usize) -> (std::path::PathBuf, std::path::PathBuf) {
    let n = transactions.to_string();
    let generated = rulehost(&["gen", "--out", s(data), "--accounts", "300", "--transactions", &n, "--seed", "3"]);
    assert!(generated.status.success(), "{}", text(&generated));
    let accounts = data.join("accounts.jsonl");
    let rich: String = std::fs::read_to_string(&accounts)
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            v["opening_balance"] = "100000000".into();
            format!("{v}\n")
        })
        .collect();
    let rich_path = data.join("rich.jsonl");
    std::fs::write(&rich_path, rich).unwrap();
    (rich_path, data.join("transactions.jsonl"))
}

#[test]
fn three_hosts_split_by_partition_decide_what_one_host_decides_alone() {
    let sc = Scenario::new("split", 6000);
    let (url, data) = (&sc.url, sc.dir.path());
    let alone = sc.path("alone.sqlite");
    // Three hosts at once on the database, each its third of the partitions.
    let hosts: Vec<_> = ["0-20", "21-41", "42-63"]
        .iter()
        .enumerate()
        .map(|(i, partitions)| sc.host(&format!("host-{i}"), partitions, "10", false))
        .collect();
    // Every line went to all three hosts at once (the same id to three
    // hosts concurrently): exactly one of them decides it. A host that
    // opened after another had decided an id (the hosts start at the same
    // time, but a busy machine staggers them) finds that decision among the
    // stored ids and answers it as a replay, which must be the decision made.
    let mut union: HashMap<String, Value> = HashMap::new();
    let mut replays: Vec<(usize, Value)> = Vec::new();
    let mut not_owned = 0;
    for (host, (child, output)) in hosts.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.code().unwrap() <= 1, "{}", text(&out));
        let written = std::fs::read_to_string(&output).unwrap();
        let (_, errors) = records(&written);
        not_owned += errors.get("PARTITION_NOT_OWNED").copied().unwrap_or(0);
        for line in written.lines() {
            let mut v: Value = serde_json::from_str(line).unwrap();
            if v["outcome"] == "error" {
                continue;
            }
            v.as_object_mut().unwrap().remove("line");
            if v.as_object_mut().unwrap().remove("replayed").is_some() {
                replays.push((host, v));
                continue;
            }
            let id = v["id"].as_str().unwrap().to_owned();
            assert!(union.insert(id.clone(), v).is_none(), "{id} decided by host {host} and another");
        }
    }
    for (host, replay) in &replays {
        let id = replay["id"].as_str().unwrap();
        assert_eq!(Some(replay), union.get(id), "host {host} replayed {id} as another decision than the one made");
    }
    let (want, _) = records(&std::fs::read_to_string(data.join("alone.jsonl")).unwrap());
    let strip = |m: &HashMap<String, Value>| -> HashMap<String, Value> {
        m.iter()
            .map(|(k, v)| {
                let mut v = v.clone();
                v.as_object_mut().unwrap().remove("replayed");
                (k.clone(), v)
            })
            .collect()
    };
    assert_eq!(union.len(), want.len(), "every decision made by exactly one of the hosts");
    assert_eq!(strip(&union), strip(&want), "the union of the three hosts' decisions is the lone host's");
    assert!(not_owned > 6000, "each host turned away the other partitions' lines ({not_owned})");
    let balances = |l: &str| text(&rulehost(&["ledger", "accounts", "--ledger", l]));
    assert_eq!(balances(url), balances(s(&alone)), "the same final balances");
    let reconcile = rulehost(&["ledger", "reconcile", "--ledger", url]);
    assert!(reconcile.status.success(), "{}", text(&reconcile));
    let stored = PgReader::open(url).unwrap();
    assert_eq!(stored.decision_ids().unwrap().len(), want.len());
    // The hosts closed cleanly: every partition is free again.
    let leases = stored.partitions().unwrap();
    assert_eq!(leases.len(), 64);
    assert!(leases.iter().all(|l| l.owner.is_none()), "{leases:?}");
}

/// A database with rich generated accounts imported, their transactions,
/// and one host's run of them alone on a SQLite file.
struct Scenario {
    _server: PgServer,
    url: String,
    set: TempRuleSet,
    dir: tempfile::TempDir,
    input: std::path::PathBuf,
}

impl Scenario {
    fn new(name: &str, transactions: usize) -> Scenario {
        let server = PgServer::start();
        let url = server.database(name);
        let set = TempRuleSet::example();
        let dir = tempfile::tempdir().unwrap();
        let (accounts, input) = rich_traffic(dir.path(), transactions);
        let import = rulehost(&["ledger", "import", s(&accounts), "--ledger", &url]);
        assert!(import.status.success(), "{}", text(&import));
        let scenario = Scenario { _server: server, url, set, dir, input };
        let (alone, output) = (scenario.path("alone.sqlite"), scenario.path("alone.jsonl"));
        let out = run_onto(
            scenario.set.dir.path(),
            Some(&accounts),
            &scenario.input,
            &output,
            s(&alone),
            &scenario.path("cache"),
        );
        assert!(out.status.code().unwrap() <= 1, "{}", text(&out));
        scenario
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    /// A host of `partitions` deciding the whole input (or standard input).
    fn host(
        &self,
        name: &str,
        partitions: &str,
        lease_seconds: &str,
        stdin: bool,
    ) -> (std::process::Child, std::path::PathBuf) {
        let output = self.path(&format!("{name}.jsonl"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rulehost"));
        cmd.args(["run", "--quiet", "--rules", s(self.set.dir.path()), "--output", s(&output), "--ledger", &self.url]);
        cmd.args(["--cache-dir", s(&self.path("cache")), "--partitions", partitions, "--host-name", name]);
        cmd.args(["--lease-seconds", lease_seconds]);
        if stdin {
            cmd.stdin(Stdio::piped());
        } else {
            cmd.args(["--input", s(&self.input)]);
        }
        (cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap(), output)
    }
}

/// A serving host, killed when dropped (so a failing test leaves no host
/// behind writing to the test's output).
struct Served(std::process::Child);

impl std::ops::Deref for Served {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Served {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Scenario {
    /// `rulehost serve` of `partitions` (taking lapsed ones over), once listening.
    fn serve(&self, name: &str, partitions: &str, lease_seconds: &str) -> (Served, String) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rulehost"))
            .args(["serve", "--listen", "127.0.0.1:0", "--rules", s(self.set.dir.path()), "--ledger", &self.url])
            .args(["--cache-dir", s(&self.path("cache")), "--partitions", partitions, "--host-name", name])
            .args(["--lease-seconds", lease_seconds])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let base = crate::server::listening(&mut child);
        (Served(child), base)
    }
}

/// A payment of 1.00 from `source`.
fn payment(id: &str, source: &str) -> Value {
    serde_json::json!({"id": id, "timestamp": "2026-01-05T10:00:00Z", "kind": "payment", "source": source,
                       "destination": "acc-000002", "amount": "1.00", "currency": "USD"})
}

/// Posts `body` to `base` until the answer is not one of `meanwhile`
/// (within a minute); returns the status, the body and how long it took.
async fn post_until(base: &str, body: &Value, meanwhile: &[u16]) -> (u16, Value, Duration) {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
    let started = Instant::now();
    loop {
        let r = http.post(format!("{base}/v1/transactions")).json(body).send().await.unwrap();
        let status = r.status().as_u16();
        let answer: Value = r.json().await.unwrap();
        if !meanwhile.contains(&status) {
            return (status, answer, started.elapsed());
        }
        assert!(started.elapsed() < Duration::from_secs(60), "still {status} after a minute: {answer}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_hosts_take_over_a_killed_hosts_partitions_hand_them_back_and_heal_after_a_refused_group() {
    use rulehost::partition::partition;
    let sc = Scenario::new("takeover", 10);
    let account = |p: &dyn Fn(u16) -> bool| (0..300).map(|i| format!("acc-{i:06}")).find(|a| p(partition(a))).unwrap();
    let (low, high) = (account(&|p| p < 32), account(&|p| p >= 32));
    let (mut a, base_a) = sc.serve("a", "0-31", "3");
    let (mut b, base_b) = sc.serve("b", "32-63", "3");
    let now = |base: &str, body: Value| {
        let base = base.to_owned();
        async move { post_until(&base, &body, &[]).await }
    };
    let (status, first, _) = now(&base_a, payment("a-1", &low)).await;
    assert_eq!(status, 200, "{first}");
    let (status, body, _) = now(&base_b, payment("b-0", &low)).await;
    assert_eq!((status, &body["error"]["code"]), (421, &Value::from("PARTITION_NOT_OWNED")), "{body}");

    // A dies (kill -9): B adopts its partitions once A's lease lapses; a
    // client retrying on B gets its decisions.
    a.kill().unwrap();
    a.wait().unwrap();
    let (status, body, took) = post_until(&base_b, &payment("a-2", &low), &[421, 503]).await;
    assert_eq!(status, 200, "{body}");
    eprintln!("B took A's partitions over {took:?} after the kill (lease 3 s)");
    let (status, replayed, _) = now(&base_b, payment("a-1", &low)).await;
    assert_eq!(status, 200, "{replayed}");
    assert_eq!(replayed["replayed"], true, "A's acknowledged decision is answered by B: {replayed}");
    let (mut f, mut r) = (first.clone(), replayed.clone());
    for v in [&mut f, &mut r] {
        v.as_object_mut().unwrap().remove("replayed");
        v.as_object_mut().unwrap().remove("line");
    }
    assert_eq!(f, r, "the same decision");
    let metrics = reqwest::get(format!("{base_b}/metrics")).await.unwrap().text().await.unwrap();
    let p = partition(&low);
    assert!(metrics.contains(&format!("rulehost_partition_owned{{partition=\"{p}\"}} 1")), "{metrics}");
    assert!(metrics.contains(&format!("rulehost_partition_decisions_total{{partition=\"{p}\"}}")), "{metrics}");

    // A comes back: it asks for its partitions and B hands them back.
    let (mut a, base_a) = sc.serve("a", "0-31", "3");
    let (status, body, _) = now(&base_a, payment("a-3", &low)).await;
    assert_eq!(status, 200, "{body}");
    let (status, body, _) = now(&base_b, payment("b-1", &low)).await;
    assert_eq!(status, 421, "B handed partition {p} back: {body}");
    let leases = PgReader::open(&sc.url).unwrap().partitions().unwrap();
    for l in &leases {
        let want = if l.partition < 32 { "a" } else { "b" };
        assert_eq!(l.owner.as_deref(), Some(want), "{l:?}");
    }

    // The same id from sources in both hosts' partitions: A decides it
    // first; B's group is refused by the database (one decision per id),
    // B reopens from what is durable and answers the conflict.
    let (status, body, _) = now(&base_a, payment("clash", &low)).await;
    assert_eq!(status, 200, "{body}");
    let (status, body, _) = now(&base_b, payment("clash", &high)).await;
    assert_eq!(status, 503, "{body}");
    let (status, body, _) = post_until(&base_b, &payment("clash", &high), &[503]).await;
    assert_eq!((status, &body["error"]["code"]), (409, &Value::from("IDEMPOTENCY_CONFLICT")), "{body}");
    let (status, body, _) = now(&base_b, payment("b-2", &high)).await;
    assert_eq!(status, 200, "{body}");
    let ready = reqwest::get(format!("{base_b}/readyz")).await.unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    // What B shows is what is stored: its refused change left nothing.
    let shown: Value = reqwest::get(format!("{base_b}/v1/accounts/{high}")).await.unwrap().json().await.unwrap();
    let reader = PgReader::open(&sc.url).unwrap();
    let stored = reader.accounts().unwrap().into_iter().find(|x| x.id == high).unwrap();
    assert_eq!(shown["posted"], serde_json::to_value(&stored).unwrap()["posted"], "{shown}");
    let mut ids = reader.decision_ids().unwrap();
    ids.sort();
    assert_eq!(ids, ["a-1", "a-2", "a-3", "b-2", "clash"]);
    let clash = reader.record("clash").unwrap().unwrap();
    assert_eq!(clash.input.unwrap().tx.source, low, "the clash is A's");
    assert!(reader.reconcile().unwrap().is_clean());
    for child in [&mut a, &mut b] {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Waits until `path` holds `lines` complete lines.
fn wait_lines(path: &Path, lines: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let written = std::fs::read_to_string(path).unwrap_or_default();
        if written.matches('\n').count() >= lines {
            return written;
        }
        assert!(Instant::now() < deadline, "{} has {} of {lines} lines", path.display(), written.lines().count());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_paused_host_whose_lease_was_taken_over_cannot_commit() {
    let sc = Scenario::new("fencing", 2000);
    let url = &sc.url;
    let lines: Vec<String> = std::fs::read_to_string(&sc.input)
        .unwrap()
        .lines()
        .filter(|l| serde_json::from_str::<Value>(l).is_ok_and(|v| v["id"].is_string() && v["amount"].is_string()))
        .map(str::to_owned)
        .collect();
    // Host A decides the first batch of lines, then is paused (`run` reads
    // standard input a batch of BATCH_LINES_MAX lines at a time).
    let batch = rulehost::run::BATCH_LINES_MAX;
    assert!(lines.len() >= 3 * batch, "{} well-formed lines", lines.len());
    let (mut a, a_out) = sc.host("a", "all", "1", true);
    let mut a_in = a.stdin.take().unwrap();
    for l in &lines[..batch] {
        writeln!(a_in, "{l}").unwrap();
    }
    a_in.flush().unwrap();
    wait_lines(&a_out, batch);
    let pid = a.id() as i32;
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);

    // Host B takes every partition once A's lease lapsed, and decides the next lines.
    let (mut b, b_out) = sc.host("b", "all", "1", true);
    let mut b_in = b.stdin.take().unwrap();
    for l in &lines[batch..2 * batch] {
        writeln!(b_in, "{l}").unwrap();
    }
    drop(b_in);
    let out = b.wait_with_output().unwrap();
    assert!(out.status.code().unwrap() <= 1, "{}", text(&out));
    let (b_decided, _) = records(&std::fs::read_to_string(&b_out).unwrap());
    assert!(b_decided.len() >= batch - 20, "B decided the lines sent to it: {}", b_decided.len());

    // A wakes up and is sent more lines: none of them may be committed.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    for l in &lines[2 * batch..3 * batch] {
        let _ = writeln!(a_in, "{l}");
    }
    drop(a_in);
    let out = a.wait_with_output().unwrap();
    let a_text = std::fs::read_to_string(&a_out).unwrap_or_default();
    let (a_decided, a_errors) = records(&a_text);
    let late: Vec<String> = lines[2 * batch..3 * batch]
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["id"].as_str().unwrap().to_owned())
        .collect();
    let stored = PgReader::open(url).unwrap();
    for id in &late {
        let early = lines[..2 * batch].iter().any(|l| l.contains(&format!("\"id\":\"{id}\"")));
        if !early {
            assert!(stored.record(id).unwrap().is_none(), "{id} was committed by the fenced host");
            assert!(!a_decided.contains_key(id), "{id} was acknowledged by the fenced host");
        }
    }
    assert!(
        !out.status.success()
            || a_errors.contains_key("PARTITION_NOT_OWNED")
            || a_errors.contains_key("LEDGER_UNAVAILABLE"),
        "the fenced host says it could not decide: {} {a_errors:?}",
        text(&out)
    );
    let reconcile = rulehost(&["ledger", "reconcile", "--ledger", url]);
    assert!(reconcile.status.success(), "{}", text(&reconcile));
}

#[test]
fn the_database_refuses_a_commit_after_a_takeover_and_a_host_decides_only_its_partitions() {
    use rulehost::ledger::durable::PartitionClaim;
    use rulehost::ledger::{Effect, Ledger, LedgerError, PostgresLedger, StoreOptions};
    use rulehost::partition::partition;

    let server = PgServer::start();
    let url = server.database("fence");
    let accounts = crate::ledger_scale::accounts(40, "1000.00");
    let (mine, theirs): (Vec<_>, Vec<_>) =
        accounts.iter().partition(|a| partition(&a.id) == partition(&accounts[0].id));
    let (a0, a1) = (&accounts[0].id, &mine.get(1).unwrap_or(&&accounts[1]).id);
    let claim = |host: &str| StoreOptions {
        partitions: Some(PartitionClaim {
            host: host.into(),
            partitions: vec![partition(a0)],
            // Long: the renewal does not notice the takeover before the commit does.
            lease: Duration::from_secs(60),
            take_over: false,
        }),
        ..StoreOptions::default()
    };
    let mut a = PostgresLedger::open(&url, &StoreOptions::default()).unwrap();
    a.import_accounts(&accounts).unwrap();
    a.close().unwrap();
    let mut a = PostgresLedger::open(&url, &claim("a")).unwrap();

    // Its own partition: decided. Another's: refused, nothing decided.
    let ok = crate::support::commit_as(&mut a, &crate::ledger_scale::tx("t1", a0, a1, "1.00", 1), Effect::Post, true);
    assert_eq!(ok.unwrap().effect, Effect::Post);
    a.sync_point().wait().unwrap();
    let other = &theirs[0].id;
    let refused =
        crate::support::commit_as(&mut a, &crate::ledger_scale::tx("t2", other, a0, "1.00", 2), Effect::Post, true);
    assert!(matches!(refused, Err(LedgerError::NotOwner { .. })), "{refused:?}");

    // Another host takes the partition over (its epoch rises) behind A's back.
    let mut b = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
    let taken = b
        .execute(
            "UPDATE rulehost.partitions SET owner = 'b', epoch = epoch + 1, expires_at = now() + interval '1 minute' WHERE partition = $1",
            &[&i32::from(partition(a0))],
        )
        .unwrap();
    assert_eq!(taken, 1);
    let late = crate::support::commit_as(&mut a, &crate::ledger_scale::tx("t3", a0, a1, "1.00", 3), Effect::Post, true);
    assert!(late.is_ok(), "accepted in memory: {late:?}");
    let err = a.sync_point().wait().expect_err("the database refuses the fenced host's commit");
    assert!(err.to_string().contains("fenced off"), "{err}");
    drop(a);
    let stored = PgReader::open(&url).unwrap();
    assert!(stored.record("t1").unwrap().is_some());
    assert!(stored.record("t3").unwrap().is_none(), "nothing the fenced host decided after the takeover is stored");
    assert!(stored.reconcile().unwrap().is_clean());
}

#[test]
fn kill_9_one_of_three_hosts_and_its_partitions_move_to_a_successor_within_the_lease() {
    let sc = Scenario::new("failover", 20000);
    let (url, alone) = (&sc.url, sc.path("alone.sqlite"));
    let host = |name: &str, partitions: &str| sc.host(name, partitions, "2", false);
    let (mut doomed, doomed_out) = host("host-0", "0-20");
    let others = [host("host-1", "21-41"), host("host-2", "42-63")];
    // Kill host 0 once it has acknowledged some decisions, mid-stream.
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::fs::read_to_string(&doomed_out).unwrap_or_default().matches('\n').count() < 1000 {
        assert!(Instant::now() < deadline && doomed.try_wait().unwrap().is_none(), "host 0 never got going");
        std::thread::sleep(Duration::from_millis(20));
    }
    doomed.kill().unwrap(); // SIGKILL
    doomed.wait().unwrap();
    let written = std::fs::read_to_string(&doomed_out).unwrap_or_default();
    let complete = written.rsplit_once('\n').map_or("", |(done, _)| done);
    let (acked, _) = records(complete);
    assert!(!acked.is_empty());

    // Its successor claims the same partitions: it gets them once the
    // dead host's lease lapses, and the client sends the stream again.
    let started = Instant::now();
    let (successor, successor_out) = host("host-0-successor", "0-20");
    for (child, _) in others.into_iter().chain([(successor, successor_out)]) {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.code().unwrap() <= 1, "{}", text(&out));
    }
    let took = started.elapsed();

    let want = crate::ledger_postgres::stored(&rulehost::ledger::StoreReader::open(&alone).unwrap());
    let got = crate::ledger_postgres::stored(&PgReader::open(url).unwrap());
    assert_eq!(got.len(), want.len(), "every transaction decided exactly once");
    assert_eq!(got, want, "the stored decisions are the lone host's");
    for (id, record) in &acked {
        let mut record = record.clone();
        record.as_object_mut().unwrap().remove("replayed");
        assert_eq!(got.get(id), Some(&record), "acknowledged decision {id} is stored, unchanged");
    }
    let balances = |l: &str| text(&rulehost(&["ledger", "accounts", "--ledger", l]));
    assert_eq!(balances(url), balances(s(&alone)), "the same final balances");
    let reconcile = rulehost(&["ledger", "reconcile", "--ledger", url]);
    assert!(reconcile.status.success(), "{}", text(&reconcile));
    assert!(took < Duration::from_secs(100), "the successor finished ({took:?})");
}

#[test]
fn a_credit_from_another_hosts_partition_counts_before_a_refusal() {
    use rulehost::ledger::durable::PartitionClaim;
    use rulehost::ledger::{Effect, Ledger, PostgresLedger, StoreOptions};
    use rulehost::partition::partition;

    let server = PgServer::start();
    let url = server.database("credits");
    let accounts = crate::ledger_scale::accounts(40, "10.00");
    let x = &accounts[0].id;
    let y = &accounts.iter().find(|a| partition(&a.id) != partition(x)).unwrap().id;
    let mut setup = PostgresLedger::open(&url, &StoreOptions::default()).unwrap();
    setup.import_accounts(&accounts).unwrap();
    setup.close().unwrap();
    let host = |name: &str, account: &str| {
        let claim = PartitionClaim {
            host: name.into(),
            partitions: vec![partition(account)],
            lease: Duration::from_secs(30),
            take_over: false,
        };
        PostgresLedger::open(&url, &StoreOptions { partitions: Some(claim), ..StoreOptions::default() }).unwrap()
    };
    let (mut a, mut b) = (host("a", x), host("b", y));
    // B credits X (A's account) with 5.00; A's cache still says 10.00.
    let c = crate::support::commit_as(&mut b, &crate::ledger_scale::tx("credit", y, x, "5.00", 1), Effect::Post, true);
    assert_eq!(c.unwrap().effect, Effect::Post);
    b.sync_point().wait().unwrap();
    assert_eq!(a.balances(x).unwrap().posted.to_string(), "10.00", "A has not seen the credit");
    // 12.00 from X needs the credit: A reads the stored balance before refusing.
    let c = crate::support::commit_as(&mut a, &crate::ledger_scale::tx("spend", x, y, "12.00", 2), Effect::Post, true);
    assert_eq!(c.unwrap().effect, Effect::Post, "the landed credit counts");
    a.sync_point().wait().unwrap();
    assert_eq!(a.balances(x).unwrap().posted.to_string(), "3.00");
    // Beyond what X holds, even with the credit: refused.
    let c =
        crate::support::commit_as(&mut a, &crate::ledger_scale::tx("too-much", x, y, "4.00", 3), Effect::Post, true);
    assert_eq!(c.unwrap().effect, Effect::Nothing);
    drop((a, b));
    assert!(PgReader::open(&url).unwrap().reconcile().unwrap().is_clean());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_421_naming_the_owner_for_another_hosts_partition() {
    let sc = Scenario::new("serve", 10);
    let account = |p: &dyn Fn(u16) -> bool| {
        (0..300).map(|i| format!("acc-{i:06}")).find(|a| p(rulehost::partition::partition(a))).unwrap()
    };
    let (mine, theirs) = (account(&|p| p == 0), account(&|p| p == 1));
    // Another host owns partition 1 (a held lease, as a running host keeps it).
    let (mut other, _) = sc.host("other-host", "1", "30", true);
    // Wait until the other host holds its lease.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !PgReader::open(&sc.url).is_ok_and(|r| r.partitions().is_ok_and(|l| l.iter().any(|l| l.owner.is_some()))) {
        assert!(Instant::now() < deadline, "the other host never took its partition");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (mut child, base) = sc.serve("this-host", "0", "10");
    let http = reqwest::Client::new();
    let tx = |id: &str, source: &str| {
        serde_json::json!({"id": id, "timestamp": "2026-01-05T10:00:00Z", "kind": "payment", "source": source,
                           "destination": "acc-000002", "amount": "1.00", "currency": "USD"})
    };
    let post = |body: Value| http.post(format!("{base}/v1/transactions")).json(&body).send();
    let r = post(tx("mine-1", &mine)).await.unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
    // The renewal thread learns the other partitions' owners within a third of the lease.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let r = post(tx("theirs-1", &theirs)).await.unwrap();
    assert_eq!(r.status().as_u16(), 421);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "PARTITION_NOT_OWNED", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("other-host"), "{body}");
    assert!(PgReader::open(&sc.url).unwrap().record("theirs-1").unwrap().is_none(), "nothing decided");
    let _ = child.kill();
    let _ = child.wait();
    let _ = other.kill();
    let _ = other.wait();
}
