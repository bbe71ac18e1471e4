//! A PostgreSQL server of the test's own (also the ledger benchmark's, which
//! includes this file): `initdb` into a temporary
//! folder, `pg_ctl` on a loopback port chosen at run time, as the
//! `postgres` user when the tests run as root (the server refuses root),
//! stopped (`-m immediate`) and removed on drop. `RULEHOST_PG_BIN`
//! overrides where the server binaries are (default
//! `/usr/lib/postgresql/15/bin`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A running server; each test makes its own databases on it.
pub struct PgServer {
    dir: tempfile::TempDir,
    port: u16,
    bin: PathBuf,
    /// The user to run the binaries as (`postgres` when we are root).
    run_as: Option<String>,
}

fn bin() -> PathBuf {
    std::env::var_os("RULEHOST_PG_BIN").map_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"), PathBuf::from)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

impl PgServer {
    /// Starts a server (fsync off: these tests kill hosts, never the database).
    #[allow(dead_code)]
    pub fn start() -> PgServer {
        PgServer::start_with(false)
    }

    /// Starts a server that makes every commit durable on its disk
    /// (`fsync=on`, `synchronous_commit=on`: what the benchmarks measure).
    #[allow(dead_code)]
    pub fn start_durable() -> PgServer {
        PgServer::start_with(true)
    }

    fn start_with(fsync: bool) -> PgServer {
        let bin = bin();
        assert!(
            bin.join("initdb").exists(),
            "PostgreSQL server binaries not found in {} (set RULEHOST_PG_BIN)",
            bin.display()
        );
        let run_as = is_root().then(|| "postgres".to_owned());
        let dir = tempfile::Builder::new().prefix("rulehost-pg-").tempdir().expect("temp dir");
        if run_as.is_some() {
            chown_to_postgres(dir.path());
        }
        let data = dir.path().join("data");
        let mut server = PgServer { dir, port: 0, bin, run_as };
        let out = server.command(
            "initdb",
            &["-D", path_str(&data), "-U", "rulehost", "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8", "-N"],
        );
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        // A port chosen now may be taken before the server binds it: try a few.
        for attempt in 0..5 {
            server.port = free_port();
            let options = format!(
                "-c listen_addresses=127.0.0.1 -c port={} -c unix_socket_directories= -c fsync={} -c max_connections=50",
                server.port,
                if fsync { "on" } else { "off" }
            );
            let log = server.dir.path().join("server.log");
            let out = server.command(
                "pg_ctl",
                &["-D", path_str(&data), "-l", path_str(&log), "-w", "-t", "60", "-s", "-o", &options, "start"],
            );
            if out.status.success() {
                return server;
            }
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            assert!(attempt < 4, "pg_ctl start failed: {}\n{log}", String::from_utf8_lossy(&out.stderr));
        }
        unreachable!("the loop returns or asserts")
    }

    fn command(&self, name: &str, args: &[&str]) -> Output {
        let program = self.bin.join(name);
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&program);
                c
            }
            None => Command::new(&program),
        };
        cmd.args(args).current_dir(self.dir.path()).output().unwrap_or_else(|e| panic!("running {name}: {e}"))
    }

    /// Creates database `name` and returns its URL.
    pub fn database(&self, name: &str) -> String {
        let port = self.port.to_string();
        let out = self.command("createdb", &["-h", "127.0.0.1", "-p", &port, "-U", "rulehost", name]);
        assert!(out.status.success(), "createdb {name}: {}", String::from_utf8_lossy(&out.stderr));
        self.url(name)
    }

    /// The URL of database `name`.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://rulehost@127.0.0.1:{}/{name}", self.port)
    }

    /// The server's port.
    #[allow(dead_code)]
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = self.command("pg_ctl", &["-D", path_str(&data), "-m", "immediate", "-s", "stop"]);
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

fn is_root() -> bool {
    // `id -u` rather than libc: the tests need no unsafe code.
    Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0\n")).unwrap_or(false)
}

fn chown_to_postgres(dir: &Path) {
    let id = |flag: &str| -> u32 {
        let out = Command::new("id").args([flag, "postgres"]).output().expect("id postgres");
        String::from_utf8_lossy(&out.stdout).trim().parse().expect("the postgres user exists")
    };
    std::os::unix::fs::chown(dir, Some(id("-u")), Some(id("-g"))).expect("chown the temp dir to postgres");
}
