//! A broker of one test: its own process on a free port with its own data directory, which
//! the test stops and starts again (the directory stays) to see a connector through a broker
//! restart; killed when dropped. The machine's shared brokers are never restarted.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How a server is started: its command for a port and a data directory.
pub type Launch = fn(port: u16, dir: &Path) -> Command;

pub struct TestServer {
    pub port: u16,
    pub dir: tempfile::TempDir,
    launch: Launch,
    child: Option<Child>,
}

impl TestServer {
    /// Starts `launch(port, dir)` on a free port and waits until it takes connections.
    pub fn start(launch: Launch) -> TestServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let dir = tempfile::tempdir().expect("a data directory");
        // Started as root, a server may drop to its own user (mosquitto), which writes here.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
            .expect("a writable data directory");
        let mut server = TestServer {
            port,
            dir,
            launch,
            child: None,
        };
        server.up();
        server
    }

    /// Starts it (again) and waits until it takes connections.
    pub fn up(&mut self) {
        let child = (self.launch)(self.port, self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the test server starts (is it installed?)");
        self.child = Some(child);
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the test server listens on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops it at once (SIGKILL), as a crash does.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops it as a service manager does (SIGTERM), letting it write what it holds.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
    }
}
