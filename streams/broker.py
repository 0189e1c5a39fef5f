"""The local Apache Kafka broker: one KRaft node (broker + controller) on 127.0.0.1, from Maven Central jars.

`packwise kafka start | stop | status` and the test suite's broker fixture both go through `LocalBroker`.
The jars are resolved by the Maven project in deploy/kafka (whose pom.xml is the one place the Kafka
version is written); the broker's data, log, configuration and pid live in a state folder outside the
source tree, so several brokers (a developer's and the tests') can run side by side on other ports.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil

from streams.errors import PackwiseError

KAFKA_DIR = Path(__file__).resolve().parent.parent / "deploy" / "kafka"
POM = KAFKA_DIR / "pom.xml"
LOG4J_CONFIG = KAFKA_DIR / "log4j2.properties"
MIN_JAVA = 17


def kafka_version(pom: Path = POM) -> str:
    """The Kafka version the project runs, read from deploy/kafka/pom.xml."""
    match = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", pom.read_text(encoding="utf-8"))
    if not match:
        raise PackwiseError(f"{pom} has no <kafka.version> property")
    return match.group(1).strip()


def lib_dir(version: str | None = None) -> Path:
    return KAFKA_DIR / "lib" / (version or kafka_version())


def java_executable() -> str:
    """The `java` to run the broker with (JAVA_HOME first), checked to be version 17 or newer."""
    java_home = os.environ.get("JAVA_HOME")
    java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    if not java or not Path(java).exists():
        raise PackwiseError(
            f"Java {MIN_JAVA}+ is needed to run the local Kafka broker and none was found: install a JDK "
            "(e.g. `apt-get install openjdk-17-jdk-headless`) or set JAVA_HOME")
    result = subprocess.run([java, "-version"], capture_output=True, text=True)
    match = re.search(r'version "(\d+)', result.stderr + result.stdout)
    if not match or int(match.group(1)) < MIN_JAVA:
        raise PackwiseError(f"{java} is not Java {MIN_JAVA}+ ({result.stderr.strip().splitlines()[:1]}); "
                            f"install Java {MIN_JAVA} or newer or point JAVA_HOME at one")
    return java


def resolve_jars(version: str | None = None, echo: bool = True) -> Path:
    """Resolve the broker, tools and log4j binding from Maven Central into deploy/kafka/lib/<version>."""
    version = version or kafka_version()
    target = lib_dir(version)
    if (target / f"kafka_2.13-{version}.jar").exists():
        return target
    mvn = shutil.which("mvn")
    if not mvn:
        raise PackwiseError("Maven is needed once to fetch the Kafka jars and `mvn` was not found: install it "
                            "(e.g. `apt-get install maven`)")
    if echo:
        print(f"resolving Apache Kafka {version} from Maven Central into {target} ...", flush=True)
    result = subprocess.run(
        [mvn, "-q", "-B", "-f", str(POM), f"-Dkafka.version={version}", "dependency:copy-dependencies"],
        capture_output=True, text=True)
    if result.returncode != 0 or not (target / f"kafka_2.13-{version}.jar").exists():
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-5:])
        raise PackwiseError(f"Maven could not resolve Kafka {version} (exit {result.returncode}): {tail}")
    return target


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _private_text(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)
    os.chmod(path, 0o600)


@dataclass(frozen=True)
class BrokerStatus:
    running: bool
    pid: int | None
    bootstrap: str
    version: str
    state_dir: Path

    def describe(self) -> str:
        if self.running:
            return f"Kafka {self.version} is running at {self.bootstrap} (pid {self.pid}, state in {self.state_dir})"
        return f"Kafka is not running at {self.bootstrap} (state in {self.state_dir})"


def new_cluster_id() -> str:
    """16 random bytes in URL-safe base64 without padding, as `StorageTool random-uuid` prints, and like
    Kafka's Uuid.randomUuid never starting with '-' (one id in 64 would, and the storage tool would read
    it as an option)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


