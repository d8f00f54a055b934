//! A target for the kernel-table tests: a Python parent that holds one listener and, on
//! command, forks children that fill the socket table (connections to their own listener,
//! both ends kept) and then leave it in one chosen way: exiting without closing, executing
//! `sleep`, or closing a range of descriptors and putting a file over two more.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

/// The parent reads commands on stdin and answers on stdout, one line each; its children
/// share that stdout (lines are single small writes, so they never interleave) and act when
/// sent SIGUSR1, which they block and wait for.
///
/// `fork N ACTION [FILE]` forks a child that opens N connections to a listener of its own
/// (made before the fork), accepts each, prints `opened PID`, and on SIGUSR1:
/// - `exit`: leaves at once without closing anything (`os._exit`);
/// - `exec`: executes `sleep 60` (Python's sockets are close-on-exec);
/// - `trim`: closes the first half of its connection sockets with one close_range(2), then puts
///   FILE (which holds a request) over one accepted socket with dup2 and over another with
///   dup3, reads the request through each and writes a response after it, then makes one
///   exchange (`GET /kept`) over a connection it kept, prints `trimmed`, and waits for another
///   SIGUSR1 to exit.
const SCRIPT: &str = r#"
import ctypes, os, signal, socket, sys

SYS_CLOSE_RANGE = 436  # x86_64
libc = ctypes.CDLL(None, use_errno=True)
parent_listener = socket.create_server(("127.0.0.1", 0))
signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel

def say(line):
    os.write(1, (line + "\n").encode())

def wait_usr1():
    signal.sigwait({signal.SIGUSR1})

def child(lst, n, action, path):
    pairs = []
    for _ in range(n):
        c = socket.create_connection(lst.getsockname())
        a, _ = lst.accept()
        pairs.append((c, a))
    say("opened %d" % os.getpid())
    wait_usr1()
    if action == "exit":
        os._exit(0)
    if action == "exec":
        os.execv("/bin/sleep", ["sleep", "60"])
    # trim: the first half of the connection sockets, by descriptor. Descriptors the process
    # inherited may lie among them (never sockets: the parent's only socket is below); they
    # are closed too, which changes nothing here.
    socks = sorted((s for p in pairs for s in p), key=lambda s: s.fileno())
    half = socks[: len(socks) // 2]
    first, last = half[0].fileno(), half[-1].fileno()
    if libc.syscall(SYS_CLOSE_RANGE, first, last, 0) != 0:
        say("error: close_range: errno %d" % ctypes.get_errno())
        os._exit(1)
    for s in half:
        s.detach()  # already closed; the objects must not close the numbers again
    accepted = [a for _, a in pairs[len(pairs) // 2 :]]
    for target, inheritable in ((accepted[0], True), (accepted[1], False)):
        fd = target.detach()
        f = os.open(path, os.O_RDWR)
        # inheritable=True is dup2(2); False is dup3(2) with O_CLOEXEC.
        os.dup2(f, fd, inheritable=inheritable)
        os.close(f)
        request = os.read(fd, 4096)
        os.write(fd, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        os.ftruncate(fd, len(request))  # the next one reads the request alone
    c, a = pairs[-1]
    c.sendall(b"GET /kept HTTP/1.1\r\nHost: x\r\n\r\n")
    a.recv(4096)
    a.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    c.recv(4096)
    say("trimmed")
    wait_usr1()
    os._exit(0)

say("ready")
for line in sys.stdin:
    words = line.split()
    if words[0] == "fork":
        n = int(words[1])
        # Made before the fork, so that the child has it when observer adopts the child (a
        # listener made later is in no table: only accepted and connected sockets are added).
        lst = socket.create_server(("127.0.0.1", 0), backlog=n + 16)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
        pid = os.fork()
        if pid == 0:
            child(lst, n, words[2], words[3] if len(words) > 3 else None)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})
        lst.close()
        say("forked %d" % pid)
"#;

/// The parent process; it and its children are killed on drop.
pub struct SocketForker {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    children: Vec<u32>,
}

impl SocketForker {
    /// Starts the parent and waits until it listens.
    pub fn start() -> Self {
        let mut child = Command::new("python3")
            .args(["-c", SCRIPT])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting python3");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut me = Self {
            child,
            stdin,
            lines,
            children: Vec::new(),
        };
        me.expect("ready");
        me
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the next line, which must start with `word`; returns the rest of it.
    fn expect(&mut self, word: &str) -> String {
        let line = self
            .lines
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("the socket forker said nothing ({e}); waited for {word}"));
        line.strip_prefix(word)
            .unwrap_or_else(|| panic!("the socket forker said {line:?}, not {word}"))
            .trim()
            .to_string()
    }

    /// Forks a child that opens `connections` connections to itself (two sockets each) and
    /// waits for SIGUSR1 to do `action` (`exit`, `exec` or `trim`, see [`SCRIPT`]); returns its
    /// PID once all are open.
    pub fn fork(&mut self, connections: u32, action: &str, file: Option<&Path>) -> u32 {
        let file = file
            .map(|f| format!(" {}", f.display()))
            .unwrap_or_default();
        writeln!(self.stdin, "fork {connections} {action}{file}").expect("writing a command");
        self.stdin.flush().expect("flushing a command");
        let forked: u32 = self.expect("forked").parse().expect("a PID");
        self.children.push(forked);
        let opened: u32 = self.expect("opened").parse().expect("a PID");
        assert_eq!(forked, opened, "the child that opened its sockets");
        opened
    }

    /// Sends SIGUSR1 to `child`: it does its action.
    pub fn signal(&self, child: u32) {
        let pid = rustix::process::Pid::from_raw(child as i32).expect("a PID");
        rustix::process::kill_process(pid, rustix::process::Signal::USR1)
            .expect("signalling a child");
    }

    /// Waits for the line a `trim` child prints when done.
    pub fn expect_trimmed(&mut self) {
        self.expect("trimmed");
    }
}

/// Whether `pid` is running (not gone, not a zombie), and the name it runs under.
pub fn running_as(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let state = stat[close + 1..].split_whitespace().next()?;
    (state != "Z" && state != "X").then(|| stat[open + 1..close].to_string())
}

impl Drop for SocketForker {
    fn drop(&mut self) {
        // Only children still running under the parent: a PID reused since is not ours.
        let alive = crate::children_of(self.child.id());
        for &c in &self.children {
            if alive.contains(&c)
                && let Some(pid) = rustix::process::Pid::from_raw(c as i32)
            {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
