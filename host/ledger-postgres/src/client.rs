//! A PostgreSQL connection on a thread of its own. `postgres::Client`
//! drives its connection with a runtime of its own and must not be used (or
//! dropped) inside an async context; callers of the ledger may be on one
//! (the server's handlers), so every call is sent to this thread.

use std::thread::JoinHandle;

use crossbeam_channel::{Sender, bounded, unbounded};
use postgres::{Client, NoTls};

type Job = Box<dyn FnOnce(&mut Client) + Send>;

/// PostgreSQL's reason for an error, once, with its SQLSTATE.
pub(crate) fn reason(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let detail = db.detail().map(|d| format!(" ({d})")).unwrap_or_default();
            format!("{}{detail} [SQLSTATE {}]", db.message(), db.code().code())
        }
        None => e.to_string(),
    }
}

/// Connects to `url` on the calling thread (which must not be in an async
/// context: see [`Remote::connect`] and [`off_runtime`]).
pub(crate) fn connect(url: &str) -> Result<Client, String> {
    Client::connect(url, NoTls).map_err(|e| {
        let mut why = reason(&e);
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            why = format!("{why}: {s}");
            source = s.source();
        }
        why
    })
}

/// Runs `f` on a fresh thread and waits for it (blocking, connecting and
/// dropping clients outside any async runtime the caller may be on).
pub(crate) fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| match s.spawn(f).join() {
        Ok(t) => t,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

/// A connection owned by a thread, called through a channel.
pub(crate) struct Remote {
    jobs: Option<Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl Remote {
    /// Connects on a new thread named `name`.
    pub(crate) fn connect(url: &str, name: &str) -> Result<Remote, String> {
        let (jobs, rx) = unbounded::<Job>();
        let (ready, connected) = bounded::<Result<(), String>>(1);
        let url = url.to_owned();
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || match connect(&url) {
                Ok(mut client) => {
                    let _ = ready.send(Ok(()));
                    for job in rx {
                        job(&mut client);
                    }
                }
                Err(why) => {
                    let _ = ready.send(Err(why));
                }
            })
            .map_err(|e| format!("cannot start a PostgreSQL connection thread: {e}"))?;
        let remote = Remote { jobs: Some(jobs), thread: Some(thread) };
        connected.recv().map_err(|_| "the PostgreSQL connection thread stopped".to_owned())??;
        Ok(remote)
    }

    /// Runs `f` on the connection and returns its answer.
    pub(crate) fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, String> + Send + 'static,
    ) -> Result<T, String> {
        let (answer, answered) = bounded(1);
        let jobs = self.jobs.as_ref().ok_or("the PostgreSQL connection is closed")?;
        jobs.send(Box::new(move |client| {
            let _ = answer.send(f(client));
        }))
        .map_err(|_| "the PostgreSQL connection thread stopped".to_owned())?;
        answered.recv().map_err(|_| "the PostgreSQL connection thread stopped".to_owned())?
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