@dataclass(frozen=True)
class LocalBroker:
    """One combined KRaft broker+controller listening on 127.0.0.1 only."""

    state_dir: Path
    port: int = 9092
    controller_port: int = 9093
    heap: str = "512m"
    secure: bool = False  # SASL_SSL listener, SCRAM users, ACLs (streams/secure_broker.py)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.state_dir / "data"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "broker.log"

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "broker.pid"

    @property
    def config_file(self) -> Path:
        return self.state_dir / "server.properties"

    @property
    def mode_file(self) -> Path:
        """'secure' or 'plain': how the storage was formatted (SCRAM users exist only if formatted secure)."""
        return self.state_dir / "mode"

    @property
    def secrets(self):
        from streams.secure_broker import BrokerSecrets

        return BrokerSecrets(self.state_dir / "security")

    def _listeners(self) -> list[str]:
        if self.secure:
            from streams.secure_broker import server_properties

            return server_properties(self.secrets, self.port, self.controller_port)
        return [
            f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        ]

    def server_properties(self) -> str:
        return "\n".join([
            "# Written by packwise for the local broker; regenerated at every start.",
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
            *self._listeners(),
            f"log.dirs={self.data_dir}",
            "num.partitions=1",
            "offsets.topic.replication.factor=1",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            # the controller appends a no-op record to the metadata log every 500 ms by default, so that brokers
            # see it alive; on one node that is a third or more of what the broker burns at rest (the raft I/O
            # thread, the controller, the broker replaying it: 0.14-0.16 of a core with it, 0.06-0.11 every 10 s,
            # bench/broker_idle.py), for nothing
            "metadata.max.idle.interval.ms=10000",
            "auto.create.topics.enable=false",
            "",
        ])

    def _process(self) -> psutil.Process | None:
        """The broker process recorded in the pid file, if it is alive and really ours."""
        try:
            pid = int(self.pid_file.read_text().strip())
            process = psutil.Process(pid)
            if process.status() == psutil.STATUS_ZOMBIE:
                return None
            cmdline = process.cmdline()
        except (OSError, ValueError, psutil.Error):
            return None
        return process if "kafka.Kafka" in cmdline and str(self.config_file) in cmdline else None

    def status(self) -> BrokerStatus:
        process = self._process()
        return BrokerStatus(process is not None, process.pid if process else None, self.bootstrap,
                            kafka_version(), self.state_dir)

    def start(self, timeout_s: float = 90.0, echo: bool = True) -> tuple[BrokerStatus, bool]:
        """Start the broker unless it runs; returns (status, started_now). Waits until it takes clients."""
        current = self.status()
        if current.running:
            return current, False
        for port in (self.port, self.controller_port):
            if port_in_use(port):
                raise PackwiseError(f"port {port} on 127.0.0.1 is taken by another program; stop it or choose "
                                    "other ports (PACKWISE_KAFKA_PORT, PACKWISE_KAFKA_CONTROLLER_PORT)")
        java = java_executable()
        classpath = str(resolve_jars(echo=echo) / "*")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        mode = "secure" if self.secure else "plain"
        formatted = (self.data_dir / "meta.properties").exists()
        was = self.mode_file.read_text().strip() if self.mode_file.exists() else "plain"
        if formatted and was != mode:
            raise PackwiseError(
                f"the broker in {self.state_dir} was formatted {'with' if was == 'secure' else 'without'} --secure: "
                f"start it as it was, or stop it and use another PACKWISE_STATE_DIR (or delete {self.state_dir})")
        if self.secure:
            self.secrets.ensure()
        # 0600: a secured broker's configuration holds the admin password it uses for itself
        _private_text(self.config_file, self.server_properties())
        if not formatted:
            self._format(java, classpath)
            self.mode_file.write_text(mode + "\n")
        with open(self.log_file, "ab") as log:
            process = subprocess.Popen(
                [java, f"-Xmx{self.heap}", f"-Xms{self.heap}", "-XX:+UseG1GC", "-Djava.awt.headless=true",
                 f"-Dlog4j2.configurationFile={LOG4J_CONFIG}", "-cp", classpath,
                 "kafka.Kafka", str(self.config_file)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # outlives `packwise kafka start`; stopped by pid
            )
        self.pid_file.write_text(f"{process.pid}\n")
        self._wait_ready(process, timeout_s)
        return self.status(), True

    def _format(self, java: str, classpath: str) -> None:
        cluster_id = new_cluster_id()
        result = subprocess.run(
            [java, "-Xmx256m", f"-Dlog4j2.configurationFile={LOG4J_CONFIG}", "-cp", classpath,
             "kafka.tools.StorageTool", "format", "-c", str(self.config_file), "-t", cluster_id,
             *(self.secrets.scram_arguments() if self.secure else [])],
            capture_output=True, text=True)
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-3:])
            raise PackwiseError(f"formatting Kafka storage in {self.data_dir} failed: {tail}")

    def _wait_ready(self, process: subprocess.Popen, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                self.pid_file.unlink(missing_ok=True)
                raise PackwiseError(f"the Kafka broker exited with code {process.returncode} while starting; "
                                    f"last lines of {self.log_file}:\n{self.log_tail()}")
            if port_in_use(self.port) and "Kafka Server started" in self.log_tail(200):
                return
            time.sleep(0.25)
        self.stop()
        raise PackwiseError(f"the Kafka broker did not accept clients on {self.bootstrap} within {timeout_s:.0f}s; "
                            f"last lines of {self.log_file}:\n{self.log_tail()}")

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop the broker by its pid (SIGTERM, then SIGKILL after timeout_s). False if it was not running."""
        process = self._process()
        if process is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except psutil.TimeoutExpired:
            process.kill()
            process.wait(10)
        self.pid_file.unlink(missing_ok=True)
        return True

    def log_tail(self, lines: int = 15) -> str:
        try:
            with open(self.log_file, "rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - 200 * lines))
                return "\n".join(log.read().decode(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

