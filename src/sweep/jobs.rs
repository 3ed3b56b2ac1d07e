//! Trials as child processes: `run --jobs N` starts one process per trial, at most N at a
//! time, each writing the same records a single run would, and passes on each line a child
//! writes to standard output as it comes (the CLI's children write JSON progress events). On Linux a child is killed when
//! its parent dies (`PR_SET_PDEATHSIG`), so killing the parent alone leaves no orphan
//! training on, and the trial locks the children held are released with them.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::thread::JoinHandle;
use std::time::Duration;

/// How to start the process of one trial.
#[derive(Clone, Debug)]
pub struct Jobs {
    /// The program to run (the running binary).
    pub program: PathBuf,
    /// Its arguments before the trial's number (`run FILE --out DIR ...`).
    pub args: Vec<OsString>,
    /// The flag that selects one trial, followed by its number (`--trial`).
    pub trial_flag: String,
    /// At most this many at once.
    pub jobs: usize,
    /// `RAYON_NUM_THREADS` of each child.
    pub threads_per_job: usize,
}

/// A trial's process that has ended.
#[derive(Clone, Debug)]
pub struct Ended {
    pub trial: usize,
    /// Its exit code (`None` when a signal ended it).
    pub code: Option<i32>,
    /// What it wrote to standard error.
    pub stderr: String,
}

/// What happened to one trial's process.
#[derive(Clone, Debug)]
pub enum JobEvent {
    /// The process started.
    Started { trial: usize },
    /// It wrote a line to standard output (the children of `run --jobs` write JSON events).
    Output { trial: usize, line: String },
    /// It ended; every line it wrote came before.
    Ended(Ended),
    /// The process could not be started.
    NotStarted { trial: usize, error: String },
}

/// A running child with the threads that read its pipes: standard output line by line as it
/// comes, standard error whole (read all along, so a child that writes much never blocks on
/// a full pipe).
struct Running {
    trial: usize,
    child: Child,
    lines: Receiver<String>,
    stdout: Option<JoinHandle<()>>,
    stderr: Option<JoinHandle<String>>,
}

impl Running {
    fn start(trial: usize, mut child: Child) -> Running {
        let (send, lines) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().map(|out| {
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if send.send(line).is_err() {
                        break;
                    }
                }
            })
        });
        let stderr = child.stderr.take().map(|mut err| {
            std::thread::spawn(move || {
                let mut text = String::new();
                let _ = err.read_to_string(&mut text);
                text
            })
        });
        Running {
            trial,
            child,
            lines,
            stdout,
            stderr,
        }
    }

    fn drain(&self, on_event: &mut dyn FnMut(JobEvent)) {
        while let Ok(line) = self.lines.try_recv() {
            on_event(JobEvent::Output {
                trial: self.trial,
                line,
            });
        }
    }
}

/// Runs `trials` through `jobs`, calling `on_event` as each starts, writes a line and ends.
/// Stops starting new ones once `stop` is set (and lets the running ones finish their
/// interrupted step). Returns 0 when every process exited 0, 130 if any was interrupted, 1
/// otherwise.
pub fn run(
    jobs: &Jobs,
    trials: &[usize],
    stop: &AtomicBool,
    on_event: &mut dyn FnMut(JobEvent),
) -> i32 {
    let mut queue: std::collections::VecDeque<usize> = trials.iter().copied().collect();
    let mut running: Vec<Running> = Vec::new();
    let mut status = 0;
    while !queue.is_empty() || !running.is_empty() {
        while running.len() < jobs.jobs.max(1) && !stop.load(Ordering::Relaxed) {
            let Some(i) = queue.pop_front() else { break };
            let mut cmd = Command::new(&jobs.program);
            cmd.args(&jobs.args)
                .arg(&jobs.trial_flag)
                .arg(i.to_string())
                .env("RAYON_NUM_THREADS", jobs.threads_per_job.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            die_with_parent(&mut cmd);
            match cmd.spawn() {
                Ok(child) => {
                    on_event(JobEvent::Started { trial: i });
                    running.push(Running::start(i, child));
                }
                Err(e) => {
                    on_event(JobEvent::NotStarted {
                        trial: i,
                        error: e.to_string(),
                    });
                    status = 1;
                }
            }
        }
        if stop.load(Ordering::Relaxed) {
            queue.clear();
        }
        std::thread::sleep(Duration::from_millis(20));
        let mut k = 0;
        while k < running.len() {
            running[k].drain(on_event);
            match running[k].child.try_wait() {
                Ok(Some(code)) => {
                    let mut r = running.swap_remove(k);
                    // the pipes close with the process: what is left in them comes first
                    if let Some(t) = r.stdout.take() {
                        let _ = t.join();
                    }
                    r.drain(on_event);
                    let stderr = r
                        .stderr
                        .take()
                        .and_then(|t| t.join().ok())
                        .unwrap_or_default();
                    match code.code() {
                        Some(0) => {}
                        Some(130) => status = 130,
                        _ if status == 0 => status = 1,
                        _ => {}
                    }
                    on_event(JobEvent::Ended(Ended {
                        trial: r.trial,
                        code: code.code(),
                        stderr,
                    }));
                }
                Ok(None) | Err(_) => k += 1,
            }
        }
    }
    status
}

/// Asks the kernel to SIGKILL the child when this process dies. (Linux sends the signal when
/// the spawning *thread* ends: [`run`] must be called from a thread that lives as long as the
/// children should, as the CLI's run does.)
#[cfg(target_os = "linux")]
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: getpid and prctl are async-signal-safe; the closure allocates nothing.
    let parent = unsafe { libc::getpid() };
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // the parent may have died before prctl: then no signal will come
            if libc::getppid() != parent {
                return Err(std::io::Error::other("the parent process has ended"));
            }
            Ok(())
        })
    };
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_: &mut Command) {}
