//! A real MQTT broker for tests: Debian's `mosquitto` on a free 127.0.0.1
//! port, with a config file written here (a listener on 127.0.0.1 only,
//! anonymous clients, no persistence), stopped by its PID when dropped and
//! restartable on the same port; `mosquitto_pub` and `mosquitto_sub` as
//! devices. A missing mosquitto fails the test with what to install: the
//! tests never skip (tests/run-all.sh installs it).

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The broker binary: $MOSQUITTO, Debian's /usr/sbin/mosquitto, or
/// `mosquitto` on the PATH.
fn binary() -> String {
    if let Ok(path) = std::env::var("MOSQUITTO") {
        return path;
    }
    if std::path::Path::new("/usr/sbin/mosquitto").exists() {
        return "/usr/sbin/mosquitto".into();
    }
    "mosquitto".into()
}

fn missing(what: &str, error: std::io::Error) -> ! {
    panic!(
        "{what} cannot be run ({error}): these tests need a real MQTT broker and its clients; \
         install them with `apt-get install mosquitto mosquitto-clients` (tests/run-all.sh does)"
    )
}

/// A mosquitto process.
pub struct Mosquitto {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
}

impl Mosquitto {
    pub fn start() -> Mosquitto {
        let port = sabai_redis::testing::free_port();
        let dir = std::env::temp_dir().join(format!("sabai-mosquitto-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut broker = Mosquitto { child: None, port, dir };
        broker.run();
        broker
    }

    fn run(&mut self) {
        let config = self.dir.join("mosquitto.conf");
        let text = format!(
            "listener {} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\nlog_type error\nlog_type warning\n",
            self.port
        );
        std::fs::write(&config, text).unwrap();
        let child = Command::new(binary())
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| missing("mosquitto", e));
        self.child = Some(child);
        // Up when it takes a TCP connection (at most 10 s).
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("mosquitto exited at start ({status}); port {} taken?", self.port);
            }
            assert!(Instant::now() < deadline, "mosquitto did not listen on {} within 10 s", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Stops it (SIGKILL, by its PID): the bridge loses the connection at once.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops it and starts it again on the same port, with nothing kept
    /// (persistence false): every subscription is gone.
    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }

    /// `mosquitto_pub` of one message (QoS 1), its payload given on stdin
    /// so it may be any bytes.
    pub fn publish(&self, topic: &str, payload: &[u8]) {
        self.publish_with(topic, payload, &[]);
    }

    /// The same with more flags (`-r` to retain).
    pub fn publish_with(&self, topic: &str, payload: &[u8], flags: &[&str]) {
        let mut child = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q", "1", "-t", topic, "-s"])
            .args(flags)
            .stdin(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| missing("mosquitto_pub", e));
        child.stdin.take().unwrap().write_all(payload).unwrap();
        let status = child.wait().unwrap();
        assert!(status.success(), "mosquitto_pub -t {topic} failed: {status}");
    }

    /// `mosquitto_pub -l`: each line a message, in order, on one connection.
    pub fn publish_lines(&self, topic: &str, lines: &[String]) {
        let mut child = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q", "1", "-t", topic, "-l"])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| missing("mosquitto_pub", e));
        let mut stdin = child.stdin.take().unwrap();
        for line in lines {
            writeln!(stdin, "{line}").unwrap();
        }
        drop(stdin);
        let status = child.wait().unwrap();
        assert!(status.success(), "mosquitto_pub -l failed: {status}");
    }

    /// A `mosquitto_sub` on `filter` (QoS 1), once it is subscribed: it
    /// also follows a probe topic, published to until a probe comes back
    /// (its own output is buffered, so its SUBACK line cannot be waited for).
    pub fn subscribe(&self, filter: &str) -> Subscriber {
        let probe = format!("sabai-test/probe/{}", rand::random::<u32>());
        let child = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q", "1", "-t", filter, "-t", &probe])
            .args(["-F", "MSG %t %p"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| missing("mosquitto_sub", e));
        let (tx, rx) = mpsc::channel();
        let mut subscriber = Subscriber { child, messages: rx };
        let stdout = subscriber.child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(message) = line.strip_prefix("MSG ") {
                    let (topic, payload) = message.split_once(' ').unwrap_or((message, ""));
                    if tx.send((topic.to_owned(), payload.to_owned())).is_err() {
                        break;
                    }
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        'probing: loop {
            assert!(Instant::now() < deadline, "mosquitto_sub was not subscribed within 10 s");
            self.publish(&probe, b"probe");
            while let Ok((topic, _)) = subscriber.messages.recv_timeout(Duration::from_millis(200)) {
                if topic == probe {
                    break 'probing;
                }
            }
        }
        // Probes still on their way are skipped by `next`.
        subscriber
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A running `mosquitto_sub`, stopped by its PID when dropped.
pub struct Subscriber {
    child: Child,
    messages: mpsc::Receiver<(String, String)>,
}

impl Subscriber {
    /// The next message (topic, payload) within 10 s, probes skipped.
    pub fn next(&self) -> (String, String) {
        loop {
            let message =
                self.messages.recv_timeout(Duration::from_secs(10)).expect("no MQTT message within 10 s");
            if !message.0.starts_with("sabai-test/probe/") {
                return message;
            }
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
